"""Token operations shared by methods, written as small pure functions and closures.

An operation takes the token state and its block's context and returns a new state; methods
compose them into plans.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cliprank.engine.context import LayerContext
from cliprank.engine.state import TokenState

BodyScorer = Callable[[TokenState, LayerContext], torch.Tensor]  # (B, body) higher = more important


def top_indices(scores: torch.Tensor, count: int, keep_order: bool = True) -> torch.Tensor:
    """Indices (B, count) of the highest scores, in original token order when `keep_order`."""
    index = scores.topk(count, dim=1, sorted=not keep_order).indices
    return index.sort(dim=1).values if keep_order else index


def keep_top(count_for: Callable[[int], int], scorer: BodyScorer, record: bool = True):
    """Keep the `count_for(current body size)` body tokens the scorer ranks highest."""

    def op(state: TokenState, context: LayerContext) -> TokenState:
        scores = scorer(state, context)
        if record:
            context.trace.record_patch_scores(state, scores, context.patches)
        count = count_for(state.body_count)
        if count >= state.body_count:
            return state
        return state.keep_body(top_indices(scores, count))

    return op
