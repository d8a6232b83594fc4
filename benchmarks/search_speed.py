"""How fast is the golden-ranking search, and does it waste time beyond the arithmetic it needs?

Three measurements, all with random weights unless told otherwise (speed does not depend on them):

1. Efficiency on `--model` (default ViT-B-16). The search's *effective GMAC/s* is the MACs its
   candidate forwards require — the blocks after the pruning layer plus the final projection, for
   every kept-patch set the evaluator ran (candidates and the per-step trajectory sets), computed
   analytically from the exact token count of each sequence, N² attention term included — divided
   by the wall time of the whole search. A plain batched keep-all forward of the full tower, timed
   before and after the search in the same run, gives the *plain GMAC/s*. The target is effective
   ≥ 0.8 × plain: below it the search spends time on something other than the forwards it needs
   (selection loops, gathers, small batches). The once-per-image prefix (the unpruned forward that
   yields the tokens entering the pruning block and the reference embedding) is reported but not
   credited, so the ratio is conservative.
2. Images/hour of the default search (block 3, 2×2 units, 10 patches/step, 40% removed, similarity)
   on `--model` and on the embedded `--tiny-model` (cliprank-tiny; random weights when its trained
   weights are absent — costs do not depend on them).
3. Growth: cost per image against unit size (1×1, 2×2, 3×3), step size (patches per step) and the
   number of images searched in lockstep (a chunk), measured on the tiny model; for `--model` the
   exact candidate GMACs per image of each setting (from a model-free dry run of the same greedy
   loop) and the images/hour they imply at the effective rate measured in 1.

    python benchmarks/search_speed.py --out search_speed.json   # a few minutes on an idle 2-core CPU
    python benchmarks/search_speed.py --quick                   # about a minute
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from output import write_result
from rich.console import Console
from rich.table import Table

from cliprank.cost.analytic import block_macs, unpruned_macs
from cliprank.distributed import check_device
from cliprank.engine import Plan, ReducedVisual
from cliprank.models import embedded
from cliprank.models.arch import VisionArch
from cliprank.models.loading import LoadedModel, load_model
from cliprank.report.profile import CONVENTION
from cliprank.search.greedy import SearchSettings, greedy_rankings, search_batch
from cliprank.speed import random_images, time_forward, torch_threads

SCHEMA_VERSION = "cliprank.search_speed/1"
TARGET = 0.8  # search effective GMAC/s should reach this fraction of a plain batched forward's
DEFAULT = SearchSettings()


def sequence_macs(arch: VisionArch, block: int, tokens: int) -> float:
    """MACs of one sequence of `tokens` tokens (CLS included) through blocks block.. and the projection."""
    return (arch.depth - block) * float(block_macs(arch, tokens, tokens)) + arch.width * arch.output_dim


def candidate_macs(arch: VisionArch, block: int, length_counts: Counter[int]) -> float:
    """MACs of every sequence the evaluator ran, from its per-length counts (exact N² term per length)."""
    return sum(count * sequence_macs(arch, block, tokens) for tokens, count in length_counts.items())


def dry_run_macs(arch: VisionArch, settings: SearchSettings, seed: int = 0) -> tuple[float, int]:
    """Candidate MACs and sets per image of one search, without a model: the real greedy loop on random scores.

    For grids divisible by the unit, every image runs the same set sizes whatever the scores, so this
    is exact; otherwise (e.g. 3×3 units on 14×14) which edge units go first shifts the sizes slightly.
    """
    lengths: Counter[int] = Counter()
    generator = torch.Generator().manual_seed(seed)

    def random_scores(image_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        lengths.update((keep.sum(1) + 1).tolist())
        return torch.rand(len(image_ids), generator=generator)

    greedy_rankings(random_scores, 1, arch.grid, settings)
    return candidate_macs(arch, settings.block, lengths), sum(lengths.values())


@dataclass
class SearchTiming:
    """One lockstep search of `images` images, and the arithmetic it had to do."""

    model: str
    settings: dict[str, Any]
    images: int
    seconds: float
    candidate_gmacs: float  # blocks after the pruning layer + projection, over every set the evaluator ran
    prefix_gmacs: float  # the once-per-image unpruned forward (tokens entering the block, reference)
    sets: int  # sequences the evaluator ran (candidates + trajectory sets)
    length_counts: dict[int, int]

    @property
    def effective_gmacs_per_second(self) -> float:
        return self.candidate_gmacs / self.seconds

    @property
    def images_per_hour(self) -> float:
        return 3600 * self.images / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "length_counts": {str(k): v for k, v in sorted(self.length_counts.items())},
            "effective_gmacs_per_second": self.effective_gmacs_per_second,
            "images_per_hour": self.images_per_hour,
            "seconds_per_image": self.seconds / self.images,
            "candidate_gmacs_per_image": self.candidate_gmacs / self.images,
            "sets_per_image": self.sets / self.images,
        }


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_search(
    model: LoadedModel, images: torch.Tensor, settings: SearchSettings, max_batch_tokens: int
) -> SearchTiming:
    """Wall time of `search_batch` on `images` (timed like `run_search` times a chunk) and its MACs."""
    _synchronize(images.device)
    began = time.perf_counter()
    _, evaluator = search_batch(model.visual, model.arch, images, settings, max_batch_tokens=max_batch_tokens)
    _synchronize(images.device)
    seconds = time.perf_counter() - began
    counts = evaluator.length_counts
    if sum(tokens * count for tokens, count in counts.items()) != evaluator.token_count:
        raise RuntimeError("the evaluator's per-length counts disagree with its token count; MACs would be wrong")
    return SearchTiming(
        model=model.name,
        settings=asdict(settings),
        images=images.shape[0],
        seconds=seconds,
        candidate_gmacs=candidate_macs(model.arch, settings.block, counts) / 1e9,
        prefix_gmacs=images.shape[0] * unpruned_macs(model.arch) / 1e9,
        sets=sum(counts.values()),
        length_counts=dict(counts),
    )


def plain_rate(module: torch.nn.Module, batch: torch.Tensor, arch: VisionArch, repeats: int) -> tuple[float, float]:
    """(GMACs, seconds) of `repeats` plain keep-all forwards of `batch`, summed."""
    seconds = sum(time_forward(module, batch) for _ in range(repeats))
    return repeats * batch.shape[0] * unpruned_macs(arch) / 1e9, seconds


def efficiency(
    model: LoadedModel, images: int, plain_batch: int, plain_repeats: int, max_batch_tokens: int, seed: int
) -> tuple[SearchTiming, dict[str, Any]]:
    """Default search on `images` images, bracketed by plain forwards so both see the same machine load.

    A shared machine's load drifts over minutes; timing the plain forward right before and right
    after the search (and pooling the two) keeps the ratio fair even when absolute numbers move.
    """
    plain = ReducedVisual(model.visual, Plan.identity(model.arch.depth)).eval()
    batch = random_images(plain_batch, model.arch, model.device, seed + 1)
    time_forward(plain, batch[: max(1, plain_batch // 4)])  # warm-up: allocator, kernels, thread pool (shared)
    before = plain_rate(plain, batch, model.arch, plain_repeats)
    timing = time_search(model, random_images(images, model.arch, model.device, seed), DEFAULT, max_batch_tokens)
    after = plain_rate(plain, batch, model.arch, plain_repeats)
    plain_gmacs, plain_seconds = before[0] + after[0], before[1] + after[1]
    summary = {
        "plain_batch": plain_batch,
        "plain_repeats": plain_repeats,
        "plain_gmacs_per_second": plain_gmacs / plain_seconds,
        "plain_gmacs_per_second_before_after": [before[0] / before[1], after[0] / after[1]],
        "search_effective_gmacs_per_second": timing.effective_gmacs_per_second,
        "search_effective_with_prefix_gmacs_per_second": (timing.candidate_gmacs + timing.prefix_gmacs)
        / timing.seconds,
    }
    summary["ratio"] = summary["search_effective_gmacs_per_second"] / summary["plain_gmacs_per_second"]
    summary["meets_target"] = summary["ratio"] >= TARGET
    return timing, summary


def growth_settings() -> list[tuple[str, SearchSettings]]:
    """The unit-size and step-size variations of the default search, labelled, default first."""
    return [
        ("default (2×2, 10/step)", DEFAULT),
        ("unit 1×1", replace(DEFAULT, unit=1)),
        ("unit 3×3", replace(DEFAULT, unit=3)),
        ("step 5", replace(DEFAULT, step_tokens=5)),
        ("step 20", replace(DEFAULT, step_tokens=20)),
    ]


def growth(
    tiny: LoadedModel,
    big_arch: VisionArch,
    big_rate: float,
    images: int,
    image_counts: Sequence[int],
    max_batch_tokens: int,
    seed: int,
) -> list[dict[str, Any]]:
    """Cost per image of each setting and image count: measured on `tiny`, dry-run MACs for the big model."""
    rows = []
    measured: dict[tuple[str, int], SearchTiming] = {}
    cases = [(label, settings, images) for label, settings in growth_settings()]
    cases += [(f"{count} image{'s' if count > 1 else ''}/chunk", DEFAULT, count) for count in image_counts]
    for label, settings, count in cases:
        key = (settings.key(), count)
        if key not in measured:
            batch = random_images(count, tiny.arch, tiny.device, seed)
            measured[key] = time_search(tiny, batch, settings, max_batch_tokens)
        timing = measured[key]
        big_macs, big_sets = dry_run_macs(big_arch, settings)
        rows.append(
            {
                "label": label,
                "settings": asdict(settings),
                "images": count,
                "tiny": timing.to_dict(),
                "big_candidate_gmacs_per_image": big_macs / 1e9,
                "big_sets_per_image": big_sets,
                "big_images_per_hour_predicted": 3600 * big_rate / (big_macs / 1e9),
            }
        )
    base_tiny = rows[0]["tiny"]["seconds_per_image"]
    base_big = rows[0]["big_candidate_gmacs_per_image"]
    for row in rows:
        row["tiny_cost_vs_default"] = row["tiny"]["seconds_per_image"] / base_tiny
        row["big_cost_vs_default"] = row["big_candidate_gmacs_per_image"] / base_big
    return rows


def render_efficiency(timing: SearchTiming, summary: dict[str, Any], title: str) -> Table:
    table = Table(title=title)
    for column in ("measure", "value"):
        table.add_column(column, justify="left" if column == "measure" else "right")
    before, after = summary["plain_gmacs_per_second_before_after"]
    repeats = summary["plain_repeats"]
    label = f"plain GMAC/s, batch {summary['plain_batch']} ×{repeats} before / after the search"
    table.add_row(label, f"{before:.1f} / {after:.1f}")
    table.add_row("plain GMAC/s (pooled)", f"{summary['plain_gmacs_per_second']:.1f}")
    table.add_row("search effective GMAC/s (candidate forwards only)", f"{timing.effective_gmacs_per_second:.1f}")
    table.add_row("… with the once-per-image prefix", f"{summary['search_effective_with_prefix_gmacs_per_second']:.1f}")
    ok = "yes" if summary["meets_target"] else "[red]no[/]"
    table.add_row(f"ratio (target ≥ {TARGET})", f"{summary['ratio']:.3f} {ok}")
    table.add_row("images searched (one lockstep chunk)", str(timing.images))
    table.add_row("candidate sets / image", f"{timing.sets / timing.images:.0f}")
    table.add_row("candidate GMACs / image", f"{timing.candidate_gmacs / timing.images:.4g}")
    table.add_row("seconds / image", f"{timing.seconds / timing.images:.3g}")
    table.add_row("images / hour", f"{timing.images_per_hour:.0f}")
    return table


def render_growth(rows: Sequence[dict[str, Any]], tiny_name: str, big_name: str) -> Table:
    table = Table(title=f"cost growth — measured on {tiny_name}; {big_name}: dry-run GMACs, predicted img/h")
    columns = (
        "setting",
        "images",
        "sets/img",
        "s/img",
        "img/h",
        "eff GMAC/s",
        "× default",
        f"{big_name} GMACs/img",
        "× default",
        "pred. img/h",
    )
    for column in columns:
        table.add_column(column, justify="left" if column == "setting" else "right")
    for row in rows:
        tiny = row["tiny"]
        table.add_row(
            row["label"],
            str(row["images"]),
            f"{tiny['sets_per_image']:.0f}",
            f"{tiny['seconds_per_image']:.3f}",
            f"{tiny['images_per_hour']:.0f}",
            f"{tiny['effective_gmacs_per_second']:.1f}",
            f"{row['tiny_cost_vs_default']:.2f}",
            f"{row['big_candidate_gmacs_per_image']:.4g}",
            f"{row['big_cost_vs_default']:.2f}",
            f"{row['big_images_per_hour_predicted']:.0f}",
        )
    return table


def default_tiny_pretrained() -> str:
    """The embedded weights when installed, else random ones (costs do not depend on the weights)."""
    return embedded.TAG if (embedded.ASSETS / f"{embedded.MODEL_NAME}.safetensors").is_file() else "none"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="ViT-B-16", help="model whose efficiency is measured")
    parser.add_argument("--pretrained", default="none", help="weights do not change speed; random init by default")
    parser.add_argument("--tiny-model", default=embedded.MODEL_NAME, help="small model for images/hour and growth")
    parser.add_argument("--tiny-pretrained", default=None, help="default: embedded weights if installed, else none")
    parser.add_argument("--images", type=int, default=None, help="images searched on --model (default 2; quick 1)")
    parser.add_argument("--plain-batch", type=int, default=None, help="plain forward batch (default 32; quick 16)")
    parser.add_argument("--tiny-images", type=int, default=None, help="images/hour on the tiny model (default 64)")
    parser.add_argument("--growth-images", type=int, default=None, help="images per growth setting (default 16)")
    parser.add_argument("--image-counts", default=None, help="lockstep image counts (default 1,4,16,64)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--max-batch-tokens", type=int, default=32768, help="the search's candidate batch cap")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="smaller sizes: about a minute on an idle 2-core CPU")
    parser.add_argument("--out", type=Path, default=None, help="JSON file to write")
    args = parser.parse_args(argv)
    sizes = {
        "images": (2, 1),
        "plain_batch": (32, 16),
        "tiny_images": (64, 16),
        "growth_images": (16, 4),
        "image_counts": ("1,4,16,64", "1,4,16"),
    }
    for name, (full, quick) in sizes.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.image_counts = [int(c) for c in str(args.image_counts).split(",") if c.strip()]
    if args.tiny_pretrained is None:
        args.tiny_pretrained = default_tiny_pretrained()
    return args


def main(argv: Sequence[str] | None = None) -> None:

    args = parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    check_device(args.device)
    console = Console(width=None if sys.stdout.isatty() else 150)  # logs keep the wide tables readable
    load_before = os.getloadavg()
    started = time.perf_counter()
    with torch_threads(args.threads) as threads:
        where = f"{threads} thread{'s' if threads > 1 else ''}, {args.device}"
        big = load_model(args.model, args.pretrained, device=args.device, seed=args.seed)
        big.visual.eval()
        timing, summary = efficiency(big, args.images, args.plain_batch, 1, args.max_batch_tokens, args.seed)
        title = f"{args.model} ({args.pretrained}): search efficiency — {where}; {CONVENTION}"
        console.print(render_efficiency(timing, summary, title))
        tiny = load_model(args.tiny_model, args.tiny_pretrained, device=args.device, seed=args.seed)
        tiny.visual.eval()
        warm = random_images(2, tiny.arch, tiny.device, args.seed)
        search_batch(tiny.visual, tiny.arch, warm, DEFAULT, max_batch_tokens=args.max_batch_tokens)
        # the tiny forward is short: several plain repeats each side steady its rate
        tiny_timing, tiny_summary = efficiency(
            tiny, args.tiny_images, args.tiny_images, 3, args.max_batch_tokens, args.seed
        )
        title = f"{args.tiny_model} ({args.tiny_pretrained}): search efficiency — {where}"
        console.print(render_efficiency(tiny_timing, tiny_summary, title))
        rows = growth(
            tiny,
            big.arch,
            timing.effective_gmacs_per_second,
            args.growth_images,
            args.image_counts,
            args.max_batch_tokens,
            args.seed,
        )
    console.print(render_growth(rows, args.tiny_model, args.model))
    load_after = os.getloadavg()
    console.print(
        f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} on {os.cpu_count()} CPUs "
        f"— above the thread count means the machine was shared and absolute numbers are contended; "
        f"ratios within one run stay comparable. Total {time.perf_counter() - started:.0f} s."
    )
    if args.out is not None:
        body = {
            "convention": CONVENTION,
            "target_ratio": TARGET,
            "load_average_before_after": [list(load_before), list(load_after)],
            "efficiency": {"model": args.model, "pretrained": args.pretrained, **summary, "search": timing.to_dict()},
            "tiny": {
                "model": args.tiny_model,
                "pretrained": args.tiny_pretrained,
                **tiny_summary,
                "search": tiny_timing.to_dict(),
            },
            "growth": rows,
            "seconds": time.perf_counter() - started,
        }
        write_result(args.out, SCHEMA_VERSION, args, threads, body)
        console.print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
