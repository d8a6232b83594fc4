"""`report.md`: the report as tables a person reads in a pull request.

Per dataset, rows are methods (unpruned first) and each budget is a group of columns, so methods are
compared at equal cost by reading down a column. Accuracy is in %, Δ in points against the unpruned
model on the same dataset. Which differences are real is marked, never left to the reader's eye: a Δ
is bold when the paired test on the same images says it is not noise, and the settings of one column
carry compact letters — two that share a letter are not significantly different (`significance`).
Everything else a reviewer may want to check (knob values, schedules, acc1 intervals, counted vs
analytic GMACs, latency, memory) sits in a collapsed section below.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

from cliprank.report import claims as claims_of
from cliprank.report import grouping, significance
from cliprank.report.grouping import Budget
from cliprank.report.schema import Record, Report

BLANK = ""
SKIPPED_SHOWN = 10  # unreadable files named under a dataset's heading


def render_markdown(report: Report, figures: Mapping[tuple[str, str, str], str] | None = None) -> str:
    """The whole report as Markdown; identical records give identical text.

    `figures` maps (model, pretrained, dataset) to the relative path of its patch maps, linked per model.
    """
    figures = figures or {}
    lines = ["# cliprank report", "", *_header(report)]
    models = grouping.by_model(report.records)
    level = "###" if len(models) > 1 else "##"
    for (model, pretrained), records in models.items():
        if len(models) > 1:
            lines += ["", f"## {model} / {pretrained}"]
        datasets = grouping.by_dataset(records)
        for dataset, dataset_records in datasets.items():
            lines += ["", f"{level} {dataset}", "", *_skipped(dataset_records), *_dataset_table(dataset_records)]
        if len(datasets) > 1:
            lines += ["", f"{level} Mean over {len(datasets)} datasets", "", *_mean_table(records, len(datasets))]
        agreement = [r for r in records if r.ranking_agreement is not None]
        if agreement:
            lines += ["", f"{level} Ranking agreement with golden", "", *_agreement_table(agreement)]
        shown = {
            dataset: figures[(model, pretrained, dataset)]
            for dataset in datasets
            if (model, pretrained, dataset) in figures
        }
        if shown:
            lines += ["", f"{level} What each method keeps", "", *_patch_maps(shown)]
        lines += ["", *_details(records)]
    if not report.records:
        lines += ["", "_No records yet._"]
    return "\n".join(lines) + "\n"


def _header(report: Report) -> list[str]:
    env = report.environment
    records = report.records
    models = sorted({(r.model, r.pretrained, r.image_tower_params) for r in records})
    model_text = "; ".join(f"`{m}` / `{p}` ({n:,} image-tower parameters)" for m, p, n in models) or "—"
    conventions = "; ".join(sorted({r.gmacs_convention for r in records})) or "—"
    images = ", ".join(f"{d} {n}" for d, n in sorted({(r.dataset, r.images) for r in records})) or "—"
    revision = f" ({env.git_revision})" if env.git_revision else ""
    seed = "unset" if env.seed is None else env.seed
    gpu = ", ".join(f"{name} {value}" for name, value in (("CUDA", env.cuda), ("driver", env.driver)) if value)
    hardware = "".join(f" ({part})" for part in (env.device_name, gpu) if part)
    trained_on = sorted(
        {", ".join(r.extra["predictor_trained_on"]) for r in records if r.extra.get("predictor_trained_on")}
    )
    predictor = [f"- **Predictor trained on:** {'; '.join(trained_on)}"] if trained_on else []
    return [
        f"- **Model:** {model_text}",
        f"- **Cost:** GMACs, {conventions}; in brackets, the fraction of the unpruned model's GMACs. "
        "Budget *b* (`@b`) = at most *b* × the unpruned GMACs.",
        "- **Accuracy:** zero-shot acc1 in %; Δ = change vs the unpruned model on the same dataset, in points. "
        "The unpruned row repeats under every budget as its reference.",
        f"- **Significance:** a **bold** Δ is a real difference: the paired test on the same images gives "
        f"p < {significance.ALPHA:g} (per dataset the {significance.EXACT_MCNEMAR} test on the images one "
        f"setting gets right and the other wrong; for means over datasets a {significance.SIGN_FLIP}); "
        "a plain Δ is within noise. Superscript letters compare the settings of one column: two settings "
        "that share a letter are not significantly different, and *a* marks the best group. Tests are per "
        "comparison (no multiplicity correction); 95% Wilson intervals of every acc1 are in the details.",
        f"- **Run:** {env.device}{hardware}, {env.precision}, {env.threads} threads, seed {seed}",
        f"- **Images per dataset:** {images}",
        *predictor,
        f"- **Versions:** cliprank {env.cliprank}{revision}, torch {env.torch}, open_clip {env.open_clip}, "
        f"Python {env.python}, {env.platform}",
        f"- **Created:** {report.created}",
    ]


def _skipped(records: list[Record]) -> list[str]:
    """The image files left out as unreadable (`--skip-unreadable`), named, so a reader knows what was scored."""
    skipped = sorted({name for record in records for name in record.extra.get("skipped_images", ())})
    if not skipped:
        return []
    shown = ", ".join(f"`{name}`" for name in skipped[:SKIPPED_SHOWN])
    more = f" and {len(skipped) - SKIPPED_SHOWN} more (all in report.json)" if len(skipped) > SKIPPED_SHOWN else ""
    return [f"_{len(skipped)} unreadable image file(s) left out (`--skip-unreadable`): {shown}{more}._", ""]


def _columns(records: list[Record], reference_spec: str | None) -> list[Budget]:
    """Budget column groups. The unpruned row repeats under every budget (it is each one's reference),
    so the no-budget group is shown only when some other method ran without a budget."""
    budgets = grouping.budgets(records)
    alone = all(r.method_spec == reference_spec for r in records if r.budget is None)
    return [b for b in budgets if b is not None] if alone and len(budgets) > 1 else budgets


def _dataset_table(records: list[Record]) -> list[str]:
    reference = grouping.baseline(records)
    reference_spec = None if reference is None or reference.budget is not None else reference.method_spec
    budgets = _columns(records, reference_spec)
    timed = any(r.throughput is not None for r in records)
    claims = claims_of.dataset_claims(records)
    header = ["method"]
    for budget in budgets:
        names = ["acc1", "Δ", "GMACs"] + (["img/s"] if timed else [])
        header += [_at(name, budget) for name in names]
    rows = []
    columns = {budget: claims_of.column(records, budget) for budget in budgets}
    for spec, label in grouping.methods(records):
        row = [label]
        for budget in budgets:
            record = columns[budget].get(spec)
            if record is None:
                row += [BLANK] * (4 if timed else 3)
                continue
            claim = claims[budget]
            delta = (
                "—" if record is reference else _bold(_signed(grouping.delta_points(record, reference)), claim, spec)
            )
            acc1 = _pct(record.acc1) + _sup(claim.letters.get(spec))
            row += [acc1, delta, f"{record.gmacs:.4g} ({100 * record.gmacs_fraction:.0f}%)"]
            if timed:
                row.append(BLANK if record.throughput is None else f"{record.throughput.images_per_second:.0f}")
        rows.append(row)
    return _table(header, rows)


def _mean_table(records: list[Record], n_datasets: int) -> list[str]:
    means = grouping.means(records)
    reference_spec = next((spec for (spec, budget), cell in means.items() if cell.reference and budget is None), None)
    budgets = _columns(records, reference_spec)
    claims = claims_of.mean_claims(records)
    header = ["method"] + [_at(name, b) for b in budgets for name in ("acc1", "Δ")]
    rows, partial = [], False
    for spec, label in grouping.methods(records):
        row = [label]
        for budget in budgets:
            cell = means.get((spec, budget)) or (means.get((spec, None)) if spec == reference_spec else None)
            if cell is None:
                row += [BLANK, BLANK]
                continue
            mark = "" if cell.datasets == n_datasets else "†"
            partial = partial or bool(mark)
            claim = claims[budget]
            delta = "—" if cell.reference else _bold(_signed(cell.delta), claim, spec)
            row += [_pct(cell.acc1) + mark + _sup(claim.letters.get(spec)), delta]
        rows.append(row)
    note = ["", f"† mean over fewer than all {n_datasets} datasets."] if partial else []
    return _table(header, rows) + note


def _agreement_table(records: list[Record]) -> list[str]:
    rows = []
    for record in grouping.sorted_records(records):
        agreement = record.ranking_agreement
        assert agreement is not None
        rows.append(
            [
                record.dataset,
                grouping.row_label(record),
                _budget(record.budget),
                f"{agreement.kendall_tau:.3f}",
                f"{agreement.top_k_overlap:.3f}",
                str(agreement.k),
            ]
        )
    return _table(["dataset", "method", "budget", "Kendall τ", "top-k overlap", "k"], rows, text=(0, 1))


def _patch_maps(figures: Mapping[str, str]) -> list[str]:
    lines = [
        "A few images per dataset at the tightest budget: dropped patches greyed out, ToMe's merged groups one "
        "colour each, EViT's fused token striped, beside the golden ranking and the predictor's scores "
        "(`cliprank show` draws any image).",
    ]
    for dataset, path in figures.items():
        lines += ["", f"**{dataset}**", "", f"[![what each method keeps on {dataset}]({path})]({path})"]
    return lines


def _details(records: list[Record]) -> list[str]:
    header = [
        "dataset", "method", "budget", "params", "GMACs analytic", "GMACs counted", "tokens per block (attention)",
        "acc1 95% CI", "acc5", "per-class recall", "latency ms", "peak MB", "img/s (batch, threads)",
    ]  # fmt: skip
    rows = []
    for r in grouping.sorted_records(records):
        throughput = (
            BLANK
            if r.throughput is None
            else f"{r.throughput.images_per_second:.0f} ({r.throughput.batch_size}, {r.throughput.threads})"
        )
        rows.append(
            [
                r.dataset,
                grouping.row_label(r),
                _budget(r.budget),
                ", ".join(f"{k}={_value(v)}" for k, v in sorted(r.params.items())) or "—",
                f"{r.gmacs_analytic:.4g}",
                BLANK if r.gmacs_counted is None else f"{r.gmacs_counted:.4g}",
                _run_length(r.schedule.get("attention", [])),
                BLANK if r.acc1_ci95 is None else f"{_pct(r.acc1_ci95[0])}–{_pct(r.acc1_ci95[1])}",
                _pct(r.metrics.get("acc5", math.nan)),
                _pct(r.metrics.get("mean_per_class_recall", math.nan)),
                BLANK if r.latency_ms is None else f"{r.latency_ms:.2f}",
                BLANK if r.peak_memory_mb is None else f"{r.peak_memory_mb:.0f}",
                throughput,
            ]
        )
    return [
        "<details><summary>Settings, costs and timings of every record</summary>",
        "",
        *_table(header, rows, text=(0, 1, 3, 6)),
        "",
        "</details>",
    ]


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], text: Sequence[int] = (0,)) -> list[str]:
    """A GitHub table: the `text` columns left-aligned, the numbers right-aligned."""
    align = ["---" if i in text else "---:" for i in range(len(header))]
    return [_row(header), _row(align), *(_row(row) for row in rows)]


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def _at(name: str, budget: Budget) -> str:
    return name if budget is None else f"{name} @{_budget(budget)}"


def _budget(budget: Budget) -> str:
    return "—" if budget is None else f"{budget:g}"


def _pct(fraction: float) -> str:
    return "n/a" if fraction is None or math.isnan(fraction) else f"{100 * fraction:.2f}"


def _bold(text: str, claim: claims_of.ColumnClaims, spec: str) -> str:
    """Δ text, bold when the paired test against the unpruned model says the difference is real."""
    return f"**{text}**" if claim.significant(spec) else text


def _sup(letters: str | None) -> str:
    return f"<sup>{letters}</sup>" if letters else ""


def _signed(points: float | None) -> str:
    if points is None:
        return "n/a"
    return f"{round(points, 2) + 0.0:+.2f}"  # + 0.0 turns -0.0 into 0.0: no "-0.00" for a tie


def _value(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def _run_length(counts: Sequence[float]) -> str:
    """`[65, 65, 62, 59, 59, 59]` → `65×2, 62, 59×3`: a 24-block schedule stays readable."""
    runs: list[list] = []
    for count in counts:
        value = int(count) if float(count).is_integer() else round(float(count), 1)
        if runs and runs[-1][0] == value:
            runs[-1][1] += 1
        else:
            runs.append([value, 1])
    return ", ".join(f"{v}×{n}" if n > 1 else str(v) for v, n in runs) or "—"
