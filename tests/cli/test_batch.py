"""``deepaas-cli predict --input-dir/--inputs``: batch and FaaS mode.

Real worker processes (the server's engine) and real files: each run
spawns its workers, so the inputs' outcomes, the output files and the exit
status are what a user gets. Nothing waits on a clock: a run returns when
every input is done.
"""

from __future__ import annotations

import ctypes
import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from deepaas.cmd import cli
from deepaas.cmd.cli_batch_run import output_name
from deepaas.model import loading
from tests.cli.test_cli import script
from tests.fakes.nvml import FakeGpu, FakePynvml

BATCH = loading.PluginSpec("batchy", "tests.cli.batch_plugin")
NOFILE = loading.PluginSpec("nofile", "tests.cli.nofile_plugin")
BATCHER = loading.PluginSpec("batcher", "tests.cli.batch_batcher")
COLLIDE = loading.PluginSpec("collide", "tests.cli.batch_collide")
SPECS = (BATCH, NOFILE, BATCHER, COLLIDE)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv), specs=SPECS)
    out, err = capsys.readouterr()
    return code, out, err


def inputs(folder: Path, **files: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name.replace("_", ".")).write_text(content)
    return folder


def results(folder: Path) -> dict[str, Any]:
    """The files of ``folder`` by name: a JSON one as the plugin's dict
    (a v2 plugin's answer is ``{"status": "OK", "predictions": ...}``)."""
    found: dict[str, Any] = {}
    for path in sorted(folder.iterdir()):
        if path.suffix == ".json":
            found[path.name] = json.loads(path.read_text())["predictions"]
        else:
            found[path.name] = path.read_bytes()
    return found


def test_every_file_of_a_folder_gives_one_result(capsys, tmp_path):
    src = inputs(tmp_path / "in", a_txt="alpha", b_csv="beta", c="gamma")
    (src / ".hidden").write_text("skipped")
    (src / "sub").mkdir()  # sub-folders are not inputs
    out = tmp_path / "out"
    code, stdout, err = run(
        capsys, "--model-name", "batchy", "predict",
        "--input-dir", str(src), "--output-dir", str(out), "--suffix", "!",
    )  # fmt: skip
    assert code == 0, err
    assert stdout == ""  # stdout carries no result in batch mode
    got = results(out)
    assert sorted(got) == ["a.txt.json", "b.csv.json", "c.json"]
    assert got["a.txt.json"]["content"] == "alpha!"
    assert got["c.json"]["name"] == "c"
    assert {r["pid"] for r in got.values()} != {os.getpid()}  # in a worker
    assert "3 ok, 0 failed, 3 inputs in" in err
    assert err.rstrip().endswith(f"results in {out}")


def test_failures_are_counted_reported_and_the_rest_still_run(capsys, tmp_path):
    src = inputs(
        tmp_path / "in", good1="one", bad="fail", boom="crash", good2="two", p="print"
    )
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict",
        "--input-dir", str(src), "--output-dir", str(out),
    )  # fmt: skip
    assert code == 1  # the model failed on some inputs
    assert sorted(results(out)) == ["good1.json", "good2.json", "p.json"]
    assert "deepaas-cli: failed: bad: " in err and "cannot use bad" in err
    assert "deepaas-cli: failed: boom: " in err  # its worker died: only it failed
    assert "printing for p" in err  # what the plugin prints goes to stderr
    assert "3 ok, 2 failed, 5 inputs in" in err
    assert "Traceback" not in err


def test_a_model_that_cannot_start_is_one_error(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("BATCHY_WARM_FAILS", "1")
    src = inputs(tmp_path / "in", a="a", b="b")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict",
        "--input-dir", str(src), "--output-dir", str(out),
    )  # fmt: skip
    assert code == 1
    assert "deepaas-cli: error: model 'batchy' cannot start: " in err
    assert "no weights found" in err
    assert list(out.iterdir()) == []
    assert "Traceback" not in err


def test_a_batching_plugin_gets_batches(capsys, tmp_path):
    src = inputs(tmp_path / "in", **{f"n{i:02d}": str(i) for i in range(20)})
    (src / "bad").write_text("bad")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batcher", "predict",
        "--input-dir", str(src), "--output-dir", str(out),
    )  # fmt: skip
    assert code == 1, err
    got = results(out)
    assert len(got) == 20 and "bad.json" not in got
    assert all(got[f"n{i:02d}.json"]["text"] == str(i) for i in range(20))
    assert all(1 <= r["batch_size"] <= 4 for r in got.values())
    assert "deepaas-cli: failed: bad: ValueError: bad item" in err  # only it failed


