"""Which attention the attention-ranked methods (topk, evit, ats) read — and the CLS-free score.

Top-K, EViT and ATS rank tokens by the class token's attention. Towers without a class token (SigLIP,
SigLIP2, PE-Core bigG) have no such row, so these methods take a `score` parameter:

- `cls`: the class token's attention row, averaged (topk, evit) or summed (ats) over heads — each
  method's paper;
- `received`: the attention each token *receives*, averaged over heads and over all real queries.
  Each query's row sums to 1, so the scores also sum to 1 over the keys, like a CLS row, and EViT's
  fused token keeps its meaning (a weighted sum with weights that are a share of the attention).
  This is the CLS-free importance that token reduction for class-token-free encoders uses (VisionZip,
  Yang et al., CVPR 2025, for SigLIP). Computing it needs the block's full attention matrix, which
  those blocks compute explicitly — the same MACs as the fused kernel, so it declares no overhead;
- `auto` (the default) is resolved when the method is configured: `cls` on towers with a class
  token, `received` otherwise. The resolved value is the one recorded in every report, and a
  `received` row carries the label "CLS-free score": no tower ever gets a silent substitute.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from cliprank.engine.context import LayerContext
from cliprank.engine.plan import CLS_ATTENTION, RECEIVED_ATTENTION
from cliprank.engine.state import TokenState
from cliprank.errors import CliprankError
from cliprank.methods.base import Method
from cliprank.methods.knobs import AUTO, CLS, RECEIVED, Param, as_text, importance_score
from cliprank.methods.prune_at import DEFAULT_BLOCK
from cliprank.models.arch import VisionArch

CLS_FREE_LABEL = "CLS-free score"
NEEDS = {CLS: CLS_ATTENTION, RECEIVED: RECEIVED_ATTENTION}


SCORE_PARAM = Param(
    "score",
    AUTO,
    "token importance: cls (class-token attention), received (mean attention a token receives: CLS-free), "
    "auto (cls when the tower has a class token)",
    as_text,
    importance_score,
)


def resolve(values: dict[str, Any], arch: VisionArch) -> None:
    """Replace `auto` by the score this tower gets, so reports record what ran."""
    if values["score"] == AUTO:
        values["score"] = CLS if arch.class_token else RECEIVED


def label(score: str) -> str:
    return CLS_FREE_LABEL if score == RECEIVED else ""


def body_scores(state: TokenState, context: LayerContext, score: str, cls_heads: str = "mean") -> torch.Tensor:
    """Importance of each body token (B, body): the CLS row (mean or sum over heads), or received attention.

    Received attention is a mean over heads; a method that sums the CLS row over heads (ATS)
    normalises its scores afterwards, where the head count cancels.
    """
    if score == CLS:
        if context.cls_attention is None:
            raise RuntimeError("this operation needs the block's CLS attention; declare it in the plan's needs")
        rows = context.cls_attention
        return state.body(rows.mean(dim=1) if cls_heads == "mean" else rows.sum(dim=1))
    if context.received_attention is None:
        raise RuntimeError("this operation needs the block's received attention; declare it in the plan's needs")
    return state.body(context.received_attention)


def row_overhead(score: str, tokens: float, width: int) -> float:
    """MACs of the score beyond the block's own attention: one extra query row for CLS, none for received."""
    return tokens * width if score == CLS else 0.0


class AttentionRanked(Method):
    """What Top-K, EViT and ATS share: a budget knob that must be set, reduction blocks with a default,
    and a `score` resolved for the tower — labelled in every report when it is the CLS-free one."""

    knob_hint: ClassVar[str]  # how to set the knob by hand, e.g. "keep=FRACTION"

    def default_blocks(self) -> tuple[int, ...]:
        """One reduction, after block 3 (Top-K's and ATS's setting in the Patch Ranking comparison)."""
        return (min(DEFAULT_BLOCK, self.arch.depth - 1),)

    def validate(self) -> None:
        if self.values[self.knob] is None:
            raise CliprankError(f"{self.name}: set {self.knob_hint} or pass --budget")
        if self.values["blocks"] is None:
            self.values["blocks"] = self.default_blocks()
        resolve(self.values, self.arch)

    @property
    def label(self) -> str:
        return label(self.values["score"])
