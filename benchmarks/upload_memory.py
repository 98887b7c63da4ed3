"""Peak memory of the API process while it receives a large upload.

Starts ``deepaas-run`` on the example ``demo`` model with its own TMPDIR,
streams a generated upload (default 300 MB) as multipart/form-data with
chunked transfer encoding, and prints how much the API process's peak RSS
(VmHWM) grew, whether the upload arrived intact (sha256 computed by the model
in its worker) and whether any temporary file was left behind.

    .venv/bin/python benchmarks/upload_memory.py [--mb 300]

Target (issue #2): growth < 64 MB and no temporary file left.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

CHUNK = b"deepaas-upload-" * 4369 + b"x"  # 65,536 bytes
BOUNDARY = "deepaasboundary7e1c"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc status")


def body(size: int) -> Iterator[bytes]:
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="file"; '
        f'filename="big.bin"\r\nContent-Type: application/octet-stream\r\n\r\n'
    )
    yield head.encode()
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        yield piece
    yield f"\r\n--{BOUNDARY}--\r\n".encode()


def expected_sha256(size: int) -> str:
    digest = hashlib.sha256()
    sent = 0
    while sent < size:
        piece = CHUNK[: min(len(CHUNK), size - sent)]
        sent += len(piece)
        digest.update(piece)
    return digest.hexdigest()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=300, help="upload size in MB")
    args = parser.parse_args()
    size = args.mb * 1_000_000
    tmp = tempfile.mkdtemp(prefix="deepaas-upload-bench-")
    port = free_port()
    run = str(Path(sys.executable).with_name("deepaas-run"))
    server = subprocess.Popen(
        [run, "--listen-port", str(port), "--model-name", "demo"],
        env={**os.environ, "TMPDIR": tmp},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("POST", "/v2/models/demo/predict/")
                conn.getresponse().read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    print("server did not start", file=sys.stderr)
                    return 2
                time.sleep(0.1)
        before = peak_rss_mb(server.pid)
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
        started = time.monotonic()
        conn.request(
            "POST",
            "/v2/models/demo/predict/",
            body=body(size),
            headers={"Content-Type": f"multipart/form-data; boundary={BOUNDARY}"},
            encode_chunked=True,
        )
        resp = conn.getresponse()
        answer = json.loads(resp.read())
        seconds = time.monotonic() - started
        after = peak_rss_mb(server.pid)
        left = [str(p) for p in Path(tmp).rglob("*") if p.is_file()]
        received = answer.get("args", {}).get("file") or {}
        intact = received.get("sha256") == expected_sha256(size)
        growth = after - before
        print(
            f"upload: {args.mb} MB in {seconds:.1f}s, HTTP {resp.status}, "
            f"intact: {intact}"
        )
        print(
            f"API process peak RSS: {before:.1f} MB -> {after:.1f} MB "
            f"(growth {growth:.1f} MB; target < 64 MB)"
        )
        print(f"temporary files left: {len(left)} {left[:3]}")
        ok = resp.status == 200 and intact and growth < 64 and not left
        print("PASS" if ok else "FAIL")
        return 0 if ok else 1
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
