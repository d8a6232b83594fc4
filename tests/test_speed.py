"""Measurement: CPU peak memory counted at the dispatcher (silently), hardware facts, and runs that print
nothing to stderr but progress. (The CUDA side — events, the allocator's peak — needs a GPU: benchmarks/gpu.py.)"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import torch
import torch.nn as nn

from cliprank.engine import ReducedVisual
from cliprank.methods.budget import solve
from cliprank.speed import TensorMemory, device_facts, measure_peak_memory

MIB = 2**20


class Allocates(nn.Module):
    """Holds 1 + 4 + 4 MiB at once, then frees 4 and makes 2 more: the peak is 9 MiB (plus a few scalars)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        first = x.new_ones(MIB // 4)  # 1 MiB of float32
        a = first.repeat(4)  # 4 MiB
        b = a * 2  # 4 MiB more: 9 MiB held
        del a
        c = b[: MIB // 2] + 1  # a view of b costs nothing; the sum is 2 MiB new: 7 MiB held
        return (b.sum() + c.sum()).reshape(1)


def test_tensor_memory_counts_what_is_held_at_once_and_not_the_inputs() -> None:
    x = torch.zeros(16 * MIB // 4)  # a 16 MiB input: resident, never counted
    with torch.inference_mode(), TensorMemory() as memory:
        Allocates()(x)
    assert 9 * MIB <= memory.peak <= 9 * MIB + 64


def test_cpu_peak_memory_follows_the_tokens_and_prints_nothing(tiny, capfd) -> None:
    """Fewer tokens from block 0 on hold less; torch's profiler used to print USDT lines to fd 2 here."""
    images = torch.randn(8, 3, *tiny.arch.image_size, generator=torch.Generator().manual_seed(0))
    full = solve("none", tiny.arch, {}, None).method
    pruned = solve("random", tiny.arch, {"block": 0, "keep": 0.25}, None).method
    peaks = [measure_peak_memory(ReducedVisual(tiny.visual, m.plan()), images).peak_bytes for m in (full, pruned)]
    assert peaks[0] > 2 * peaks[1] > 0
    assert capfd.readouterr().err == ""


def test_device_facts_name_the_cpu_and_leave_the_gpu_fields_empty() -> None:
    facts = device_facts("cpu")
    assert facts["cuda"] is None and facts["driver"] is None
    assert facts["device_name"] is None or isinstance(facts["device_name"], str)


def test_a_successful_cpu_run_writes_nothing_to_stderr(tmp_path: Path) -> None:
    """evaluate with speed measured, and profile: real processes, so native output to fd 2 would show."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    commands = [
        "evaluate --dataset digits --limit 8 --batch-size 4 --method topk --budget 0.7 --patch-maps 0 --no-flops",
        "profile --method topk,tome --budget 0.7 --batch-size 2 --repeats 1 --warmup 0 --images 2",
    ]
    for command in commands:
        args = [sys.executable, "-m", "cliprank", *command.split()]
        if command.startswith("evaluate"):
            args += ["--out", str(tmp_path / "run")]
        done = subprocess.run(args, capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert done.returncode == 0, done.stderr
        assert done.stderr == "", f"{command.split()[0]} wrote to stderr: {done.stderr[:500]}"
