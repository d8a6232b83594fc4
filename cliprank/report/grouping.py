"""How records are grouped and ordered for reading: one rule shared by the tables and the plot.

Order is fixed (unpruned first, then methods by spec; no budget first, then budgets from mild to
aggressive) so a report re-rendered from the same records is byte-identical, and diffs in a PR show
only real changes.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from cliprank.report.schema import Record

UNPRUNED = "none"

Budget = float | None


def budget_sort_key(budget: Budget) -> tuple[int, float]:
    return (0, 0.0) if budget is None else (1, -budget)


def method_sort_key(record: Record) -> tuple[int, str]:
    return (0 if record.method == UNPRUNED else 1, record.method_spec)


def sorted_records(records: Iterable[Record]) -> list[Record]:
    def order(r: Record) -> tuple:
        return (r.model, r.pretrained, r.dataset, method_sort_key(r), budget_sort_key(r.budget))

    return sorted(records, key=order)


def by_model(records: Iterable[Record]) -> dict[tuple[str, str], list[Record]]:
    groups: dict[tuple[str, str], list[Record]] = {}
    for record in sorted_records(records):
        groups.setdefault((record.model, record.pretrained), []).append(record)
    return groups


def by_dataset(records: Iterable[Record]) -> dict[str, list[Record]]:
    groups: dict[str, list[Record]] = {}
    for record in sorted_records(records):
        groups.setdefault(record.dataset, []).append(record)
    return groups


def budgets(records: Iterable[Record]) -> list[Budget]:
    return sorted({r.budget for r in records}, key=budget_sort_key)


def methods(records: Iterable[Record]) -> list[tuple[str, str]]:
    """(method_spec, display name) of every method present, in row order."""
    first: dict[str, Record] = {}
    for record in sorted_records(records):
        first.setdefault(record.method_spec, record)
    return [(spec, row_label(record)) for spec, record in sorted(first.items(), key=lambda kv: method_sort_key(kv[1]))]


def row_label(record: Record) -> str:
    if record.method == UNPRUNED and not record.method_label:
        return f"{record.display_name} (unpruned)"
    return record.display_name


def baseline(records: Iterable[Record]) -> Record | None:
    """The unpruned record among one model's records on one dataset (the reference of every Δ)."""
    candidates = [r for r in records if r.method == UNPRUNED]
    return min(candidates, key=lambda r: (budget_sort_key(r.budget), r.method_spec), default=None)


def delta_points(record: Record, reference: Record | None) -> float | None:
    """acc1 change vs the unpruned model, in percentage points."""
    return None if reference is None else 100.0 * (record.acc1 - reference.acc1)


@dataclass(frozen=True)
class MeanCell:
    """One method × budget averaged over the datasets that have it."""

    method: str
    acc1: float
    gmacs: float
    delta: float | None  # over the datasets that also have an unpruned record
    datasets: int
    reference: bool  # the cell of the unpruned baselines themselves


def means(records: Iterable[Record]) -> dict[tuple[str, Budget], MeanCell]:
    """Mean acc1, GMACs and Δ per (method_spec, budget) over datasets, for one model's records."""
    per_dataset = by_dataset(records)
    cells: dict[tuple[str, Budget], list[tuple[Record, float | None]]] = {}
    references: set[tuple[str, Budget]] = set()
    for dataset_records in per_dataset.values():
        reference = baseline(dataset_records)
        for record in dataset_records:
            cells.setdefault((record.method_spec, record.budget), []).append((record, delta_points(record, reference)))
            if record is reference:
                references.add((record.method_spec, record.budget))
    out: dict[tuple[str, Budget], MeanCell] = {}
    for cell, entries in cells.items():
        deltas = [d for _, d in entries if d is not None]
        out[cell] = MeanCell(
            method=entries[0][0].method,
            acc1=_mean(r.acc1 for r, _ in entries),
            gmacs=_mean(r.gmacs for r, _ in entries),
            delta=_mean(deltas) if len(deltas) == len(entries) else None,
            datasets=len(entries),
            reference=cell in references,
        )
    return out


def mean_acc1(records_by_dataset: dict[str, Record]) -> float:
    """Unweighted mean acc1 over datasets (each dataset counts once, as in the mean tables)."""
    return _mean(record.acc1 for record in records_by_dataset.values())


def _mean(values: Iterable[float]) -> float:
    values = list(values)
    return math.fsum(values) / len(values)
