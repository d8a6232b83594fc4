"""What the commands share: option parsing (models, lists, resource files), threads, the progress display.

Nothing here imports torch at import time: `cliprank --help` and bad options answer at once.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cliprank.errors import CliprankError
from cliprank.precision import DEFAULTS, PRECISIONS

if TYPE_CHECKING:
    from cliprank.distributed import Distributed
    from cliprank.resources import ResourceFiles

EMBEDDED_DATASETS = "digits,textiles,faces"

QuickGeluOption = typer.Option(
    None,
    "--quick-gelu/--no-quick-gelu",
    help="Force QuickGELU on or off (default: decided from the weights; OpenAI weights need it).",
)


PrecisionOption = typer.Option(
    None,
    "--precision",
    help=f"Numeric precision, open_clip's names: {', '.join(PRECISIONS)} "
    f"(default: {DEFAULTS['cuda']} on cuda, {DEFAULTS['cpu']} on cpu).",
)


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_models(models: str, pretrained: str) -> list[tuple[str, str]]:
    names, tags = split_list(models), split_list(pretrained)
    if not names:
        raise CliprankError("no model given; pass --model NAME")
    if len(tags) == 1:
        tags = tags * len(names)
    if len(tags) != len(names):
        raise CliprankError(f"{len(names)} models but {len(tags)} --pretrained values; give one, or one per model")
    return list(zip(names, tags))


def resource_files(
    rankings: list[Path] | None = None, predictor: Path | None = None, tokens: Path | None = None
) -> ResourceFiles:
    from cliprank.resources import ResourceFiles  # loads torch: only once the command runs, never for --help

    return ResourceFiles(tuple(rankings or ()), predictor, tokens)


def set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch  # only once the command runs: --help must not wait for torch

        torch.set_num_threads(threads)


def progress_bar(dist: Distributed) -> AbstractContextManager[Progress | None]:
    """Rank 0's progress bars; nothing on the other ranks."""
    if not dist.is_main:
        return nullcontext(None)
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def status_line() -> Progress:
    """A one-line spinner on stderr that says what is being done and leaves nothing behind (logs, pipes).

    Off when stderr is not a terminal: a spinner cannot be erased from a log, so it would leave a blank line.
    """
    console = Console(stderr=True)
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}…"),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
