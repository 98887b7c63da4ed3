"""deepaas.training.distributed on the CPU: real Gloo ranks, real processes.

The functions the ranks run are at module level: they reach the rank
processes by name (spawn start method), as the helper's users' must.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time

import pytest

from tests.needs import needs

torch = needs("torch")

from deepaas.training import distributed  # noqa: E402
from deepaas.training.distributed import DistributedError, RankContext  # noqa: E402

N_ITEMS = 10


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    )


def _data():
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(8, 3, generator=generator)
    return x, torch.randn(8, 1, generator=generator)


def _params(model):
    return [p.detach().clone() for p in model.parameters()]


def one_ddp_step(ctx: RankContext, lr: float):
    """One SGD step of DDP on this rank's half of the data."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(100 + ctx.rank)  # different replicas until DDP syncs them
    model = torch.nn.Sequential(
        torch.nn.Linear(3, 4), torch.nn.Tanh(), torch.nn.Linear(4, 1)
    )
    if ctx.is_main:
        model.load_state_dict(_model().state_dict())
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's parameters
    initial = _params(model)
    x, y = _data()
    indices = ctx.shard(list(range(len(x))))
    optimiser = torch.optim.SGD(ddp.parameters(), lr=lr)
    loss = torch.nn.functional.mse_loss(ddp(x[indices]), y[indices])
    loss.backward()  # gradients averaged over the ranks
    optimiser.step()
    return {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "device": str(ctx.device),
        "backend": dist.get_backend(),
        "indices": indices,
        "initial": initial,
        "final": _params(model),
    }


def fail_in_rank_1(ctx: RankContext):
    if ctx.rank == 1:
        raise ValueError("boom in rank 1")
    ctx.barrier()  # rank 1 never arrives: rank 0 must be stopped, not awaited
    time.sleep(600)


def die_in_rank_1(ctx: RankContext):
    if ctx.rank == 1:
        os._exit(3)
    ctx.barrier()
    time.sleep(600)


def test_one_ddp_step_leaves_identical_parameters(monkeypatch):
    # Two Gloo ranks, from the job's lease as the training runner sets it.
    monkeypatch.setenv("DEEPAAS_DEVICES", "cpu,cpu")
    lr = 0.5
    results = distributed.run(one_ddp_step, lr=lr)

    assert [r["rank"] for r in results] == [0, 1]
    assert {(r["world_size"], r["device"], r["backend"]) for r in results} == {
        (2, "cpu", "gloo")
    }
    # Each rank trained on its own shard: disjoint, together all the data.
    shards = [r["indices"] for r in results]
    assert shards == [[0, 2, 4, 6], [1, 3, 5, 7]]

    first, second = results
    for a, b in zip(first["initial"], second["initial"], strict=True):
        assert torch.equal(a, b)  # DDP started both from rank 0's weights
    for a, b in zip(first["final"], second["final"], strict=True):
        assert torch.equal(a, b)  # identical after the step
    assert any(
        not torch.equal(a, b)
        for a, b in zip(first["initial"], first["final"], strict=True)
    )

    # And the step is the one a single process takes on all the data (equal
    # shards: the mean of the shards' mean gradients is the full mean gradient).
    model = _model()
    x, y = _data()
    torch.nn.functional.mse_loss(model(x), y).backward()
    with torch.no_grad():
        for p in model.parameters():
            p -= lr * p.grad
    for expected, got in zip(_params(model), first["final"], strict=True):
        assert torch.allclose(expected, got, atol=1e-6)


def test_exception_in_a_rank_names_it():
    started = time.monotonic()
    with pytest.raises(DistributedError, match="rank 1 failed") as info:
        distributed.run(fail_in_rank_1, devices=["cpu", "cpu"])
    assert info.value.rank == 1
    assert "ValueError: boom in rank 1" in str(info.value)
    assert "fail_in_rank_1" in info.value.remote_traceback
    assert time.monotonic() - started < 60


