"""`cliprank add-tokens`: learnable tokens that win back the accuracy a pruning setup costs."""

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
    checked_specs,
    resource_files,
    run_on_model,
    set_threads,
    split_list,
)
from cliprank.commands.recipes import RecipeOption
from cliprank.errors import CliprankError
from cliprank.io import check_output_file, checkpoint_path
from cliprank.methods.spec import parse_budgets
from cliprank.tokens.settings import TokenTrainSettings, check_token_config


@app.command("add-tokens")
def add_tokens_command(
    method: str = typer.Option(
        "predictor", "--method", help="Base pruning method spec, e.g. predictor or golden(keep=0.6)."
    ),
    budget: str | None = typer.Option(
        None, "--budget", "-b", help="GMACs budget the setup is solved for (tokens included)."
    ),
    dataset: str = typer.Option(EMBEDDED_DATASETS, "--dataset", "-d", help="Training datasets, comma-separated."),
    model: str = typer.Option("cliprank-tiny", "--model", "-m"),
    pretrained: str = typer.Option("embedded", "--pretrained", "-p"),
    count: int = typer.Option(4, min=0, help="Number of learnable visual tokens (0: text context only)."),
    block: int | None = typer.Option(
        None, help="Block where tokens enter (default: the first block the method changes; 0 = input)."
    ),
    placement: str = typer.Option("shallow", help="shallow (one set) or deep (fresh tokens every block)."),
    text_context: int = typer.Option(
        0, min=0, help="CoOp-style learned text context vectors (needs --objective fewshot)."
    ),
    objective: str = typer.Option("distill", help="distill (label-free, match unpruned embeddings) or fewshot."),
    shots: int = typer.Option(16, help="Images per class for --objective fewshot."),
    epochs: int = typer.Option(8),
    batch_size: int = typer.Option(64),
    lr: float = typer.Option(2e-3),
    seed: int = typer.Option(0),
    train_split: str = typer.Option("train"),
    val_split: str = typer.Option("val", help="Held-out split for validation (never test)."),
    limit: int | None = typer.Option(None),
    dataset_root: Path | None = typer.Option(None),
    rankings: list[Path] | None = typer.Option(None, help="Rankings (when the base method is golden)."),
    predictor: Path | None = typer.Option(None, help="Predictor (when the base method is predictor)."),
    device: str = typer.Option("cpu"),
    threads: int | None = typer.Option(None, min=1),
    out: Path = typer.Option(Path("runs/predictor.tokens.safetensors"), "--out", "-o"),
    skip_unreadable: bool = SkipUnreadableOption,
    quick_gelu: bool | None = QuickGeluOption,
    trust_torchscript: bool = TrustTorchScriptOption,
    precision: str | None = PrecisionOption,
    recipe: str | None = RecipeOption,
) -> None:
    """Train a few tokens (CLIP frozen) that recover the accuracy one pruning setup loses."""
    check_models([(model, pretrained)], trust_torchscript)
    specs = checked_specs(method)
    if len(specs) != 1:
        raise CliprankError("add-tokens trains tokens for one method; pass a single --method")
    budgets = parse_budgets(budget)
    if len(budgets) != 1:
        raise CliprankError("add-tokens trains tokens for one budget; pass a single --budget")
    datasets = split_list(dataset)
    check_datasets(datasets)
    check_device_name(device)
    check_inputs(rankings, predictor)
    check_output_file(out)
    check_output_file(checkpoint_path(out), "--out's training checkpoint")
    check_token_config(count, block, placement, text_context, depth=None, objective=objective)  # the tower: later
    settings = TokenTrainSettings(
        objective=objective, shots=shots, epochs=epochs, batch_size=batch_size, lr=lr, seed=seed
    )
    settings.validate()
    # imported only now: they load torch, and `--help` and bad input must not wait for it
    from cliprank.tokens.pipeline import TokensJob, run_add_tokens

    set_threads(threads)
    name, values = specs[0]
    job = TokensJob(
        method=name,
        values=values,
        budget=budgets[0],
        datasets=datasets,
        out=out,
        count=count,
        block=block,
        placement=placement,
        text_context=text_context,
        train_split=train_split,
        val_split=val_split,
        limit=limit,
        dataset_root=dataset_root,
        files=resource_files(rankings, predictor),
        settings=settings,
        skip_unreadable=skip_unreadable,
    )
    ran = run_on_model(
        run_add_tokens, job, device, ModelChoice(model, pretrained, quick_gelu, trust_torchscript, precision)
    )
    if ran is None:
        return
    (path, info), _ = ran
    best, without = info["best"], info["heldout_without_tokens"]
    table = Table(title=f"held-out ({val_split}) top-1, epoch {best['epoch']} (selected by {info['selected_by']})")
    table.add_column("dataset")
    table.add_column("without tokens", justify="right")
    table.add_column("with tokens", justify="right")
    for name_ in best["top1"]:
        table.add_row(name_, f"{100 * without['top1'][name_]:.1f}", f"{100 * best['top1'][name_]:.1f}")
    table.add_row("mean", f"{100 * without['mean_top1']:.1f}", f"{100 * best['mean_top1']:.1f}")
    Console().print(table)
    Console().print(f"tokens: {path} (cosine to unpruned {without['cosine']:.4f} → {best['cosine']:.4f})")
