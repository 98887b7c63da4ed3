"""``deepaas-run`` with a home it cannot write: state and scratch elsewhere.

HPC and container runtimes without root (Apptainer, udocker) give a job a
read-only image, a home it cannot (or must not) write, ``$TMPDIR`` and
``$SCRATCH``. The tests run the real command with ``HOME`` pointing where
nothing can be written. We are root on the test machine, so a ``chmod``-ed
directory would still be writable: ``HOME`` is a path *under a regular file*
(every mkdir there fails with ENOTDIR, for root too). Running as ``nobody``
(``setpriv``) was tried: here the interpreter lives under ``/root`` (mode
700), so ``nobody`` cannot start workers.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.deepaas_run import DEEPAAS_RUN, REPO_ROOT, DeepaasRun

pytestmark = pytest.mark.timeout(120)

PLUGIN = ("--plugin", "tests.plugins.echo", "--devices", "cpu")


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory\n")
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    return {
        "home": blocker / "home",  # unwritable, even by root
        "tmpdir": tmpdir,
        "scratch": tmp_path / "scratch",
        "state": tmp_path / "state",
        "blocked": blocker / "state",
    }


def _env(places: dict[str, Path], **more: str) -> dict[str, str]:
    return {
        "HOME": str(places["home"]),
        "XDG_STATE_HOME": "",  # platformdirs: ~/.local/state
        "TMPDIR": str(places["tmpdir"]),
        "SCRATCH": "",
        **more,
    }


def _serves(srv: DeepaasRun) -> None:
    status, body = srv.request("POST", "/v2/models/echo/predict/?x=1")
    assert (status, body["predictions"]["x"]) == (200, 2)


def test_home_unwritable_state_goes_to_tmpdir_with_a_warning(
    server: Callable[..., DeepaasRun], places: dict[str, Path]
) -> None:
    srv = server(*PLUGIN, env=_env(places)).wait_ready()
    _serves(srv)
    state = places["tmpdir"] / f"deepaas-state-{os.getuid()}"
    assert (state / "trainings.sqlite3").exists()
    said = srv.output()
    assert f"WARNING deepaas.places: state directory: {state}, in the temp" in said
    assert f"{places['home']}/.local/state/deepaas: Not a directory" in said
    assert "--state-dir to choose" in said
    # Scratch (uploads) in TMPDIR too: the server's own folder there.
    assert any(p.name.startswith("deepaas-") for p in places["tmpdir"].iterdir())


def test_scratch_comes_before_tmpdir(
    server: Callable[..., DeepaasRun], places: dict[str, Path]
) -> None:
    env = _env(places, SCRATCH=str(places["scratch"]))
    srv = server(*PLUGIN, env=env).wait_ready()
    _serves(srv)
    assert (places["scratch"] / "deepaas" / "state" / "trainings.sqlite3").exists()
    assert "INFO deepaas.places: state directory:" in srv.output()


def test_state_dir_flag_is_used_as_given(
    server: Callable[..., DeepaasRun], places: dict[str, Path]
) -> None:
    srv = server(*PLUGIN, "--state-dir", str(places["state"]), env=_env(places))
    _serves(srv.wait_ready())
    assert (places["state"] / "trainings.sqlite3").exists()
    assert "deepaas.places" not in srv.output()  # nothing to say


def test_an_unwritable_state_dir_is_a_one_line_start_up_error(
    places: dict[str, Path],
) -> None:
    done = subprocess.run(
        [
            DEEPAAS_RUN,
            "--listen-port",
            "0",
            *PLUGIN,
            "--state-dir",
            str(places["blocked"]),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO_ROOT), **_env(places)},
    )
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        f"deepaas-run: error: state_dir '{places['blocked']}' is not writable "
        "(Not a directory): pass a writable --state-dir (or DEEPAAS_STATE_DIR)"
    ]
