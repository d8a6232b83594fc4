"""What an operation may read at its block, and the trace a forward leaves behind."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cliprank.engine.state import TokenState


@dataclass
class Trace:
    """Executed facts of one forward, for checking schedules and judging rankings.

    `attention_tokens[i]` / `mlp_tokens[i]`: real tokens per image (B,) entering block i's attention
    and MLP. `patch_scores`: the first per-patch importance a method computed (B, P), in original
    patch order, higher = more important; NaN where a patch had no score (already merged away).
    """

    attention_tokens: list[torch.Tensor] = field(default_factory=list)
    mlp_tokens: list[torch.Tensor] = field(default_factory=list)
    patch_scores: torch.Tensor | None = None

    def record_patch_scores(self, state: TokenState, body_scores: torch.Tensor, patches: int) -> None:
        """Keep the first ranking a method produced; later stages do not overwrite it."""
        if self.patch_scores is not None:
            return
        pos = state.body(state.pos)
        scores = torch.full((state.batch, patches + 1), float("nan"), device=pos.device)
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
