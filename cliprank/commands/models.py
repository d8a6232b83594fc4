"""`cliprank models`, `cliprank methods` and `cliprank datasets`: what can be loaded, what can prune it, on what.

All three answer from catalogs that import neither torch nor open_clip (`cliprank.models.catalog`,
`cliprank.methods.catalog`, `cliprank.data.registry`), so they list in a fraction of a second.
"""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

from cliprank.commands import app


@app.command("methods")
def list_methods(
    load: bool = typer.Option(
        False, "--load", help="Import installed plug-ins (and torch) to list what their classes declare."
    ),
) -> None:
    """List the token-reduction methods — built in, or installed by other packages — their knobs and papers."""
    # loaded here, for this listing only: --help must not wait for it
    from cliprank.methods.catalog import UNREAD, UNREAD_PARAMS, listing

    if load:  # loaded here, for this listing only: --help must not wait for it
        from cliprank.methods.registry import described  # imports torch and every plug-in

        infos = described()
    else:
        infos = list(listing().values())
    table = Table("method", "knob", "parameters", "what it does", "paper", "parity test against", "from")
    for info in infos:
        params = ", ".join(f"{name}={default}" if name != UNREAD else UNREAD for name, default in info.params)
        table.add_row(
            info.name, info.knob or "-", params or "-", info.summary, info.paper, info.reference or "-", info.source
        )
    console = Console()
    console.print(table)
    if any(
        UNREAD in (info.knob, info.summary, info.paper, info.reference) or info.params == UNREAD_PARAMS
        for info in infos
    ):
        console.print(f"{UNREAD}: not stated literally in the plug-in's source; `cliprank methods --load` imports it")


@app.command("models")
def list_models() -> None:
    # loaded here, for this listing only: --help must not wait for it
    """List the open_clip models cliprank can prune (ViT towers, open_clip or timm) and their tags, then the rest."""
    from cliprank.models import embedded
    from cliprank.models.catalog import configs, refusal, tags

    refusals = {name: refusal(config) for name, config in configs().items()}
    table = Table("model", "pretrained tags", title=f"{sum(r is None for r in refusals.values())} supported")
    refused = Table("model", "why not", title=f"{sum(r is not None for r in refusals.values())} not supported")
    for name, reason in refusals.items():
        if reason:
            refused.add_row(name, reason)
            continue
        known = tags(name)
        table.add_row(name, ", ".join(known) if known else (embedded.TAG if name == embedded.MODEL_NAME else "-"))
    console = Console()
    console.print(table)
    console.print(refused)


@app.command("datasets")
def list_datasets() -> None:  # loaded here, for this listing only: --help must not wait for it
    """List the dataset names `--dataset` accepts (embedded, CLIP_benchmark, imagefolder:PATH)."""
    from cliprank.data.registry import catalog

    table = Table("dataset", "what it is")
    for name, description in catalog().items():
        table.add_row(name, description)
    Console().print(table)