def test_listed_files_and_the_input_arg(capsys, tmp_path):
    one = inputs(tmp_path / "x", f1="first")
    two = inputs(tmp_path / "y", f2="second")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict",
        "--inputs", str(one / "f1"), str(two / "f2"),
        "--input-arg", "other", "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    got = results(out)
    assert got["f1.json"] == {"no_data": True, "other": "f1"}
    assert got["f2.json"] == {"no_data": True, "other": "f2"}


def test_jobs_and_devices_place_workers_like_the_server(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1,2")
    src = inputs(tmp_path / "in", **{f"n{i}": str(i) for i in range(12)})
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict", "--input-dir", str(src),
        "--output-dir", str(out), "--jobs", "2", "--devices", "2",
    )  # fmt: skip
    assert code == 0, err
    got = results(out)
    assert len(got) == 12
    # Within the inherited GPUs only, each worker given the physical GPU.
    assert {r["visible"] for r in got.values()} == {"2"}
    assert {r["device"] for r in got.values()} == {"cuda:0"}
    assert len({r["pid"] for r in got.values()}) <= 2
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "1,2"  # this process: as it was


def test_on_a_four_gpu_node_only_the_inherited_gpu_is_used(
    capsys, tmp_path, monkeypatch
):
    """Issue 16's number, in batch mode: CUDA_VISIBLE_DEVICES=1 on a (fake)
    4-GPU node, --jobs 4: every worker on GPU 1, none on 0, 2, 3."""
    uuids = [
        f"GPU-{i}{i}{i}{i}{i}{i}{i}{i}-2222-3333-4444-555555555555" for i in range(4)
    ]
    monkeypatch.setitem(sys.modules, "pynvml", FakePynvml([FakeGpu(u) for u in uuids]))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    src = inputs(tmp_path / "in", **{f"n{i:02d}": str(i) for i in range(16)})
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict", "--input-dir", str(src),
        "--output-dir", str(out), "--jobs", "4",
    )  # fmt: skip
    assert code == 0, err
    got = results(out)
    assert len(got) == 16
    # each worker is given the physical GPU by its UUID (docs/hpc.md)
    assert {r["visible"] for r in got.values()} == {uuids[1]}
    assert {r["device"] for r in got.values()} == {"cuda:0"}


def test_a_device_outside_the_inherited_ones_is_a_usage_error(
    capsys, tmp_path, monkeypatch
):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    src = inputs(tmp_path / "in", a="a")
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict", "--input-dir", str(src),
        "--output-dir", str(tmp_path / "out"), "--devices", "0",
    )  # fmt: skip
    assert code == 2
    assert "deepaas-cli: error: --devices: " in err and "CUDA_VISIBLE_DEVICES" in err


def test_raw_bytes_small_and_big_and_a_named_file(capsys, tmp_path):
    big = 3 << 20  # more than a worker sends inline: a result file, moved
    src = inputs(tmp_path / "in", small="bytes:10", large=f"bytes:{big}", n="named")
    out = tmp_path / "out"
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict",
        "--input-dir", str(src), "--output-dir", str(out),
    )  # fmt: skip
    assert code == 0, err
    assert sorted(p.name for p in out.iterdir()) == [
        "large.bin", "n.png", "small.bin",
    ]  # fmt: skip
    assert (out / "small.bin").read_bytes() == b"\x00" * 10
    assert (out / "large.bin").stat().st_size == big
    assert (out / "n.png").read_bytes() == b"\x89PNG..."


