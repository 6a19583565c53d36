"""torch.distributed under `torchrun`: gloo on CPU, nccl on GPU; rank 0 writes and logs.

The same stage command runs on one process or many: `torchrun --nproc_per_node 2 -m vqvideo
train ...`. Each rank takes a contiguous shard of every global batch, so the gathered batch is the
single-process batch and the quantizer's global statistics match a single process's.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist

from vqvideo.errors import ConfigError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def shard(self, batch: int) -> slice:
        """This rank's contiguous part of a global batch of `batch` items."""
        if batch % self.world:
            raise ConfigError(f"the batch size {batch} must be divisible by the {self.world} processes")
        per = batch // self.world
        return slice(self.rank * per, (self.rank + 1) * per)

    def device(self, device: torch.device) -> torch.device:
        return torch.device("cuda", self.local_rank) if device.type == "cuda" else device


def current() -> Dist:
    if dist.is_available() and dist.is_initialized():
        return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", 0)))
    return Dist()


@contextlib.contextmanager
def session(device: torch.device) -> Iterator[Dist]:
    """Join the process group torchrun describes in the environment (if any) for this block."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        yield current()
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
    dist.init_process_group(backend)
    try:
        yield current()
    finally:
        dist.barrier()
        dist.destroy_process_group()


def wrap(model: torch.nn.Module, info: Dist) -> torch.nn.Module:
    """DistributedDataParallel when there are several processes, else the model itself.

    Buffers are not broadcast each step: the quantizer keeps its codebook identical on every rank
    itself (all-reduced EMA statistics, broadcast random choices).
    """
    if not info.active:
        return model
    from torch.nn.parallel import DistributedDataParallel

    ids = [info.local_rank] if next(model.parameters()).device.type == "cuda" else None
    with warnings.catch_warnings():  # the replacement flag still syncs at init, which is harmless
        warnings.simplefilter("ignore", FutureWarning)
        return DistributedDataParallel(model, device_ids=ids, broadcast_buffers=False)
