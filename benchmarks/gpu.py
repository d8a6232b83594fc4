"""One GPU, at most six minutes: cliprank run as CLIP users run it — mixed precision — and measured there.

Every figure cliprank had produced was fp32 on a CPU. What token-pruning users ask first is whether the
GMACs saving becomes wall-clock speed on a GPU, and whether the reduced forward costs anything itself.
Four sections, each with its target where it has one, all in the precisions CLIP users run (`amp`:
fp16 autocast, open_clip's default, and `amp_bf16`), random weights (speed does not depend on them):

1. overhead: the keep-everything plan against open_clip's own `encode_image` on ViT-B-16 and ViT-L-14 at
   batch 256 — embedding agreement (cosine, min over images) and time ratio, cliprank ÷ open_clip,
   target ≤ 1.05;
2. speed-ups: every training-free method at budgets 0.7 and 0.5 on ViT-B-16, batch 256, timed
   round-robin with the unpruned tower; measured speed-up ÷ ideal (the GMACs ratio of the executed
   schedule), target ≥ 0.85;
3. the golden search (`cliprank search`'s defaults) on ViT-B-16 in amp: images per second;
4. `torchrun --nproc_per_node 1` (NCCL on a GPU, gloo on a CPU) running `cliprank evaluate` on the
   embedded default, against the same command in one plain process: records equal, speed aside.

Writes `<out-dir>/gpu-<device>.json` (the benchmarks' common envelope: environment, settings) and the same
numbers as Markdown tables in `gpu-<device>.md`.

    python benchmarks/gpu.py                        # one GPU: results/benchmarks/gpu-<gpu name>.json and .md
    python benchmarks/gpu.py --device cpu --quick   # the same code paths at tiny sizes (a test runs this)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F
from output import write_result
from speedup import available_methods

import cliprank
from cliprank.cost.analytic import per_image_macs
from cliprank.distributed import check_device
from cliprank.engine import Plan, ReducedVisual, Trace, encode
from cliprank.errors import CliprankError
from cliprank.io import atomic_write_text
from cliprank.methods.budget import solve
from cliprank.models.loading import LoadedModel, load_model
from cliprank.precision import PRECISIONS, resolve_precision
from cliprank.report.schema import load_report
from cliprank.search.greedy import SearchSettings, search_batch
from cliprank.speed import device_facts, interleaved_medians, random_images

SCHEMA_VERSION = "cliprank.gpu/1"
OVERHEAD_TARGET = 1.05  # keep-everything may take at most this many times open_clip's encode_image
RATIO_TARGET = 0.85  # measured speed-up should reach this fraction of the GMACs-implied one
TIME_LIMIT = 360.0  # seconds the whole script should take on one GPU
SPEED_FIELDS = ("throughput", "latency_ms", "peak_memory_mb")


@dataclass(frozen=True)
class Sizes:
    overhead_models: tuple[str, ...]
    methods_model: str
    search_model: str
    batch: int
    budgets: tuple[float, ...]
    repeats: int
    warmup: int
    search_images: int
    evaluate: tuple[str, ...]  # arguments of the `evaluate` both runs of section 4 share


FULL = Sizes(
    overhead_models=("ViT-B-16", "ViT-L-14"),
    methods_model="ViT-B-16",
    search_model="ViT-B-16",
    batch=256,
    budgets=(0.7, 0.5),
    repeats=10,
    warmup=3,
    search_images=64,
    evaluate=("--no-flops",),  # the embedded default (three datasets, every method, four budgets); no fvcore
)
QUICK = Sizes(
    overhead_models=("cliprank-tiny",),
    methods_model="cliprank-tiny",
    search_model="cliprank-tiny",
    batch=8,
    budgets=(0.7, 0.5),
    repeats=2,
    warmup=1,
    search_images=2,
    evaluate=("--dataset", "digits", "--limit", "12", "--method", "topk,tome", "--budget", "0.7", "--no-flops"),
)


class EncodeImage(nn.Module):
    """open_clip's own forward, as a module for the timing loop (inputs in the weights' dtype, as open_clip
    casts them)."""

    def __init__(self, model: LoadedModel):
        super().__init__()
        self.model = model.model
        self.dtype = model.precision.weights_dtype

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images.to(self.dtype))


class Models:
    """Models loaded once (random weights on the device); precisions that share float32 weights share one."""

    def __init__(self, device: str, seed: int):
        self.device, self.seed = device, seed
        self.loaded: dict[tuple[str, str], LoadedModel] = {}

    def get(self, name: str, precision: str) -> LoadedModel:
        resolved = resolve_precision(precision, self.device)
        key = (name, resolved.weights)
        if key not in self.loaded:
            self.loaded[key] = load_model(name, "none", device=self.device, seed=self.seed, precision=precision)
        return replace(self.loaded[key], precision=resolved)


def overhead(models: Models, sizes: Sizes, precisions: Sequence[str]) -> list[dict[str, Any]]:
    """Section 1: keep-everything against encode_image — agreement and time ratio."""
    rows = []
    for name in sizes.overhead_models:
        for precision in precisions:
            model = models.get(name, precision)
            images = random_images(sizes.batch, model.arch, models.device, models.seed)
            ours = ReducedVisual(model.visual, Plan.identity(model.arch.depth)).eval()
            theirs = EncodeImage(model).eval()
            with torch.inference_mode(), model.autocast():
                cosine = F.cosine_similarity(ours(images).float(), theirs(images).float()).min()
            seconds = interleaved_medians([ours, theirs], images, sizes.repeats, sizes.warmup, model.precision)
            ratio = seconds[0] / seconds[1]
            rows.append(
                {
                    "model": name,
                    "precision": precision,
                    "batch": sizes.batch,
                    "cosine_min": float(cosine),
                    "cliprank_ms": 1000 * seconds[0],
                    "open_clip_ms": 1000 * seconds[1],
                    "ratio": ratio,
                    "meets_target": ratio <= OVERHEAD_TARGET,
                }
            )
    return rows


def executed_macs(model: LoadedModel, plan: Plan, images: torch.Tensor, overhead_macs: float) -> float:
    """Mean analytic MACs per image of the schedule the engine executed on `images` (adaptive ones vary)."""
    trace = Trace()
    with torch.inference_mode(), model.autocast():
        encode(model.visual, images, plan, None, trace)
    return float(per_image_macs(model.arch, trace.attention_tokens, trace.mlp_tokens, overhead_macs).mean())


def speedups(models: Models, sizes: Sizes, precisions: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Section 2: every training-free method at each budget, timed round-robin with the unpruned tower."""
    rows, skipped = [], {}
    for precision in precisions:
        model = models.get(sizes.methods_model, precision)
        images = random_images(sizes.batch, model.arch, models.device, models.seed + 1)
        settings = [("none", None)] + [(name, budget) for budget in sizes.budgets for name in available_methods()]
        solved = []
        for name, budget in settings:
            try:
                solved.append((name, budget, solve(name, model.arch, {}, budget).method))
            except CliprankError as err:
                skipped[f"{name}@{budget}"] = str(err)
        plans = [method.plan() for _, _, method in solved]
        macs = [executed_macs(model, plan, images, m.schedule().overhead) for plan, (_, _, m) in zip(plans, solved)]
        modules = [ReducedVisual(model.visual, plan).eval() for plan in plans]
        seconds = interleaved_medians(modules, images, sizes.repeats, sizes.warmup, model.precision)
        for (name, budget, method), cost, median in zip(solved, macs, seconds, strict=True):
            measured, ideal = seconds[0] / median, macs[0] / cost
            rows.append(
                {
                    "precision": precision,
                    "method": name,
                    "budget": budget,
                    "params": method.describe(),
                    "gmacs": cost / 1e9,
                    "images_per_second": sizes.batch / median,
                    "speedup_measured": measured,
                    "speedup_ideal": ideal,
                    "ratio": measured / ideal,
                    "meets_target": name == "none" or measured / ideal >= RATIO_TARGET,
                }
            )
    return rows, skipped


