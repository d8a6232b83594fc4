"""`cliprank compare BASE NEW`: the CI gate. Exit 0 = no regression, 1 = regression, 2 = unusable input."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cliprank.commands import app
from cliprank.commands.recipes import RecipeOption
from cliprank.errors import CliprankError
from cliprank.report.compare import Tolerances, compare_reports, render_summary
from cliprank.report.schema import load_report


@app.command("compare")
def compare(
    base: Annotated[Path, typer.Argument(help="The reference report.json (e.g. committed results).")],
    new: Annotated[Path, typer.Argument(help="The report.json of the run under test.")],
    acc_tol: Annotated[float, typer.Option("--acc-tol", min=0.0, help="Allowed acc1 drop, in points.")] = 0.5,
    gmacs_tol: Annotated[float, typer.Option("--gmacs-tol", min=0.0, help="Allowed relative GMACs increase.")] = 0.01,
    throughput_tol: Annotated[
        float | None,
        typer.Option("--throughput-tol", min=0.0, help="Allowed relative img/s drop; not gated unless set."),
    ] = None,
    summary: Annotated[
        Path | None,
        typer.Option("--summary", help="Also append the Markdown summary to this file (e.g. $GITHUB_STEP_SUMMARY)."),
    ] = None,
    recipe: str | None = RecipeOption,
) -> None:
    """Compare two reports record by record; print a Markdown summary and exit 1 on any regression."""
    tolerances = Tolerances(acc_points=acc_tol, gmacs_relative=gmacs_tol, throughput_relative=throughput_tol)
    result = compare_reports(load_report(base), load_report(new), tolerances)
    text = render_summary(result, str(base), str(new), tolerances)
    typer.echo(text, nl=False)
    if summary is not None:
        try:
            with summary.open("a", encoding="utf-8") as stream:  # appended, as GitHub's step summary expects
                stream.write(text)
        except OSError as err:
            raise CliprankError(f"cannot write the summary to {summary}: {err.strerror}") from err
    if result.missing:
        more = len(result.missing) - 5
        shown = ", ".join(result.missing[:5]) + (f" (+{more} more)" if more > 0 else "")
        raise CliprankError(
            f"{new} lacks {len(result.missing)} record(s) of {base}: {shown}; "
            "evaluate the same recipe as the baseline, or refresh the baseline"
        )
    raise typer.Exit(result.exit_code)
