"""The torchrun process group of a training run: who this process is, joining and leaving, and mean over ranks."""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


@dataclass
class Distributed:
    """Process group facts: world size, this process's rank and local rank."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0
    owns_group: bool = False  # this process group was started by ``init_distributed`` (and ends with the run)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device_name: str) -> Distributed:
    """Join the torchrun process group when ``WORLD_SIZE`` > 1 (NCCL on GPU, Gloo on CPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Distributed()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not torch.distributed.is_initialized()
    if owns_group:
        use_cuda = device_name != "cpu" and torch.cuda.is_available()
        if use_cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group("nccl" if use_cuda else "gloo")
    return Distributed(world_size, rank, local_rank, owns_group)


def shutdown_distributed(dist: Distributed) -> None:
    """Leave the process group if ``init_distributed`` started it (one started by the caller stays up)."""
    if dist.owns_group and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def mean_over_ranks(value: torch.Tensor, dist: Distributed) -> float:
    """The mean of a scalar over all ranks (the loss of the whole step under DDP); the value itself otherwise."""
    if dist.world_size > 1:
        value = value.detach().clone()
        torch.distributed.all_reduce(value)
        value /= dist.world_size
    return float(value)
