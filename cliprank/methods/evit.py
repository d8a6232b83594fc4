"""`evit`: keep the attentive tokens, fuse the inattentive ones into one — EViT's token reorganisation.

Liang, Ge, Tong, Song, Wang, Xie, "Not All Patches are What You Need: Expediting Vision Transformers
via Token Reorganizations", ICLR 2022.

At each of `blocks` (default: blocks 3, 6, 9 of a 12-block tower, scaled to other depths),
between attention and MLP, the body tokens are ranked by the class token's attention averaged over
heads. The top ``ceil(keep·body)`` of the *current* body stay, so `keep` compounds over locations
(0.7 at three locations leaves about 0.7³ of the patches). The others are not thrown away: they
become one fused token, their sum weighted by their class-token attention as it is (not
renormalised), appended to the body. The MLP and every later block run on the reduced set, and a
fused token is an ordinary body token at the next location. Training-free as used here. This is the
official code (youweiliang/evit, evit.py L192-267), checked by tests/test_parity.py.

Used training-free on an early block, the official fusion gives a tiny token: the inattentive tokens'
attention weights sum to far less than 1 (≈0.006 at block 1 of cliprank-tiny), so the fused token's
norm is ≈0.12 against ≈20 for the others, and later blocks' class token can put a large share of its
attention on that odd token. `normalize_fused=true` divides the weights by their sum (a weighted mean
of the fused tokens) — not the paper's method, and labelled so in every report row that uses it.

On towers without a class token the ranking and the fusion weights are the CLS-free score
(`cliprank.methods.attention_score`), which sums to 1 over the tokens like a CLS row.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from cliprank.cost.analytic import Schedule
from cliprank.engine.context import LayerContext
from cliprank.engine.plan import Plan
from cliprank.engine.state import FUSED, TokenState
from cliprank.errors import CliprankError
from cliprank.methods import attention_score
from cliprank.methods.base import register
from cliprank.methods.knobs import Param, as_bool, as_float, block_list, fraction, int_tuple
from cliprank.methods.topk import kept_after
from cliprank.models.arch import VisionArch

KNOB_STEPS = 1000  # keep is solved on a grid of 1/1000


def reorganize(
    state: TokenState, scores: torch.Tensor, kept: int, fuse: bool, normalize_fused: bool = False
) -> TokenState:
    """Keep the `kept` body tokens with the highest `scores` (in their original order); fuse the rest.

    The fused token is Σ score·x over the dropped tokens, with the scores as given (EViT does not
    renormalise them) unless `normalize_fused`; its size is the sum of theirs and its pos is FUSED.
    """
    if kept >= state.body_count:
        return state
    order = scores.argsort(dim=1, descending=True)
    top = order[:, :kept].sort(dim=1).values
    if not fuse:
        return state.keep_body(top)
    rest = order[:, kept:]
    body_x = state.body(state.x)
    channels = body_x.shape[-1]
    dropped = body_x.gather(1, rest.unsqueeze(-1).expand(-1, -1, channels))
    weights = scores.gather(1, rest).to(body_x.dtype)
    if normalize_fused:
        weights = weights / weights.sum(dim=1, keepdim=True).clamp_min(torch.finfo(weights.dtype).tiny)
    fused = weights.unsqueeze(1) @ dropped  # (B, 1, C): a batched matmul, as FLOP counters expect
    fused_size = state.body(state.size).gather(1, rest).sum(dim=1, keepdim=True)
    fused_pos = torch.full_like(fused_size, FUSED, dtype=state.pos.dtype)
    kept_x = body_x.gather(1, top.unsqueeze(-1).expand(-1, -1, channels))

    def kept_and_fused(sources: torch.Tensor) -> torch.Tensor:  # the fused token stands for every dropped patch
        width = sources.shape[-1]
        kept_rows = sources.gather(1, top.unsqueeze(-1).expand(-1, -1, width))
        fused_row = sources.gather(1, rest.unsqueeze(-1).expand(-1, -1, width)).sum(dim=1, keepdim=True)
        return torch.cat([kept_rows, fused_row], dim=1)

    return state.rebuild_body(
        torch.cat([kept_x, fused], dim=1),
        torch.cat([state.body(state.size).gather(1, top), fused_size], dim=1),
        torch.cat([state.body(state.pos).gather(1, top), fused_pos], dim=1),
        sources=state.map_sources(kept_and_fused),
    )


def evit_op(keep: float, fuse: bool, normalize_fused: bool = False, score: str = attention_score.CLS):
    """The location operation: rank by head-mean CLS attention (or the CLS-free score), keep, fuse."""

    def op(state: TokenState, context: LayerContext) -> TokenState:
        if state.valid is not None:
            raise RuntimeError("evit reduces rectangular batches only; it cannot follow an input-adaptive method")
        scores = attention_score.body_scores(state, context, score)
        context.trace.record_patch_scores(state, scores, context.patches)
        return reorganize(state, scores, kept_after(keep, state.body_count), fuse, normalize_fused)

    return op


@register
class EViT(attention_score.AttentionRanked):
    name = "evit"
    summary = "keep the patches with the highest CLS attention, fuse the rest into one token"
    paper = (
        "Liang et al., Not All Patches are What You Need: Expediting Vision Transformers via Token "
        "Reorganizations, ICLR 2022"
    )
    reference = "youweiliang/evit 5ca95a7: evit.py L192-267, helpers.py L52-73"
    knob = "keep"
    knob_hint = "keep=FRACTION"
    produces_ranking = True
    params = (
        Param(
            "keep",
            None,
            "fraction of the current body kept at each location, in (0, 1]",
            as_float,
            fraction,
        ),
        Param(
            "blocks",
            None,
            "blocks after whose attention tokens are reorganised (default: 3,6,9 of 12)",
            int_tuple,
            block_list,
        ),
        Param("fuse", True, "fuse the inattentive tokens into one extra token (false: drop them)", as_bool),
        Param(
            "normalize_fused",
            False,
            "fuse with attention weights divided by their sum (not the paper's EViT; default false: official)",
            as_bool,
        ),
        attention_score.SCORE_PARAM,
    )

    def default_blocks(self) -> tuple[int, ...]:
        """EViT's (3, 6, 9) of a 12-block ViT, scaled to this depth."""
        return tuple(sorted({max(1, self.arch.depth * q // 4) for q in (1, 2, 3)}))

    def validate(self) -> None:
        if self.values["normalize_fused"] and not self.values["fuse"]:
            raise CliprankError("evit: normalize_fused applies to the fused token; set fuse=true or drop it")
        super().validate()

    def stages(self) -> list[tuple[int, int, int]]:
        """(body entering attention, body kept, body entering MLP) per block, fused token included."""
        body, stages = self.arch.patches, []
        for index in range(self.arch.depth):
            kept = kept_after(self.values["keep"], body) if index in self.values["blocks"] else body
            after = kept + 1 if kept < body and self.values["fuse"] else kept
            stages.append((body, kept, after))
            body = after
        return stages

    def schedule(self) -> Schedule:
        stages, overhead, prefix, score = self.stages(), 0.0, self.arch.prefix_tokens, self.values["score"]
        for index, (body, kept, after) in enumerate(stages):
            if index in self.values["blocks"]:
                overhead += attention_score.row_overhead(score, prefix + body, self.arch.width)
                if after > kept:
                    overhead += (body - kept) * self.arch.width  # the weighted sum into the fused token
        return Schedule(
            tuple(float(prefix + a) for a, _, _ in stages),
            tuple(float(prefix + m) for _, _, m in stages),
            overhead=float(overhead),
        )

    def plan(self) -> Plan:
        score = self.values["score"]
        op = evit_op(self.values["keep"], self.values["fuse"], self.values["normalize_fused"], score)
        blocks = self.values["blocks"]
        return Plan.build(
            self.arch.depth,
            after_attention={b: [op] for b in blocks},
            needs={b: [attention_score.NEEDS[score]] for b in blocks},
        )

    @classmethod
    def knob_candidates(cls, arch: VisionArch, values: dict[str, Any]) -> Sequence[Any]:
        return [k / KNOB_STEPS for k in range(1, KNOB_STEPS + 1)]
