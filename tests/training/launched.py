"""A training script as ``srun`` or ``torchrun`` starts it on each node.

``python -m tests.training.launched`` runs one DDP step with
:func:`deepaas.training.distributed.run` and prints every rank's result as
JSON. ``test_launch.py`` starts it twice, as two "nodes", with a launcher's
environment: two tasks of two Gloo ranks each, one group of four.
"""

from __future__ import annotations

import json
from typing import Any

from deepaas.training import distributed
from deepaas.training.distributed import RankContext


def step(ctx: RankContext, lr: float) -> dict[str, Any]:
    """One SGD step of DDP on this rank's share of 8 items."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    torch.manual_seed(100 + ctx.rank)  # different replicas until DDP syncs them
    model = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.Tanh())
    ddp = DistributedDataParallel(model)  # broadcasts rank 0's parameters
    initial = [p.detach().flatten().tolist() for p in model.parameters()]
    generator = torch.Generator().manual_seed(1)
    x, y = (
        torch.randn(8, 3, generator=generator),
        torch.randn(8, 2, generator=generator),
    )
    indices = ctx.shard(list(range(8)))
    optimiser = torch.optim.SGD(ddp.parameters(), lr=lr)
    torch.nn.functional.mse_loss(ddp(x[indices]), y[indices]).backward()
    optimiser.step()
    return {
        "rank": ctx.rank,
        "world_size": ctx.world_size,
        "indices": indices,
        "initial": initial,
        "final": [p.detach().flatten().tolist() for p in model.parameters()],
    }


if __name__ == "__main__":
    print(json.dumps(distributed.run(step, 0.5)), flush=True)
