"""Torch MLP DEEPaaS plugin for the batching benchmark.

Four ``Linear(2048, 2048)`` layers with ReLU between them, weights from a
fixed seed, one CPU thread. The model is memory-bound: at batch 1 each
request streams all 64 MiB of weights, a batch streams them once for all its
requests, so ``predict_batch`` is several times cheaper per request.

torch is imported lazily (in ``warm()`` or the first prediction), so that the
API process, which only asks for metadata and arguments, never loads it.
"""

from __future__ import annotations

import os
from typing import Any

from marshmallow import fields, validate

__version__ = "0.1.0"

WIDTH = 2048
LAYERS = 4
WEIGHT_SEED = 0

# Dynamic batching: up to 32 requests per call of predict_batch. No
# max_delay_ms: the adaptive window (the default) waits for companions only
# while more requests are expected soon, so an idle server adds no latency
# while 32 clients are gathered into batches of 32.
batching = {"max_batch_size": 32}

_state: dict[str, Any] = {}


def get_metadata() -> dict[str, Any]:
    """Return the model's metadata."""
    return {
        "name": "bench_mlp",
        "version": __version__,
        "summary": "Memory-bound torch MLP (4 x 2048x2048) for the batching benchmark.",
        "author": "deepaas developers",
        "license": "Apache-2.0",
    }


def get_predict_args() -> dict[str, fields.Field]:
    """Return the arguments accepted by ``predict``."""
    return {
        "seed": fields.Int(
            load_default=0,
            validate=validate.Range(min=0, max=2**63 - 1),
            metadata={
                "description": "Seed of the 2048-vector input (torch.randn); "
                "keeps the request a few bytes."
            },
        ),
        "x": fields.List(
            fields.Float(),
            load_default=None,
            validate=validate.Length(equal=WIDTH),
            metadata={
                "description": f"Explicit input of {WIDTH} floats (wins over seed)."
            },
        ),
    }


def warm() -> None:
    """Build the model on the worker's device (``DEEPAAS_DEVICE``)."""
    _model()


def _model() -> tuple[Any, Any]:
    """Return (torch, model), building the model on first use."""
    if "model" not in _state:
        import torch

        torch.set_num_threads(1)
        device = torch.device(os.environ.get("DEEPAAS_DEVICE", "cpu"))
        generator = torch.Generator().manual_seed(WEIGHT_SEED)
        layers: list[torch.nn.Module] = []
        for index in range(LAYERS):
            layer = torch.nn.Linear(WIDTH, WIDTH)
            with torch.no_grad():
                bound = WIDTH**-0.5
                layer.weight.uniform_(-bound, bound, generator=generator)
                layer.bias.uniform_(-bound, bound, generator=generator)
            layers.append(layer)
            if index < LAYERS - 1:
                layers.append(torch.nn.ReLU())
        model = torch.nn.Sequential(*layers).to(device).eval()
        _state.update(torch=torch, model=model, device=device)
    return _state["torch"], _state["model"]


def _input(torch: Any, kwargs: dict[str, Any]) -> Any:
    """The request's 2048-vector (on the CPU)."""
    if kwargs.get("x") is not None:
        x = torch.tensor(kwargs["x"], dtype=torch.float32)
        if x.shape != (WIDTH,):
            raise ValueError(f"x must hold {WIDTH} floats, got shape {tuple(x.shape)}")
        return x
    generator = torch.Generator().manual_seed(int(kwargs.get("seed") or 0))
    return torch.randn(WIDTH, generator=generator)


def _run(inputs: list[Any]) -> list[dict[str, Any]]:
    """Run a batch of inputs through the MLP; one small result per input."""
    torch, model = _model()
    device = _state["device"]
    with torch.inference_mode():
        out = model(torch.stack(inputs).to(device))
        sums = out.sum(dim=1).tolist()
        argmaxes = out.argmax(dim=1).tolist()
    return [
        {"argmax": int(a), "sum": float(s), "device": str(device)}
        for a, s in zip(argmaxes, sums, strict=True)
    ]


def predict(**kwargs: Any) -> dict[str, Any]:
    """Run one input (batch 1)."""
    torch, _ = _model()
    return _run([_input(torch, kwargs)])[0]


def predict_batch(batch: list[dict[str, Any]]) -> list[Any]:
    """Run every request's input at once; one result per request, in order.

    A request whose input cannot be built gets its exception as its result
    (failing only that request); the others still run.
    """
    torch, _ = _model()
    results: list[Any] = [None] * len(batch)
    inputs, slots = [], []
    for slot, kwargs in enumerate(batch):
        try:
            inputs.append(_input(torch, kwargs))
        except Exception as exc:  # bad input: fails only this request
            results[slot] = exc
        else:
            slots.append(slot)
    if inputs:
        for slot, result in zip(slots, _run(inputs), strict=True):
            results[slot] = result
    return results
