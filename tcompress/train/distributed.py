"""One process or many: the process group ``torchrun`` asks for, and the data shards.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) :func:`setup` joins the process group:
gloo on the CPU, NCCL on GPUs, one GPU per process (``LOCAL_RANK``). Alone it does nothing, so
the same code runs on one machine and many.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from tcompress.errors import TcompressError, param

__all__ = ["Distributed", "ShardSampler", "setup", "teardown"]


@dataclass(frozen=True)
class Distributed:
    """Where this process stands: its rank among ``world`` processes and its device."""

    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        """Rank 0: the only process that logs and writes files."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def barrier(self) -> None:
        if self.active:
            dist.barrier()

    def broadcast_object(self, obj: object) -> object:
        """Rank 0's ``obj`` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]


def setup(device: str | torch.device = "cpu") -> Distributed:
    """Join the process group if launched by ``torchrun``; the device this process uses.

    ``device="cuda"`` under ``torchrun`` means ``cuda:LOCAL_RANK``.
    """
    try:
        device = torch.device(device)
    except RuntimeError:
        raise TcompressError(
            f"device {device!r} is not a device; expected cpu, cuda or cuda:N"
        ) from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise TcompressError(
            f"device {str(device)!r}: CUDA is not available here; use {param('device', 'cpu')}"
        )
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Distributed(0, 1, device)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        if device.index is None:
            device = torch.device("cuda", local)
        torch.cuda.set_device(device)
        backend = "nccl"
    elif device.type == "cpu":
        backend = "gloo"
    else:
        raise TcompressError(f"distributed runs support cpu and cuda devices, not {device.type!r}")
    if not dist.is_initialized():
        dist.init_process_group(backend)
    return Distributed(rank, world, device)


def teardown(context: Distributed) -> None:
    if context.active and dist.is_initialized():
        dist.destroy_process_group()


class ShardSampler(Sampler[int]):
    """This rank's share of one epoch, in batches that every rank has the same number of.

    The epoch's order is a permutation drawn from ``(seed, epoch)`` alone (or the identity with
    ``shuffle=False``); rank ``r`` of ``world`` takes every ``world``-th index from ``r``, the
    incomplete last batch is dropped, and the first ``skip`` indices of the share are left out
    (how a resumed run continues mid-epoch).
    """

    def __init__(
        self,
        length: int,
        batch_size: int,
        *,
        rank: int = 0,
        world: int = 1,
        seed: int = 0,
        epoch: int = 0,
        shuffle: bool = True,
        skip: int = 0,
    ) -> None:
        self.length, self.batch_size = length, batch_size
        self.rank, self.world, self.seed, self.epoch = rank, world, seed, epoch
        self.shuffle, self.skip = shuffle, skip

    @staticmethod
    def batches_per_epoch(length: int, batch_size: int, world: int = 1) -> int:
        return (length // world) // batch_size

    def __iter__(self) -> Iterator[int]:
        if self.shuffle:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(self.length, generator=generator)
        else:
            order = torch.arange(self.length)
        share = order[self.rank :: self.world]
        usable = self.batches_per_epoch(self.length, self.batch_size, self.world) * self.batch_size
        return iter(share[self.skip : usable].tolist())

    def __len__(self) -> int:
        usable = self.batches_per_epoch(self.length, self.batch_size, self.world) * self.batch_size
        return max(usable - self.skip, 0)
