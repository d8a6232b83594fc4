"""Speed and memory of reduced forwards: throughput, batch-1 latency and peak memory, timed alike.

Both `evaluate` and `profile` measure here, so a row's speed means the same in both. Every row is
timed round-robin (one forward of each in turn, after warm-up): on a shared or thermally throttling
machine a slow spell then hits every row alike and their ratios — the speed-ups — stay fair. The
median shrugs off single hiccups. A GPU's queued work is synchronised into every timed region.
Every forward runs in the model's precision (autocast for `amp`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
from torch.profiler import ProfilerActivity, profile

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
    """Seeded noise shaped like the tower's input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, *arch.image_size, generator=generator).to(device)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(module: nn.Module, images: torch.Tensor, precision: Precision = FP32) -> float:
    """Seconds of one forward in `precision`, synchronised so a GPU's queued work is included."""
    _synchronize(images.device)
    start = time.perf_counter()
    with torch.inference_mode(), precision.autocast_context(images.device):
        module(images)
    _synchronize(images.device)
    return time.perf_counter() - start


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


def measure_peak_memory(module: nn.Module, images: torch.Tensor, precision: Precision = FP32) -> Memory:
    """Peak memory one forward adds on top of what is resident (weights and inputs excluded).

    CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the forward. CPU: torch's
    profiler records every tensor allocation and free; the peak of their running sum is the most
    tensor memory the forward held at once (allocator caching and fragmentation not included).
    """
    device = images.device
    if device.type == "cuda":
        _synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode(), precision.autocast_context(device):
            module(images)
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return Memory(int(peak), "CUDA max_memory_allocated during one batch, minus the allocation before it")
    peak = _profiled_cpu_peak(module, images, precision)
    what = "peak tensor bytes allocated during one batch (torch profiler allocation events; CPU)"
    return Memory(peak, what if peak is not None else "unavailable: the profiler gave no memory events")


def _profiled_cpu_peak(module: nn.Module, images: torch.Tensor, precision: Precision) -> int | None:
    with (
        profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded,
        torch.inference_mode(),
        precision.autocast_context(images.device),
    ):
        module(images)
    try:
        events = [e for e in recorded.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:  # the profiler's result layout is not a stable API
        return None
    if not events:
        return None
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


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
