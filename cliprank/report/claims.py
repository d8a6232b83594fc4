"""What a report may claim: for every budget column, which differences the paired tests support.

A column holds the settings of one budget (the unpruned model repeats in every column as the
reference). For one dataset the settings are tested on their per-image results; for the mean over
datasets, on the per-image results of every dataset together. The Markdown tables, the terminal
summary and the plot all read these claims, so they never disagree about what is noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cliprank.report import grouping, significance
from cliprank.report.grouping import Budget
from cliprank.report.schema import Record
from cliprank.report.significance import PairedTest


@dataclass(frozen=True)
class ColumnClaims:
    """Compact letters per method spec ({} when some pair cannot be tested), and each spec's test
    against the unpruned reference (None where there is no reference or no per-image results)."""

    letters: dict[str, str] = field(default_factory=dict)
    versus_reference: dict[str, PairedTest | None] = field(default_factory=dict)

    def significant(self, spec: str) -> bool:
        """Whether the spec's difference from the unpruned model is real."""
        test = self.versus_reference.get(spec)
        return test is not None and test.significant


def column(records: list[Record], budget: Budget) -> dict[str, Record]:
    """One dataset's records at `budget` by method spec, with the unpruned reference in every column."""
    cells = {record.method_spec: record for record in records if record.budget == budget}
    reference = grouping.baseline(records)
    if reference is not None:
        cells.setdefault(reference.method_spec, reference)
    return cells


def dataset_claims(records: list[Record]) -> dict[Budget, ColumnClaims]:
    """Claims for each budget column of one model's records on one dataset."""
    reference = grouping.baseline(records)
    claims = {}
    for budget in grouping.budgets(records):
        cells = column(records, budget)
        versus = {
            spec: None if reference is None or record is reference else significance.record_test(record, reference)
            for spec, record in cells.items()
        }
        claims[budget] = ColumnClaims(_letters(cells, significance.record_test, lambda r: r.acc1), versus)
    return claims


def mean_claims(records: list[Record]) -> dict[Budget, ColumnClaims]:
    """Claims for each budget column of the means over datasets of one model's records.

    A method takes part only where it has a record on every dataset: its entry is its records by dataset.
    """
    per_dataset = grouping.by_dataset(records)
    claims = {}
    for budget in grouping.budgets(records):
        entries: dict[str, dict[str, Record]] = {}
        for dataset, dataset_records in per_dataset.items():
            for spec, record in column(dataset_records, budget).items():
                entries.setdefault(spec, {})[dataset] = record
        complete = {spec: entry for spec, entry in entries.items() if len(entry) == len(per_dataset)}

        def test(a: dict[str, Record], b: dict[str, Record]) -> PairedTest | None:
            return significance.mean_test([(a[dataset], b[dataset]) for dataset in per_dataset])

        reference = next((spec for spec, entry in complete.items() if _is_reference(entry, per_dataset)), None)
        versus = {
            spec: None if reference is None or spec == reference else test(entry, complete[reference])
            for spec, entry in complete.items()
        }
        claims[budget] = ColumnClaims(_letters(complete, test, grouping.mean_acc1), versus)
    return claims


def _is_reference(entry: dict[str, Record], per_dataset: dict[str, list[Record]]) -> bool:
    return all(record is grouping.baseline(per_dataset[dataset]) for dataset, record in entry.items())


def _letters(
    cells: dict[str, Any], test: Callable[[Any, Any], PairedTest | None], score: Callable[[Any], float]
) -> dict[str, str]:
    specs = list(cells)
    results = {(a, b): test(cells[a], cells[b]) for i, a in enumerate(specs) for b in specs[i + 1 :]}
    if len(specs) < 2 or any(result is None for result in results.values()):
        return {}
    return significance.compact_letters(
        specs, score=lambda spec: score(cells[spec]), differ=lambda a, b: results[(a, b)].significant
    )
