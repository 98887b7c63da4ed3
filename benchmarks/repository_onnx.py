"""Model repository benchmark: the batching MLP as an ONNX file, no code.

The MLP of ``benchmarks/batching.py`` (``mlp_plugin``: four 2048x2048
layers, the plugin's own weights, one thread) is exported to ONNX at run
time with the onnx helper API (``sum`` and ``argmax`` of its output as the
outputs, the answer the plugin gives) and served from a model repository
with default settings. Three ``deepaas-run`` servers, side by side:

- **plugin**: the hand-written plugin, ``predict_batch`` of up to 32;
- **repo**: ``--model-repository`` with the ONNX file (batches of up to 16,
  the default for a dynamic batch axis);
- **repo-off**: the same with ``--max-batch-size 1`` (unbatched).

Each round measures, with wrk at ``--connections`` (32), the request kinds:
``plugin seed`` (``?seed=1``, the input made in the worker: batching.py's
request), ``plugin json`` and ``repo json`` (the same ``{"x": [2048
floats]}`` body on the predict route), ``repo oip`` (OIP infer, the input as
a binary tensor), and the two repo kinds on ``repo-off``. Printed: the
medians and the ratios repo/plugin (target >= 0.9) and repo/repo-off
(target >= 3). Then start-up: ``deepaas-run`` with a repository of the ONNX
file and the same MLP as TorchScript, from start to the banner (target < 5 s).

Usage::

    .venv/bin/python benchmarks/repository_onnx.py [--rounds 3] [--duration 10]

Needs wrk, torch (the plugin, and the weights), onnx and onnxruntime.
Exit status: 0 measured (``--strict``: 3 when a target is missed), 1 an
invalid run (errors, wrong answers), 2 it could not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from _harness import (
    BenchError,
    Server,
    add_run_options,
    checked_run_options,
    deepaas_env,
    deepaas_run_path,
    free_ports,
    get,
    plugin_for_run,
)
from _wrk import LUA_SCRIPT, WrkResult, find_wrk, parse_wrk

HERE = Path(__file__).resolve().parent
PLUGIN = "bench_mlp"
MODEL = "mlp"
TARGET_VS_PLUGIN = 0.9
TARGET_VS_OFF = 3.0
TARGET_STARTUP_S = 5.0
WIDTH, LAYERS, SEED = 2048, 4, 0


def mlp_layers() -> list[tuple[Any, Any]]:
    """The plugin's weights and biases (same seed, same draws), as numpy."""
    import torch

    generator = torch.Generator().manual_seed(SEED)
    layers = []
    for _ in range(LAYERS):
        layer = torch.nn.Linear(WIDTH, WIDTH)
        with torch.no_grad():
            bound = WIDTH**-0.5
            layer.weight.uniform_(-bound, bound, generator=generator)
            layer.bias.uniform_(-bound, bound, generator=generator)
        layers.append(
            (layer.weight.detach().numpy().T.copy(), layer.bias.detach().numpy())
        )
    return layers


def save_onnx(path: Path) -> None:
    """x [batch, 2048] -> sum [batch], argmax [batch] (the plugin's answer)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    nodes, weights, last = [], [], "x"
    for i, (w, b) in enumerate(mlp_layers()):
        weights += [
            numpy_helper.from_array(w, f"w{i}"),
            numpy_helper.from_array(b, f"b{i}"),
        ]
        nodes.append(helper.make_node("MatMul", [last, f"w{i}"], [f"m{i}"]))
        nodes.append(helper.make_node("Add", [f"m{i}", f"b{i}"], [f"a{i}"]))
        last = f"a{i}"
        if i < LAYERS - 1:
            nodes.append(helper.make_node("Relu", [last], [f"r{i}"]))
            last = f"r{i}"
    axes = numpy_helper.from_array(np.array([1], dtype=np.int64), "axes")
    nodes.append(helper.make_node("ReduceSum", [last, "axes"], ["sum"], keepdims=0))
    nodes.append(helper.make_node("ArgMax", [last], ["argmax"], axis=1, keepdims=0))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", WIDTH])],
        [
            helper.make_tensor_value_info("sum", TensorProto.FLOAT, ["batch"]),
            helper.make_tensor_value_info("argmax", TensorProto.INT64, ["batch"]),
        ],
        initializer=[*weights, axes],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


def save_torchscript(path: Path, toml: Path) -> None:
    """The same MLP as TorchScript, its signature in ``toml``."""
    import torch

    modules: list[torch.nn.Module] = []
    for i, (w, b) in enumerate(mlp_layers()):
        layer = torch.nn.Linear(WIDTH, WIDTH)
        with torch.no_grad():
            layer.weight.copy_(torch.from_numpy(w.T.copy()))
            layer.bias.copy_(torch.from_numpy(b))
        modules += [layer] + ([torch.nn.ReLU()] if i < LAYERS - 1 else [])
    torch.jit.save(torch.jit.script(torch.nn.Sequential(*modules).eval()), str(path))
    toml.write_text(
        f'inputs = [{{name = "x", datatype = "FP32", shape = [-1, {WIDTH}]}}]\n'
        f'outputs = [{{name = "y", datatype = "FP32", shape = [-1, {WIDTH}]}}]\n'
    )


def bodies(workdir: Path) -> dict[str, tuple[Path, Path]]:
    """Request kind -> (body file, headers file) for wrk's post.lua."""
    import numpy as np
    import torch

    x = torch.randn(WIDTH, generator=torch.Generator().manual_seed(1)).numpy()
    json_body = workdir / "x.json"
    json_body.write_text(json.dumps({"x": x.tolist()}))
    json_headers = workdir / "json.headers"
    json_headers.write_text("Content-Type: application/json\n")
    header = json.dumps(
        {
            "inputs": [
                {
                    "name": "x",
                    "datatype": "FP32",
                    "shape": [1, WIDTH],
                    "parameters": {"binary_data_size": WIDTH * 4},
                }
            ]
        }
    ).encode()
    oip_body = workdir / "x.oip"
    oip_body.write_bytes(header + x.astype(np.float32).tobytes())
    oip_headers = workdir / "oip.headers"
    oip_headers.write_text(
        "Content-Type: application/octet-stream\n"
        f"Inference-Header-Content-Length: {len(header)}\n"
    )
    empty = workdir / "empty"
    empty.write_bytes(b"")
    return {
        "seed": (empty, empty),
        "json": (json_body, json_headers),
        "oip": (oip_body, oip_headers),
    }


