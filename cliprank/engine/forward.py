"""The reduced forward of an open_clip vision tower, driven by a Plan.

A keep-everything plan reproduces `model.encode_image`; every reduction is an operation in the
plan, so the engine knows no method by name. The forward is split into `embed`, `run_blocks` and
`pool` so that search and training can run the blocks before the pruning layer once and reuse them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn

from cliprank.engine.attention import attend, attention_bias
from cliprank.engine.context import LayerContext, Trace
from cliprank.engine.plan import Op, Plan
from cliprank.engine.state import TokenState


def embed(visual: nn.Module, images: torch.Tensor, meta: dict[str, Any] | None = None) -> TokenState:
    """Patch embedding, class token, positions and ln_pre: the tokens entering block 0."""
    x = visual.conv1(images.to(visual.conv1.weight.dtype))
    x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
    cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
    x = visual.ln_pre(x)
    return TokenState.initial(x, meta)


def apply(ops: Sequence[Op], state: TokenState, context: LayerContext, before_block: bool) -> TokenState:
    """Run a block's operations in order, letting a recording trace see each one's effect."""
    for op in ops:
        reduced = op(state, context)
        context.trace.record_stage(state, reduced, context.index, before_block)
        state = reduced
    return state


def run_block(block: nn.Module, state: TokenState, layer, context: LayerContext) -> TokenState:
    state = apply(layer.before, state, context, before_block=True)
    context.trace.attention_tokens.append(state.counts())
    bias = attention_bias(state.size if layer.proportional else None, state.valid, state.x.dtype)
    attended, by_products = attend(block.attn, block.ln_1(state.x), bias, layer.needs)
    attended = getattr(block, "ln_attn", nn.Identity())(attended)
    state = state.with_x(state.x + block.ls_1(attended))
    for name, value in by_products.items():
        setattr(context, name, value)
    state = apply(layer.after_attention, state, context, before_block=False)
    context.trace.mlp_tokens.append(state.counts())
    return state.with_x(state.x + block.ls_2(block.mlp(block.ln_2(state.x))))


def run_blocks(
    visual: nn.Module,
    state: TokenState,
    plan: Plan,
    start: int = 0,
    stop: int | None = None,
    trace: Trace | None = None,
) -> TokenState:
    """Run blocks start..stop-1 of the tower under `plan` (stop=None: to the end)."""
    blocks = visual.transformer.resblocks
    stop = len(blocks) if stop is None else stop
    trace = trace if trace is not None else Trace()
    patches = visual.grid_size[0] * visual.grid_size[1]
    if trace.stages is not None and state.sources is None:
        state = state.track_sources(patches)
    for index in range(start, stop):
        context = LayerContext(index=index, patches=patches, trace=trace)
        state = run_block(blocks[index], state, plan.layers[index], context)
    return state


def pool(visual: nn.Module, state: TokenState) -> torch.Tensor:
    """open_clip's pooling and projection, on whatever tokens survived.

    LayerNorm acts per token, so normalising before or after picking the class token is the same.
    """
    if visual.pool_type == "tok":
        pooled = visual.ln_post(state.x[:, 0])
    else:  # "avg": size-weighted mean over real body tokens; open_clip's plain mean when nothing is reduced
        state = state.drop_extras()
        weight = state.body(state.size)
        if state.valid is not None:
            weight = weight * state.body(state.valid)
        after_pool = getattr(visual, "final_ln_after_pool", False)
        tokens = state.body(state.x) if after_pool else visual.ln_post(state.body(state.x))
        pooled = (tokens * weight.unsqueeze(-1)).sum(1) / weight.sum(1, keepdim=True)
        if after_pool:
            pooled = visual.ln_post(pooled)
    if visual.proj is not None:
        pooled = pooled @ visual.proj
    return pooled


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
