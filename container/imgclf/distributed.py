"""Data-parallel training across processes (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK): NCCL on
GPUs, gloo on CPUs. With one process every helper here is a no-op."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Ranks:
    """This process's place among torchrun's processes, and the collectives they all take part in."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def sum(self, value: torch.Tensor) -> torch.Tensor:
        """The sum over all processes (a new tensor; ``value`` is left alone)."""
        value = value.clone()
        if self.active:
            dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        return self.sum(value) / self.world_size

    def same_on_all(self, value: object) -> bool:
        """Whether every process holds ``value`` (anything picklable)."""
        if not self.active:
            return True
        values: list[object] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return all(v == values[0] for v in values)


def start(ranks: Ranks, device: torch.device) -> None:
    if not ranks.active:
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo", timeout=timedelta(minutes=30))
    log.info("process %d of %d (local %d of %d), %s backend", ranks.rank, ranks.world_size,
             ranks.local_rank, ranks.local_world_size, dist.get_backend())


def stop() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
