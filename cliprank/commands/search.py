"""`cliprank search`: golden rankings of a dataset split by greedy search (resumable)."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cliprank.commands import app
from cliprank.commands.evaluate import progress_bar
from cliprank.commands.options import QuickGeluOption, set_threads
from cliprank.recipes import RecipeOption


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
    quick_gelu: bool | None = QuickGeluOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Find each image's golden ranking of patch tokens at the pruning block."""
    from cliprank.data import load_dataset
    from cliprank.distributed import Distributed
    from cliprank.models.loading import load_model
    from cliprank.search.greedy import SearchSettings
    from cliprank.search.run import default_output, finish, run_search

    set_threads(threads)
    settings = SearchSettings(
        block=block, unit=unit, step_tokens=step_tokens, total=total, score=score, direction=direction
    )
    with Distributed.from_environment(device) as dist:
        loaded = load_model(model, pretrained, device=dist.device, quick_gelu=quick_gelu)
        settings.validate(loaded.arch)
        with dist.main_first():  # one rank builds or downloads the data, the others read it
            data = load_dataset(
                dataset, split=split, root=dataset_root, transform=loaded.preprocess, limit=limit, download=download
            )
        path = out or default_output(loaded, data, settings)
        dist.log_to(path.with_name(path.name + ".logs"))
        with progress_bar() if dist.is_main else dist.quiet() as progress:
            _, stats = run_search(
                loaded,
                data,
                settings,
                path,
                chunk_size,
                max_batch_tokens,
                dist.rank,
                dist.world_size,
                progress if dist.is_main else None,
                merge=False,
            )
        searched = dist.total(stats.images)  # also the barrier: every rank has written its chunks
        if dist.is_main:
            final = finish(loaded, data, settings, path, chunk_size)
            shared = f"{dist.world_size} processes searched {searched} now; rank 0" if dist.enabled else "this process"
            Console().print(
                f"rankings: {final} ({len(data)} images; {shared} searched {stats.images} in {stats.seconds:.1f} s, "
                f"{stats.images_per_hour:.0f} images/hour)"
            )
