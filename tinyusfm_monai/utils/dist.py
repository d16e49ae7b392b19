"""Distributed-run helpers shared by the training handlers, the coreset and the distillation engine."""

from __future__ import annotations

import os

import torch
from torch import nn


def rank_and_world_size(rank: int | None = None, world_size: int | None = None) -> tuple[int, int]:
    """(rank, world size) from the arguments, an initialised process group, or the torchrun environment."""
    if rank is not None and world_size is not None:
        return rank, world_size
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def is_rank_zero() -> bool:
    """True outside distributed runs and on rank 0: the one process that writes files."""
    return rank_and_world_size()[0] == 0


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel / DataParallel wrapper (the network itself otherwise)."""
    inner = getattr(network, "module", None)
    return inner if isinstance(inner, nn.Module) else network
