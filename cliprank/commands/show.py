"""`cliprank show`: patch maps — what each method keeps of chosen images, golden vs predictor."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

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
    parse_models,
    resource_files,
    set_threads,
)
from cliprank.commands.recipes import RecipeOption
from cliprank.errors import CliprankError
from cliprank.io import check_output_file
from cliprank.methods.spec import parse_budgets


def parse_indices(text: str | None) -> list[int]:
    if not text:
        return []
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError as err:
        raise CliprankError(f"--index '{text}' is not a list of image indices; write e.g. --index 3,17") from err


@app.command("show")
def show_command(
    dataset: str = typer.Option(
        ..., "--dataset", "-d", help="Dataset of the images (and of the class names for --image files)."
    ),
    index: str | None = typer.Option(None, "--index", "-i", help="Images of the dataset split, e.g. 3,17."),
    image: list[Path] | None = typer.Option(None, "--image", help="Image file(s) to show (repeatable)."),
    model: str = typer.Option("cliprank-tiny", "--model", "-m", help="Model name."),
    pretrained: str = typer.Option(
        "embedded", "--pretrained", "-p", help="Weights: a tag, a checkpoint path, 'embedded' or 'none'."
    ),
    method: str = typer.Option("all", "--method", help="Method specs, e.g. 'tome,evit(keep=0.7)', or 'all'."),
    budget: str = typer.Option("0.7", "--budget", "-b", help="One GMACs budget (fraction of unpruned), or 'none'."),
    split: str = typer.Option("test", help="Dataset split the indices refer to."),
    dataset_root: Path | None = typer.Option(None, help="Folder holding downloaded datasets."),
    rankings: list[Path] | None = typer.Option(None, help="Golden rankings file(s) or folder(s)."),
    predictor: Path | None = typer.Option(None, help="Trained ranking predictor (for its heatmap and method)."),
    tokens: Path | None = typer.Option(None, help="Learned tokens (for METHOD+tokens)."),
    device: str = typer.Option("cpu", help="cpu or cuda."),
    threads: int | None = typer.Option(None, min=1, help="CPU threads for torch (default: torch's choice)."),
    out: Path = typer.Option(Path("runs/show/patch_maps.png"), "--out", "-o", help="PNG file to write."),
    skip_unreadable: bool = SkipUnreadableOption,
    quick_gelu: bool | None = QuickGeluOption,
    trust_torchscript: bool = TrustTorchScriptOption,
    precision: str | None = PrecisionOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Draw what every method keeps of chosen images at one budget: dropped patches greyed out, ToMe's
    merged groups one colour each, EViT's fused token striped, beside the golden ranking and the
    predictor's scores. Example: cliprank show -d digits -i 3,17 -b 0.6"""
    budgets = parse_budgets(budget)
    if len(budgets) != 1:
        raise CliprankError(f"show draws one budget at a time, not {len(budgets)}; pass e.g. --budget 0.7")
    models = parse_models(model, pretrained)
    if len(models) != 1:
        raise CliprankError("show draws one model at a time; pass one --model")
    check_models(models, trust_torchscript)
    methods = checked_specs(method)
    check_datasets([dataset])
    check_device_name(device)
    check_inputs(rankings, predictor, tokens, image)
    check_output_file(out)
    # imported only now: they load torch, and `--help` and bad input must not wait for it
    from cliprank.distributed import check_device
    from cliprank.models.loading import load_model
    from cliprank.show import ShowJob, run_show

    job = ShowJob(
        dataset=dataset,
        methods=methods,
        budget=budgets[0],
        out=out,
        indices=parse_indices(index),
        images=list(image or []),
        split=split,
        dataset_root=dataset_root,
        files=resource_files(rankings, predictor, tokens),
        skip_unreadable=skip_unreadable,
    )
    set_threads(threads)
    check_device(device)
    loaded = load_model(
        models[0][0],
        models[0][1],
        device=device,
        quick_gelu=quick_gelu,
        trust_torchscript=trust_torchscript,
        precision=precision,
    )
    path = run_show(loaded, job)
    Console(soft_wrap=True).print(f"patch maps: {path}")
