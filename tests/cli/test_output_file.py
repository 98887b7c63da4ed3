"""``deepaas-cli predict --deepaas_method_output PATH``: a file is replaced
whole or not at all, a device or a FIFO is written where it stands.

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

from deepaas.cmd import cli
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
    assert code == 1
    assert out == ""
    assert f"cannot write '{target}': No such file or directory" in err
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
    assert proc.returncode == 1, err
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


def test_dev_stdout_on_a_pipe(tmp_path):
    proc = subprocess.run(
        [str(SCRIPT), "--model-name", "demo_class", "predict", "--data", "hi",
         *OCTETS, "--deepaas_method_output", "/dev/stdout"],
        capture_output=True, timeout=60,
    )  # fmt: skip
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
