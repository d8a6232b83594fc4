"""What the commands share: option parsing (models, lists, resource files), threads, the progress display,
and the checks of what was typed that run before any work.

Nothing here imports torch at import time: `cliprank --help` and bad options answer at once. Each
command checks its arguments with the `check_*` helpers first — models, weights, method specs, budgets,
datasets, device, the files it reads and the outputs it writes — and only then imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

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
from cliprank.methods.catalog import check_specs
from cliprank.methods.spec import MethodSpec, parse_method_specs
from cliprank.models import catalog
from cliprank.precision import DEFAULTS, PRECISIONS

if TYPE_CHECKING:
    from cliprank.distributed import Distributed
    from cliprank.models.loading import LoadedModel
    from cliprank.resources import ResourceFiles

Result = TypeVar("Result")

EMBEDDED_DATASETS = "digits,textiles,faces"

QuickGeluOption = typer.Option(
    None,
    "--quick-gelu/--no-quick-gelu",
    help="Force QuickGELU on or off (default: decided from the weights; OpenAI weights need it).",
)
TrustTorchScriptOption = typer.Option(
    False,
    "--trust-torchscript",
    help="Load a TorchScript checkpoint (OpenAI's original .pt files). Loading one runs code stored in the file: "
    "only for files from a source you trust.",
)
SkipUnreadableOption = typer.Option(
    False,
    "--skip-unreadable",
    help="Leave out image files that cannot be decoded (named in the report) instead of stopping at the first one.",
)
DEVICE = re.compile(r"^(cpu|cuda(:\d+)?)$")


def check_precision_name(value: str | None) -> str | None:
    """An unknown --precision is refused at once, before torch loads (whether the device runs it is checked later)."""
    if value is not None and value not in PRECISIONS:
        raise CliprankError(f"unknown precision '{value}'; use one of {', '.join(PRECISIONS)}")
    return value


PrecisionOption = typer.Option(
    None,
    "--precision",
    help=f"Numeric precision, open_clip's names: {', '.join(PRECISIONS)} "
    f"(default: {DEFAULTS['cuda']} on cuda, {DEFAULTS['cpu']} on cpu).",
    callback=check_precision_name,
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


def check_models(models: list[tuple[str, str]], trust_torchscript: bool = False) -> None:
    """Model names and their weights (tags, checkpoint files, TorchScript trust), before anything loads."""
    for name, weights in models:
        catalog.check_model(name)
        catalog.check_pretrained(name, weights, trust_torchscript)


def checked_specs(text: str) -> list[MethodSpec]:
    """Method specs parsed, with method names and built-in knobs checked (values need the model's tower)."""
    specs = parse_method_specs(text)
    check_specs(specs)
    return specs


def check_datasets(names: list[str]) -> None:
    from cliprank.data.registry import check_dataset_name  # numpy and Pillow: not for --help

    if not names:
        raise CliprankError("no dataset given; pass --dataset NAME (see `cliprank datasets`)")
    for name in names:
        check_dataset_name(name)


def check_device_name(device: str) -> None:
    """A device torch may use: cpu, cuda or cuda:N (whether a GPU is there is checked once torch is loaded)."""
    if not DEVICE.match(device):
        raise CliprankError(f"device '{device}' is not supported; use cpu, cuda or cuda:N")


def check_inputs(
    rankings: list[Path] | None = None,
    predictor: Path | None = None,
    tokens: Path | None = None,
    images: list[Path] | None = None,
) -> None:
    """Files and folders the user named to read exist (their contents are checked when loaded)."""
    given = {"--rankings": rankings or [], "--predictor": [predictor], "--tokens": [tokens], "--image": images or []}
    for option, paths in given.items():
        for path in paths:
            if path is not None and not Path(path).expanduser().exists():
                raise CliprankError(f"{option} {path} not found; pass an existing file or folder")


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


@dataclass(frozen=True)
class ModelChoice:
    """The model options a command that runs one model takes, as typed (checked by `check_models`)."""

    name: str
    pretrained: str
    quick_gelu: bool | None
    trust_torchscript: bool
    precision: str | None


def run_on_model(
    pipeline: Callable[[LoadedModel, Any, Progress | None, Distributed], Result],
    job: Any,
    device: str,
    model: ModelChoice,
) -> tuple[Result, Distributed] | None:
    """Load the model on this process's device and run one long pipeline under rank 0's progress bars.

    The shape search, train-predictor and add-tokens share. What they report comes from rank 0, so
    the other ranks get None; rank 0 gets the result and the (finished) process group's facts.
    """
    # imported only when a command runs: they load torch, and `--help` and bad input must not wait for it
    from cliprank.distributed import Distributed
    from cliprank.models.loading import load_model

    with Distributed.from_environment(device) as dist:
        loaded = load_model(
            model.name,
            model.pretrained,
            device=dist.device,
            quick_gelu=model.quick_gelu,
            trust_torchscript=model.trust_torchscript,
            precision=model.precision,
        )
        with progress_bar(dist) as progress:
            result = pipeline(loaded, job, progress, dist)
    return (result, dist) if dist.is_main else None


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
