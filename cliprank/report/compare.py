"""Compare two reports record by record: the CI gate behind `cliprank compare`; or two methods in one report.

Records are matched by key. A regression is an acc1 drop beyond a tolerance in points, a relative
GMACs increase beyond a tolerance, or (when asked for) a relative throughput drop. A BASE record missing
from NEW makes the comparison unusable rather than passing: a gate that passes because a method stopped
being evaluated would hide exactly the breakage it exists to catch. So do reports of two precisions
(fp32 against amp): their accuracy and speed differ by the precision, not by the code under test.

Inside one report, `compare_methods` pairs two methods on every dataset and budget they share and
states an ordering only where the paired test on the same images supports it.

Pure functions; the command only loads files, prints the summary and maps `exit_code` to the process.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from cliprank.errors import CliprankError
from cliprank.report import claims, grouping, significance
from cliprank.report.schema import Record, Report
from cliprank.report.significance import PairedTest

EPSILON = 1e-9  # a change exactly at the tolerance is not beyond it, whatever the float rounding
INPUT_FIELDS = ("images", "dataset_fingerprint", "model_fingerprint", "gmacs_convention")
ENVIRONMENT_FIELDS = ("device", "device_name", "threads", "torch", "open_clip", "platform")
OK, REGRESSED, UNUSABLE = 0, 1, 2


@dataclass(frozen=True)
class Tolerances:
    acc_points: float = 0.5  # acc1 may drop this many percentage points
    gmacs_relative: float = 0.01  # GMACs may grow by this fraction
    throughput_relative: float | None = None  # img/s may drop by this fraction; None: not compared


@dataclass(frozen=True)
class Change:
    """One metric of one record that moved beyond its tolerance, in either direction."""

    record: Record  # the NEW record
    metric: str  # "acc1", "GMACs" or "img/s"
    base: float
    new: float
    test: PairedTest | None = None  # for acc1 on the same images: the paired test of NEW against BASE

    @property
    def text(self) -> tuple[str, str, str]:
        """(base, new, change) as a reader wants them: % and points for acc1, relative change otherwise."""
        if self.metric == "acc1":
            return f"{100 * self.base:.2f}", f"{100 * self.new:.2f}", f"{100 * (self.new - self.base):+.2f} pts"
        digits = ".4g" if self.metric == "GMACs" else ".1f"
        return f"{self.base:{digits}}", f"{self.new:{digits}}", f"{100 * (self.new / self.base - 1):+.1f}%"


@dataclass
class Comparison:
    compared: int = 0
    regressions: list[Change] = field(default_factory=list)
    improvements: list[Change] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # BASE keys absent from NEW
    added: list[str] = field(default_factory=list)  # NEW keys absent from BASE
    notes: list[str] = field(default_factory=list)

    @property
    def exit_code(self) -> int:
        return UNUSABLE if self.missing else REGRESSED if self.regressions else OK


def compare_reports(base: Report, new: Report, tolerances: Tolerances = Tolerances()) -> Comparison:
    """Every regression, improvement, missing and added record of NEW against BASE (of one precision)."""
    check_same_precision(base, new)
    base_records, new_records = base.by_key(), new.by_key()
    result = Comparison()
    result.missing = [r.key for r in grouping.sorted_records(base.records) if r.key not in new_records]
    result.added = [r.key for r in grouping.sorted_records(new.records) if r.key not in base_records]
    untimed = 0
    changed_inputs: dict[str, int] = {}
    for new_record in grouping.sorted_records(new.records):
        base_record = base_records.get(new_record.key)
        if base_record is None:
            continue
        result.compared += 1
        for change, regressed in _changes(base_record, new_record, tolerances):
            (result.regressions if regressed else result.improvements).append(change)
        timed = base_record.throughput is not None and new_record.throughput is not None
        untimed += tolerances.throughput_relative is not None and not timed
        for name in INPUT_FIELDS:
            if getattr(base_record, name) != getattr(new_record, name):
                changed_inputs[name] = changed_inputs.get(name, 0) + 1
    for name, count in changed_inputs.items():
        result.notes.append(f"{name} differs for {count} record(s): those results were measured on other inputs")
    if untimed:
        result.notes.append(f"throughput not compared for {untimed} record(s): not measured in both reports")
    differing = [
        f"{name} {getattr(base.environment, name)} → {getattr(new.environment, name)}"
        for name in ENVIRONMENT_FIELDS
        if getattr(base.environment, name) != getattr(new.environment, name)
    ]
    if differing:
        result.notes.append("environments differ (" + "; ".join(differing) + "); timings may not be comparable")
    if not base.records:
        result.notes.append("BASE has no records: nothing was checked")
    return result


def precisions(report: Report) -> list[str]:
    """The precisions a report's numbers were measured in (its records', or else its environment's)."""
    return sorted({record.precision or report.environment.precision for record in report.records}) or [
        report.environment.precision
    ]


