"""torch.distributed for every long command, launched the standard way: `torchrun`.

`Distributed.from_environment()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK); without
them it is a single process and every method here is a no-op. The backend follows the device: NCCL
for CUDA, gloo for CPU. Work is sharded by rank deterministically (chunk k goes to rank k mod world
size), each rank writes its own files, and rank 0 merges after a barrier. Only rank 0 shows progress;
every rank logs to `logs/rank-<r>.log` beside its output when asked.
"""

from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.distributed as dist

from cliprank.errors import CliprankError


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    initialised: bool = False

    @classmethod
    def from_environment(cls, device: str = "cpu") -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        if device.startswith("cuda"):
            if not torch.cuda.is_available():
                raise CliprankError("--device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")
            if world_size > 1:
                device = f"cuda:{local_rank}"
                torch.cuda.set_device(local_rank)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=device)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def backend(self) -> str:
        return "nccl" if self.device.startswith("cuda") else "gloo"

    def __enter__(self) -> Distributed:
        if self.enabled and not dist.is_initialized():
            dist.init_process_group(backend=self.backend, timeout=datetime.timedelta(hours=6))
            self.initialised = True
        return self

    def __exit__(self, *exc: object) -> None:
        if self.initialised and dist.is_initialized():
            dist.destroy_process_group()
            self.initialised = False

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def broadcast_object(self, value: object) -> object:
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    @contextlib.contextmanager
    def quiet(self) -> Iterator[None]:
        """The stand-in for a progress bar on ranks other than 0."""
        yield None
