"""torchrun / DDP setup shared by training stages: the same code runs as one process or many.

Under ``torchrun`` (``WORLD_SIZE > 1``) the process group is initialised with NCCL on CUDA and gloo on
CPU; each rank uses ``cuda:LOCAL_RANK`` on a GPU machine. Without torchrun nothing is initialised.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from pipeline.devices import pick_device


@dataclass(frozen=True)
class Dist:
    """This process's place in the job."""

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> Dist:
    """Join the torchrun job when there is one (idempotent); return rank, world size and device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    dev = pick_device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo")
    rank = dist.get_rank() if dist.is_initialized() else 0
    return Dist(rank, world, dev)


def barrier(d: Dist) -> None:
    """Wait for every rank (no-op in one process)."""
    if d.world > 1:
        dist.barrier()


def all_true(flag: bool, d: Dist) -> bool:
    """True when ``flag`` is true on every rank (one all-reduce; one process: ``flag``)."""
    if d.world == 1:
        return flag
    t = torch.tensor([1 if flag else 0], device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def shutdown() -> None:
    """Leave the process group, if one was joined."""
    if dist.is_initialized():
        dist.destroy_process_group()
