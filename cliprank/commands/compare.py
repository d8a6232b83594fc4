"""`cliprank compare BASE NEW`: the CI gate. Exit 0 = no regression, 1 = regression, 2 = unusable input.

`cliprank compare REPORT --methods A,B`: the paired tests of two methods inside one report (exit 0).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from cliprank.commands import app
from cliprank.commands.recipes import RecipeOption
from cliprank.errors import CliprankError
from cliprank.io import check_output_file
from cliprank.methods.spec import format_method_spec, parse_method_spec, split_top_level
from cliprank.report.compare import Tolerances, compare_methods, compare_reports, render_method_pairs, render_summary
from cliprank.report.schema import load_report


@app.command("compare")
def compare(
    base: Annotated[Path, typer.Argument(help="The reference report.json (e.g. committed results).")],
    new: Annotated[
        Path | None, typer.Argument(help="The report.json of the run under test (omit with --methods).")
    ] = None,
    methods: Annotated[
        str | None,
        typer.Option(
            "--methods",
            help="Two methods of BASE to test against each other, e.g. tome,predictor: a paired test on every "
            "dataset and budget both ran at.",
        ),
    ] = None,
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
    """Compare two reports record by record; print a Markdown summary and exit 1 on any regression.

    With --methods A,B and one report: test method A against method B on the same images instead.
    """
    if summary is not None:
        check_output_file(summary, "--summary")
    if methods is not None:
        text = _compare_methods(base, new, methods)
        _echo(text, summary)
        return
    if new is None:
        raise CliprankError("compare needs BASE and NEW reports, or one report and --methods A,B")
    tolerances = Tolerances(acc_points=acc_tol, gmacs_relative=gmacs_tol, throughput_relative=throughput_tol)
    result = compare_reports(load_report(base), load_report(new), tolerances)
    text = render_summary(result, str(base), str(new), tolerances)
    _echo(text, summary)
    if result.missing:
        more = len(result.missing) - 5
        shown = ", ".join(result.missing[:5]) + (f" (+{more} more)" if more > 0 else "")
        raise CliprankError(
            f"{new} lacks {len(result.missing)} record(s) of {base}: {shown}; "
            "evaluate the same recipe as the baseline, or refresh the baseline"
        )
    raise typer.Exit(result.exit_code)


def _compare_methods(report_path: Path, extra: Path | None, methods: str) -> str:
    if extra is not None:
        raise CliprankError("--methods compares two methods inside one report; pass a single report")
    # canonical specs, as report rows name them: `predictor(keep=0.6)+tokens` is `predictor+tokens(keep=0.6)`
    names = [format_method_spec(*parse_method_spec(name)) for name in split_top_level(methods) if name]
    if len(names) != 2 or names[0] == names[1]:
        raise CliprankError(f"--methods needs two different methods, e.g. --methods tome,predictor; got '{methods}'")
    pairs = compare_methods(load_report(report_path), *names)
    if not pairs:
        raise CliprankError(
            f"{report_path} has no dataset and budget where both {names[0]} and {names[1]} were evaluated; "
            "name them as the report's rows do (e.g. tome or evit(keep=0.7))"
        )
    return render_method_pairs(pairs, *names, str(report_path))


def _echo(text: str, summary: Path | None) -> None:
    typer.echo(text, nl=False)
    if summary is not None:
        try:
            with summary.open("a", encoding="utf-8") as stream:  # appended, as GitHub's step summary expects
                stream.write(text)
        except OSError as err:
            raise CliprankError(f"cannot write the summary to {summary}: {err.strerror}") from err
