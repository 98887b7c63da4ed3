"""A PyTorch plugin trained data-parallel on the devices leased to its job.

``train()`` fits a tiny MLP (is a 2-D point inside the unit circle?) on
synthetic data, with one process per leased device through
:func:`deepaas.training.distributed.run`: ``DistributedDataParallel`` over NCCL
on GPUs, over Gloo on the CPU. Ask for GPUs with the framework argument
``deepaas_gpus``, on a server that has them (elsewhere it answers 422; leave
it out to train one rank on the CPU)::

    curl -X POST "http://127.0.0.1:5000/v2/models/demo_torch/train/?epochs=20&deepaas_gpus=2"

``predict()`` classifies a point with the saved weights.

torch is imported inside the functions, never at the top of the module:
``deepaas-run`` imports every installed plugin when it starts, and this one
must not stop it (or slow it down) where torch is not installed. Install it
with the CPU build (a bare ``pip install torch`` also pulls the CUDA libraries)::

    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
"""

import contextlib
import os
import pathlib

import platformdirs
from webargs import fields, validate

from deepaas import training
from deepaas.training import distributed

# The CPU build, pinned: a bare "pip install torch" pulls the CUDA libraries too.
TORCH_INSTALL = (
    "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
)
# Where train() saves the weights and predict() reads them.
WEIGHTS_ENV = "DEEPAAS_EXAMPLE_WEIGHTS"
DEFAULT_WEIGHTS = (
    pathlib.Path(platformdirs.user_state_dir("deepaas")) / "examples" / "torch_mlp.pt"
)

N_SAMPLES = 1024
HIDDEN = 32

# The model predict() uses, and the weights file (and its mtime) it came from.
_loaded = {"model": None, "stamp": None}


def weights_path():
    """The weights file: ``$DEEPAAS_EXAMPLE_WEIGHTS`` or the user's state dir."""
    return pathlib.Path(os.environ.get(WEIGHTS_ENV) or DEFAULT_WEIGHTS)


def _torch():
    try:
        import torch
    except ImportError:
        raise RuntimeError(f"this example needs torch: {TORCH_INSTALL}") from None
    return torch


