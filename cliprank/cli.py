"""Entry point: the Typer app with every command, and one-line errors for bad input."""

from __future__ import annotations

import importlib
import pkgutil
import sys
import warnings

from rich.console import Console
from rich.text import Text

import cliprank.commands
from cliprank.commands import app
from cliprank.errors import CliprankError


def _register_commands() -> None:
    package = cliprank.commands
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{info.name}")


def main(argv: list[str] | None = None) -> None:
    """Run the CLI. A CliprankError becomes one line on stderr and exit status 2, no traceback.

    Usage errors (unknown option, bad type) are reported by Typer itself, also with status 2.
    """
    _register_commands()
    # fvcore scripts a helper with torch.jit.script, which torch now warns about on every run
    warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*", category=FutureWarning)
    try:
        app(args=argv)
    except CliprankError as err:
        Console(stderr=True).print(Text.assemble(("error: ", "bold red"), str(err)), soft_wrap=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
