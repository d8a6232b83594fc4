"""The reduced forward of a vision tower, driven by a Plan.

A keep-everything plan reproduces `model.encode_image`; every reduction is an operation in the
plan, so the engine knows no method by name. The tower's own pieces (embedding, per-block q/k/v and
residual updates, rotary embeddings, pooling head) come from its adapter (`cliprank.models.towers`),
so the engine knows no tower by name either. The forward is split into `embed`, `run_blocks` and
`pool` so that search and training can run the blocks before the pruning layer once and reuse them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from cliprank.engine.attention import attend, attention_bias
from cliprank.engine.context import LayerContext, Trace
from cliprank.engine.plan import LayerPlan, Op, Plan
from cliprank.engine.state import TokenState
from cliprank.models.towers import Block, PoolInput, Tower, tower_for
from cliprank.precision import autocast_off


def embed(visual: nn.Module, images: torch.Tensor, meta: dict[str, Any] | None = None) -> TokenState:
    """Patch embedding, prefix tokens, positions and pre-norm: the tokens entering block 0."""
    tower = tower_for(visual)
    return TokenState.initial(tower.embed(images), meta, n_prefix=tower.arch.prefix_tokens)


def resume(
    visual: nn.Module, x: torch.Tensor, meta: dict[str, Any] | None = None, patches: torch.Tensor | None = None
) -> TokenState:
    """The state of tokens `x` saved from a keep-everything forward: the tower's prefix, then patches.

    `patches` (B, K) names the patch each body token is when only some were kept (default: all of
    them, in grid order) — rotary embeddings depend on it.
    """
    return TokenState.initial(x, meta, n_prefix=tower_for(visual).arch.prefix_tokens, patches=patches)


def apply(ops: Sequence[Op], state: TokenState, context: LayerContext, before_block: bool) -> TokenState:
    """Run a block's operations in order, letting a recording trace see each one's effect."""
    for op in ops:
        reduced = op(state, context)
        context.trace.record_stage(state, reduced, context.index, before_block)
        state = reduced
    return state


def run_block(tower: Tower, block: Block, state: TokenState, layer: LayerPlan, context: LayerContext) -> TokenState:
    state = apply(layer.before, state, context, before_block=True)
    context.trace.attention_tokens.append(state.counts())
    bias = attention_bias(state.size if layer.proportional else None, state.valid, state.x.dtype)
    q, k, v = block.qkv(state.x)
    content_keys = k
    rotary = tower.rotary(state.pos)
    if rotary is not None:
        q, k = block.rotate(q, rotary), block.rotate(k, rotary)
    out, by_products = attend(q, k, v, bias, layer.needs, state.valid, content_keys)
    state = state.with_x(state.x + block.attention_update(out))
    for name, value in by_products.items():
        setattr(context, name, value)
    state = apply(layer.after_attention, state, context, before_block=False)
    context.trace.mlp_tokens.append(state.counts())
    return state.with_x(state.x + block.mlp_update(state.x))


def run_blocks(
    visual: nn.Module,
    state: TokenState,
    plan: Plan,
    start: int = 0,
    stop: int | None = None,
    trace: Trace | None = None,
) -> TokenState:
    """Run blocks start..stop-1 of the tower under `plan` (stop=None: to the end)."""
    tower = tower_for(visual)
    blocks = tower.blocks()
    stop = len(blocks) if stop is None else stop
    trace = trace if trace is not None else Trace()
    if trace.stages is not None and state.sources is None:
        state = state.track_sources(tower.arch.patches)
    for index in range(start, stop):
        context = LayerContext(index=index, patches=tower.arch.patches, trace=trace)
        state = run_block(tower, blocks[index], state, plan.layers[index], context)
    return state


def pool(visual: nn.Module, state: TokenState, float32: bool = False) -> torch.Tensor:
    """The tower's pooling head and projection, on whatever tokens survived.

    Each token counts as the patches it stands for: a size-weighted mean for mean pooling, a log-size
    logits bias for an attention-pool head (what proportional attention does in the blocks); padding
    counts zero. `float32`: the head runs in float32 whatever the model's precision — for embeddings
    that are compared with each other (the golden search's candidates, the tokens' distillation), whose
    differences a bf16 embedding (8 bits of mantissa) would round away.
    """
    weight = state.size if state.valid is None else state.size * state.valid
    tower = tower_for(visual)
    if not float32:
        bias = attention_bias(state.size, state.valid, state.x.dtype)
        return tower.pool(PoolInput(state.x, weight, bias, state.n_prefix, state.n_extra))
    with autocast_off(state.x):
        bias = attention_bias(state.size, state.valid, torch.float32)
        return tower.pool_float32(PoolInput(state.x.float(), weight.float(), bias, state.n_prefix, state.n_extra))


def encode(
    visual: nn.Module,
    images: torch.Tensor,
    plan: Plan,
    meta: dict[str, Any] | None = None,
    trace: Trace | None = None,
) -> torch.Tensor:
    """Image embeddings (B, D) of the reduced tower, unnormalised like `encode_image`."""
    state = embed(visual, images, meta)
    state = run_blocks(visual, state, plan, trace=trace)
    return pool(visual, state)


class ReducedVisual(nn.Module):
    """The reduced tower as a module (for FLOP counters and timing loops that expect one)."""

    def __init__(self, visual: nn.Module, plan: Plan, meta: dict[str, Any] | None = None):
        super().__init__()
        self.visual = visual
        self.plan = plan
        self.meta = meta

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return encode(self.visual, images, self.plan, self.meta)
