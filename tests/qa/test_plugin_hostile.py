"""QA: a real ``deepaas-run`` serving plugins that misbehave on purpose
(what they raise, return, leave running, or do to the process they run
in); each test held a defect, now fixed. Every server runs on a free port
of 127.0.0.1 and is stopped when its test ends (:class:`DeepaasRun`)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.deepaas_run import HANG_S, REPO_ROOT, DeepaasRun, closed_at_end, until

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[str], DeepaasRun]]:
    """``serve(source)``: ``deepaas-run`` serving the plugin ``source`` as
    model ``hostile``, ready."""

    def start(source: str, *args: str, env: dict[str, str] | None = None) -> DeepaasRun:
        plugin = tmp_path / "hostile.py"
        plugin.write_text(textwrap.dedent(source))
        return DeepaasRun(
            tmp_path, "--plugin", f"hostile={plugin}", *args, env=env
        ).wait_ready()

    with closed_at_end(start) as started:
        yield started


PREDICT = "/v2/models/hostile/predict/"

# -- the worker ---------------------------------------------------------------

STR_RAISES = """
import os
import threading
import time

from marshmallow import fields


class Unprintable(Exception):
    def __str__(self):
        raise KeyboardInterrupt("from __str__")


def warm():
    # A thread that never ends, not a daemon (a data loader, a watchdog).
    threading.Thread(target=time.sleep, args=(3600,)).start()


def get_predict_args():
    return {"fail": fields.Bool(load_default=False)}


def predict(fail):
    if fail:
        raise Unprintable()
    return {"pid": os.getpid()}
"""


def test_exception_whose_str_raises_a_base_exception_is_a_500(serve) -> None:
    """Printing the exception raised KeyboardInterrupt in the worker, out of
    the error's description: the worker died of it (a 503) or, with a
    thread of the plugin still running, never exited, and that request and
    every later one hung."""
    srv = serve(STR_RAISES)
    status, body = srv.request("POST", PREDICT)
    assert status == 200
    pid = body["predictions"]["pid"]
    status, body = srv.request("POST", PREDICT + "?fail=true")
    assert status == 500, body
    assert body == {"message": "Unprintable: <exception could not be printed>"}
    status, body = srv.request("POST", PREDICT)
    assert (status, body["predictions"]["pid"]) == (200, pid)  # the same worker


def test_child_exits_whatever_run_raised_despite_a_live_thread(tmp_path: Path) -> None:
    """A child whose ``run`` raised (anything but the parent going away)
    ended with interpreter shutdown, which waits for every non-daemon
    thread: one the plugin left running kept it alive for good."""
    script = textwrap.dedent(
        """
        import threading, time
        from deepaas.engine.process import child_main

        def run(config, sock):
            threading.Thread(target=time.sleep, args=(3600,)).start()
            raise KeyboardInterrupt("escaped")

        child_main(run)
        """
    )
    ours, theirs = socket.socketpair()
    with ours, theirs:
        config = {"fd": theirs.fileno(), "parent_pid": os.getpid()}
        proc = subprocess.Popen(
            [sys.executable, "-c", script, json.dumps(config)],
            pass_fds=(theirs.fileno(),),
            env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            _, err = proc.communicate(timeout=HANG_S)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, 9)
                proc.wait()
    assert proc.returncode == 3  # EXIT_FAILED
    assert b"KeyboardInterrupt: escaped" in err


# -- plugin code in the API process ---------------------------------------------

BASE_EXCEPTIONS = """
from marshmallow import fields


class Own(BaseException):
    pass


def get_metadata():
    raise KeyboardInterrupt("no metadata today")


def _check(value):
    if value == "interrupt":
        raise KeyboardInterrupt("checked")
    if value == "own":
        raise Own("checked")
    if value == "exit":
        raise GeneratorExit()
    return True


def get_predict_args():
    return {"v": fields.Str(load_default="", validate=_check)}


def predict(v):
    return {"v": v}
"""


def test_base_exceptions_of_plugin_code_in_the_api_process_are_500s(serve) -> None:
    """get_metadata() and an argument's validator run in the API process,
    on its event loop: a KeyboardInterrupt there ended the server (it
    stopped listening), another BaseException dropped the connection with
    no answer."""
    srv = serve(BASE_EXCEPTIONS)
    status, body = srv.request("GET", "/v2/models/hostile/")
    assert status == 500
    assert "KeyboardInterrupt" in body["message"]
    assert "no metadata today" in body["message"]
    status, body = srv.request("GET", "/v2/models/")
    assert status == 200
    (listed,) = body["models"]
    assert listed["id"] == "hostile"
    assert "KeyboardInterrupt" in listed["error"]
    for value, name in [
        ("interrupt", "KeyboardInterrupt"),
        ("own", "Own"),
        ("exit", "GeneratorExit"),
    ]:
        status, body = srv.request("POST", f"{PREDICT}?v={value}")
        assert status == 500, (value, body)
        assert name in body["message"]
    assert srv.proc.poll() is None
    assert srv.request("POST", f"{PREDICT}?v=fine") == (
        200,
        {"status": "OK", "predictions": {"v": "fine"}},
    )


IMPORT_THREAD = """
import os
import threading
import time

# At import, in every process that imports it (the API process too): a
# thread that is no daemon and never ends (a metrics pusher, a file watcher).
threading.Thread(target=time.sleep, args=(3600,), name="plugin-pusher").start()


def predict(**kwargs):
    return {"pid": os.getpid()}
