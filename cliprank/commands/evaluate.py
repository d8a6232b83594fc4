"""`cliprank evaluate`: zero-shot accuracy of pruning methods across datasets at matched GMACs."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cliprank.commands import app
from cliprank.commands.options import (
    EMBEDDED_DATASETS,
    PrecisionOption,
    QuickGeluOption,
    SkipUnreadableOption,
    TrustTorchScriptOption,
    check_datasets,
    check_device_name,
    check_inputs,
    check_models,
    checked_specs,
    parse_models,
    progress_bar,
    resource_files,
    set_threads,
    split_list,
)
from cliprank.commands.recipes import RecipeOption
from cliprank.io import check_output_dir
from cliprank.methods.spec import parse_budgets
from cliprank.report.claims import mean_claims
from cliprank.report.grouping import by_model, means

DEFAULT_BUDGETS = "0.6,0.7,0.8,0.9"


@app.command("evaluate")
def evaluate_command(
    model: str = typer.Option("cliprank-tiny", "--model", "-m", help="Model name(s), comma-separated."),
    pretrained: str = typer.Option(
        "embedded",
        "--pretrained",
        "-p",
        help="Weights: a tag, a checkpoint path, 'embedded' or 'none' (one, or one per model).",
    ),
    dataset: str | None = typer.Option(
        None,
        "--dataset",
        "-d",
        help=f"Dataset(s), comma-separated (default for the embedded model: {EMBEDDED_DATASETS}).",
    ),
    method: str = typer.Option("all", "--method", help="Method specs, e.g. 'tome,evit(keep=0.7)', or 'all'."),
    budget: str = typer.Option(
        DEFAULT_BUDGETS, "--budget", "-b", help="GMACs budgets as fractions of unpruned, comma-separated."
    ),
    split: str = typer.Option("test", help="Dataset split to evaluate."),
    limit: int | None = typer.Option(None, help="Evaluate a deterministic, class-balanced subset of N images."),
    dataset_root: Path | None = typer.Option(None, help="Folder holding downloaded datasets."),
    download: bool = typer.Option(False, help="Let torchvision download missing datasets (needs internet)."),
    batch_size: int = typer.Option(64, min=1, help="Images per forward."),
    workers: int = typer.Option(0, min=0, help="Data-loading worker processes."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for torch (default: torch's choice)."),
    seed: int = typer.Option(0, help="Seed recorded in the report and used by seeded methods."),
    rankings: list[Path] | None = typer.Option(None, help="Golden rankings file(s) or folder(s) (for golden)."),
    predictor: Path | None = typer.Option(None, help="Trained ranking predictor (for predictor)."),
    tokens: Path | None = typer.Option(None, help="Learned tokens (for METHOD+tokens)."),
    speed: bool = typer.Option(True, help="Measure throughput, latency and memory per setting."),
    flops: bool = typer.Option(True, help="Count GMACs with fvcore as a cross-check of the analytic count."),
    patch_maps: int = typer.Option(
        2, min=0, help="Images per dataset in the report's patch maps (what each method keeps); 0: none."
    ),
    out: Path = typer.Option(Path("runs/evaluate"), "--out", "-o", help="Output folder (report.json/.md/.png)."),
    skip_unreadable: bool = SkipUnreadableOption,
    quick_gelu: bool | None = QuickGeluOption,
    trust_torchscript: bool = TrustTorchScriptOption,
    precision: str | None = PrecisionOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Zero-shot accuracy of every method × budget × dataset, with GMACs and speed, into a report."""
    models = parse_models(model, pretrained)
    check_models(models, trust_torchscript)
    methods, budgets = checked_specs(method), parse_budgets(budget)
    datasets = split_list(dataset or EMBEDDED_DATASETS)
    check_datasets(datasets)
    check_device_name(device)
    check_inputs(rankings, predictor, tokens)
    check_output_dir(out)
    # imported only now: they load torch, and `--help` and bad input must not wait for it
    from cliprank.distributed import Distributed
    from cliprank.evaluation.run import EvaluateJob, run_evaluate
    from cliprank.models.loading import load_model

    set_threads(threads)
    job = EvaluateJob(
        datasets=datasets,
        methods=methods,
        budgets=budgets,
        out=out,
        split=split,
        limit=limit,
        dataset_root=dataset_root,
        download=download,
        batch_size=batch_size,
        workers=workers,
        seed=seed,
        files=resource_files(rankings, predictor, tokens),
        measure_speed=speed,
        count_flops=flops,
        patch_maps=patch_maps,
        skip_unreadable=skip_unreadable,
    )
    with Distributed.from_environment(device) as dist:
        with progress_bar(dist) as progress:
            for name, weights in models:
                loaded = load_model(
                    name,
                    weights,
                    device=dist.device,
                    quick_gelu=quick_gelu,
                    trust_torchscript=trust_torchscript,
                    precision=precision,
                )
                writer = run_evaluate(loaded, job, progress, dist)
        if dist.is_main:
            show_summary(writer)


def show_summary(writer) -> None:
    """Mean acc1 per method and budget over the datasets, marked with what the paired tests support."""
    console = Console()
    for (model, pretrained), records in by_model(writer.records).items():
        cells, claims = means(records), mean_claims(records)
        budgets = sorted({budget for _, budget in cells}, key=lambda b: (b is not None, b or 0))
        table = Table(
            title=f"{model}/{pretrained}: mean zero-shot top-1 over datasets, letters, Δ vs unpruned (points)",
            caption="Δ*: a real difference (paired test on the same images, p < 0.05); a Δ without * is within "
            "noise. Settings of one budget that share a letter are not significantly different ('a': the best).",
        )
        table.add_column("method")
        for value in budgets:
            table.add_column("as specified" if value is None else f"budget {value:g}", justify="right")
        for name in dict.fromkeys(spec for spec, _ in cells):
            row = [name]
            for value in budgets:
                cell = cells.get((name, value))
                row.append(Text("") if cell is None else _cell_text(cell, claims.get(value), name))
            table.add_row(*row)
        console.print(table)
    console.print(f"report: {writer.json_path}, {writer.markdown_path}, {writer.plot_path}")
    figures = writer.patch_maps()
    if figures:
        console.print(f"patch maps: {', '.join(str(writer.out_dir / name) for name in figures.values())}")


def _cell_text(cell, claim, spec: str) -> Text:
    letters = claim.letters.get(spec, "") if claim is not None else ""
    text = Text(f"{100 * cell.acc1:.1f}" + (f" {letters}" if letters else ""))
    if cell.delta is not None and not cell.reference:
        real = claim is not None and claim.significant(spec)
        text.append(f" ({cell.delta:+.1f}{'*' if real else ''})", style="bold" if real else "dim")
    text.append(f" · {cell.gmacs:.3f} G")
    return text
