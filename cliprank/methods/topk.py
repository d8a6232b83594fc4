"""`topk`: keep the patches the class token attends to most — training-free attentive pruning.

At each listed block, between attention and MLP, the body tokens are ranked by the head-averaged
attention of the class token and the top `keep` fraction of the *current* body is kept (so keep
compounds over several blocks, as in EViT); the rest are dropped, not fused. This is EViT's
selection rule without its fused token (Liang et al., "Not All Patches are What You Need:
Expediting Vision Transformers via Token Reorganizations", ICLR 2022), the usual "Top-K" baseline.
On towers without a class token it ranks by the CLS-free score (`cliprank.methods.attention_score`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cliprank.cost.analytic import Schedule
from cliprank.engine.plan import Plan
from cliprank.methods import attention_score
from cliprank.methods.base import register
from cliprank.methods.knobs import Param, as_float, block_list, fraction, int_tuple
from cliprank.methods.ops import keep_top
from cliprank.models.arch import VisionArch


def kept_after(keep: float, body: int) -> int:
    """EViT's count, `math.ceil(keep_rate * (N - 1))` (youweiliang/evit, evit.py L209), in floating point
    as there: 0.07 of 100 is 7.000000000000001, so 8 tokens stay."""
    return max(1, math.ceil(keep * body))


@register
class TopK(attention_score.AttentionRanked):
    name = "topk"
    summary = "keep the patches with the highest CLS attention (no fusion)"
    paper = "Liang et al., Not All Patches are What You Need (EViT), ICLR 2022 — selection without fusion"
    reference = "youweiliang/evit 5ca95a7 with fuse_token=False: evit.py L192-267"
    knob = "keep"
    knob_hint = "keep=FRACTION"
    produces_ranking = True
    params = (
        Param(
            "keep",
            None,
            "fraction of the current body kept at each block, in (0, 1]",
            as_float,
            fraction,
        ),
        Param(
            "blocks",
            None,
            "blocks after whose attention tokens are dropped (default: 3)",
            int_tuple,
            block_list,
        ),
        attention_score.SCORE_PARAM,
    )

    def body_counts(self) -> list[tuple[int, int]]:
        """(body entering attention, body entering MLP) per block."""
        body, counts = self.arch.patches, []
        for index in range(self.arch.depth):
            after = kept_after(self.keep, body) if index in self.blocks else body
            counts.append((body, after))
            body = after
        return counts

    def schedule(self) -> Schedule:
        counts, prefix, score = self.body_counts(), self.arch.prefix_tokens, self.score
        overhead = sum(
            attention_score.row_overhead(score, prefix + a, self.arch.width)
            for i, (a, _) in enumerate(counts)
            if i in self.blocks
        )
        return Schedule(
            tuple(float(prefix + a) for a, _ in counts), tuple(float(prefix + m) for _, m in counts), overhead=overhead
        )

    def plan(self) -> Plan:
        keep, score = self.keep, self.score
        op = keep_top(
            lambda body: kept_after(keep, body),
            lambda state, context: attention_score.body_scores(state, context, score),
        )
        return Plan.build(
            self.arch.depth,
            after_attention={b: [op] for b in self.blocks},
            needs={b: [attention_score.NEEDS[score]] for b in self.blocks},
        )

    @classmethod
    def knob_candidates(cls, arch: VisionArch, values: dict[str, Any]) -> Sequence[Any]:
        return [k / arch.patches for k in range(1, arch.patches + 1)]
