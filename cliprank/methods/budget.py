"""Solve a method's knob for a cost budget, so methods are compared at equal GMACs.

`--budget F` means: at most F times the unpruned tower's MACs. Each method's knob is set to the
costliest setting whose declared cost is at or under that — the nearest setting from below — so no
method is handed extra compute. Input-adaptive methods are solved on their declared upper bound,
which their measured mean can only undercut.

A table of methods × budgets becomes rows here (`solve_rows`), the same way for every pipeline that
shows one: the unpruned model first, a method whose knob is given (or that has none) once, every
other method once per budget.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cliprank.cost.analytic import schedule_macs, unpruned_macs
from cliprank.errors import CliprankError
from cliprank.methods.base import Method, Resources
from cliprank.methods.none import NoReduction
from cliprank.methods.registry import method_class
from cliprank.methods.spec import MethodSpec, check_budget, format_method_spec
from cliprank.models.arch import VisionArch


class BudgetTooLow(CliprankError):
    """Even the method's cheapest setting costs more than the budget (e.g. pruning late in a tower)."""


@dataclass(frozen=True)
class Solved:
    method: Method
    budget: float | None
    macs: float  # declared MACs per image
    fraction: float  # of the unpruned tower's MACs


def solve(
    name: str, arch: VisionArch, values: dict[str, Any], budget: float | None, resources: Resources | None = None
) -> Solved:
    """Configure method `name` with `values`, solving its knob for `budget` when one is given."""
    cls = method_class(name)
    base = unpruned_macs(arch)
    if budget is None or cls.knob is None:
        method = cls(arch, resources, **values)
        macs = schedule_macs(arch, method.schedule())
        return Solved(method, None if cls.knob is None else budget, macs, macs / base)
    check_budget(budget)
    if values.get(cls.knob) is not None:
        raise CliprankError(f"{name}: {cls.knob} is set and a budget is given; drop one of them")
    limit = budget * base * (1 + 1e-9)
    best: Solved | None = None
    cheapest: float | None = None
    for candidate in cls.knob_candidates(arch, values):
        method = cls(arch, resources, **{**values, cls.knob: candidate})
        macs = schedule_macs(arch, method.schedule())
        cheapest = macs if cheapest is None else min(cheapest, macs)
        if macs <= limit and (best is None or macs > best.macs):
            best = Solved(method, budget, macs, macs / base)
    if best is None:
        floor = f"{cheapest / base:.3f}" if cheapest is not None else "unknown"
        raise BudgetTooLow(
            f"{name}: no setting fits budget {budget} (its cheapest costs {floor} of the unpruned GMACs); "
            "raise the budget"
        )
    return best


@dataclass(frozen=True)
class Row:
    """One solved (method, budget) for one model: a row of every table the model appears in."""

    spec: str
    solved: Solved

    @property
    def method(self) -> Method:
        return self.solved.method

    @property
    def budget(self) -> float | None:
        return self.solved.budget

    @property
    def key(self) -> str:
        """Identity within one model's rows (a report's record key adds model and dataset)."""
        return f"{self.spec}@{self.solved.budget}"


def solve_rows(
    arch: VisionArch,
    specs: Sequence[MethodSpec],
    budgets: Sequence[float | None],
    resources: Resources | None = None,
    skipped: list[str] | None = None,
) -> list[Row]:
    """Every (method, budget) solved for this tower: the unpruned model first, knob-less or set knobs once.

    A budget below a method's cheapest setting (pruning at block 3 cannot go under the cost of
    blocks 0–2) is left out and reported in `skipped` when a list is given, rather than failing the
    whole table; when nothing but the unpruned row would remain, the error is raised.
    """
    rows: list[Row] = []
    seen: set[tuple[str, float | None]] = set()
    for name, values in [(NoReduction.name, {}), *specs]:
        cls = method_class(name)
        spec = format_method_spec(name, values)
        explicit = cls.knob is None or values.get(cls.knob) is not None
        for budget in [None] if explicit else budgets:
            if (spec, budget) in seen:
                continue
            seen.add((spec, budget))
            if budget is None and not explicit:
                raise CliprankError(
                    f"{name} needs --budget or an explicit {cls.knob}=... (e.g. {name}({cls.knob}=...))"
                )
            try:
                rows.append(Row(spec, solve(name, arch, values, budget, resources)))
            except BudgetTooLow as err:
                if skipped is None:
                    raise
                skipped.append(str(err))
    if skipped and len(rows) == 1:
        raise BudgetTooLow(skipped[0])
    return rows
