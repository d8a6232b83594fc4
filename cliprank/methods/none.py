"""`none`: the unpruned tower — the reference every method is compared against."""

from __future__ import annotations

from cliprank.cost.analytic import Schedule, full_schedule
from cliprank.engine.plan import Plan
from cliprank.methods.base import Method, register


@register
class NoReduction(Method):
    name = "none"
    summary = "unpruned model (reference)"
    paper = "Radford et al., Learning Transferable Visual Models From Natural Language Supervision, ICML 2021"

    def schedule(self) -> Schedule:
        return full_schedule(self.arch)

    def plan(self) -> Plan:
        return Plan.identity(self.arch.depth)