def check_same_precision(base: Report, new: Report) -> None:
    """Refuse to gate across precisions: a fp32 baseline says nothing about an amp run, and vice versa."""
    before, after = precisions(base), precisions(new)
    if before != after:
        raise CliprankError(
            f"BASE was measured in {', '.join(before)} and NEW in {', '.join(after)}: accuracy and speed in "
            f"different precisions are not comparable; rerun NEW with --precision {before[0]} or compare reports "
            "of one precision"
        )


def _changes(base: Record, new: Record, tolerances: Tolerances) -> list[tuple[Change, bool]]:
    """(change, is_regression) for each metric of one record pair that moved beyond its tolerance."""
    found = []
    points = 100 * (new.acc1 - base.acc1)
    if abs(points) > tolerances.acc_points + EPSILON:
        found.append((Change(new, "acc1", base.acc1, new.acc1, significance.record_test(new, base)), points < 0))
    if base.gmacs > 0:
        growth = new.gmacs / base.gmacs - 1
        if abs(growth) > tolerances.gmacs_relative + EPSILON:
            found.append((Change(new, "GMACs", base.gmacs, new.gmacs), growth > 0))
    if tolerances.throughput_relative is not None and base.throughput and new.throughput:
        before, after = base.throughput.images_per_second, new.throughput.images_per_second
        if before > 0 and abs(after / before - 1) > tolerances.throughput_relative + EPSILON:
            found.append((Change(new, "img/s", before, after), after < before))
    return found


def render_summary(result: Comparison, base_name: str, new_name: str, tolerances: Tolerances) -> str:
    """Markdown for a terminal and for `$GITHUB_STEP_SUMMARY`: verdict, counts, then the details."""
    if result.missing:
        verdict = f"⚠️ unusable: NEW lacks {len(result.missing)} record(s) of BASE"
    elif result.regressions:
        verdict = f"❌ {len(result.regressions)} regression(s)"
    else:
        verdict = "✅ no regressions"
    throughput = "off" if tolerances.throughput_relative is None else f"−{100 * tolerances.throughput_relative:g}%"
    lines = [
        f"## cliprank compare: {verdict}",
        "",
        f"`{base_name}` → `{new_name}` · tolerances: acc1 −{tolerances.acc_points:g} pts, "
        f"GMACs +{100 * tolerances.gmacs_relative:g}%, img/s {throughput}",
        "",
        "| compared | regressions | improvements | missing in NEW | new in NEW |",
        "| ---: | ---: | ---: | ---: | ---: |",
        f"| {result.compared} | {len(result.regressions)} | {len(result.improvements)} | {len(result.missing)} "
        f"| {len(result.added)} |",
    ]
    for title, changes in (("Regressions", result.regressions), ("Improvements", result.improvements)):
        if changes:
            lines += ["", f"### {title}", "", *_change_table(changes)]
    if result.missing:
        lines += ["", "### Missing in NEW", "", *(f"- `{key}`" for key in result.missing)]
    if result.added:
        lines += ["", "### New in NEW (not gated)", "", *(f"- `{key}`" for key in result.added)]
    if result.notes:
        lines += ["", "### Notes", "", *(f"- {note}" for note in result.notes)]
    return "\n".join(lines) + "\n"


def _change_table(changes: list[Change]) -> list[str]:
    models = {(c.record.model, c.record.pretrained) for c in changes}
    lines = [
        "| " + ("model | " if len(models) > 1 else "") + "dataset | method | budget | metric | base | new | change | "
        "paired test |",
        "| " + ("--- | " if len(models) > 1 else "") + "--- | --- | ---: | --- | ---: | ---: | ---: | --- |",
    ]
    for change in changes:
        r = change.record
        model = f"{r.model}/{r.pretrained} | " if len(models) > 1 else ""
        budget = "—" if r.budget is None else f"{r.budget:g}"
        base, new, delta = change.text
        label = grouping.row_label(r).replace("|", "\\|")
        lines.append(
            f"| {model}{r.dataset} | {label} | {budget} | {change.metric} | {base} | {new} | {delta} | "
            f"{_verdict(change.test)} |"
        )
    return lines