def _device(torch):
    """The worker's device (``DEEPAAS_DEVICE``, set by deepaas): ``cuda:0``
    in a worker placed on a GPU, else ``cpu``; the CPU when this torch has
    no CUDA (a CPU build on a GPU host)."""
    name = os.environ.get("DEEPAAS_DEVICE", "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        return torch.device("cpu")
    return torch.device(name)


def _make_model(torch):
    return torch.nn.Sequential(
        torch.nn.Linear(2, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, HIDDEN),
        torch.nn.ReLU(),
        torch.nn.Linear(HIDDEN, 1),
    )


def _make_data(torch):
    """The same points in every rank and every run: no download, fixed seed."""
    generator = torch.Generator().manual_seed(0)
    points = torch.rand(N_SAMPLES, 2, generator=generator) * 4 - 2
    labels = (points.pow(2).sum(dim=1) < 1.5).float().unsqueeze(1)
    return points, labels


def get_metadata():
    return {
        "id": "demo_torch",
        "name": "demo_torch",
        "description": "A tiny PyTorch MLP trained data-parallel on the leased "
        "devices: is a 2-D point inside the circle of radius 1.22?",
        "author": "deepaas developers",
        "version": "1.0.0",
        "license": "Apache-2.0",
        "weights": str(weights_path()),
    }


def warm():
    """Load the weights if there are some; without torch, predict will say so."""
    with contextlib.suppress(RuntimeError):
        _model()


def get_train_args():
    return {
        "epochs": fields.Int(
            load_default=10,
            validate=validate.Range(min=1, max=1000),
            metadata={"description": "Passes over the data"},
        ),
        "lr": fields.Float(
            load_default=0.05,
            validate=validate.Range(min=0.0, min_inclusive=False),
            metadata={"description": "Learning rate (SGD with momentum)"},
        ),
        "batch_size": fields.Int(
            load_default=32,
            validate=validate.Range(min=1, max=N_SAMPLES),
            metadata={"description": "Points per batch, per device"},
        ),
    }


def train(**kwargs):
    """Train on every leased device at once; rank 0 saves the weights."""
    _torch()  # fail here, with the clear message, rather than in every rank
    devices = distributed.devices_from_env()
    path = weights_path()
    results = distributed.run(
        _train_rank,
        kwargs["epochs"],
        kwargs["lr"],
        kwargs["batch_size"],
        str(path),
        devices=devices,
    )
    main = results[0]
    if training.current() is not None:  # in a deepaas training job
        training.report(epoch=kwargs["epochs"], loss=main["loss"])
    return {
        "final_loss": main["loss"],
        "accuracy": main["accuracy"],
        "epochs": kwargs["epochs"],
        "world_size": len(devices),
        "devices": devices,
        "weights": str(path),
    }


def _train_rank(ctx, epochs, lr, batch_size, path):
    """One rank's training loop (module level, so the rank processes find it)."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(0)
    points, labels = _make_data(torch)
    batches = [
        (points[i : i + batch_size], labels[i : i + batch_size])
        for i in range(0, N_SAMPLES, batch_size)
    ]
    # even=True: every rank takes the same number of steps (DDP needs it).
    my_batches = ctx.shard(batches, even=True)

    model = _make_model(torch).to(ctx.device)
    # DDP copies rank 0's initial weights to every rank, then averages the
    # gradients over the ranks in backward(): the replicas stay identical.
    ddp = DistributedDataParallel(
        model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None
    )
    optimiser = torch.optim.SGD(ddp.parameters(), lr=lr, momentum=0.9)
    loss_fn = torch.nn.BCEWithLogitsLoss()

    loss = torch.zeros((), device=ctx.device)
    for epoch in range(1, epochs + 1):
        total = torch.zeros((), device=ctx.device)
        for x, y in my_batches:
            x, y = x.to(ctx.device), y.to(ctx.device)
            optimiser.zero_grad()
            batch_loss = loss_fn(ddp(x), y)
            batch_loss.backward()
            optimiser.step()
            total += batch_loss.detach()
        loss = ctx.all_reduce_mean(total / max(1, len(my_batches)))
        if ctx.is_main:
            print(f"epoch {epoch}/{epochs} loss {loss.item():.4f}", flush=True)

    with torch.no_grad():
        predicted = model(points.to(ctx.device)) > 0
        accuracy = (predicted == labels.to(ctx.device).bool()).float().mean()
    if ctx.is_main:
        pathlib.Path(path).parent.mkdir(parents=True, exist_ok=True)
        # Write then rename: predict() never reads a half-written file.
        tmp = f"{path}.tmp"
        torch.save(model.state_dict(), tmp)
        os.replace(tmp, path)
    return {"loss": round(loss.item(), 6), "accuracy": round(accuracy.item(), 4)}


def get_predict_args():
    return {
        "x": fields.Float(load_default=0.0, metadata={"description": "x coordinate"}),
        "y": fields.Float(load_default=0.0, metadata={"description": "y coordinate"}),
    }


def predict(**kwargs):
    """Is the point (x, y) inside the circle? Uses the latest trained weights."""
    torch = _torch()
    model = _model()
    point = torch.tensor([[kwargs["x"], kwargs["y"]]], dtype=torch.float32)
    with torch.no_grad():
        logit = model(point.to(_device(torch)))
    probability = torch.sigmoid(logit).item()
    return {
        "inside": probability > 0.5,
        "probability": round(probability, 4),
        "trained": _loaded["stamp"] is not None,
    }


def _model():
    """The model with the newest saved weights (untrained if there are none)."""
    torch = _torch()
    path = weights_path()
    stamp = path.stat().st_mtime_ns if path.exists() else None
    if _loaded["model"] is None or stamp != _loaded["stamp"]:
        torch.manual_seed(0)
        model = _make_model(torch)  # made on the CPU: the same weights anywhere
        if stamp is not None:
            model.load_state_dict(torch.load(path, map_location="cpu"))
        model.to(_device(torch)).eval()
        _loaded["model"], _loaded["stamp"] = model, stamp
    return _loaded["model"]