"""


def test_sigterm_stops_the_server_despite_a_plugin_thread(serve) -> None:
    """The API process imports the plugin; a thread it started there kept
    ``deepaas-run`` alive after it stopped (interpreter shutdown waits for
    every non-daemon thread) until something killed it."""
    srv = serve(IMPORT_THREAD, "--shutdown-timeout", "1")
    assert srv.request("POST", PREDICT)[0] == 200
    assert srv.stop(timeout=1 + 5 + 5) == 0, srv.output()[-2000:]
    assert "plugin-pusher" in srv.output()


RELATIVE_FILE = """
import os

from deepaas.model.v2.wrapper import ReturnedFile


def warm():
    # Models often work in a folder of their own.
    os.makedirs(os.environ["QA_WORK_DIR"], exist_ok=True)
    os.chdir(os.environ["QA_WORK_DIR"])


def predict(**kwargs):
    with open("answer.txt", "w") as fh:
        fh.write("from the model's folder")
    return ReturnedFile(filename="answer.txt", content_type="text/plain")
"""


def test_returned_file_with_a_path_relative_to_the_model_folder(
    serve, tmp_path: Path
) -> None:
    """The worker checked a relative ``ReturnedFile`` path in its own
    working directory, the API process opened it in its own: after the
    model's ``os.chdir`` the answer was a 500 (or another file)."""
    srv = serve(RELATIVE_FILE, env={"QA_WORK_DIR": str(tmp_path / "work")})
    status, body, _ = srv.call("POST", PREDICT, headers={"Accept": "text/plain"})
    assert status == 200, body
    assert body == b"from the model's folder"


NON_FINITE_METADATA = """
def get_metadata():
    return {"description": "scores", "best": float("nan"), "worst": float("-inf")}


def predict(**kwargs):
    return {}
"""


def test_nan_in_metadata_is_sent_as_null(serve) -> None:
    """The model document was encoded by Python's json, which writes bare
    ``NaN`` and ``-Infinity``: a 200 whose body is no JSON (browsers, jq,
    Go and Java refuse it)."""
    srv = serve(NON_FINITE_METADATA)
    for path in ("/v2/models/hostile/", "/v2/models/"):
        status, raw, _ = srv.call("GET", path)
        assert status == 200
        document = json.loads(raw, parse_constant=pytest.fail)  # strict JSON
        if path == "/v2/models/":
            (document,) = document["models"]
        assert (document["best"], document["worst"]) == (None, None)


HUGE_ERROR = """
from marshmallow import fields


def get_predict_args():
    return {"mb": fields.Int(load_default=0)}


def predict(mb):
    # An exception that quotes a whole input: megabytes of text.
    raise ValueError("bad input: " + "x" * (mb << 20) + " (end)")
"""


def test_a_huge_exception_text_is_cut(serve) -> None:
    """A plugin's exception text crossed whole: 20 MB to the client as the
    error's message, twice that to the server's log (the message, and the
    traceback that ends with it), on the event loop."""
    srv = serve(HUGE_ERROR)
    status, body = srv.request("POST", f"{PREDICT}?mb=20")
    assert status == 500
    message = body["message"]
    assert len(message) <= 16_000
    assert message.startswith("ValueError: bad input: xxx")
    assert message.endswith("xxx (end)") and "..." in message
    until(lambda: "bad input" in srv.output(), "the failure is logged")
    assert srv.log.stat().st_size < 1 << 20


CLOSES_ITS_SOCKET = """
import os

from marshmallow import fields


def get_predict_args():
    return {"close": fields.Bool(load_default=False)}


def predict(close):
    if close:
        # As a daemonizing library does: every descriptor past stdio closed,
        # the worker's socket to the server among them.
        os.closerange(3, 65536)
    return {"pid": os.getpid()}
"""


def test_a_call_that_kills_every_worker_after_answering_fails(serve) -> None:
    """The worker computed the call, then died sending it (its socket was
    closed): a computed call whose worker died went back to the queue, for
    the next worker to die of it, and so on with a growing backoff, up to
    30 s a turn: the request never ended and the model served nothing."""
    srv = serve(CLOSES_ITS_SOCKET)
    status, body = srv.request("POST", f"{PREDICT}?close=true")
    assert status == 503, body
    assert "exited with code" in body["message"]
    status, body = srv.request("POST", PREDICT)
    assert status == 200, body


TAKES_OVER_SIGNALS = """
import signal

from marshmallow import fields


def _take_signals():
    # A library set up on first use that installs its own handlers.
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def get_predict_args():  # called at load, on the main thread
    _take_signals()
    return {"x": fields.Int(load_default=1)}


def get_metadata():  # called on the metadata thread, at each request
    _take_signals()
    return {"description": "signals taken"}


def predict(**kwargs):
    return {}
"""


def test_plugin_introspection_cannot_take_over_the_stop_signals(serve) -> None:
    """get_predict_args() and get_metadata() run in the API process, where
    SIGTERM and SIGINT set to be ignored stopped the server no more. At load
    the server's handlers are installed after them; get_metadata() runs on
    a thread of its own, where Python refuses to set a handler: its
    document is a 500 saying so (deepaas.model.v2.plugin_calls)."""
    srv = serve(TAKES_OVER_SIGNALS, "--shutdown-timeout", "1")
    status, body = srv.request("GET", "/v2/models/hostile/")
    assert status == 500, body
    assert "signal only works in main thread" in body["message"], body
    status, body = srv.request("POST", PREDICT)
    assert status == 200, body
    assert srv.stop(timeout=1 + 5 + 5) == 0


def test_the_message_of_a_plugins_deepaas_error_is_any_value() -> None:
    """The message is cut to its bound: one that is no str (a plugin's
    ``DeepaasError(422, 12345)``) must not fail the cut."""
    from deepaas.engine.failures import describe_exception
    from deepaas.exceptions import DeepaasError

    assert describe_exception(DeepaasError(422, 12345))[:2] == (422, "12345")  # type: ignore[arg-type]
