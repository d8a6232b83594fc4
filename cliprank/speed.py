"""Speed and memory of reduced forwards: throughput, batch-1 latency and peak memory, timed alike.

Both `evaluate` and `profile` measure here, so a row's speed means the same in both. Every row is
timed round-robin (one forward of each in turn, after warm-up): on a shared or thermally throttling
machine a slow spell then hits every row alike and their ratios — the speed-ups — stay fair. The
median shrugs off single hiccups. Every forward runs in the model's precision (autocast for `amp`).

On a GPU, work is queued: a timer read on the host right after the call measures the launch, not
the work. So a GPU forward is timed with CUDA events recorded on the device's stream around it, after
synchronising with whatever was queued before; its peak memory is the allocator's own count
(`torch.cuda.reset_peak_memory_stats` / `max_memory_allocated`) for that one forward. On a CPU the
wall clock is the device's clock, and peak memory is counted at the dispatcher (`TensorMemory`).
"""

from __future__ import annotations

import contextlib
import platform
import shutil
import statistics
import subprocess
import time
import weakref
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from cliprank.data.meta import slice_meta
from cliprank.engine.forward import ReducedVisual
from cliprank.engine.plan import Plan
from cliprank.models.arch import VisionArch
from cliprank.precision import FP32, Precision


@dataclass(frozen=True)
class Timing:
    """Throughput of one batch size, and how it was timed (a number means little without it)."""

    images_per_second: float
    median_batch_seconds: float
    batch_size: int
    warmup: int
    repeats: int
    threads: int


@dataclass(frozen=True)
class Memory:
    peak_bytes: int | None
    measure: str  # what the number is, in words


