"""What the reduced forward needs from a vision tower, whatever library built it.

A `Tower` adapts one kind of tower (open_clip's VisionTransformer, timm's VisionTransformer, timm's
Eva) to the engine's token state ``[prefix..., body..., extras]``: it embeds images into the tokens
entering block 0, exposes each block as the three pieces a reduction acts between (per-head q, k, v;
the attention's residual update; the MLP's residual update), gives rotary position embeddings for
any set of surviving tokens, and pools whatever tokens remain. Every piece runs the tower's own
modules and parameters, so a keep-everything plan reproduces the tower's forward.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn as nn
from torch.func import functional_call

from cliprank.models.arch import VisionArch


@dataclass
class PoolInput:
    """What a tower's pooling reads from the final token state.

    `weight` (B, N): original patches each token stands for, 0 for padding. `bias` (B, 1, 1, N): the
    same as attention logits bias — log(weight), -inf for padding — so an attention pool weighs a
    merged token as the patches it replaced (it is 0 when nothing was merged or padded).
    """

    x: torch.Tensor
    weight: torch.Tensor
    bias: torch.Tensor
    n_prefix: int
    n_extra: int

    def patch_mean(self, tokens: torch.Tensor, include_prefix: bool = False) -> torch.Tensor:
        """Weighted mean of `tokens` (B, N, C) — the state's tokens after a per-token map — over the body.

        Learned extra tokens are not patches and stay out of the mean; the prefix joins it only
        when the tower's own mean includes it.
        """
        start, end = (0 if include_prefix else self.n_prefix), tokens.shape[1] - self.n_extra
        weight = self.weight[:, start:end]
        return (tokens[:, start:end] * weight.unsqueeze(-1)).sum(1) / weight.sum(1, keepdim=True)


class Block(ABC):
    """One transformer block, split where the reduced forward acts: x + attention, ops, x + MLP."""

    heads: int

    @abstractmethod
    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-head queries, keys and values (B, H, N, d) of the residual stream x (B, N, C), before RoPE."""

    def rotate(self, t: torch.Tensor, rotary: torch.Tensor) -> torch.Tensor:
        """Apply rotary embeddings (B, 1, N, 2r) to queries or keys; towers without RoPE never get here."""
        raise NotImplementedError(f"{type(self).__name__} has no rotary position embeddings")

    @abstractmethod
    def attention_update(self, out: torch.Tensor) -> torch.Tensor:
        """The residual update (B, N, C) from the attention result (B, H, N, d)."""

    @abstractmethod
    def mlp_update(self, x: torch.Tensor) -> torch.Tensor:
        """The residual update (B, N, C) of the block's MLP."""


class Tower(ABC):
    """One kind of vision tower, adapted to the engine. Subclasses register in `cliprank.models.towers`."""

    kind: ClassVar[str]
    head: ClassVar[tuple[str, ...]]  # names (in the tower) of the modules and parameters `pool` reads

    def __init__(self, visual: nn.Module):
        self.visual = visual

    @classmethod
    @abstractmethod
    def claims(cls, visual: nn.Module) -> bool:
        """Whether this adapter is the one for `visual` (its class), whether or not it can run all of it."""

    def unsupported(self) -> str | None:
        """Why this particular tower cannot be reduced faithfully (a feature the adapter lacks), or None."""
        return None

    @abstractmethod
    def read_arch(self) -> VisionArch:
        """The tower's shape facts, read from its modules (call only when `unsupported()` is None)."""

    @functools.cached_property
    def arch(self) -> VisionArch:
        return self.read_arch()

    @abstractmethod
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Tokens entering block 0 (B, prefix + P, C): prefix tokens, then patches in grid order."""

    @abstractmethod
    def blocks(self) -> Sequence[Block]:
        """The transformer blocks, in order."""

    def rotary(self, pos: torch.Tensor) -> torch.Tensor | None:
        """Rotary embeddings (B, 1, N, 2r) of tokens at positions `pos` (B, N), or None without RoPE."""
        return None

    @abstractmethod
    def pool(self, tokens: PoolInput) -> torch.Tensor:
        """The image embedding (B, D) from the final tokens, as the tower's own head computes it."""

    def pool_float32(self, tokens: PoolInput) -> torch.Tensor:
        """`pool` with the head's parameters in float32 (`tokens` must be float32 and autocast off).

        Weights cast to bf16/fp16 are upcast for this call only (`torch.func.functional_call`); the head is
        a small part of the tower (a LayerNorm and a projection, or an attention-pool block).
        """
        upcast = {
            name: parameter.float()
            for name, parameter in self.visual.named_parameters()
            if parameter.dtype != torch.float32 and any(name == h or name.startswith(f"{h}.") for h in self.head)
        }
        if not upcast:
            return self.pool(tokens)
        return functional_call(_Head(self), {f"visual.{name}": value for name, value in upcast.items()}, (tokens,))


class _Head(nn.Module):
    """A tower's pooling head as a module whose parameters `functional_call` can swap."""

    def __init__(self, tower: Tower):
        super().__init__()
        self.visual = tower.visual
        self.tower = tower

    def forward(self, tokens: PoolInput) -> torch.Tensor:
        return self.tower.pool(tokens)


def rotary_rows(table: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """Rows (B, 1, N, 2r) of a per-patch sin/cos table (P, 2r) for tokens at positions `pos` (B, N).

    A patch token (pos = patch + 1) gets its patch's rotation, wherever it now sits in the sequence,
    and a merged token the rotation of the patch whose position it kept. Tokens without a single patch
    position — prefix tokens, EViT's fused token, learned tokens — get the identity (sin 0, cos 1),
    which is exactly how the towers treat their unrotated prefix tokens.
    """
    half = table.shape[-1] // 2
    identity = torch.cat([table.new_zeros(1, half), table.new_ones(1, half)], dim=1)
    extended = torch.cat([identity, table], dim=0)
    index = torch.where(pos > 0, pos, torch.zeros_like(pos))
    return extended[index].unsqueeze(1)
