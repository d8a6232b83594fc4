"""`cliprank models` and `cliprank methods`: what can be loaded and what can prune it."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from cliprank.commands import app


@app.command("methods")
def list_methods() -> None:
    """List the token-reduction methods, their knobs and papers."""
    from cliprank.methods import REGISTRY

    table = Table("method", "knob", "parameters", "what it does", "paper", "parity test against")
    for name, cls in sorted(REGISTRY.items()):
        params = ", ".join(f"{p.name}={p.default}" for p in cls.params)
        table.add_row(name, cls.knob or "-", params or "-", cls.summary, cls.paper, cls.reference or "-")
    Console().print(table)


@app.command("models")
def list_models() -> None:
    """List the open_clip models cliprank can prune (ViTs with a class token) and their tags."""
    import open_clip

    from cliprank.errors import CliprankError
    from cliprank.models.loading import check_model_name, known_models

    table = Table("model", "pretrained tags")
    for name in known_models():
        try:
            check_model_name(name)
        except CliprankError:
            continue
        tags = open_clip.list_pretrained_tags_by_model(name)
        table.add_row(name, ", ".join(tags) if tags else ("embedded" if name == "cliprank-tiny" else "-"))
    Console().print(table)


@app.command("datasets")
def list_datasets() -> None:
    """List the dataset names `--dataset` accepts (embedded, CLIP_benchmark, imagefolder:PATH)."""
    from cliprank.data import catalog

    table = Table("dataset", "what it is")
    for name, description in catalog().items():
        table.add_row(name, description)
    Console().print(table)