@dataclass(frozen=True)
class Speed:
    """One row's speed: throughput at the batch size, median latency at batch 1, peak memory of a batch."""

    throughput: Timing
    latency_ms: float
    memory: Memory


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` intra-op threads (None: unchanged), restoring the previous setting after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def random_images(count: int, arch: VisionArch, device: torch.device | str, seed: int) -> torch.Tensor:
    """Seeded noise shaped like the tower's input (drawn on the CPU: the same images on every device)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, *arch.image_size, generator=generator).to(device)


def time_forward(module: nn.Module, images: torch.Tensor, precision: Precision = FP32) -> float:
    """Seconds of one forward in `precision`: CUDA events on a GPU, the wall clock on a CPU."""
    device = images.device
    with torch.inference_mode(), precision.autocast_context(device):
        if device.type != "cuda":
            start = time.perf_counter()
            module(images)
            return time.perf_counter() - start
        stream = torch.cuda.current_stream(device)
        began, ended = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        torch.cuda.synchronize(device)  # earlier work must not run inside the timed region
        began.record(stream)
        module(images)
        ended.record(stream)
        ended.synchronize()
        return began.elapsed_time(ended) / 1000


def interleaved_medians(
    modules: Sequence[nn.Module], images: torch.Tensor, repeats: int, warmup: int, precision: Precision = FP32
) -> list[float]:
    """Median seconds of one forward of each module, timed round-robin after `warmup` rounds."""
    for _ in range(warmup):
        for module in modules:
            time_forward(module, images, precision)
    times: list[list[float]] = [[] for _ in modules]
    for _ in range(repeats):
        for index, module in enumerate(modules):
            times[index].append(time_forward(module, images, precision))
    return [statistics.median(seconds) for seconds in times]


def measure_throughputs(
    modules: Sequence[nn.Module], images: torch.Tensor, repeats: int, warmup: int, precision: Precision = FP32
) -> list[Timing]:
    """Images per second of each module at the batch size of `images`, timed round-robin."""
    batch, threads = images.shape[0], torch.get_num_threads()
    return [
        Timing(batch / seconds, seconds, batch, warmup, repeats, threads)
        for seconds in interleaved_medians(modules, images, repeats, warmup, precision)
    ]


class TensorMemory(TorchDispatchMode):
    """Bytes of tensor storage the operations run inside allocate and keep alive; `peak`: the most at once.

    Every operation's outputs are seen at the dispatcher: an output whose storage is none of its inputs'
    is a new allocation, counted until its storage is freed (a weak reference's callback). Weights,
    inputs and views of them are never counted. Temporaries an operation allocates and frees inside
    itself, and the allocator's caching, are not seen: this is the footprint of the tensors a forward
    holds, which is what pruning changes. Unlike torch's profiler it prints nothing.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counted: WeakIdKeyDictionary = WeakIdKeyDictionary()
        self.current = self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        inputs = {id(t.untyped_storage()) for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                storage = tensor.untyped_storage()
                if id(storage) not in inputs and storage not in self.counted:
                    self._allocate(storage)
        return out

    def _allocate(self, storage: torch.UntypedStorage) -> None:
        size = storage.nbytes()
        self.counted[storage] = size
        weakref.finalize(storage, self._free, size)
        self.current += size
        self.peak = max(self.peak, self.current)

    def _free(self, size: int) -> None:
        self.current -= size


def measure_peak_memory(module: nn.Module, images: torch.Tensor, precision: Precision = FP32) -> Memory:
    """Peak memory one forward adds on top of what is resident (weights and inputs excluded)."""
    device = images.device
    with torch.inference_mode(), precision.autocast_context(device):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            module(images)
            torch.cuda.synchronize(device)
            peak = torch.cuda.max_memory_allocated(device) - before
            return Memory(int(peak), "CUDA max_memory_allocated during one batch, minus the allocation before it")
        with TensorMemory() as memory:
            module(images)
    return Memory(memory.peak, "peak bytes of the tensors one batch's operations held at once (CPU)")


def measure_speeds(
    visual: nn.Module,
    plans: Sequence[Plan],
    images: torch.Tensor,
    meta: dict[str, Any] | None,
    repeats: int,
    warmup: int,
    latency_repeats: int | None = None,
    precision: Precision = FP32,
) -> list[Speed]:
    """The speed of the tower under each plan on `images` (with their meta), all plans timed round-robin.

    Throughput at the batch size of `images`, median latency of its first image alone (over
    `latency_repeats`, default `repeats`), and the peak memory of one batch, every forward in `precision`.
    """
    modules = [ReducedVisual(visual, plan, meta).eval() for plan in plans]
    singles = [ReducedVisual(visual, plan, slice_meta(meta, slice(0, 1))).eval() for plan in plans]
    throughputs = measure_throughputs(modules, images, repeats, warmup, precision)
    latencies = interleaved_medians(singles, images[:1], latency_repeats or repeats, warmup, precision)
    return [
        Speed(timing, 1000 * seconds, measure_peak_memory(module, images, precision))
        for timing, seconds, module in zip(throughputs, latencies, modules, strict=True)
    ]


def device_facts(device: torch.device | str) -> dict[str, str | None]:
    """The hardware a report's numbers come from: the GPU with its CUDA runtime and driver, or the CPU."""
    device = torch.device(device)
    if device.type == "cuda":
        return {
            "device_name": torch.cuda.get_device_name(device),
            "cuda": torch.version.cuda,
            "driver": nvidia_driver(),
        }
    return {"device_name": cpu_model(), "cuda": None, "driver": None}


def cpu_model() -> str | None:
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return platform.processor() or None
    return next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), None)


def nvidia_driver() -> str | None:
    """The NVIDIA driver's version: from the kernel module's /proc entry, else from nvidia-smi; None if neither."""
    try:
        words = Path("/proc/driver/nvidia/version").read_text().split()
        return next(word for word in words if word[:1].isdigit() and word.count(".") >= 1)
    except (OSError, StopIteration):
        pass
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        done = subprocess.run(
            ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    versions = done.stdout.split()
    return versions[0] if versions else None
