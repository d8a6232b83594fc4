"""`cliprank show`: patch maps — what each method keeps of chosen images, golden vs predictor."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.console import Console

from cliprank.commands import app
from cliprank.commands.options import QuickGeluOption, parse_budgets, parse_models, resolve_methods, set_threads
from cliprank.errors import CliprankError
from cliprank.recipes import RecipeOption


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
    quick_gelu: bool | None = QuickGeluOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Draw what every method keeps of chosen images at one budget: dropped patches greyed out, ToMe's
    merged groups one colour each, EViT's fused token striped, beside the golden ranking and the
    predictor's scores. Example: cliprank show -d digits -i 3,17 -b 0.6"""
    from cliprank.methods.base import method_class
    from cliprank.show import ShowSettings, run_show

    budgets = parse_budgets(budget)
    if len(budgets) != 1:
        raise CliprankError(f"show draws one budget at a time, not {len(budgets)}; pass e.g. --budget 0.7")
    models = parse_models(model, pretrained)
    if len(models) != 1:
        raise CliprankError("show draws one model at a time; pass one --model")
    methods = resolve_methods(method, models, rankings, predictor, tokens)
    if image and method.strip() == "all":  # image files have no golden ranking: leave the oracle out
        methods = [(name, knobs) for name, knobs in methods if "rankings" not in method_class(name).requires]
    set_threads(threads)
    path = run_show(
        ShowSettings(
            dataset=dataset,
            methods=methods,
            budget=budgets[0],
            out=out,
            indices=parse_indices(index),
            images=list(image or []),
            model=models[0][0],
            pretrained=models[0][1],
            split=split,
            dataset_root=dataset_root,
            rankings=list(rankings or []),
            predictor=predictor,
            tokens=tokens,
            device=device,
            quick_gelu=quick_gelu,
        )
    )
    Console(soft_wrap=True).print(f"patch maps: {path}")