def wrk(url: str, body: tuple[Path, Path], args: argparse.Namespace) -> WrkResult:
    cmd = [find_wrk(), "-t1", f"-c{args.connections}", f"-d{args.duration:g}s"]
    cmd += ["-s", str(LUA_SCRIPT), url, "--", str(body[0]), str(body[1])]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=args.duration + 60
    )
    if done.returncode != 0:
        raise BenchError(f"wrk failed: {' '.join(cmd)}\n{done.stdout}{done.stderr}")
    return parse_wrk(done.stdout + done.stderr)


def started(label: str, argv: list[str], port: int, workdir: Path) -> Server:
    run = str(deepaas_run_path())
    server = Server(
        label,
        [run, "--listen-port", str(port), "--devices", "cpu", *argv],
        deepaas_env("auto"),
        port,
        workdir,
    )
    server.start()
    return server


def wait_ready(server: Server, timeout: float = 120.0) -> float:
    """Seconds from now until the server answers ``/v2/health/ready`` 200."""
    began = time.monotonic()
    while time.monotonic() - began < timeout:
        assert server.proc is not None
        if server.proc.poll() is not None:
            raise BenchError(f"{server.label} exited:\n{server.output()}")
        try:
            if get(f"http://127.0.0.1:{server.port}/v2/health/ready", 2.0)[0] == 200:
                return time.monotonic() - began
        except OSError:
            pass
        time.sleep(0.02)
    raise BenchError(f"{server.label} not ready in {timeout:.0f} s:\n{server.output()}")


def answer(server: Server, path: str, body: tuple[Path, Path]) -> Any:
    """One request as wrk sends it; its JSON answer."""
    import urllib.request

    headers = dict(
        line.split(": ", 1) for line in body[1].read_text().splitlines() if line
    )
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}", body[0].read_bytes(), headers
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


KINDS = {  # label -> (server, path, body kind)
    "plugin seed": ("plugin", f"/v2/models/{PLUGIN}/predict/?seed=1", "seed"),
    "plugin json": ("plugin", f"/v2/models/{PLUGIN}/predict/", "json"),
    "repo json": ("repo", f"/v2/models/{MODEL}/predict/", "json"),
    "repo oip": ("repo", f"/v2/models/{MODEL}/infer", "oip"),
    "repo-off json": ("repo-off", f"/v2/models/{MODEL}/predict/", "json"),
    "repo-off oip": ("repo-off", f"/v2/models/{MODEL}/infer", "oip"),
}


def check_answers(servers: dict[str, Server], files: dict[str, Any]) -> list[str]:
    """Every kind answers the input's sum and argmax, as the plugin does."""
    reference = answer(servers["plugin"], KINDS["plugin json"][1], files["json"])
    want = reference["predictions"]
    problems = []
    for label, (server, path, kind) in KINDS.items():
        got = answer(servers[server], path, files[kind])
        if kind == "oip":
            got = {o["name"]: o["data"][0] for o in got["outputs"]}
        else:
            got = got["predictions"]
        if got["argmax"] != want["argmax"] or abs(got["sum"] - want["sum"]) > 1e-3 * (
            1 + abs(want["sum"])
        ):
            problems.append(f"{label}: {got} != the plugin's {want}")
    return problems