def golden_search(models: Models, sizes: Sizes) -> dict[str, Any]:
    """Section 3: images per second of the default golden search, in amp on a GPU (the device default)."""
    precision = resolve_precision(None, models.device).name
    model = models.get(sizes.search_model, precision)
    settings = SearchSettings()
    images = random_images(sizes.search_images, model.arch, models.device, models.seed + 2)

    def search(batch: torch.Tensor) -> float:
        synchronize(models.device)
        began = time.perf_counter()
        with model.autocast():
            search_batch(model.visual, model.arch, batch, settings)
        synchronize(models.device)
        return time.perf_counter() - began

    search(images[:1])  # warm-up: kernels and allocator for every candidate length
    seconds = search(images)
    return {
        "model": sizes.search_model,
        "precision": precision,
        "settings": vars(settings),
        "images": sizes.search_images,
        "seconds": seconds,
        "images_per_second": sizes.search_images / seconds,
        "images_per_hour": 3600 * sizes.search_images / seconds,
    }


def synchronize(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize(device)


def torchrun_evaluate(device: str, sizes: Sizes, folder: Path) -> dict[str, Any]:
    """Section 4: `evaluate` under torchrun with one process (a process group: NCCL on a GPU) vs a plain run."""
    common = ["evaluate", "--device", device, "--no-speed", "--patch-maps", "0", *sizes.evaluate]
    command = [sys.executable, "-m", "cliprank"]
    torchrun = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "1",
        "-m",
        "cliprank",
    ]
    seconds, failures = {}, {}
    here = str(Path(cliprank.__file__).resolve().parents[1])  # the same cliprank in the child processes
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [here, os.environ.get("PYTHONPATH")]))}
    for label, launcher in (("one_process", command), ("torchrun", torchrun)):
        began = time.perf_counter()
        out = str(folder / label)
        done = subprocess.run([*launcher, *common, "--out", out], capture_output=True, text=True, env=env)
        seconds[label] = time.perf_counter() - began
        if done.returncode != 0:
            failures[label] = (done.stderr or done.stdout)[-2000:]
    if failures:
        return {"equal": False, "failures": failures, "seconds": seconds}
    one = load_report(folder / "one_process" / "report.json").records
    two = load_report(folder / "torchrun" / "report.json").records
    differences = [
        f"{a.key}: {name}"
        for a, b in zip(one, two, strict=False)
        for name in differing_fields(a.to_dict(), b.to_dict())
    ]
    if [r.key for r in one] != [r.key for r in two]:
        differences.insert(0, "the runs wrote different records")
    log = (folder / "torchrun" / "logs" / "rank-0.log").read_text()
    backend = re.search(r"started: pid \d+, (\w+) backend", log)
    return {
        "command": " ".join(["cliprank", *common]),
        "backend": backend.group(1) if backend else None,
        "processes": 1,
        "records": len(one),
        "equal": not differences,
        "differences": differences[:10],
        "seconds": seconds,
    }


