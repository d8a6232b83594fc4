"""`cliprank models` and `cliprank methods`: what can be loaded and what can prune it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cliprank.commands import app


@app.command("methods")
def list_methods() -> None:
    """List the token-reduction methods — built in, or installed by other packages — their knobs and papers."""
    from cliprank.methods.registry import methods  # imports torch: only for this command, never for --help

    table = Table("method", "knob", "parameters", "what it does", "paper", "parity test against", "from")
    for name, cls in methods().items():
        params = ", ".join(f"{p.name}={p.default}" for p in cls.params)
        source = "cliprank" if cls.__module__.startswith("cliprank.") else cls.__module__
        table.add_row(name, cls.knob or "-", params or "-", cls.summary, cls.paper, cls.reference or "-", source)
    Console().print(table)


@app.command("models")
def list_models() -> None:
    """List the open_clip models cliprank can prune (ViT towers, open_clip or timm) and their tags, then the rest."""
    import open_clip  # open_clip and torch load here, for this command only: --help must not wait for them
    from rich.progress import track

    from cliprank.models.loading import known_models, vision_refusal

    console = Console()
    names = known_models()
    checking = track(names, description="checking vision towers", console=console, transient=True)
    refusals = {name: vision_refusal(name) for name in checking}
    table = Table("model", "pretrained tags", title=f"{sum(r is None for r in refusals.values())} supported")
    refused = Table("model", "why not", title=f"{sum(r is not None for r in refusals.values())} not supported")
    for name, reason in refusals.items():
        if reason:
            refused.add_row(name, reason)
            continue
        tags = open_clip.list_pretrained_tags_by_model(name)
        table.add_row(name, ", ".join(tags) if tags else ("embedded" if name == "cliprank-tiny" else "-"))
    console.print(table)
    console.print(refused)


@app.command("datasets")
def list_datasets() -> None:
    """List the dataset names `--dataset` accepts (embedded, CLIP_benchmark, imagefolder:PATH)."""
    from cliprank.data import catalog  # imports torch: only for this command, never for --help

    table = Table("dataset", "what it is")
    for name, description in catalog().items():
        table.add_row(name, description)
    Console().print(table)
