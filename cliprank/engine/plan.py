"""A plan: what happens to the token state at each block of the vision tower.

Each block has two places where operations run: `before` the block (one-shot pruning, inserting
learnable tokens) and `after_attention`, between the block's attention and its MLP (where ToMe,
EViT, Top-K and ATS act, so the MLP — two thirds of a block's cost — runs on fewer tokens).

`needs` tells the attention which by-products the `after_attention` operations read. They are
computed only when asked for, and what they cost is part of the method's cost.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cliprank.engine.context import LayerContext
    from cliprank.engine.state import TokenState

Op = Callable[["TokenState", "LayerContext"], "TokenState"]

CLS_ATTENTION = "cls_attention"  # (B, H, N): softmax row of the class token over all keys
RECEIVED_ATTENTION = "received_attention"  # (B, N): attention each token receives, mean over heads and queries
KEYS = "keys"  # (B, N, head_dim): keys averaged over heads (ToMe's similarity metric)
VALUE_NORMS = "value_norms"  # (B, N): L2 norm of each token's value vector over all heads (ATS)
BY_PRODUCTS = frozenset({CLS_ATTENTION, RECEIVED_ATTENTION, KEYS, VALUE_NORMS})


@dataclass(frozen=True)
class LayerPlan:
    before: tuple[Op, ...] = ()
    after_attention: tuple[Op, ...] = ()
    needs: frozenset[str] = frozenset()
    proportional: bool = False  # add log(token size) to the attention logits (ToMe)

    @property
    def is_identity(self) -> bool:
        return not (self.before or self.after_attention or self.needs or self.proportional)


@dataclass(frozen=True)
class Plan:
    layers: tuple[LayerPlan, ...]
    extras: dict = field(default_factory=dict, compare=False)

    @property
    def depth(self) -> int:
        return len(self.layers)

    @classmethod
    def identity(cls, depth: int) -> Plan:
        return cls(tuple(LayerPlan() for _ in range(depth)))

    @classmethod
    def build(
        cls,
        depth: int,
        before: Mapping[int, Iterable[Op]] | None = None,
        after_attention: Mapping[int, Iterable[Op]] | None = None,
        needs: Mapping[int, Iterable[str]] | None = None,
        proportional: Iterable[int] = (),
    ) -> Plan:
        before, after_attention, needs = before or {}, after_attention or {}, needs or {}
        proportional = set(proportional)
        for mapping in (before, after_attention, needs):
            for layer in mapping:
                if not 0 <= layer < depth:
                    raise ValueError(f"block {layer} is outside the tower's blocks 0..{depth - 1}")
        unknown = {name for wanted in needs.values() for name in wanted} - BY_PRODUCTS
        if unknown:
            raise ValueError(f"unknown attention by-products {sorted(unknown)}")
        return cls(
            tuple(
                LayerPlan(
                    before=tuple(before.get(i, ())),
                    after_attention=tuple(after_attention.get(i, ())),
                    needs=frozenset(needs.get(i, ())),
                    proportional=i in proportional,
                )
                for i in range(depth)
            )
        )

    def then(self, other: Plan) -> Plan:
        """Both plans' operations, this one's first at every block (e.g. pruning, then learnable tokens)."""
        if other.depth != self.depth:
            raise ValueError("plans for towers of different depth cannot be combined")
        return Plan(
            tuple(
                LayerPlan(
                    before=a.before + b.before,
                    after_attention=a.after_attention + b.after_attention,
                    needs=a.needs | b.needs,
                    proportional=a.proportional or b.proportional,
                )
                for a, b in zip(self.layers, other.layers)
            ),
            extras={**self.extras, **other.extras},
        )
