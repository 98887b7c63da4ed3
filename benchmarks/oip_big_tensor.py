"""Peak memory of the API process while it carries a 64 MB binary tensor.

Starts ``deepaas-run`` on a tensor-native plugin (written to a temporary
folder: ``get_infer_signature()`` declares one FP32 input ``x`` of any
length; ``infer`` answers its sum, or the tensor itself with ``--echo``),
sends one OIP infer request whose input is a 64 MiB FP32 tensor as binary
tensor data (``Inference-Header-Content-Length``), and prints how much the
API process's peak RSS (VmHWM, from ``/proc``) grew, next to the worker's.

    .venv/bin/python benchmarks/oip_big_tensor.py [--mb 64] [--echo]

Target (issue 10): the API process's peak RSS grows by less than 2x the
tensor's size for the input path (it never pickles the tensor as a list,
nor copies it whole into the pickle). With ``--echo`` the tensor also comes
back as a binary output (informational, no target: the response body is
one more copy). Exit status: 0 PASS, 1 FAIL or a wrong answer, 2 could not
run.
"""

from __future__ import annotations

import argparse
import http.client
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _harness import (
    BenchError,
    Server,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    get,
)

PLUGIN = """
import numpy as np


def get_infer_signature():
    return {
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1]}],
        "outputs": [
            {"name": "sum", "datatype": "FP64", "shape": [1]},
            {"name": "y", "datatype": "FP32", "shape": [-1]},
        ],
    }


def infer(x):
    echo = x if x.size and x[0] == -1 else np.zeros(0, dtype=np.float32)
    return {"sum": np.array([x.sum(dtype=np.float64)]), "y": echo}
"""
TARGET_RATIO = 2.0


def vm_hwm(pid: int) -> int:
    """The process's peak resident set size (VmHWM) in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise BenchError(f"no VmHWM for pid {pid}")


def children(pid: int) -> list[int]:
    """The server's child processes (its workers), from ``/proc``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] not in "ZX":
            found.append(int(stat.parent.name))
    return found


def request(tensor: np.ndarray, echo: bool) -> tuple[bytes, int]:
    """An infer body: the JSON header, then the tensor's bytes."""
    raw = tensor.astype("<f4", copy=False).data.cast("B")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [tensor.size],
                    "parameters": {"binary_data_size": raw.nbytes},
                }
            ],
            "outputs": [
                {"name": "sum", "parameters": {"binary_data": False}},
                *([{"name": "y", "parameters": {"binary_data": True}}] if echo else []),
            ],
        }
    ).encode()
    return header + raw, len(header)


def infer(port: int, body: bytes, header_length: int) -> tuple[int, bytes, dict]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=300)
    try:
        conn.request(
            "POST",
            "/v2/models/big/infer",
            body=body,
            headers={
                "Content-Type": "application/octet-stream",
                "Inference-Header-Content-Length": str(header_length),
            },
        )
        response = conn.getresponse()
        return response.status, response.read(), dict(response.headers)
    finally:
        conn.close()


def run(args: argparse.Namespace, workdir: Path) -> int:
    plugin = workdir / "big.py"
    plugin.write_text(PLUGIN)
    (port,) = free_ports(1)
    limit = str(args.mb * 2**20 * 2)
    argv = [
        str(deepaas_run_path()),
        "--listen-ip",
        "127.0.0.1",
        "--listen-port",
        str(port),
        "--devices",
        "cpu",
        "--client-max-size",
        limit,
        "--client-max-decoded-size",
        limit,
        "--plugin",
        f"big={plugin}",
    ]
    server = Server("deepaas", argv, deepaas_env("auto"), port, workdir)
    server.start()
    assert server.proc is not None
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if get(f"http://127.0.0.1:{port}/v2/models/big/ready")[0] == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline or server.proc.poll() is not None:
                raise BenchError(f"the server did not get ready:\n{server.output()}")
            time.sleep(0.1)
        workers = children(server.proc.pid)
        # Warm the code paths with a small tensor first.
        small = np.ones(1000, dtype=np.float32)
        status, _, _ = infer(port, *request(small, False))
        if status != 200:
            raise BenchError(f"a small infer answered {status}:\n{server.output()}")
        tensor = np.random.default_rng(0).random(args.mb * 2**18, dtype=np.float32)
        if args.echo:
            tensor[0] = -1  # the plugin's sign to send it back
        body, header_length = request(tensor, args.echo)
        api_before = vm_hwm(server.proc.pid)
        worker_before = {pid: vm_hwm(pid) for pid in workers}
        started = time.monotonic()
        status, answer, headers = infer(port, body, header_length)
        seconds = time.monotonic() - started
        api_after = vm_hwm(server.proc.pid)
        worker_after = {pid: vm_hwm(pid) for pid in workers}
    finally:
        left = server.stop()
    if status != 200:
        print(f"HTTP {status}: {answer[:300]!r}")
        return 1
    length = int(headers.get("Inference-Header-Content-Length", len(answer)))
    document = json.loads(answer[:length])
    outputs = {o["name"]: o for o in document["outputs"]}
    expected = float(tensor.sum(dtype=np.float64))
    intact = abs(outputs["sum"]["data"][0] - expected) <= 1e-9 * abs(expected)
    if args.echo:
        echoed = np.frombuffer(answer, dtype="<f4", offset=length)
        intact = intact and np.array_equal(echoed, tensor)
    size = tensor.nbytes
    growth = api_after - api_before
    ratio = growth / size
    mib = 2**20
    print(
        f"infer: a {size / mib:.0f} MiB FP32 tensor, binary, "
        f"{'echoed back' if args.echo else 'its sum back'}: HTTP {status} in "
        f"{seconds:.2f} s, answer intact: {intact}"
    )
    target = (
        "no target: the response body is one more copy"
        if args.echo
        else f"target < {TARGET_RATIO:g}x"
    )
    print(
        f"API process peak RSS: {api_before / mib:.1f} -> {api_after / mib:.1f} MiB "
        f"(growth {growth / mib:.1f} MiB = {ratio:.2f}x the tensor; {target})"
    )
    for pid, before in worker_before.items():
        grew = worker_after[pid] - before
        print(
            f"worker {pid} peak RSS: {before / mib:.1f} -> "
            f"{worker_after[pid] / mib:.1f} MiB (growth {grew / mib:.1f} MiB = "
            f"{grew / size:.2f}x)"
        )
    if left:
        print(f"processes left behind: {left}")
    ok = intact and (args.echo or ratio < TARGET_RATIO) and not left
    print("PASS" if ok else "FAIL")
    return 0 if ok else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=int, default=64, help="tensor size in MiB")
    parser.add_argument(
        "--echo", action="store_true", help="the model returns the tensor too"
    )
    args = parser.parse_args()
    try:
        with tempfile.TemporaryDirectory(prefix="deepaas-big-tensor-") as tmp:
            return run(args, Path(tmp))
    except BenchError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
