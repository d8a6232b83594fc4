"""`METHOD+tokens`: any method followed by the learned tokens trained to compensate it.

Patch Ranking's third phase (Wu, Lin, Hu, Morgado, WACV 2025): a few learnable tokens, trained with
CLIP frozen (`cliprank add-tokens`), are inserted after the method's reduction. The tokens run
through every later block, so they are part of the schedule and of the GMACs; the budget solver
therefore gives `predictor+tokens` a slightly smaller keep than `predictor` at the same budget. The
tokens used are the ones trained for exactly the solved setting — another setting is an error.
Tokens trained with learned text context (CoOp-style) also replace the zero-shot classifier.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from cliprank.cost.analytic import Schedule
from cliprank.engine.plan import Plan
from cliprank.errors import CliprankError
from cliprank.methods.base import Method
from cliprank.methods.catalog import SUFFIX

if TYPE_CHECKING:
    import torch

    from cliprank.models.loading import LoadedModel


@functools.cache
def with_tokens(base: type[Method]) -> type[Method]:
    """The `+tokens` variant of a method class."""

    class WithTokens(base):  # type: ignore[valid-type, misc]
        name = f"{base.name}{SUFFIX}"
        summary = f"{base.name} + learned tokens that recover its accuracy loss"
        paper = f"{base.paper}; tokens: Wu et al., Patch Ranking, WACV 2025"
        requires = tuple(base.requires) + ("tokens",)

        def validate(self) -> None:
            super().validate()
            tokens = self.resources.tokens
            if tokens is None or not tokens.items:
                raise CliprankError(f"{self.name} needs learned tokens: pass --tokens FILE (see `cliprank add-tokens`)")
            configs = {item.module.config for item in tokens.items if item.setup["method"] == base.name}
            if not configs:
                raise CliprankError(f"{self.name}: none of the given tokens were trained for {base.name}")
            if len({(c.count, c.block, c.placement) for c in configs}) > 1:
                raise CliprankError(f"{self.name}: the given tokens for {base.name} differ in count or placement")
            self.token_config = next(iter(configs))

        @property
        def base_values(self) -> dict[str, Any]:
            return dict(self.values)

        def learned(self):
            return self.resources.tokens.for_setup(base.name, self.base_values)

        def schedule(self) -> Schedule:
            declared = super().schedule()
            config = self.token_config
            extra = [config.count if i >= config.block else 0 for i in range(self.arch.depth)]
            return Schedule(
                tuple(n + e for n, e in zip(declared.attention, extra)),
                tuple(n + e for n, e in zip(declared.mlp, extra)),
                overhead=declared.overhead,
            )

        def plan(self) -> Plan:
            return super().plan().then(self.learned().module.plan())

        def text_classifier(self, model: LoadedModel, classnames: Sequence[str], default: torch.Tensor) -> torch.Tensor:
            tokens = self.learned().module
            return default if tokens.context is None else tokens.text_classifier(model, classnames)

        def describe(self) -> dict[str, Any]:
            config = self.token_config
            return {
                **super().describe(),
                "tokens": config.count,
                "tokens_block": config.block,
                "tokens_placement": config.placement,
                "text_context": config.text_context,
            }

    WithTokens.__name__ = f"{base.__name__}WithTokens"
    WithTokens.__qualname__ = WithTokens.__name__
    return WithTokens
