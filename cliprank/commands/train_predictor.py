"""`cliprank train-predictor`: learn to predict golden rankings, so pruning needs no labels or search."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from cliprank.commands import app
from cliprank.commands.options import (
    EMBEDDED_DATASETS,
    ModelChoice,
    PrecisionOption,
    QuickGeluOption,
    SkipUnreadableOption,
    TrustTorchScriptOption,
    check_datasets,
    check_device_name,
    check_inputs,
    check_models,
    run_on_model,
    set_threads,
    split_list,
)
from cliprank.commands.recipes import RecipeOption
from cliprank.io import check_output_file, checkpoint_path
from cliprank.predictor.settings import preset_settings


@app.command("train-predictor")
def train_predictor_command(
    rankings: list[Path] = typer.Option(..., help="Rankings files or folders (train and validation splits)."),
    dataset: str = typer.Option(EMBEDDED_DATASETS, "--dataset", "-d", help="Datasets to train on, comma-separated."),
    model: str = typer.Option("cliprank-tiny", "--model", "-m"),
    pretrained: str = typer.Option("embedded", "--pretrained", "-p"),
    train_split: str = typer.Option("train"),
    val_split: str = typer.Option("val", help="Held-out split for validation (never the test split)."),
    limit: int | None = typer.Option(None, help="Use a deterministic subset of N images per dataset and split."),
    dataset_root: Path | None = typer.Option(None),
    preset: str = typer.Option(
        "cliprank",
        help="Named configuration: cliprank (graded target, linear reduction, per-step cosine) or authors "
        "(the authors' train_predictor.py: last-50-of-196 target, average-pool reduction, per-epoch cosine to 1e-4).",
    ),
    target: str | None = typer.Option(None, help="KL target: graded or authors (default: the preset's)."),
    reduction: str | None = typer.Option(None, help="Channel reduction: linear or pool (default: the preset's)."),
    schedule: str | None = typer.Option(
        None, help="Learning-rate schedule: cosine-steps or cosine-epochs (default: the preset's)."
    ),
    loss: str = typer.Option("kl", help="kl (the paper's) or margin (pairwise margin ranking)."),
    epochs: int = typer.Option(50),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(1e-3),
    weight_decay: float = typer.Option(1e-4),
    dim: int | None = typer.Option(
        None, help="Reduced channel width (default: the paper's 64, halved until <= 1% of the tower's MACs)."
    ),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu"),
    threads: int | None = typer.Option(None, min=1),
    out: Path = typer.Option(Path("runs/predictor.safetensors"), "--out", "-o"),
    skip_unreadable: bool = SkipUnreadableOption,
    quick_gelu: bool | None = QuickGeluOption,
    trust_torchscript: bool = TrustTorchScriptOption,
    precision: str | None = PrecisionOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Train the ranking predictor on golden rankings; validates each epoch, keeps the best, resumes."""
    check_models([(model, pretrained)], trust_torchscript)
    datasets = split_list(dataset)
    check_datasets(datasets)
    check_device_name(device)
    check_inputs(rankings)
    check_output_file(out)
    check_output_file(checkpoint_path(out), "--out's training checkpoint")
    settings = preset_settings(
        preset,
        target=target,
        reduction=reduction,
        schedule=schedule,
        loss=loss,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        dim=dim,
        seed=seed,
    )
    settings.validate()
    # imported only now: they load torch, and `--help` and bad input must not wait for it
    from cliprank.predictor.pipeline import PredictorJob, run_train_predictor

    set_threads(threads)
    job = PredictorJob(
        datasets=datasets,
        rankings=list(rankings),
        out=out,
        train_split=train_split,
        val_split=val_split,
        limit=limit,
        dataset_root=dataset_root,
        settings=settings,
        skip_unreadable=skip_unreadable,
    )
    ran = run_on_model(
        run_train_predictor, job, device, ModelChoice(model, pretrained, quick_gelu, trust_torchscript, precision)
    )
    if ran is None:
        return
    (path, info), _ = ran
    best = info["best"]
    console = Console()
    console.print(
        f"predictor: {path} — best epoch {best['epoch']}: top-k overlap {best['top_k_overlap']:.3f}, "
        f"Kendall τ {best['kendall_tau']:.3f} on {val_split}; {info['macs'] / 1e6:.2f} M MACs per image"
    )
    table = Table(title=f"held-out top-1 ({val_split}) at keep {info['keep']:.3f}")
    table.add_column("dataset")
    columns = list(next(iter(info["heldout_top1"].values())))
    for column in columns:
        table.add_column(column, justify="right")
    for name, row in info["heldout_top1"].items():
        table.add_row(name, *(f"{100 * row[c]:.1f}" for c in columns))
    console.print(table)