def differing_fields(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Fields of two records that differ, speed aside; floats up to rounding (1e-6 relative)."""

    def same(x: Any, y: Any) -> bool:
        if isinstance(x, float) and isinstance(y, float):
            return (math.isnan(x) and math.isnan(y)) or math.isclose(x, y, rel_tol=1e-6, abs_tol=1e-9)
        if isinstance(x, dict) and isinstance(y, dict):
            return x.keys() == y.keys() and all(same(x[k], y[k]) for k in x)
        if isinstance(x, list) and isinstance(y, list):
            return len(x) == len(y) and all(same(p, q) for p, q in zip(x, y))
        return x == y

    return [name for name in a if name not in SPEED_FIELDS and not same(a[name], b.get(name))]


def markdown(body: dict[str, Any], title: str) -> str:
    """The JSON's numbers as the tables benchmarks/README.md shows."""
    lines = [f"# {title}", "", f"Total {body['seconds']['total']:.0f} s (limit {TIME_LIMIT:.0f} s on one GPU).", ""]
    lines += [
        f"## Keep-everything vs open_clip `encode_image` (target: time ratio ≤ {OVERHEAD_TARGET})",
        "",
        "| model | precision | batch | cosine (min) | cliprank ms | open_clip ms | ratio | meets |",
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['model']} | {r['precision']} | {r['batch']} | {r['cosine_min']:.5f} | {r['cliprank_ms']:.1f} "
        f"| {r['open_clip_ms']:.1f} | {r['ratio']:.3f} | {'yes' if r['meets_target'] else '**no**'} |"
        for r in body["overhead"]
    ]
    lines += [
        "",
        f"## Measured ÷ ideal speed-up, batch {body['sizes']['batch']} (target ≥ {RATIO_TARGET})",
        "",
        "| precision | method | budget | GMACs | img/s | measured | ideal | ratio | meets |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|",
    ]
    lines += [
        f"| {r['precision']} | {r['method']} | {'-' if r['budget'] is None else r['budget']} | {r['gmacs']:.2f} "
        f"| {r['images_per_second']:.0f} | {r['speedup_measured']:.2f}× | {r['speedup_ideal']:.2f}× "
        f"| {r['ratio']:.3f} | {'yes' if r['meets_target'] else '**no**'} |"
        for r in body["speedups"]
    ]
    search, run = body["search"], body["torchrun"]
    lines += [
        "",
        "## Golden search (block 3, 2×2 units, 10 patches per step, 40% removed, similarity)",
        "",
        "| model | precision | images | seconds | images/s | images/hour |",
        "|---|---|---:|---:|---:|---:|",
        f"| {search['model']} | {search['precision']} | {search['images']} | {search['seconds']:.2f} "
        f"| {search['images_per_second']:.2f} | {search['images_per_hour']:.0f} |",
        "",
        "## `torchrun --nproc_per_node 1` evaluate vs one process",
        "",
        "| backend | records | equal (speed aside) |",
        "|---|---:|---|",
        f"| {run.get('backend')} | {run.get('records', 0)} | {'yes' if run['equal'] else '**no**'} |",
        "",
    ]
    return "\n".join(lines)