def throughput(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    repo = workdir / "repository"
    repo.mkdir()
    save_onnx(repo / f"{MODEL}.onnx")
    files = bodies(workdir)
    ports = free_ports(3)
    servers = {
        "plugin": started("plugin", ["--model-name", PLUGIN], ports[0], workdir),
        "repo": started("repo", ["--model-repository", str(repo)], ports[1], workdir),
        "repo-off": started(
            "repo-off",
            ["--model-repository", str(repo), "--max-batch-size", "1"],
            ports[2],
            workdir,
        ),
    }
    results: dict[str, list[float]] = {label: [] for label in KINDS}
    problems: list[str] = []
    try:
        for server in servers.values():
            wait_ready(server)
        problems += check_answers(servers, files)
        for name, path, kind in KINDS.values():  # warm-up
            if args.warmup:
                warm = argparse.Namespace(**{**vars(args), "duration": args.warmup})
                wrk(f"http://127.0.0.1:{servers[name].port}{path}", files[kind], warm)
        for number in range(1, args.rounds + 1):
            order = list(KINDS) if number % 2 else list(reversed(KINDS))
            for label in order:
                name, path, kind = KINDS[label]
                url = f"http://127.0.0.1:{servers[name].port}{path}"
                res = wrk(url, files[kind], args)
                if res.non_2xx or res.errors:
                    problems.append(
                        f"round {number} {label}: {res.non_2xx} non-2xx, "
                        f"{res.errors} socket errors"
                    )
                results[label].append(res.rps)
                print(
                    f"  round {number} {label:<14} {res.rps:8.1f} req/s "
                    f"p50 {res.p50_ms:6.2f} ms",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
    medians = {label: statistics.median(v) for label, v in results.items()}
    return {"rps": results, "median": medians, "problems": problems}


def startup(args: argparse.Namespace, workdir: Path) -> list[float]:
    """Seconds from start to ready, with one ONNX and one TorchScript model."""
    repo = workdir / "startup"
    repo.mkdir()
    save_onnx(repo / f"{MODEL}.onnx")
    save_torchscript(repo / "mlp_ts.pt", repo / "mlp_ts.toml")
    times = []
    for _ in range(args.rounds):
        (port,) = free_ports(1)
        began = time.monotonic()
        server = started("startup", ["--model-repository", str(repo)], port, workdir)
        try:
            wait_ready(server)
            times.append(time.monotonic() - began)
        finally:
            server.stop()
    return times


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_run_options(parser, connections=32, plugins="deepaas-bench-mlp")
    args = checked_run_options(parser, parser.parse_args(argv))
    for module in ("torch", "onnx", "onnxruntime"):
        if importlib.util.find_spec(module) is None:
            print(f"{module} is not installed: pip install it first", file=sys.stderr)
            return 2
    find_wrk()
    with (
        tempfile.TemporaryDirectory(prefix="deepaas-bench-repo-") as tmp,
        plugin_for_run(
            HERE / "mlp_plugin",
            "deepaas_bench_mlp",
            PLUGIN,
            "deepaas-bench-mlp",
            "the MLP plugin",
            args.keep_plugin,
        ),
    ):
        workdir = Path(tmp)
        print(
            f"wrk -t1 -c{args.connections} -d{args.duration:g}s, {args.rounds} rounds"
        )
        measured = throughput(args, workdir)
        times = startup(args, workdir)
    m = measured["median"]
    ratios = {
        "repo json / plugin json": m["repo json"] / m["plugin json"],
        "repo oip / plugin seed": m["repo oip"] / m["plugin seed"],
        "repo json / repo-off json": m["repo json"] / m["repo-off json"],
        "repo oip / repo-off oip": m["repo oip"] / m["repo-off oip"],
    }
    print()
    for label, value in m.items():
        print(f"median {label:<14} {value:8.1f} req/s")
    for label, value in ratios.items():
        target = TARGET_VS_OFF if "off" in label else TARGET_VS_PLUGIN
        verdict = "ok" if value >= target else "missed"
        print(f"{label:<26} {value:5.2f}x (target >= {target}: {verdict})")
    start = statistics.median(times)
    print(
        f"start-up to ready, one ONNX + one TorchScript model: median {start:.2f} s "
        f"({', '.join(f'{t:.2f}' for t in times)}; target < {TARGET_STARTUP_S} s)"
    )
    if args.json:
        args.json.write_text(
            json.dumps({**measured, "ratios": ratios, "startup_s": times})
        )
    if measured["problems"]:
        print("INVALID:", *measured["problems"], sep="\n  ")
        return 1
    missed = start >= TARGET_STARTUP_S or any(
        v < (TARGET_VS_OFF if "off" in k else TARGET_VS_PLUGIN)
        for k, v in ratios.items()
    )
    return 3 if args.strict and missed else 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
