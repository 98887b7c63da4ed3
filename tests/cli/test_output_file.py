"""``deepaas-cli predict --deepaas_method_output PATH``: a file is replaced
whole or not at all, a device or a FIFO is written where it stands, and
the name of one of the command's open descriptors (``/dev/stdout``,
``/dev/fd/1``...) through that descriptor (``>> log`` keeps its append).

The failures are real ones: a write past ``RLIMIT_FSIZE`` (as a full disk,
``EFBIG`` in the middle of the result), a folder that does not exist, a
read-only file for a user whom file modes bind.
"""

from __future__ import annotations

import os
import resource
import shutil
import stat
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest

from deepaas.cmd import cli, cli_output
from tests.cli.test_batch import DRIVER, ROOT, _nobody
from tests.cli.test_cli import SCRIPT, run

OCTETS = ["--accept", "application/octet-stream"]


def predict_to(capsys, target: Path | str, data: str = "héllo"):
    return run(
        capsys, "--model-name", "demo_class", "predict", "--data", data, *OCTETS,
        "--deepaas_method_output", str(target),
    )  # fmt: skip


def test_an_old_file_is_replaced_and_keeps_its_mode(capsys, tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"the previous result, longer than the new one")
    target.chmod(0o640)
    code, out, err = predict_to(capsys, target)
    assert code == 0, err
    assert out == ""
    assert target.read_bytes() == "héllo".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]  # no temp file
    assert f"wrote 6 bytes (application/octet-stream) to {target}" in err


def test_a_new_file_gets_the_umask_mode(capsys, tmp_path):
    target = tmp_path / "new.bin"
    before = os.umask(0o027)
    try:
        code, _, err = predict_to(capsys, target)
    finally:
        os.umask(before)
    assert code == 0, err
    assert target.read_bytes() == "héllo".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["new.bin"]


def test_a_symlink_keeps_pointing_at_the_replaced_file(capsys, tmp_path):
    real = tmp_path / "data" / "result.bin"
    real.parent.mkdir()
    real.write_bytes(b"old")
    link = tmp_path / "latest.bin"
    link.symlink_to(real)
    code, _, err = predict_to(capsys, link)
    assert code == 0, err
    assert link.is_symlink()
    assert real.read_bytes() == "héllo".encode()
    assert sorted(p.name for p in real.parent.iterdir()) == ["result.bin"]


def test_no_folder_for_the_file_is_one_error(capsys, tmp_path):
    target = tmp_path / "missing" / "out.bin"
    code, out, err = predict_to(capsys, target)
    assert code == 2  # a usage error, not the model's failure (1)
    assert out == ""
    assert f"cannot write '{target}': no folder {tmp_path / 'missing'}" in err
    assert "Traceback" not in err


