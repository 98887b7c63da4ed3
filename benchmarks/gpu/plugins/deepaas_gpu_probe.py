"""A tiny plugin that makes a GPU work, for ``benchmarks/gpu/run.py``.

Served by the GPU check as ``gpu_probe`` (``--plugin
gpu_probe=deepaas_gpu_probe``, with this folder on ``PYTHONPATH``):

- ``predict(n, reps, size, seconds)``: on the worker's device
  (``DEEPAAS_DEVICE``), the sum of the squares of 1..n in float64 (exactly
  n(n+1)(2n+1)/6, so an answer can be checked), then ``reps`` matrix products
  of ``size`` x ``size``, or as many as fit in ``seconds``: load that shows in
  the GPU's utilisation. The answer says where it ran (device, pid, the
  worker's ``CUDA_VISIBLE_DEVICES``).
- ``warm()`` holds ``GPU_PROBE_HOLD_MIB`` MiB of GPU memory for the worker's
  life, so that the memory a killed worker held can be followed in
  ``nvidia-smi``.
- ``train(steps)``: data-parallel through :mod:`deepaas.training.distributed`
  on the devices leased to the job: an all-reduce, then ``steps`` steps of
  ``DistributedDataParallel`` on a linear model. It returns the job's device
  environment and what each rank saw (backend, world size, device name).

Self-test (no CUDA): with ``GPU_PROBE_SELFTEST=1`` a worker or job given a
GPU that torch cannot see runs on the CPU instead (Gloo for training), and
says so; without it that is an error, as it must be on a GPU host.

torch is imported inside the functions: the API process imports the plugin
for its metadata and must not load torch.
"""

from __future__ import annotations

import os
import time
from typing import Any

from marshmallow import fields, validate

SELFTEST_ENV = "GPU_PROBE_SELFTEST"
HOLD_ENV = "GPU_PROBE_HOLD_MIB"
ENV_KEYS = (
    "CUDA_VISIBLE_DEVICES",
    "CUDA_DEVICE_ORDER",
    "DEEPAAS_DEVICE",
    "DEEPAAS_DEVICES",
)

_state: dict[str, Any] = {}


def get_metadata() -> dict[str, Any]:
    return {
        "name": "gpu_probe",
        "version": "1.0.0",
        "summary": "Makes the worker's GPU work (benchmarks/gpu/run.py)",
        "author": "deepaas developers",
        "license": "Apache-2.0",
    }


def _selftest() -> bool:
    return os.environ.get(SELFTEST_ENV) == "1"


def _device(torch: Any, name: str) -> Any:
    """The torch device for ``name``; the CPU only in the self-test."""
    if name.startswith("cuda") and not torch.cuda.is_available():
        if _selftest():
            return torch.device("cpu")
        raise RuntimeError(
            f"given {name} but torch sees no CUDA device (CUDA_VISIBLE_DEVICES="
            f"{os.environ.get('CUDA_VISIBLE_DEVICES')!r}, torch {torch.__version__}, "
            f"built for CUDA {torch.version.cuda})"
        )
    return torch.device(name)


def warm() -> None:
    import torch

    device = _device(torch, os.environ.get("DEEPAAS_DEVICE", "cpu"))
    _state["torch"], _state["device"] = torch, device
    hold = int(os.environ.get(HOLD_ENV) or 0)
    if hold and device.type == "cuda":
        _state["held"] = torch.ones(hold << 20, dtype=torch.uint8, device=device)
        torch.cuda.synchronize(device)


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "n": fields.Int(load_default=1000, validate=validate.Range(min=1, max=10**6)),
        "reps": fields.Int(load_default=0, validate=validate.Range(min=0, max=1000)),
        "size": fields.Int(
            load_default=1024, validate=validate.Range(min=1, max=16384)
        ),
        "seconds": fields.Float(
            load_default=0.0, validate=validate.Range(min=0.0, max=300.0)
        ),
    }


