"""Solve a method's knob for a cost budget, so methods are compared at equal GMACs.

`--budget F` means: at most F times the unpruned tower's MACs. Each method's knob is set to the
costliest setting whose declared cost is at or under that — the nearest setting from below — so no
method is handed extra compute. Input-adaptive methods are solved on their declared upper bound,
which their measured mean can only undercut.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from cliprank.cost.analytic import schedule_macs, unpruned_macs
from cliprank.errors import CliprankError
from cliprank.methods.base import Method, Resources
from cliprank.methods.registry import method_class
from cliprank.methods.spec import check_budget
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
