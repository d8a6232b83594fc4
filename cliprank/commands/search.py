"""`cliprank search`: golden rankings of a dataset split by greedy search (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cliprank.commands import app
from cliprank.commands.options import (
    ModelChoice,
    PrecisionOption,
    QuickGeluOption,
    SkipUnreadableOption,
    TrustTorchScriptOption,
    check_datasets,
    check_device_name,
    check_models,
    run_on_model,
    set_threads,
)
from cliprank.commands.recipes import RecipeOption
from cliprank.io import check_output_file
from cliprank.search.settings import SearchSettings


@app.command("search")
def search_command(
    dataset: str = typer.Option(..., "--dataset", "-d", help="Dataset to search (one)."),
    model: str = typer.Option("cliprank-tiny", "--model", "-m"),
    pretrained: str = typer.Option("embedded", "--pretrained", "-p"),
    split: str = typer.Option("train", help="Split to search (train for predictor data, test for the oracle)."),
    limit: int | None = typer.Option(None, help="Search a deterministic class-balanced subset of N images."),
    dataset_root: Path | None = typer.Option(None),
    download: bool = typer.Option(False),
    block: int = typer.Option(3, help="Pruning block: candidates are removed from the tokens entering it."),
    unit: int = typer.Option(
        2, help="Candidate unit: k for non-overlapping k×k blocks of patches (1 = single patches)."
    ),
    step_tokens: int = typer.Option(10, help="Patches removed (or added) per greedy step."),
    total: float = typer.Option(0.4, help="Fraction of patches removed in total."),
    score: str = typer.Option("similarity", help="similarity (label-free), label or max."),
    direction: str = typer.Option("backward", help="backward (remove least harmful) or forward (add most helpful)."),
    chunk_size: int = typer.Option(64, min=1, help="Images per checkpointed chunk."),
    max_batch_tokens: int = typer.Option(32768, min=64, help="Tokens per candidate batch (memory cap)."),
    device: str = typer.Option("cpu"),
    threads: int | None = typer.Option(None, min=1),
    out: Path | None = typer.Option(None, "--out", "-o", help="Rankings file (default runs/rankings/...)."),
    skip_unreadable: bool = SkipUnreadableOption,
    quick_gelu: bool | None = QuickGeluOption,
    trust_torchscript: bool = TrustTorchScriptOption,
    precision: str | None = PrecisionOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Find each image's golden ranking of patch tokens at the pruning block."""
    check_models([(model, pretrained)], trust_torchscript)
    check_datasets([dataset])
    check_device_name(device)
    if out is not None:  # the default one is checked once the model and data name it
        check_output_file(out)
    settings = SearchSettings(
        block=block, unit=unit, step_tokens=step_tokens, total=total, score=score, direction=direction
    )
    settings.validate(arch=None)  # the tower's limits are judged once the model is loaded
    # imported only now: they load torch, and `--help` and bad input must not wait for it
    from cliprank.search.run import SearchJob, run_search

    set_threads(threads)
    job = SearchJob(
        dataset=dataset,
        settings=settings,
        split=split,
        limit=limit,
        dataset_root=dataset_root,
        download=download,
        out=out,
        chunk_size=chunk_size,
        max_batch_tokens=max_batch_tokens,
        skip_unreadable=skip_unreadable,
    )
    ran = run_on_model(
        run_search, job, device, ModelChoice(model, pretrained, quick_gelu, trust_torchscript, precision)
    )
    if ran is None:
        return
    outcome, dist = ran
    stats = outcome.stats
    shared = f"{dist.world_size} processes searched {outcome.searched} now; rank 0" if dist.enabled else "this process"
    searched = f"{shared} searched {stats.images}"
    if stats.images:
        searched += f" in {stats.seconds:.1f} s, {stats.images_per_hour:.0f} images/hour"
    else:
        searched += ": every ranking was already stored"
    Console().print(f"rankings: {outcome.path} ({outcome.images} images; {searched})")
