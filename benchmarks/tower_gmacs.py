"""Unpruned GMACs of every supported model: the analytic formula, against open_clip's table and the counters.

For each model `cliprank models` supports, the vision tower is built on the meta device (shapes,
no memory: even EVA02-E's 4.4 B parameters take a fraction of a second) and its unpruned GMACs come
from the analytic formula (`cliprank.cost.analytic`). With `--reference CSV` — open_clip's
`docs/model_profile.csv`, whose `image_gflops` count 2 FLOPs per MAC — each model the table lists is
compared with half its number. With `--count NAME ...` those models are also built with random
weights on the CPU and counted twice, by fvcore (with cliprank's attention handles) and by torch's
FlopCounterMode, on open_clip's own forward: the check that the formula describes what runs.

    python benchmarks/tower_gmacs.py --kinds timm-vit,timm-eva --reference model_profile.csv
    python benchmarks/tower_gmacs.py --models ViT-B-16-SigLIP,EVA02-B-16,PE-Core-B-16 \\
        --count ViT-B-16-SigLIP EVA02-B-16 PE-Core-B-16 --out tower_gmacs.json    # a minute or two on a CPU
"""

from __future__ import annotations

import argparse
import csv
import warnings
from pathlib import Path

import open_clip
import torch
from open_clip.model import _build_vision_tower
from output import write_result
from rich.console import Console
from rich.table import Table

from cliprank.cost.analytic import unpruned_macs
from cliprank.cost.counting import count_macs, count_macs_torch
from cliprank.engine import Plan
from cliprank.models import describe, load_model
from cliprank.models.loading import known_models, vision_refusal
from cliprank.report.profile import CONVENTION

SCHEMA_VERSION = "cliprank.tower_gmacs/1"


def meta_arch(name: str):
    config = open_clip.get_model_config(name)
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return describe(_build_vision_tower(config["embed_dim"], config["vision_cfg"]))


def read_reference(path: Path | None) -> dict[str, float]:
    """open_clip's image GFLOPs (2 per MAC) by model name, as GMACs."""
    if path is None:
        return {}
    with path.open() as handle:
        return {row["model"]: float(row["image_gflops"]) / 2 for row in csv.DictReader(handle)}


def counted(name: str) -> dict[str, float]:
    """fvcore and torch counts of open_clip's own forward and of the keep-everything plan, random weights."""
    torch.manual_seed(0)
    model = load_model(name, "none")
    images = torch.randn(1, 3, *model.arch.image_size)
    identity = Plan.identity(model.arch.depth)
    return {
        "fvcore_open_clip": count_macs(model.visual, None, model.arch.image_size) / 1e9,
        "fvcore_engine": count_macs(model.visual, identity, model.arch.image_size) / 1e9,
        "torch_open_clip": count_macs_torch(model.visual, None, images) / 1e9,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", help="comma-separated model names (default: every supported one)")
    parser.add_argument("--kinds", help="comma-separated tower kinds to keep: open_clip, timm-vit, timm-eva")
    parser.add_argument("--reference", type=Path, help="open_clip's docs/model_profile.csv")
    parser.add_argument("--count", nargs="*", default=[], help="models to build with random weights and count")
    parser.add_argument("--device", default="cpu", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help="write the numbers as JSON")
    args = parser.parse_args()

    names = args.models.split(",") if args.models else [n for n in known_models() if vision_refusal(n) is None]
    kinds = set(args.kinds.split(",")) if args.kinds else None
    reference = read_reference(args.reference)
    rows = []
    for name in names:
        arch = meta_arch(name)
        if kinds is not None and arch.kind not in kinds:
            continue
        row = {"model": name, "kind": arch.kind, "tokens": arch.tokens, "pool": arch.pool}
        row["analytic"] = unpruned_macs(arch) / 1e9
        if name in reference:
            row["open_clip_table"] = reference[name]
            row["difference"] = row["analytic"] / reference[name] - 1
        if name in args.count:
            row.update(counted(name))
        rows.append(row)

    table = Table(title=f"unpruned image-tower GMACs — {CONVENTION}")
    columns = ["model", "kind", "tokens", "pool", "analytic", "open_clip_table", "difference"]
    columns += ["fvcore_open_clip", "fvcore_engine", "torch_open_clip"]
    for column in columns:
        table.add_column(column, justify="left" if column in ("model", "kind", "pool") else "right")
    for row in rows:
        cells = []
        for column in columns:
            value = row.get(column)
            if value is None:
                cells.append("-")
            elif column == "difference":
                cells.append(f"{value:+.2%}")
            elif isinstance(value, float):
                cells.append(f"{value:.2f}")
            else:
                cells.append(str(value))
        table.add_row(*cells)
    Console(width=170).print(table)
    if args.out:
        write_result(args.out, SCHEMA_VERSION, args, torch.get_num_threads(), {"convention": CONVENTION, "rows": rows})


if __name__ == "__main__":
    main()