def _verdict(test: PairedTest | None) -> str:
    """How a paired test on the same images reads an acc1 change: real, or within noise."""
    if test is None:
        return "—"
    kind = "real" if test.significant else "within noise"
    return f"{kind} (p={test.p_value:.2g}; {test.a_only} images gained, {test.b_only} lost)"


# --- two methods inside one report -----------------------------------------------------------------------


@dataclass(frozen=True)
class MethodPair:
    """One paired comparison of method A against method B: on one dataset, or the mean over datasets."""

    model: str
    dataset: str  # a dataset name, or "mean over N datasets"
    budget: float | None
    a: float  # acc1 of A (fraction; the mean over datasets for a mean row)
    b: float
    a_interval: list[float] | None
    b_interval: list[float] | None
    test: PairedTest | None  # None: no per-image results to test with


def _matches(record: Record, method: str) -> bool:
    return method in (record.method_spec, record.method)


def compare_methods(report: Report, method_a: str, method_b: str) -> list[MethodPair]:
    """Paired tests of A against B on every dataset and budget both were evaluated at, then their means.

    A method is named by its spec as the report shows it (`tome`, `evit(keep=0.7)`) or by its name.
    """
    pairs: list[MethodPair] = []
    for (model, pretrained), records in grouping.by_model(report.records).items():
        label = f"{model}/{pretrained}"
        per_budget: dict[float | None, list[tuple[Record, Record]]] = {}
        datasets = grouping.by_dataset(records)
        for dataset, dataset_records in datasets.items():
            for budget in grouping.budgets(dataset_records):
                column = claims.column(dataset_records, budget)
                a = next((r for r in column.values() if _matches(r, method_a)), None)
                b = next((r for r in column.values() if _matches(r, method_b)), None)
                if a is None or b is None or a is b:
                    continue
                per_budget.setdefault(budget, []).append((a, b))
                test = significance.record_test(a, b)
                pairs.append(MethodPair(label, dataset, budget, a.acc1, b.acc1, a.acc1_ci95, b.acc1_ci95, test))
        for budget, matched in per_budget.items():
            if len(datasets) > 1 and len(matched) == len(datasets):
                mean_a = sum(a.acc1 for a, _ in matched) / len(matched)
                mean_b = sum(b.acc1 for _, b in matched) / len(matched)
                test = significance.mean_test(matched)
                title = f"mean over {len(matched)} datasets"
                pairs.append(MethodPair(label, title, budget, mean_a, mean_b, None, None, test))
    return pairs


def render_method_pairs(pairs: list[MethodPair], method_a: str, method_b: str, source: str) -> str:
    """Markdown: every paired comparison of A against B, with the verdict the test supports."""
    models = {p.model for p in pairs}
    lines = [
        f"## cliprank compare: {method_a} vs {method_b}",
        "",
        f"`{source}` · Δ = acc1({method_a}) − acc1({method_b}) in points; A only / B only = images only that "
        f"method gets right. Per dataset: {significance.EXACT_MCNEMAR}; means: {significance.SIGN_FLIP}. "
        f"An ordering is stated only where p < {significance.ALPHA:g}.",
        "",
        "| " + ("model | " if len(models) > 1 else "") + f"dataset | budget | {method_a} | {method_b} | Δ | "
        "A only | B only | p | verdict |",
        "| " + ("--- | " if len(models) > 1 else "") + "--- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for pair in pairs:
        model = f"{pair.model} | " if len(models) > 1 else ""
        budget = "—" if pair.budget is None else f"{pair.budget:g}"
        test = pair.test
        if test is None:
            counts, p_value, verdict = "n/a | n/a", "n/a", "not testable (no per-image results)"
        else:
            counts, p_value = f"{test.a_only} | {test.b_only}", f"{test.p_value:.3g}"
            winner, loser = (method_a, method_b) if test.delta > 0 else (method_b, method_a)
            verdict = f"{winner} > {loser}" if test.significant else "tie (within noise)"
        delta = f"{100 * (pair.a - pair.b):+.2f}"
        lines.append(
            f"| {model}{pair.dataset} | {budget} | {_with_interval(pair.a, pair.a_interval)} | "
            f"{_with_interval(pair.b, pair.b_interval)} | {delta} | {counts} | {p_value} | {verdict} |"
        )
    return "\n".join(lines) + "\n"


def _with_interval(acc1: float, interval: list[float] | None) -> str:
    text = f"{100 * acc1:.2f}"
    return text if interval is None else f"{text} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"