def test_binary_results_are_written_with_their_type(tmp_path):
    src = inputs(tmp_path / "in", a_csv="x,y\n1,2\n", b_csv="x,y\n3,4\n")
    out = tmp_path / "out"
    proc = script(
        "--model-name", "demo", "predict", "--input-dir", str(src),
        "--output-dir", str(out), "--accept", "image/png",
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["a.csv.png", "b.csv.png"]
    assert (out / "a.csv.png").read_bytes().startswith(b"\x89PNG\r\n\x1a\n")
    assert proc.stdout == b""
    assert b"\x1b[" not in proc.stderr  # not a terminal: plain lines


def test_plugin_arguments_named_like_batch_options_keep_them(capsys, tmp_path):
    code, out, err = run(
        capsys, "--model-name", "collide", "predict", "--jobs", "5", "--inputs", "y"
    )
    assert code == 0, err
    assert json.loads(out)["predictions"] == {"jobs": 5, "inputs": "y", "data": None}
    src = inputs(tmp_path / "in", a="a")
    code, _, err = run(
        capsys, "--model-name", "collide", "predict", "--input-dir", str(src),
        "--output-dir", str(tmp_path / "out"), "--jobs", "7",
    )  # fmt: skip
    assert code == 0, err
    assert results(tmp_path / "out")["a.json"] == {
        "jobs": 7, "inputs": "x", "data": "a",
    }  # fmt: skip


def test_the_single_input_predict_is_unchanged(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("a,b\n1,2\n")
    proc = script("--model-name", "demo", "predict", "--file", str(data))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["args"]["file"]["original_filename"] == "d.csv"


IN = ["--input-dir", "{tmp}/in"]
BAD = [
    (
        ["--input-dir", "{tmp}/missing"],
        "--input-dir '{tmp}/missing': no such directory",
    ),
    (["--input-dir", "{tmp}/empty"], "--input-dir '{tmp}/empty': no files in it"),
    (["--input-dir", "{tmp}/in/a"], "--input-dir '{tmp}/in/a': not a directory"),
    (["--inputs", "{tmp}/nope"], "--inputs: no such file: '{tmp}/nope'"),
    ([*IN, "--inputs", "{tmp}/in/a"], "two inputs are named 'a'"),
    (
        [*IN, "--output-dir", "{tmp}/in/a/x"],
        "--output-dir '{tmp}/in/a/x': cannot create it: Not a directory",
    ),
    ([*IN, "--output-dir", "{tmp}/in/a"], "--output-dir '{tmp}/in/a': not a directory"),
    (
        [*IN, "--input-arg", "suffix"],
        "--input-arg 'suffix': not a file argument of model 'batchy'; "
        "its file arguments: data, other",
    ),
    ([*IN, "--input-arg", "zzz"], "--input-arg 'zzz': model 'batchy' has no such"),
    ([*IN, "--data", "{tmp}/in/a"], "--data is given by each input in batch mode"),
    (
        ["--output-dir", "{tmp}/out"],
        "--output-dir: only with --input-dir DIR or --inputs FILE... (batch mode)",
    ),
    ([*IN, "--jobs", "0"], "argument --jobs: must be from 1 to 256, not 0"),
    # as deepaas-run --workers: a million processes ran a 24 GB machine out
    # of memory (with as many inputs)
    ([*IN, "--jobs", "257"], "argument --jobs: must be from 1 to 256, not 257"),
    (
        [*IN, "--deepaas_method_output", "{tmp}/x"],
        "--deepaas_method_output writes one result: batch mode writes each into "
        "--output-dir DIR",
    ),
    (  # an empty path too (it was taken for no option, and ignored)
        [*IN, "--deepaas_method_output", ""],
        "--deepaas_method_output writes one result: batch mode writes each into ",
    ),
    (
        [*IN, "--output-dir", "{tmp}/in/"],
        "--output-dir '{tmp}/in/' is the --input-dir: a later run would take the "
        "results for inputs",
    ),
]


@pytest.mark.parametrize("argv, message", BAD)
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, argv, message):
    inputs(tmp_path / "in", a="a")
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path) for a in argv]
    if "--output-dir" not in argv and "--jobs" not in argv:
        argv += ["--output-dir", str(tmp_path / "out")]
    code, _, err = run(capsys, "--model-name", "batchy", "predict", *argv)
    assert code == 2, err
    assert message.format(tmp=tmp_path) in err
    assert "Traceback" not in err


def test_an_output_dir_no_one_may_write_in_is_refused_as_root_too(capsys, tmp_path):
    """Root could write its results into a 0555 folder: refused (exit 2)
    before any input runs, as for another user."""
    inputs(tmp_path / "in", a="a")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        code, _, err = run(
            capsys, "--model-name", "batchy", "predict", "--input-dir",
            str(tmp_path / "in"), "--output-dir", str(locked),
        )  # fmt: skip
    finally:
        locked.chmod(0o755)
    assert code == 2, err
    assert f"--output-dir '{locked}': cannot write in it: Permission denied" in err
    assert list(locked.iterdir()) == []


