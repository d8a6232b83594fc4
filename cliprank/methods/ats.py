"""`ats`: Adaptive Token Sampling — keep the tokens hit by inverse-CDF sampling of their significance.

Fayyaz, Koohpayegani, Jafari, Sengupta, Joze, Sommerlade, Pirsiavash, Gall, "Adaptive Token Sampling
for Efficient Vision Transformers", ECCV 2022. Used training-free, as the paper allows.

At each of `blocks` (default: block 3 only), between attention and MLP, each body token j gets a
significance s_j = (Σ_h A_h[cls, j]) · ‖v_j‖ — the class token's attention summed over heads times
the norm of the token's value vector — normalised to sum 1. Sorted ascending, the scores form a
cumulative distribution, min-max normalised to [0, 1] as in the authors' code. K − 1 evenly spaced
points from its smallest non-zero value up to 1 are each mapped to the token whose normalised CDF
value is nearest (the official rule; deterministic at inference); tokens hit more than once count
once. So at most K − 1 body tokens survive, and fewer when the significance is concentrated: the
kept count is input-adaptive.

Knob: `K`, the official block's `n_ref_tokens` (adaptivetokensampling/ATS,
libs/models/transformers/ats_block.py L55-196): every stage draws K − 1 points, whatever the current
count, so K bounds the tokens that leave a stage, the class token included (extra tokens are
protected and not counted). Two consequences of the official code, kept here and checked by
tests/test_parity.py against a transcription of it:
- sampling happens even when K − 1 is not below the current body, so deduplication alone prunes;
- when K − 1 *is* below the body, the official code matches the points only against the CDF values
  of the K − 1 most significant tokens (it crops the CDF from the left to the number of points), so
  every point below that window lands on its least significant token and fewer tokens survive. (The
  official ViT passes the initial token count as `n_ref_tokens`, where this never happens.)
The declared schedule is the bound min(K − 1, body); executed per-image counts come from the Trace.
Images that keep different counts are padded to the batch maximum and marked in `TokenState.valid`;
a later stage samples only among valid tokens, so an image's result never depends on its batch.
Kept tokens stay in their original order (the official block orders them by significance; attention
and class-token pooling do not depend on the order). On towers without a class token K keeps its
meaning (K − 1 body samples) and the attention factor is the CLS-free score
(`cliprank.methods.attention_score`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch

from cliprank.cost.analytic import Schedule
from cliprank.engine.context import LayerContext
from cliprank.engine.plan import VALUE_NORMS, Plan
from cliprank.engine.state import TokenState
from cliprank.methods import attention_score
from cliprank.methods.base import register
from cliprank.methods.knobs import Param, as_int, block_list, int_tuple, tokens_per_stage
from cliprank.models.arch import VisionArch


def body_valid(state: TokenState) -> torch.Tensor:
    """(B, body) bool: real body tokens (all of them on a rectangular batch)."""
    if state.valid is None:
        return torch.ones(state.batch, state.body_count, dtype=torch.bool, device=state.x.device)
    return state.body(state.valid)


def significance(state: TokenState, context: LayerContext, score: str = attention_score.CLS) -> torch.Tensor:
    """ATS's significance of each body token (B, body), normalised to sum 1; 0 for padding."""
    if context.value_norms is None:
        raise RuntimeError("ats needs the block's value norms; declare them in the plan's needs")
    attention = attention_score.body_scores(state, context, score, cls_heads="sum")
    raw = (attention * state.body(context.value_norms)).float()
    raw = raw.masked_fill(~body_valid(state), 0.0)
    return raw / raw.sum(dim=1, keepdim=True).clamp_min(torch.finfo(raw.dtype).tiny)


