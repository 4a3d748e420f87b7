"""DDP checks shared by the integration tests (imported as ``ddp_checks``): every rank holds the same weights.

The hooks run inside Ray Train workers; :func:`send_by_value` makes cloudpickle
ship this module's code with them, so workers need not import the tests.
"""

from __future__ import annotations

import sys

import torch


def assert_same_weights_on_every_rank(*modules: torch.nn.Module, where: str) -> None:
    """All-gather the flattened parameters of ``modules``; raise if any rank's differ from rank 0's."""
    import torch.distributed as dist

    assert dist.get_world_size() >= 2, "not distributed"
    flat = torch.cat([p.detach().flatten() for m in modules for p in m.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(dist.get_world_size())]
    dist.all_gather(gathered, flat)
    if not all(torch.equal(gathered[0], other) for other in gathered[1:]):
        raise AssertionError(f"DDP ranks hold different weights {where}")


def gan_ranks_in_sync(G: torch.nn.Module, D: torch.nn.Module, step: int) -> None:
    """GAN ``on_step`` hook: after the first and third steps, G and D are equal on every rank."""
    if step in (0, 2):
        assert_same_weights_on_every_rank(G, D, where=f"after step {step}")


def captioner_ranks_in_sync(model: torch.nn.Module, epoch: int, step: int) -> None:
    """Captioner ``on_step`` hook: after the first two steps of each epoch, equal weights on every rank."""
    if step in (0, 1):
        assert_same_weights_on_every_rank(model, where=f"after step {step} of epoch {epoch}")


def send_by_value() -> None:
    """Pickle these hooks by value, so Ray workers get their code."""
    import ray.cloudpickle

    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