def test_a_rank_that_dies_is_named():
    with pytest.raises(DistributedError, match="rank 1 failed") as info:
        distributed.run(die_in_rank_1, devices=["cpu", "cpu"])
    assert "exited with code 3" in str(info.value)


def test_shards_are_disjoint_and_cover():
    items = list(range(N_ITEMS))
    for world_size in (1, 2, 3, 4):
        shards = [
            RankContext(rank, world_size, torch.device("cpu")).shard(items)
            for rank in range(world_size)
        ]
        assert sorted(i for shard in shards for i in shard) == items
        even = [
            RankContext(rank, world_size, torch.device("cpu")).shard(items, even=True)
            for rank in range(world_size)
        ]
        assert len({len(s) for s in even}) == 1
        assert sum(len(s) for s in even) == N_ITEMS - N_ITEMS % world_size

    dataset = torch.utils.data.TensorDataset(torch.arange(N_ITEMS))
    subset = RankContext(1, 3, torch.device("cpu")).shard(dataset)
    assert isinstance(subset, torch.utils.data.Subset)
    assert [int(item[0]) for item in subset] == [1, 4, 7]


def test_unpicklable_function_is_refused():
    with pytest.raises(TypeError, match="module level"):
        distributed.run(lambda ctx: None, devices=["cpu"])


def test_devices_from_env(monkeypatch):
    monkeypatch.setenv("DEEPAAS_DEVICES", " cuda:0, cuda:1 ")
    assert distributed.devices_from_env() == ["cuda:0", "cuda:1"]
    monkeypatch.setenv("DEEPAAS_DEVICES", "cpu")
    assert distributed.devices_from_env() == ["cpu"]
    monkeypatch.setenv("DEEPAAS_DEVICES", "")
    assert distributed.devices_from_env() == ["cpu"]  # no GPU here
    monkeypatch.setenv("DEEPAAS_DEVICES", "0,1")
    with pytest.raises(ValueError, match="DEEPAAS_DEVICES"):
        distributed.devices_from_env()
    with pytest.raises(ValueError, match="mix"):
        distributed.run(one_ddp_step, lr=0.1, devices=["cuda:0", "cpu"])


# -- the torch example plugin -------------------------------------------------


def test_torch_example_trains_data_parallel(monkeypatch, tmp_path):
    from deepaas_example import torch_mlp

    weights = tmp_path / "weights.pt"
    monkeypatch.setenv("DEEPAAS_DEVICES", "cpu,cpu")
    monkeypatch.setenv("DEEPAAS_EXAMPLE_WEIGHTS", str(weights))
    assert torch_mlp.predict(x=0.0, y=0.0)["trained"] is False

    summary = torch_mlp.train(epochs=5, lr=0.05, batch_size=32)

    assert json.loads(json.dumps(summary)) == summary
    assert summary["world_size"] == 2
    assert summary["devices"] == ["cpu", "cpu"]
    assert summary["epochs"] == 5
    assert summary["weights"] == str(weights)
    assert math.isfinite(summary["final_loss"])
    assert summary["final_loss"] < 0.5  # log(2) = 0.69 is a coin toss
    assert summary["accuracy"] > 0.85
    assert weights.exists()

    inside = torch_mlp.predict(x=0.0, y=0.0)
    outside = torch_mlp.predict(x=1.9, y=-1.9)
    assert inside["trained"] is True
    assert inside["inside"] is True
    assert outside["inside"] is False


def test_torch_example_loads_without_torch():
    """deepaas-run imports every plugin: this one must load without torch."""
    code = (
        "import sys; sys.modules['torch'] = None\n"
        "import deepaas.training.distributed\n"
        "from deepaas_example import torch_mlp\n"
        "torch_mlp.warm(); torch_mlp.get_metadata(); torch_mlp.get_train_args()\n"
        "try:\n"
        "    torch_mlp.train(epochs=1, lr=0.1, batch_size=8)\n"
        "except RuntimeError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == (
        "this example needs torch: pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
    )