def predict(**kwargs: Any) -> dict[str, Any]:
    if "device" not in _state:
        warm()
    torch, device = _state["torch"], _state["device"]
    n, reps, size = kwargs["n"], kwargs["reps"], kwargs["size"]
    squares = torch.arange(1, n + 1, dtype=torch.float64, device=device).square().sum()
    products = 0
    if reps or kwargs["seconds"]:
        a = torch.ones(size, size, device=device) / size
        b = a.clone()
        for _ in range(reps):
            b = a @ b
            products += 1
        deadline = time.monotonic() + kwargs["seconds"]
        while time.monotonic() < deadline:
            for _ in range(8):
                b = a @ b
                products += 1
            if device.type == "cuda":
                torch.cuda.synchronize(device)
        float(b[0, 0])  # waits for the GPU
    return {
        "sum_squares": float(squares),
        "products": products,
        "device": str(device),
        "cuda_name": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else None,
        "pid": os.getpid(),
        "env": {key: os.environ.get(key) for key in ENV_KEYS},
    }


def get_train_args() -> dict[str, fields.Field]:
    return {
        "steps": fields.Int(load_default=20, validate=validate.Range(min=1, max=10000))
    }


def train(**kwargs: Any) -> dict[str, Any]:
    import torch

    from deepaas.training import distributed

    env = {key: os.environ.get(key) for key in ENV_KEYS}
    devices = distributed.devices_from_env()
    ran_on = [str(_device(torch, name)) for name in devices]
    if ran_on != devices:  # self-test: no CUDA, so Gloo on the CPU
        ran_on = ["cpu"] * len(devices)
    ranks = distributed.run(_train_rank, kwargs["steps"], devices=ran_on)
    return {
        "env": env,
        "devices": devices,
        "ran_on": ran_on,
        "world_size": len(ran_on),
        "cuda_device_count": torch.cuda.device_count(),
        "ranks": ranks,
    }


def _train_rank(ctx: Any, steps: int) -> dict[str, Any]:
    """One rank: an all-reduce, then DDP steps (module level: ranks import it)."""
    import torch
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    ones = torch.full((1024,), float(ctx.rank + 1), device=ctx.device)
    dist.all_reduce(ones)
    expected = ctx.world_size * (ctx.world_size + 1) / 2
    all_reduce_ok = bool(torch.all(ones == expected).item())

    torch.manual_seed(0)
    model = torch.nn.Linear(64, 1).to(ctx.device)
    cuda = ctx.device.type == "cuda"
    ddp = DistributedDataParallel(
        model, device_ids=[ctx.device.index] if cuda else None
    )
    optimiser = torch.optim.SGD(ddp.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(ctx.rank)
    x = torch.randn(256, 64, generator=generator).to(ctx.device)
    y = x.sum(dim=1, keepdim=True) / 8
    losses = []
    for _ in range(steps):
        optimiser.zero_grad()
        loss = torch.nn.functional.mse_loss(ddp(x), y)
        loss.backward()
        optimiser.step()
        losses.append(float(ctx.all_reduce_mean(loss.detach())))
    # DDP keeps the replicas identical: the spread of a parameter sum is 0.
    total = torch.stack([p.detach().double().sum() for p in model.parameters()]).sum()
    high, low = total.clone(), total.clone()
    dist.all_reduce(high, op=dist.ReduceOp.MAX)
    dist.all_reduce(low, op=dist.ReduceOp.MIN)
    return {
        "rank": ctx.rank,
        "world_size": dist.get_world_size(),
        "backend": str(dist.get_backend()),
        "device": str(ctx.device),
        "cuda_name": torch.cuda.get_device_name(ctx.device) if cuda else None,
        "all_reduce_ok": all_reduce_ok,
        "loss_first": round(losses[0], 6),
        "loss_last": round(losses[-1], 6),
        "replicas_spread": float(high - low),
    }
