"""Run cliprank's command line in-process, as a test would call it from a shell."""

from __future__ import annotations

from cliprank.cli import main


def run_cli(argv: list[str]) -> int:
    """The exit status `cliprank ARGV...` would return."""
    try:
        main(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else 1
    return 0
