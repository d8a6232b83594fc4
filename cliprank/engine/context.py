"""What an operation may read at its block, and the trace a forward leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cliprank.engine.state import TokenState


@dataclass(frozen=True)
class Stage:
    """The body after one reducing operation: which tokens are left and which patches each stands for.

    `block` is the block whose operation ran, `before_block` whether it ran before the block (one-shot
    pruning) rather than between its attention and MLP. `pos` (B, n) and `valid` (B, n) or None are the
    body's, `sources` (B, n, P) its patch membership (see `TokenState.sources`).
    """

    block: int
    before_block: bool
    pos: torch.Tensor
    sources: torch.Tensor
    valid: torch.Tensor | None


@dataclass
class Trace:
    """Executed facts of one forward, for checking schedules and judging rankings.

    `attention_tokens[i]` / `mlp_tokens[i]`: real tokens per image (B,) entering block i's attention
    and MLP. `patch_scores`: the first per-patch importance a method computed (B, P), in original
    patch order, higher = more important; NaN where a patch had no score (already merged away).
    `stages`: None unless the forward is recorded for display (`Trace.recording()`); then one `Stage`
    per operation that changed the body, in execution order. Only then are patch sources tracked, so
    ordinary forwards pay nothing for it.
    """

    attention_tokens: list[torch.Tensor] = field(default_factory=list)
    mlp_tokens: list[torch.Tensor] = field(default_factory=list)
    patch_scores: torch.Tensor | None = None
    stages: list[Stage] | None = None

    @classmethod
    def recording(cls) -> Trace:
        """A trace that also records every reduction stage (what survived, what merged into what)."""
        return cls(stages=[])

    def record_stage(self, before: TokenState, after: TokenState, block: int, before_block: bool) -> None:
        """Append a Stage when recording and the operation changed the body (added extras do not count)."""
        if self.stages is None or after.sources is None:
            return
        old, new = before.body(before.pos), after.body(after.pos)
        same_tokens = old.shape == new.shape and torch.equal(old, new)
        if same_tokens and torch.equal(before.body(before.size), after.body(after.size)):
            return
        valid = None if after.valid is None else after.body(after.valid).detach()
        self.stages.append(Stage(block, before_block, new.detach(), after.body(after.sources).detach(), valid))

    def record_patch_scores(self, state: TokenState, body_scores: torch.Tensor, patches: int) -> None:
        """Keep the first ranking a method produced; later stages do not overwrite it."""
        if self.patch_scores is not None:
            return
        pos = state.body(state.pos)
        scores = torch.full((state.batch, patches + 1), float("nan"), device=pos.device, dtype=torch.float32)
        is_patch = pos > 0
        if state.valid is not None:
            is_patch &= state.body(state.valid)
        index = torch.where(is_patch, pos, torch.zeros_like(pos))
        values = torch.where(is_patch, body_scores.float(), torch.full_like(body_scores, float("nan")).float())
        scores.scatter_(1, index, values)
        scores[:, 0] = float("nan")
        self.patch_scores = scores[:, 1:].detach()

    def schedule(self) -> list[tuple[float, float]]:
        """Mean tokens per image entering each block's attention and MLP."""
        return [
            (float(a.float().mean()), float(m.float().mean())) for a, m in zip(self.attention_tokens, self.mlp_tokens)
        ]


@dataclass
class LayerContext:
    index: int
    patches: int
    trace: Trace
    cls_attention: torch.Tensor | None = None
    received_attention: torch.Tensor | None = None
    keys: torch.Tensor | None = None
    value_norms: torch.Tensor | None = None