def timed(seconds: dict[str, float], name: str, work: Callable[[], Any]) -> Any:
    began = time.perf_counter()
    result = work()
    seconds[name] = time.perf_counter() - began
    print(f"{name}: {seconds[name]:.1f} s", flush=True)
    return result


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda", help="cuda (the benchmark) or cpu (with --quick: a smoke run)")
    parser.add_argument("--precisions", default=None, help="comma-separated (default: amp,amp_bf16 on cuda)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: the embedded model, batch 8")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out-dir", type=Path, default=Path("results/benchmarks"))
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_device(args.device)
    sizes = QUICK if args.quick else FULL
    default = "amp,amp_bf16" if args.device.startswith("cuda") else "fp32,amp_bf16"
    precisions = [p.strip() for p in (args.precisions or default).split(",") if p.strip()]
    unknown = [p for p in precisions if p not in PRECISIONS]
    if unknown:
        raise SystemExit(f"unknown precision(s) {', '.join(unknown)}; use {', '.join(PRECISIONS)}")
    models, seconds = Models(args.device, args.seed), {}
    began = time.perf_counter()
    body: dict[str, Any] = {"targets": {"overhead_max": OVERHEAD_TARGET, "measured_over_ideal_min": RATIO_TARGET}}
    body["sizes"] = vars(sizes)
    body["overhead"] = timed(seconds, "overhead", lambda: overhead(models, sizes, precisions))
    body["speedups"], body["skipped"] = timed(seconds, "speedups", lambda: speedups(models, sizes, precisions))
    body["search"] = timed(seconds, "search", lambda: golden_search(models, sizes))
    with tempfile.TemporaryDirectory(prefix="cliprank-gpu-") as folder:
        body["torchrun"] = timed(seconds, "torchrun", lambda: torchrun_evaluate(args.device, sizes, Path(folder)))
    seconds["total"] = time.perf_counter() - began
    body["seconds"] = seconds
    body["within_time_limit"] = seconds["total"] <= TIME_LIMIT
    facts = device_facts(args.device)
    name = facts["device_name"] if args.device.startswith("cuda") else "cpu"
    stem = (
        "gpu-" + re.sub(r"[^a-z0-9]+", "-", (name or "unknown").lower()).strip("-") + ("-quick" if args.quick else "")
    )
    json_path, md_path = args.out_dir / f"{stem}.json", args.out_dir / f"{stem}.md"
    write_result(json_path, SCHEMA_VERSION, args, torch.get_num_threads(), body, ",".join(precisions))
    text = markdown(body, f"cliprank on {name} ({', '.join(precisions)})")
    atomic_write_text(md_path, text)
    print(text)
    print(f"wrote {json_path} and {md_path}")
    return json.loads(json_path.read_text())


if __name__ == "__main__":
    main()