def sample_tokens(scores: torch.Tensor, valid: torch.Tensor, samples: int) -> torch.Tensor:
    """Tokens (B, T) bool hit by `samples` evenly spaced points on the inverse of the scores' CDF.

    `scores` (B, T) are non-negative, `valid` (B, T) marks the tokens that may be chosen; invalid ones
    take no part in the distribution and are never chosen. As in the official block, the CDF is
    min-max normalised over all valid tokens, but when there are fewer points than valid tokens a point
    is matched only against the `samples` most significant ones (the official code crops its CDF from
    the left to the number of points), so points below that window all land on its lowest token.
    """
    inf = torch.tensor(float("inf"), device=scores.device, dtype=scores.dtype)
    ranked, order = scores.masked_fill(~valid, float("-inf")).sort(dim=1)  # padding first, then ascending
    valid_sorted = valid.gather(1, order)
    cdf = ranked.masked_fill(~valid_sorted, 0.0).cumsum(dim=1)
    low = torch.where(valid_sorted, cdf, inf).min(dim=1, keepdim=True).values
    high = cdf[:, -1:]
    normalized = (cdf - low) / (high - low).clamp_min(torch.finfo(cdf.dtype).tiny)
    start = torch.where(valid_sorted & (normalized > 0), normalized, inf).min(dim=1, keepdim=True).values
    start = torch.where(start.isinf(), torch.zeros_like(start), start)
    steps = torch.linspace(1.0, 0.0, samples, device=scores.device, dtype=cdf.dtype)  # [1.] when samples == 1
    points = start + (1.0 - start) * steps  # (B, samples), from 1 down to the smallest non-zero CDF value
    # candidates: the last `samples` sorted positions (valid tokens sort last, so these are the most significant)
    width = normalized.shape[1]
    candidate = valid_sorted & (torch.arange(width, device=scores.device) >= width - samples)
    # the nearest candidate CDF value to each point: its sorted neighbours on either side (others sit at -inf)
    normalized = normalized.masked_fill(~candidate, float("-inf")).contiguous()
    above = torch.searchsorted(normalized, points.contiguous()).clamp(max=width - 1)
    below = (above - 1).clamp(min=0)
    gap_above = (normalized.gather(1, above) - points).abs()
    gap_below = (points - normalized.gather(1, below)).abs()
    nearest = torch.where(gap_below <= gap_above, below, above)
    hit = order.gather(1, nearest)  # body positions of the tokens hit
    return torch.zeros_like(valid).scatter(1, hit, torch.ones_like(hit, dtype=torch.bool)) & valid


def compact(state: TokenState, chosen: torch.Tensor) -> TokenState:
    """Keep the chosen body tokens (in original order), padding images to the batch's largest count."""
    counts = chosen.sum(dim=1)
    width = int(counts.max())
    positions = torch.arange(chosen.shape[1], device=chosen.device)
    index = torch.where(chosen, positions, positions + chosen.shape[1]).argsort(dim=1)[:, :width]
    valid = torch.arange(width, device=chosen.device).unsqueeze(0) < counts.unsqueeze(1)
    if bool(valid.all()):
        reduced = state.keep_body(index)
        return reduced if reduced.valid is None else replace(reduced, valid=None)
    return state.keep_body(index, valid)


def ats_op(k: int, score: str = attention_score.CLS):
    """The stage operation: score, sample K − 1 points, keep the tokens hit (needs its attention, VALUE_NORMS)."""

    def op(state: TokenState, context: LayerContext) -> TokenState:
        scores = significance(state, context, score)
        context.trace.record_patch_scores(state, scores, context.patches)
        valid = body_valid(state)
        return compact(state, sample_tokens(scores, valid, k - 1))

    return op


@register
class ATS(attention_score.AttentionRanked):
    name = "ats"
    summary = "keep the tokens hit by inverse-CDF sampling of attention × value-norm significance (adaptive)"
    paper = "Fayyaz et al., Adaptive Token Sampling for Efficient Vision Transformers, ECCV 2022"
    reference = "adaptivetokensampling/ATS 9271257: libs/models/transformers/ats_block.py L36-355, vit.py L362-396"
    knob = "K"
    knob_hint = "K=INT (tokens kept, class token included)"
    adaptive = True
    produces_ranking = True
    params = (
        Param(
            "K",
            None,
            "most tokens kept at each stage, class token included (K - 1 body samples), >= 2",
            as_int,
            tokens_per_stage,
        ),
        Param(
            "blocks",
            None,
            "blocks after whose attention tokens are sampled (default: 3)",
            int_tuple,
            block_list,
        ),
        attention_score.SCORE_PARAM,
    )

    def body_bounds(self) -> list[tuple[int, int]]:
        """Most body tokens entering each block's attention and MLP."""
        body, bounds = self.arch.patches, []
        for index in range(self.arch.depth):
            after = min(self.values["K"] - 1, body) if index in self.values["blocks"] else body
            bounds.append((body, after))
            body = after
        return bounds

    def schedule(self) -> Schedule:
        bounds, prefix, score, width = (
            self.body_bounds(),
            self.arch.prefix_tokens,
            self.values["score"],
            self.arch.width,
        )
        # per stage: the value norms (N·C) and the score's attention beyond the block's own (a CLS row: N·C)
        overhead = sum(
            (prefix + a) * width + attention_score.row_overhead(score, prefix + a, width)
            for i, (a, _) in enumerate(bounds)
            if i in self.values["blocks"]
        )
        return Schedule(
            tuple(float(prefix + a) for a, _ in bounds),
            tuple(float(prefix + m) for _, m in bounds),
            overhead=float(overhead),
        )

    def plan(self) -> Plan:
        score = self.values["score"]
        op = ats_op(self.values["K"], score)
        blocks = self.values["blocks"]
        return Plan.build(
            self.arch.depth,
            after_attention={b: [op] for b in blocks},
            needs={b: [attention_score.NEEDS[score], VALUE_NORMS] for b in blocks},
        )

    @classmethod
    def knob_candidates(cls, arch: VisionArch, values: dict[str, Any]) -> Sequence[Any]:
        return list(range(2, arch.patches + 2))
