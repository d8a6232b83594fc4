"""The Typer app; each command lives in its own module of this package and registers itself on `app`.

Commands only parse options, call a pipeline in the core, and render its result.
"""

import typer

app = typer.Typer(
    name="cliprank",
    help="Prune CLIP's patch tokens and measure every pruning method at equal cost.",
    no_args_is_help=False,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)