def test_no_output_dir(capsys, tmp_path):
    inputs(tmp_path / "in", a="a")
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict", "--input-dir", str(tmp_path / "in")
    )
    assert code == 2
    assert "batch mode writes its results into --output-dir DIR" in err


def test_a_plugin_without_a_file_argument(capsys, tmp_path):
    inputs(tmp_path / "in", a="a")
    code, _, err = run(
        capsys, "--model-name", "nofile", "predict", "--input-dir",
        str(tmp_path / "in"), "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 2
    assert "model 'nofile' has no file argument" in err


def _no_dac_override() -> None:
    """In the child, before exec: drop the capabilities that let root read
    and write whatever the file modes say (CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH) from the bounding set, so that a 0o000 file is
    unreadable to it as to any user."""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (1, 2):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


PR_CAPBSET_DROP = 24


def _nobody() -> dict[str, Any]:
    """How to start a child to whom file modes apply (the tests may run as
    root)."""
    return {"preexec_fn": _no_dac_override} if os.geteuid() == 0 else {}


def test_unreadable_input_and_unwritable_output_dir(tmp_path):
    src = inputs(tmp_path / "in", a_csv="x\n1\n", b_csv="x\n2\n", c_csv="x\n3\n")
    (src / "b.csv").chmod(0)
    out = tmp_path / "out"
    out.mkdir()
    child = _nobody()
    proc = script(
        "--model-name", "demo", "predict", "--input-dir", str(src),
        "--output-dir", str(out), env={"HOME": str(tmp_path)}, **child,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 2, err  # an input could not be read
    assert "deepaas-cli: failed: b.csv: cannot read it: Permission denied" in err
    assert sorted(p.name for p in out.iterdir()) == ["a.csv.json", "c.csv.json"]
    assert "2 ok, 1 failed, 3 inputs in" in err
    locked = tmp_path / "locked"
    locked.mkdir(mode=0o555)
    locked.chmod(0o555)
    proc = script(
        "--model-name", "demo", "predict", "--inputs", str(src / "a.csv"),
        "--output-dir", str(locked), env={"HOME": str(tmp_path)}, **child,
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"--output-dir '{locked}': cannot write in it: Permission denied" in err
    assert "Traceback" not in err


ROOT = Path(__file__).resolve().parents[2]


def fifo(tmp_path: Path) -> str:
    path = str(tmp_path / "gate")
    os.mkfifo(path)
    return path


def open_gate(path: str) -> None:
    with open(path, "w") as gate:
        gate.write("go")


DRIVER = (
    "import sys\n"
    "from deepaas.cmd.cli import main\n"
    "from deepaas.model.loading import PluginSpec\n"
    "spec = PluginSpec('batchy', 'tests.cli.batch_plugin')\n"
    "sys.exit(main(sys.argv[1:], specs=[spec]))\n"
)


@pytest.mark.timeout(60)
def test_a_progress_bar_on_a_terminal(tmp_path):
    pytest.importorskip("rich")
    from tests.cli.test_progress_tty import Terminal

    gate = fifo(tmp_path)
    src = inputs(tmp_path / "in", a="one", b="two", c="three")
    (src / "z").write_text(f"gate:{gate}")  # the last input waits for the test
    out = tmp_path / "out"
    term = Terminal(
        ["predict", "--input-dir", str(src), "--output-dir", str(out)], DRIVER
    )
    try:
        screen = term.read_until(b"3/4")  # the bar, while z is running
        assert b"\x1b[" in screen  # drawn in place
        assert b"deepaas-cli: progress:" not in screen
    finally:
        open_gate(gate)
    assert term.finish() == 0
    assert b"4/4" in term.seen
    assert b"deepaas-cli: 4 ok, 0 failed, 4 inputs in" in term.seen
    assert sorted(p.name for p in out.iterdir()) == [
        "a.json", "b.json", "c.json", "z.json",
    ]  # fmt: skip


@pytest.mark.timeout(60)
@pytest.mark.parametrize(
    ("how", "status", "said", "sigint"),
    [
        (signal.SIGINT, 130, "interrupted", signal.SIG_DFL),  # Ctrl-C
        (signal.SIGTERM, 143, "terminated", signal.SIG_DFL),  # scancel, kubectl
        # Started in the background by a script: SIGINT ignored.
        (signal.SIGTERM, 143, "terminated", signal.SIG_IGN),
    ],
)
def test_interrupted_it_stops_its_workers_and_leaves_no_partial_file(
    tmp_path, how, status, said, sigint
):
    gate = fifo(tmp_path)
    # b waits at the gate, c waits for the worker, d for a slot (the command
    # keeps two calls in flight a worker): all three are cancelled.
    src = inputs(tmp_path / "in", a="one", c="three", d="four", e="five")
    (src / "b").write_text(f"gate:{gate}")  # b waits: the run is interrupted
    out = tmp_path / "out"
    scratch = tmp_path / "scratch"  # the command's temporary directory
    scratch.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-c", DRIVER, "predict", "--input-dir", str(src),
         "--output-dir", str(out)],
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(scratch)},
        cwd=ROOT, preexec_fn=lambda: signal.signal(signal.SIGINT, sigint),
    )  # fmt: skip
    try:
        assert proc.stderr is not None
        seen = b""
        deadline = time.monotonic() + 30
        while b"at the gate: pid " not in seen:  # the worker runs b
            left = deadline - time.monotonic()
            assert left > 0, seen
            ready, _, _ = select.select([proc.stderr], [], [], left)
            chunk = os.read(proc.stderr.fileno(), 65536) if ready else b""
            assert chunk or not ready, seen  # not closed before
            seen += chunk
        seen += b"\n" if not seen.endswith(b"\n") else b""
        worker = int(seen.split(b"at the gate: pid ")[1].split(b"\n")[0])
        proc.send_signal(how)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == status
    assert err.decode().rstrip().endswith(f"deepaas-cli: {said}")
    assert b"Traceback" not in seen + err
    assert b"shutting down" not in seen + err  # b, c: cancelled, not failed
    # The command stopped its worker, and reaped it, before it exited.
    with pytest.raises(ProcessLookupError):
        os.kill(worker, 0)
    assert [p.name for p in out.iterdir()] in (["a.json"], [])  # b: nothing
    assert list(scratch.iterdir()) == []  # the inputs' copies removed