def _small_files() -> None:
    """In the child: no file may grow past 64 KiB (Python ignores SIGXFSZ,
    so a write past it fails with EFBIG, as on a full disk)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))


def test_a_write_that_fails_midway_leaves_the_old_file(tmp_path):
    data = tmp_path / "in.txt"
    data.write_text("bytes:500000")  # batchy's answer: 500000 bytes, in memory
    target = tmp_path / "out.bin"
    target.write_bytes(b"the previous, good result")
    proc = subprocess.run(
        [sys.executable, "-c", DRIVER, "predict", "--data", str(data),
         "--deepaas_method_output", str(target)],
        capture_output=True, timeout=60, cwd=ROOT, preexec_fn=_small_files,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert f"deepaas-cli: error: cannot write '{target}': File too large" in err
    assert target.read_bytes() == b"the previous, good result"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.txt", "out.bin"]


def test_a_read_only_file_is_not_replaced(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"keep me")
    target.chmod(0o444)
    proc = subprocess.run(
        [str(SCRIPT), "--model-name", "demo_class", "predict", "--data", "x",
         *OCTETS, "--deepaas_method_output", str(target)],
        capture_output=True, timeout=60, **_nobody(),
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 2, err  # a usage error, found before the model runs
    assert f"cannot write '{target}': Permission denied" in err
    assert target.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_fifo_is_written_where_it_stands(capsys, tmp_path):
    target = tmp_path / "results.fifo"
    os.mkfifo(target)
    got: list[bytes] = []

    def reader() -> None:  # opens once the command opens it to write
        with open(target, "rb") as fifo:
            got.append(fifo.read())

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    code, _, err = predict_to(capsys, target)
    thread.join(timeout=30)
    assert code == 0, err
    assert not thread.is_alive(), "the command did not write into the FIFO"
    assert got == ["héllo".encode()]
    assert stat.S_ISFIFO(target.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["results.fifo"]


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_dev_stdout_writes_into_the_redirected_file_itself(tmp_path, path):
    """``> log``: the file the shell opened gets the result; a rename would
    have put another file in its place (the shell's would be unlinked)."""
    log = tmp_path / "log"
    with open(log, "wb") as stdout:
        proc = subprocess.run(
            [str(SCRIPT), "--model-name", "demo_class", "predict", "--data", "hi",
             *OCTETS, "--deepaas_method_output", path],
            stdout=stdout, stderr=subprocess.PIPE, timeout=60,
        )  # fmt: skip
        assert os.fstat(stdout.fileno()).st_ino == log.stat().st_ino
    assert proc.returncode == 0, proc.stderr
    assert log.read_bytes() == b"hi"
    assert [p.name for p in tmp_path.iterdir()] == ["log"]


def _predict_into(path: str, **streams) -> subprocess.CompletedProcess[bytes]:
    """A real ``deepaas-cli`` writing ``hi`` to ``path``, with ``streams``
    (``stdout=``, ``stderr=``) as the shell would have opened them."""
    streams.setdefault("stdout", subprocess.PIPE)
    streams.setdefault("stderr", subprocess.PIPE)
    return subprocess.run(
        [str(SCRIPT), "--model-name", "demo_class", "predict", "--data", "hi",
         *OCTETS, "--deepaas_method_output", path],
        timeout=60, **streams,
    )  # fmt: skip


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_dev_stdout_appends_to_a_file_opened_to_append(tmp_path, path):
    """``>> log``: the result is written through the shell's descriptor, so
    it lands after what the file held; opening the name again with "wb"
    would have emptied it."""
    log = tmp_path / "log"
    log.write_bytes(b"old\n")
    with open(log, "ab") as stdout:
        proc = _predict_into(path, stdout=stdout)
    assert proc.returncode == 0, proc.stderr
    assert log.read_bytes() == b"old\nhi"
    assert [p.name for p in tmp_path.iterdir()] == ["log"]


def test_proc_pid_fd_of_the_command_itself_appends(tmp_path):
    """``/proc/PID/fd/1`` with the command's own PID (``exec`` keeps the
    shell's) is its stdout."""
    log = tmp_path / "log"
    log.write_bytes(b"old\n")
    command = " ".join(
        [f"exec {SCRIPT} --model-name demo_class predict --data hi", *OCTETS,
         "--deepaas_method_output /proc/$$/fd/1"]
    )  # fmt: skip
    with open(log, "ab") as stdout:
        proc = subprocess.run(
            ["sh", "-c", command], stdout=stdout, stderr=subprocess.PIPE, timeout=60
        )
    assert proc.returncode == 0, proc.stderr
    assert log.read_bytes() == b"old\nhi"


def test_own_descriptor_names_only_our_open_descriptors(tmp_path):
    mine, theirs = os.getpid(), os.getppid()
    with open(tmp_path / "f", "wb") as fh:
        fd = fh.fileno()
        assert cli_output.own_descriptor("/dev/stdout") == 1
        assert cli_output.own_descriptor("/dev/stderr") == 2
        assert cli_output.own_descriptor(f"/dev/fd/{fd}") == fd
        assert cli_output.own_descriptor(f"/proc/self/fd/{fd}") == fd
        assert cli_output.own_descriptor(f"/proc/{mine}/fd/{fd}") == fd
        assert cli_output.own_descriptor(f"/proc/{theirs}/fd/{fd}") is None
    assert cli_output.own_descriptor(f"/dev/fd/{fd}") is None  # closed now
    assert cli_output.own_descriptor("/dev/fd/99999999999999999999") is None
    assert cli_output.own_descriptor("/dev/null") is None
    assert cli_output.own_descriptor(str(tmp_path / "f")) is None


def test_dev_stderr_appends_to_a_file_opened_to_append(tmp_path):
    """``2>> log``: the result, then the line that says it was written."""
    log = tmp_path / "log"
    log.write_bytes(b"old\n")
    with open(log, "ab") as stderr:
        proc = _predict_into("/dev/stderr", stderr=stderr)
    text = log.read_bytes()
    assert proc.returncode == 0, text
    assert proc.stdout == b""
    assert text.startswith(b"old\nhi"), text
    assert b"wrote 2 bytes (application/octet-stream) to /dev/stderr\n" in text


def test_an_fd_that_is_not_open_is_a_path_like_any_other(tmp_path):
    """``/dev/fd/N`` for an N not open here names nothing: one error, no
    traceback."""
    proc = _predict_into("/dev/fd/97")
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert "cannot write '/dev/fd/97': No such file or directory" in err
    assert "Traceback" not in err


@pytest.mark.parametrize("path", ["/dev/stdin", "/dev/fd/0"])
def test_stdin_from_a_file_is_never_replaced_by_the_result(tmp_path, path):
    """``< input --deepaas_method_output /dev/stdin``: the name resolves to
    the input file, which a replace would have overwritten with the result;
    a descriptor open for reading only is a usage error, told before the
    model runs."""
    source = tmp_path / "input.txt"
    source.write_bytes(b"precious\n")
    with open(source, "rb") as stdin:
        proc = _predict_into(path, stdin=stdin)
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"cannot write {path!r}: {path} is open for reading only" in err
    assert "Traceback" not in err
    assert source.read_bytes() == b"precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["input.txt"]


def test_dev_null_is_written_where_it_stands(tmp_path):
    proc = _predict_into("/dev/null")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b""
    assert b"wrote 2 bytes (application/octet-stream) to /dev/null" in proc.stderr


@pytest.mark.parametrize("path", ["/dev/stdout", "/dev/fd/1", "/proc/self/fd/1"])
def test_dev_stdout_on_a_pipe(tmp_path, path):
    proc = _predict_into(path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == b"hi"


def test_a_file_in_dev_shm_is_replaced_too(capsys):
    """Only a descriptor's name is written in place, not all of /dev."""
    if not os.path.isdir("/dev/shm") or not os.access("/dev/shm", os.W_OK):
        pytest.skip("no writable /dev/shm")
    folder = Path(tempfile.mkdtemp(dir="/dev/shm"))
    try:
        target = folder / "out.bin"
        target.write_bytes(b"old")
        before = target.stat().st_ino
        code, _, err = predict_to(capsys, target)
        assert code == 0, err
        assert target.read_bytes() == "héllo".encode()
        assert target.stat().st_ino != before  # a new file took its place
        assert [p.name for p in folder.iterdir()] == ["out.bin"]
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_batch_results_replace_old_ones_whole_with_the_umask_mode(capsys, tmp_path):
    """Batch mode writes through the same replace: a big result (the
    engine's 0600 temporary file, moved) gets the mode a new file gets."""
    from tests.cli.test_batch import SPECS

    src = tmp_path / "in"
    src.mkdir()
    (src / "big").write_text(f"bytes:{3 << 20}")  # in a file: moved
    (src / "small").write_text("bytes:10")  # in memory: written
    out = tmp_path / "out"
    out.mkdir()
    (out / "small.bin").write_bytes(b"an older result")
    before = os.umask(0o022)
    try:
        code = cli.main(
            ["--model-name", "batchy", "predict", "--input-dir", str(src),
             "--output-dir", str(out)],
            specs=SPECS,
        )  # fmt: skip
    finally:
        os.umask(before)
    assert code == 0, capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["big.bin", "small.bin"]
    assert (out / "small.bin").read_bytes() == b"\x00" * 10
    assert (out / "big.bin").stat().st_size == 3 << 20
    for name in ("big.bin", "small.bin"):
        assert stat.S_IMODE((out / name).stat().st_mode) == 0o644, name


# -- unusable paths: usage errors, told before the model runs -----------------


@pytest.fixture
def no_model_run(monkeypatch):
    """The model must not run: the path is refused before."""

    def ran(*args, **kwargs):
        raise AssertionError("the model ran before the path was checked")

    monkeypatch.setattr(cli, "_run", ran)


@pytest.mark.parametrize("mode", [0o444, 0o400, 0o000])
def test_a_read_only_file_is_refused_as_root_too(capsys, tmp_path, mode, no_model_run):
    """``os.access(W_OK)`` is always true for root (the usual user in a
    container), which replaced a read-only file: no write bit for anyone
    refuses it, for root too."""
    target = tmp_path / "out.bin"
    target.write_bytes(b"keep me")
    target.chmod(mode)
    code, out, err = predict_to(capsys, target)
    assert code == 2, err
    assert out == ""
    if os.geteuid() == 0:  # another user is told by os.access
        assert f"Permission denied: a read-only file (mode {mode:04o})" in err
    assert f"cannot write '{target}': Permission denied" in err
    target.chmod(0o600)
    assert target.read_bytes() == b"keep me"
    assert [p.name for p in tmp_path.iterdir()] == ["out.bin"]


def test_a_folder_no_one_may_write_in_is_refused_as_root_too(
    capsys, tmp_path, no_model_run
):
    """Root could create the result in a 0555 folder: refused as for a
    read-only file, before the model runs."""
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    target = locked / "out.json"
    try:
        code, out, err = predict_to(capsys, target)
    finally:
        locked.chmod(0o755)
    assert code == 2, err
    assert out == ""
    assert (
        f"cannot write '{target}': Permission denied: cannot create a file in {locked}"
        in err
    )
    assert list(locked.iterdir()) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="root writes what its owner can")
def test_root_replaces_a_file_that_only_others_may_write(capsys, tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    target.chmod(0o464)  # a write bit, the group's: not read-only
    code, _, err = predict_to(capsys, target)
    assert code == 0, err
    assert target.read_bytes() == "héllo".encode()
    assert stat.S_IMODE(target.stat().st_mode) == 0o464


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("", "an empty path: name a file"),
        ("nodir/x.json", "no folder nodir"),
        ("afile/x.json", "afile is not a folder"),
        (".", ". is a folder: name a file in it"),
    ],
)
def test_unusable_paths_are_usage_errors(
    capsys, tmp_path, monkeypatch, name, reason, no_model_run
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_bytes(b"x")
    code, out, err = predict_to(capsys, name)
    assert code == 2, err
    assert out == ""
    assert f"deepaas-cli: error: cannot write {name!r}: {reason}\n" in err
    assert "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_a_descriptor_open_for_reading_is_refused_before_the_model_runs(
    capsys, tmp_path, no_model_run
):
    source = tmp_path / "input.txt"
    source.write_bytes(b"precious")
    with open(source, "rb") as fh:
        fd = fh.fileno()
        code, _, err = predict_to(capsys, f"/dev/fd/{fd}")
    assert code == 2, err
    assert f"/dev/fd/{fd} is open for reading only (descriptor {fd})" in err
    assert source.read_bytes() == b"precious"


