"""`cliprank profile`: GMACs (analytic and counted), schedules, parameters, speed and memory per setting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.table import Table

from cliprank.commands import app
from cliprank.commands.options import (
    PrecisionOption,
    QuickGeluOption,
    SkipUnreadableOption,
    TrustTorchScriptOption,
    check_datasets,
    check_device_name,
    check_inputs,
    check_models,
    checked_specs,
    resource_files,
    status_line,
)
from cliprank.commands.recipes import RecipeOption
from cliprank.io import check_output_dir
from cliprank.methods.spec import parse_budgets

if TYPE_CHECKING:
    from cliprank.report.profile import ProfileResult


def render(result: ProfileResult) -> list[Table]:
    """Two narrow tables (cost, then speed), so they fit a terminal; flagged GMACs get a red mark."""
    # imports torch and fvcore: only once a profile is rendered, never for --help
    from cliprank.report.profile import CONVENTION, compact_schedule, format_bytes, format_number, speedups

    cost = Table(title=f"{result.model['name']} ({result.model['pretrained']}): cost — {CONVENTION}")
    for column in ("method", "budget", "GMACs", "analytic", "Δ", "tokens entering attention", "schedule"):
        cost.add_column(column, justify="right" if column in ("budget", "GMACs", "analytic", "Δ") else "left")
    speed = Table(
        title=f"speed ({result.environment['precision']}): batch {result.settings['batch_size']}, "
        f"median of {result.settings['repeats']}"
    )
    for column in ("method", "budget", "params", "img/s", "speed-up (ideal)", "ms at b=1", "peak memory"):
        speed.add_column(column, justify="left" if column == "method" else "right")
    for row, (measured, ideal) in zip(result.rows, speedups(result.rows), strict=True):
        budget = "-" if row.budget is None else f"{row.budget:g}"
        counted = None if row.cost.counted is None else row.cost.counted / 1e9
        cost.add_row(
            row.title,
            budget,
            format_number(counted, ".3f") + (" [bold red]⚠[/]" if row.cost.flagged else ""),
            f"{row.cost.analytic / 1e9:.3f}",
            format_number(row.cost.disagreement, ".2%"),
            compact_schedule([a for a, _ in row.executed]),
            row.schedule_check,
        )
        speed.add_row(
            row.title,
            budget,
            f"{(row.tower_parameters + row.method_parameters) / 1e6:.2f}M",
            f"{row.throughput.images_per_second:.1f}",
            f"{measured:.2f}× ({ideal:.2f}×)",
            f"{row.latency_ms:.1f}",
            format_bytes(row.memory.peak_bytes),
        )
    return [cost, speed]


@app.command("profile")
def profile(
    model: Annotated[str, typer.Option("--model", help="open_clip model name.")] = "cliprank-tiny",
    pretrained: Annotated[
        str, typer.Option("--pretrained", help="Pretrained tag, checkpoint path, 'embedded' or 'none' (random init).")
    ] = "embedded",
    method: Annotated[
        str,
        typer.Option("--method", help="Methods, optionally with knobs: 'topk,tome(r=8)'; 'none' is always a row."),
    ] = "random,topk",
    budget: Annotated[
        str, typer.Option("--budget", help="Fractions of the unpruned GMACs, e.g. 0.5,0.7; 'none' = knobs as given.")
    ] = "0.7",
    device: Annotated[str, typer.Option("--device", help="cpu or cuda.")] = "cpu",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Batch size of the throughput run.")] = 32,
    threads: Annotated[int | None, typer.Option("--threads", min=1, help="torch intra-op threads.")] = None,
    repeats: Annotated[int, typer.Option("--repeats", min=1, help="Timed batches; the median is reported.")] = 5,
    warmup: Annotated[int, typer.Option("--warmup", min=0, help="Untimed batches before timing.")] = 2,
    images: Annotated[
        int, typer.Option("--images", min=1, help="Images the schedule (and adaptive methods' GMACs) average over.")
    ] = 8,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the random images and of random init.")] = 0,
    dataset: Annotated[
        str | None, typer.Option("--dataset", help="Profile on this dataset's images (golden needs them).")
    ] = None,
    split: Annotated[str, typer.Option("--split", help="Split of --dataset.")] = "test",
    dataset_root: Annotated[Path | None, typer.Option("--dataset-root", help="Folder of downloaded datasets.")] = None,
    rankings: Annotated[list[Path] | None, typer.Option("--rankings", help="Rankings for golden.")] = None,
    predictor: Annotated[Path | None, typer.Option("--predictor", help="Trained predictor for predictor.")] = None,
    tokens: Annotated[Path | None, typer.Option("--tokens", help="Learned tokens for METHOD+tokens.")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Directory for profile.json and profile.md.")] = None,
    skip_unreadable: bool = SkipUnreadableOption,
    quick_gelu: bool | None = QuickGeluOption,
    trust_torchscript: bool = TrustTorchScriptOption,
    precision: str | None = PrecisionOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Profile pruning settings: GMACs analytic vs counted (fvcore), executed schedule, params, speed, memory."""
    check_models([(model, pretrained)], trust_torchscript)
    methods = checked_specs(method)
    if dataset is not None:
        check_datasets([dataset])
    check_device_name(device)
    check_inputs(rankings, predictor, tokens)
    if out is not None:
        check_output_dir(out)
    # imported only now: they load torch, and `--help` and bad input must not wait for it
    from cliprank.distributed import Distributed
    from cliprank.models.loading import load_model
    from cliprank.profiling import ProfileJob, run_profile
    from cliprank.report.profile import write_profile

    job = ProfileJob(
        methods=tuple(methods),
        budgets=tuple(parse_budgets(budget)),
        batch_size=batch_size,
        threads=threads,
        repeats=repeats,
        warmup=warmup,
        images=images,
        seed=seed,
        dataset=dataset,
        split=split,
        dataset_root=dataset_root,
        files=resource_files(rankings, predictor, tokens),
        skip_unreadable=skip_unreadable,
    )
    with Distributed.from_environment(device) as dist, status_line() as progress:
        loading = progress.add_task(f"loading {model} ({pretrained})")
        loaded = load_model(
            model,
            pretrained,
            device=dist.device,
            seed=seed,
            quick_gelu=quick_gelu,
            trust_torchscript=trust_torchscript,
            precision=precision,
        )
        progress.remove_task(loading)
        result = run_profile(loaded, job, progress, dist)
    console = Console()
    for table in render(result):
        console.print(table)
    for row in result.rows:
        for note in row.notes:
            console.print(f"[yellow]note[/] {row.spec}: {note}")
    if out is not None:
        json_path, md_path = write_profile(result, out)
        Console(stderr=True).print(f"wrote {json_path} and {md_path}")
