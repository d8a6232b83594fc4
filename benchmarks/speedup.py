"""Does each method's GMACs saving turn into wall-clock speed? Measured vs ideal speed-up, per method.

For one model (default ViT-B-16, random init: speed does not depend on the weights) every available
training-free method is solved to the same budget (default 0.7 of the unpruned GMACs). Its ideal
speed-up is the GMACs ratio (fvcore counts, unpruned / pruned); its measured speed-up is the ratio
of throughputs. A ratio measured / ideal of at least 0.9 is the target: below it, the method spends
time GMACs do not see (gathers, sorting, matching, Python overhead) or the hardware runs the smaller
shapes less efficiently.

Throughputs are timed round-robin (every method once per round, median over rounds), so a slow
spell on a shared machine slows every method alike instead of skewing one ratio.

    python benchmarks/speedup.py --out speedup.json                 # a few minutes on a 2-core CPU
    python benchmarks/speedup.py --batch-size 4 --repeats 1 --warmup 0 --methods random,topk   # smoke
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from output import write_result
from rich.console import Console
from rich.table import Table

from cliprank.cost.counting import measure_cost
from cliprank.engine import ReducedVisual
from cliprank.errors import CliprankError
from cliprank.methods import REGISTRY, Method
from cliprank.methods.budget import solve
from cliprank.models.loading import load_model
from cliprank.report.profile import CONVENTION
from cliprank.speed import interleaved_medians, random_images, torch_threads

SCHEMA_VERSION = "cliprank.speedup/1"
TARGET = 0.9  # measured speed-up should reach this fraction of the GMACs-implied one


@dataclass
class Candidate:
    name: str
    method: Method
    macs: float  # counted (fvcore) per image; analytic when fvcore could not count


def available_methods() -> list[str]:
    """Every registered method with a budget knob that needs no stored rankings, predictor or tokens."""
    return [name for name, cls in REGISTRY.items() if cls.knob is not None and not getattr(cls, "requires", ())]


def configure(names: Sequence[str], model: Any, budget: float, images: torch.Tensor) -> tuple[list[Candidate], dict]:
    """The unpruned reference plus each method solved to `budget`; methods that cannot run are skipped."""
    candidates, skipped = [], {}
    for name, value in [("none", None), *[(n, budget) for n in names]]:
        try:
            method = solve(name, model.arch, {}, value).method
        except CliprankError as err:
            skipped[name] = str(err)
            continue
        cost = measure_cost(method, model.visual, images, cross_check=False)
        candidates.append(Candidate(name, method, cost.macs))
    return candidates, skipped


def measure(candidates: Sequence[Candidate], model: Any, batch: torch.Tensor, repeats: int, warmup: int) -> list[dict]:
    """Throughput of every candidate (in the model's precision), round-robin, and its measured vs ideal speed-up."""
    modules = [ReducedVisual(model.visual, c.method.plan()).eval() for c in candidates]
    seconds = interleaved_medians(modules, batch, repeats, warmup, model.precision)
    base_seconds, base_macs = seconds[0], candidates[0].macs
    rows = []
    for candidate, median in zip(candidates, seconds, strict=True):
        measured, ideal = base_seconds / median, base_macs / candidate.macs
        rows.append(
            {
                "method": candidate.name,
                "params": candidate.method.describe(),
                "gmacs": candidate.macs / 1e9,
                "gmacs_fraction": candidate.macs / base_macs,
                "images_per_second": batch.shape[0] / median,
                "median_batch_seconds": median,
                "speedup_measured": measured,
                "speedup_ideal": ideal,
                "ratio": measured / ideal,
                "meets_target": measured / ideal >= TARGET,
            }
        )
    return rows


def render(rows: Sequence[dict], title: str) -> Table:
    table = Table(title=title)
    for column in ("method", "GMACs", "fraction", "img/s", "speed-up", "ideal", "ratio", f"≥ {TARGET}"):
        table.add_column(column, justify="left" if column == "method" else "right")
    for row in rows:
        table.add_row(
            row["method"],
            f"{row['gmacs']:.2f}",
            f"{row['gmacs_fraction']:.3f}",
            f"{row['images_per_second']:.2f}",
            f"{row['speedup_measured']:.2f}×",
            f"{row['speedup_ideal']:.2f}×",
            f"{row['ratio']:.3f}",
            "yes" if row["meets_target"] else "[red]no[/]",
        )
    return table


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16")
    parser.add_argument("--pretrained", default="none", help="weights do not change speed; random init by default")
    parser.add_argument("--budget", type=float, default=0.7)
    parser.add_argument("--methods", default=None, help="comma-separated (default: every available method)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--images", type=int, default=4, help="images input-adaptive GMACs are averaged over")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--precision", default=None, help="open_clip's names (default: amp on cuda, fp32 on cpu)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    console = Console()
    names = available_methods() if args.methods is None else [n.strip() for n in args.methods.split(",") if n.strip()]
    model = load_model(args.model, args.pretrained, device=args.device, seed=args.seed, precision=args.precision)
    with torch_threads(args.threads) as threads:
        images = random_images(args.images, model.arch, args.device, args.seed)
        candidates, skipped = configure([n for n in names if n != "none"], model, args.budget, images)
        batch = random_images(args.batch_size, model.arch, args.device, args.seed + 1)
        rows = measure(candidates, model, batch, args.repeats, args.warmup)
    title = (
        f"{args.model} ({model.precision.name}): speed-up at budget {args.budget} — batch {args.batch_size}, "
        f"{threads} threads, "
        f"median of {args.repeats} round-robin rounds; {CONVENTION}"
    )
    console.print(render(rows, title))
    for name, reason in skipped.items():
        console.print(f"[yellow]skipped[/] {name}: {reason}")
    if args.out is not None:
        body = {"convention": CONVENTION, "target_ratio": TARGET, "rows": rows, "skipped": skipped}
        write_result(args.out, SCHEMA_VERSION, args, threads, body, model.precision.name)
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