def test_a_folder_that_cannot_be_written_in_is_a_usage_error(tmp_path):
    folder = tmp_path / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    target = folder / "out.bin"
    proc = subprocess.run(
        [str(SCRIPT), "--model-name", "demo_class", "predict", "--data", "x",
         *OCTETS, "--deepaas_method_output", str(target)],
        capture_output=True, timeout=60, **_nobody(),
    )  # fmt: skip
    err = proc.stderr.decode()
    assert proc.returncode == 2, err
    assert f"cannot write '{target}': Permission denied: cannot create" in err
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize(
    ("name", "code"), [("nodir/x.bin", 2), ("/dev/fd/97", 2), ("ok.bin", 0)]
)
def test_a_failure_to_open_the_target_is_a_usage_error(
    tmp_path, monkeypatch, name, code
):
    """What the check before could not foresee (the folder removed while
    the model ran): opening or replacing the target fails with a usage
    error; a write that fails midway stays a failure (exit status 1,
    :func:`test_a_write_that_fails_midway_leaves_the_old_file`)."""
    from deepaas.model.v2.results import PredictResult

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(cli_output, "_unusable", lambda target: None)
    result = PredictResult("application/octet-stream", body=b"hi")
    try:
        cli_output.emit(result, name, sys.stdout)
    except cli_output.CliError as exc:
        assert exc.code == code, exc
        assert str(exc).startswith(f"cannot write {name!r}: No such file")
    else:
        assert code == 0
        assert (tmp_path / name).read_bytes() == b"hi"
