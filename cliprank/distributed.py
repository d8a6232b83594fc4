"""torch.distributed for every long command, launched the standard way: `torchrun`.

`Distributed.from_environment()` reads torchrun's variables (RANK, WORLD_SIZE, LOCAL_RANK); without
them it is a single process and every method here is a no-op. Under torchrun a process group is set up
even for one process (`torchrun --nproc_per_node 1`), so that run takes the distributed path — the
process group, part files, merge — which one GPU can then check against a plain run. The backend
follows the device: NCCL for CUDA, gloo for CPU. Work is sharded by rank deterministically (item k
goes to rank k mod world size, `owns`), each rank writes its own files, and rank 0 merges after a
barrier. Only rank 0 shows progress; every rank logs to `rank-<r>.log` in a folder beside its output
(`log_to`).

Nothing here hangs forever on a dead peer: torchrun stops every worker of a group as soon as one
fails, and the process-group timeout bounds the rest.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import torch
import torch.distributed as dist

from cliprank.errors import CliprankError

T = TypeVar("T")

LOG_FORMAT = "%(asctime)s rank {rank}/{world} %(name)s %(levelname)s: %(message)s"


def check_device(device: str) -> None:
    """Refuse, in one line, a device torch cannot use here."""
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise CliprankError(f"device '{device}' is not supported; use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CliprankError("--device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")
    index = device.partition(":")[2]
    if kind == "cuda" and index and (not index.isdigit() or int(index) >= torch.cuda.device_count()):
        count = torch.cuda.device_count()
        raise CliprankError(
            f"device '{device}' does not exist here: torch sees {count} GPU(s), cuda:0 to cuda:{count - 1}"
        )


@dataclass
class Distributed:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"
    initialised: bool = False
    launched: bool = False  # started by torchrun (or another launcher of env:// process groups)

    @classmethod
    def from_environment(cls, device: str = "cpu") -> Distributed:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        rank = int(os.environ.get("RANK", "0"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        launched = all(name in os.environ for name in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"))
        check_device(device)
        if device.startswith("cuda") and (world_size > 1 or launched):
            device = f"cuda:{local_rank}"
            torch.cuda.set_device(local_rank)
        return cls(rank=rank, world_size=world_size, local_rank=local_rank, device=device, launched=launched)

    @property
    def enabled(self) -> bool:
        return self.world_size > 1 or self.launched

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

    def owns(self, k: int) -> bool:
        """Whether work item `k` (a chunk, a batch) is this rank's: k mod world size, the same on every run."""
        return k % self.world_size == self.rank

    def shard(self, items: Iterable[T]) -> list[T]:
        """This rank's items of a sequence, by position (see `owns`)."""
        return [item for k, item in enumerate(items) if self.owns(k)]

    def part(self, size: int) -> slice:
        """This rank's contiguous slice of a global batch of `size` rows (sizes differ by at most one)."""
        return slice(self.rank * size // self.world_size, (self.rank + 1) * size // self.world_size)

    def barrier(self) -> None:
        if not self.enabled:
            return
        if self.backend == "nccl":
            dist.barrier(device_ids=[self.local_rank])
        else:
            dist.barrier()

    @contextlib.contextmanager
    def main_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (filling a cache, downloading), the others after it, reading its result.

        Ranks that race on the same cache file would each compute it; atomic writes keep that safe but
        not cheap, and concurrent downloads into one folder are not safe at all.
        """
        if not self.is_main:
            self.barrier()
        yield None
        if self.is_main:
            self.barrier()

    def all_reduce_sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if self.enabled:
            dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        return tensor

    def total(self, count: int) -> int:
        """A count summed over ranks (images searched, rows seen), for the one summary rank 0 prints."""
        if not self.enabled:
            return count
        return int(self.all_reduce_sum(torch.tensor([count], dtype=torch.long, device=self.device)))

    def broadcast_object(self, value: object) -> object:
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Start every rank from rank 0's parameters, as DistributedDataParallel does at construction."""
        if not self.enabled:
            return
        with torch.no_grad():
            for tensor in [*module.parameters(), *module.buffers()]:
                dist.broadcast(tensor.data, src=0)

    def sum_gradients(self, parameters: Iterable[torch.nn.Parameter], *extra: torch.Tensor) -> list[torch.Tensor]:
        """Sum the gradients of `parameters` over ranks in one all-reduce; returns `extra` scalars summed too.

        Each rank's loss is its share of the *global* batch's mean (its rows' sum over the global batch
        size), so the summed gradient is the one-process gradient of the global batch, up to rounding.
        DistributedDataParallel would average instead, which is only equivalent when every rank has
        the same number of rows; a short last batch (or a rank with an empty slice of it) breaks that.
        A parameter without a gradient counts as zero. The extra scalars ride along in the same message
        (the loss for the epoch's log).
        """
        parameters = [p for p in parameters if p.requires_grad]
        if not self.enabled:
            return list(extra)
        device = parameters[0].device if parameters else torch.device(self.device)
        dtype = parameters[0].dtype if parameters else torch.float32
        grads = [torch.zeros_like(p) if p.grad is None else p.grad for p in parameters]
        pieces = [g.reshape(-1) for g in grads] + [e.detach().reshape(1).to(device, dtype) for e in extra]
        flat = torch.cat(pieces) if pieces else torch.zeros(0, device=device)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        offset = 0
        for parameter, grad in zip(parameters, grads, strict=True):
            parameter.grad = flat[offset : offset + grad.numel()].view_as(grad).clone()
            offset += grad.numel()
        return [flat[offset + i].clone() for i in range(len(extra))]

    def log_to(self, folder: Path) -> Path | None:
        """Send this rank's `cliprank` log records to `folder/rank-<r>.log` (distributed runs only).

        Single-process runs keep their output unchanged; under torchrun each rank's file says what it
        computed, skipped and waited for, which is what one needs to debug a stuck or crashed rank.
        """
        if not self.enabled:
            return None
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"rank-{self.rank}.log"
        logger = logging.getLogger("cliprank")
        for handler in [h for h in logger.handlers if getattr(h, "cliprank_rank_log", False)]:
            logger.removeHandler(handler)
            handler.close()
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.cliprank_rank_log = True  # type: ignore[attr-defined]
        handler.setFormatter(logging.Formatter(LOG_FORMAT.format(rank=self.rank, world=self.world_size)))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.info(
            "started: pid %d, %s backend, device %s, local rank %d",
            os.getpid(),
            self.backend,
            self.device,
            self.local_rank,
        )
        return path
