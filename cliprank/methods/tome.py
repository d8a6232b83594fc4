"""`tome`: Token Merging — merge the most similar tokens in every block instead of dropping any.

Bolya, Fu, Dai, Zhang, Feichtenhofer, Hoffman, "Token Merging: Your ViT But Faster", ICLR 2023.

In every block, between attention and MLP, the sequence is split alternately into two sets A and
B — the class token first, in A, where it never merges, as in the official `bipartite_soft_matching`
(facebookresearch/ToMe, tome/merge.py) — and matched by cosine similarity of the keys (averaged
over heads). Each body token of A points to its most similar B token; the `r` strongest of those
edges merge their A token into its B token by a size-weighted average, so a merged token is the
mean of every patch it stands for. The class token and extra tokens are never merged. At most half
of the current body merges in one block. Sizes are tracked in the token state, and proportional
attention (log size added to the attention logits) lets a merged token weigh as much as the patches
it replaced. Training-free.

`r` is either one integer for every block, the same with a linear trend (`inflect`, ToMe's
`(r, inflect)` schedule), or an explicit per-block list.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch

from cliprank.cost.analytic import Schedule
from cliprank.engine.context import LayerContext
from cliprank.engine.plan import KEYS, Plan
from cliprank.engine.state import TokenState
from cliprank.errors import CliprankError
from cliprank.methods.base import Method, register
from cliprank.methods.knobs import Param, RValue, as_bool, as_float, inflection, merges_per_block, r_setting
from cliprank.models.arch import VisionArch
from cliprank.precision import autocast_off


def r_per_block(r: RValue, inflect: float, depth: int) -> list[int]:
    """ToMe's schedule: a per-block list padded with zeros, or a constant r with a linear trend.

    The trend keeps the total near r·depth: it runs from int(r·(1−inflect)) to 2r minus that.
    """
    if isinstance(r, tuple):
        return list(r) + [0] * (depth - len(r))
    if depth == 1:
        return [r]
    low = int(r * (1.0 - inflect))
    high = 2 * r - low
    step = (high - low) / (depth - 1)
    return [int(low + step * i) for i in range(depth)]


def merge_count(r: int, body: int) -> int:
    """Merges a block performs: r, capped at half the current body (one A token per merge)."""
    return min(r, body // 2)


def bipartite_merge(state: TokenState, metric: torch.Tensor, r: int) -> TokenState:
    """Merge the `r` most similar A→B pairs of body tokens by size-weighted average.

    `metric` (B, body, d) is the per-token matching feature (head-averaged keys); the similarities are
    computed in float32 whatever the model's precision (in bf16, near-equal edges tie). The split is
    ToMe's: the *whole* sequence alternates A, B, A, … starting with the class token, which sits in A
    and never merges. So A holds body positions 1, 3, 5, … and B body positions 0, 2, 4, …; on a tower
    without a class token the sequence starts with the first patch, so A holds body positions 0, 2,
    4, … (as the official code runs with `class_token=False`). The merged body is [unmerged A tokens in
    their order, B tokens]; a merged token keeps its B token's `pos` and sums the sizes. Edges of equal
    similarity merge in A order (a stable sort).
    """
    count = merge_count(r, state.body_count)
    if count <= 0:
        return state
    first_a = state.n_prefix % 2  # the body position of the first A token: sequence positions 0, 2, 4, … are A
    src_set, dst_set = slice(first_a, None, 2), slice(1 - first_a, None, 2)  # body positions of A and of B
    with autocast_off(metric):
        metric = metric.float()
        metric = metric / metric.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        similarity = metric[:, src_set] @ metric[:, dst_set].transpose(1, 2)  # (B, |A|, |B|): a matmul for counters
    best, match = similarity.max(dim=-1)
    order = best.argsort(dim=-1, descending=True, stable=True)
    src = order[:, :count]  # A tokens that merge away
    stay = order[:, count:].sort(dim=-1).values  # A tokens left alone, in their original order
    dst = match.gather(1, src)  # the B token each merging A token joins

    size = state.body(state.size)
    weighted = state.body(state.x) * size.unsqueeze(-1)
    pos = state.body(state.pos)

    def pick(tensor: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        if tensor.dim() == 3:
            index = index.unsqueeze(-1).expand(-1, -1, tensor.shape[-1])
        return tensor.gather(1, index)

    def merged(tensor: torch.Tensor) -> torch.Tensor:
        a, b = tensor[:, src_set], tensor[:, dst_set]
        target = dst.unsqueeze(-1).expand(-1, -1, tensor.shape[-1]) if tensor.dim() == 3 else dst
        return torch.cat([pick(a, stay), b.scatter_add(1, target, pick(a, src))], dim=1)

    new_weighted, new_size = merged(weighted), merged(size)
    new_pos = torch.cat([pick(pos[:, src_set], stay), pos[:, dst_set]], dim=1)
    sources = state.map_sources(merged)  # a merged token stands for the patches of both
    return state.rebuild_body(new_weighted / new_size.unsqueeze(-1), new_size, new_pos, sources=sources)


def merge_op(r: int):
    """The block operation: bipartite merging on head-averaged keys (needs KEYS)."""

    def op(state: TokenState, context: LayerContext) -> TokenState:
        if state.valid is not None:
            raise RuntimeError("tome merges rectangular batches only; it cannot follow an input-adaptive method")
        if context.keys is None:
            raise RuntimeError("tome needs the block's keys; declare KEYS in the plan's needs")
        return bipartite_merge(state, state.body(context.keys), r)

    return op


@register
class ToMe(Method):
    name = "tome"
    summary = "merge the r most similar token pairs in every block (bipartite soft matching)"
    paper = "Bolya et al., Token Merging: Your ViT But Faster, ICLR 2023"
    reference = "facebookresearch/ToMe af95e4b: tome/merge.py L16-97, tome/patch/timm.py"
    knob = "r"
    params = (
        Param(
            "r",
            None,
            "tokens merged per block: an integer, or a per-block list such as 8,8,4 (padded with 0)",
            r_setting,
            merges_per_block,
        ),
        Param(
            "inflect",
            0.0,
            "linear trend of a constant r over the blocks, in [-1, 1] (ToMe's (r, inflect))",
            as_float,
            inflection,
        ),
        Param("prop_attn", True, "proportional attention: add log(token size) to the attention logits", as_bool),
    )

    def validate(self) -> None:
        if self.values["r"] is None:
            raise CliprankError("tome: set r=INT or pass --budget")
        if isinstance(self.values["r"], tuple) and self.values["inflect"] != 0:
            raise CliprankError("tome: inflect applies to a constant r; give r as one integer or drop inflect")

    def merges(self) -> list[int]:
        """Merges each block actually performs (r capped at half the body) on a rectangular batch."""
        body, merges = self.arch.patches, []
        for r in r_per_block(self.values["r"], self.values["inflect"], self.arch.depth):
            merges.append(merge_count(r, body))
            body -= merges[-1]
        return merges

    def schedule(self) -> Schedule:
        body, attention, mlp, overhead, prefix = self.arch.patches, [], [], 0, self.arch.prefix_tokens
        for count in self.merges():
            attention.append(float(prefix + body))
            if count:
                overhead += math.ceil(body / 2) * (body // 2) * self.arch.head_dim  # A·Bᵀ similarity
            body -= count
            mlp.append(float(prefix + body))
        return Schedule(tuple(attention), tuple(mlp), overhead=float(overhead))

    def plan(self) -> Plan:
        merges = self.merges()
        merging = [i for i, count in enumerate(merges) if count]
        proportional = range(merging[0] + 1, self.arch.depth) if merging and self.values["prop_attn"] else ()
        return Plan.build(
            self.arch.depth,
            after_attention={i: [merge_op(merges[i])] for i in merging},
            needs={i: [KEYS] for i in merging},
            proportional=proportional,
        )

    @classmethod
    def knob_candidates(cls, arch: VisionArch, values: dict[str, Any]) -> Sequence[Any]:
        """Constant r, plus the steps between r and r+1 (the first k blocks merge one more token).

        A constant r moves the cost in coarse steps (r tokens fewer in every block); the
        in-between per-block lists — themselves ordinary ToMe schedules — let the budget solver land
        as close under the budget as the other methods do. With a trend (`inflect`), only constant r.
        """
        constant = list(range(0, arch.patches // 2 + 1))
        if values.get("inflect"):
            return constant
        between = [[r + 1] * k + [r] * (arch.depth - k) for r in constant[:-1] for k in range(1, arch.depth)]
        return constant + between

    def describe(self) -> dict[str, Any]:
        return {**self.values, "r_per_block": self.merges()}