def test_output_names():
    assert output_name("/a/cat.jpg", "application/json") == "cat.jpg.json"
    assert output_name("cat.jpg", "image/png") == "cat.jpg.png"
    assert output_name("x", "text/plain; charset=utf-8") == "x.txt"
    assert output_name("x", "application/x-unknown-thing") == "x.bin"
    assert output_name("x", "application/octet-stream", "m.png") == "x.png"
    assert output_name("x", "application/octet-stream", "noext") == "x.bin"


def test_batch_options_are_in_the_help(tmp_path):
    proc = script("--model-name", "demo", "predict", "--help")
    assert proc.returncode == 0
    for option in ("--input-dir", "--inputs", "--input-arg", "--output-dir", "--jobs"):
        assert option.encode() in proc.stdout


def test_no_more_workers_than_inputs(capsys, tmp_path, monkeypatch):
    """--jobs 200 for two inputs starts two workers, not two hundred."""
    from deepaas.cmd import cli_batch_run

    sizes: list[int] = []
    real = cli_batch_run.PoolConfig

    def config(**kwargs):
        sizes.append(kwargs["size"])
        return real(**kwargs)

    monkeypatch.setattr(cli_batch_run, "PoolConfig", config)
    src = inputs(tmp_path / "in", a="a", b="b")
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict", "--input-dir", str(src),
        "--output-dir", str(tmp_path / "out"), "--jobs", "200",
    )  # fmt: skip
    assert code == 0, err
    assert sizes == [2]
    assert len(results(tmp_path / "out")) == 2


def test_a_failure_is_one_line_whatever_the_file_is_named(capsys, tmp_path):
    """A newline or an escape sequence in an input's name is shown escaped:
    one line per failure, nothing sent to the terminal."""
    src = tmp_path / "in"
    src.mkdir()
    (src / "two\nlines\x1b[31mred").write_text("fail")
    code, _, err = run(
        capsys, "--model-name", "batchy", "predict",
        "--input-dir", str(src), "--output-dir", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 1
    [line] = [x for x in err.splitlines() if "failed: two" in x]
    assert line.startswith("deepaas-cli: failed: two\\nlines\\x1b[31mred: ")
    assert "cannot use" in line
    assert "\x1b" not in err
