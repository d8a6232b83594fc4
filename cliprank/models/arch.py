"""The shape facts of a vision tower that schedules, costs and the engine need.

Read once from an open_clip `VisionTransformer`; everything downstream works from this record, so
nothing assumes ViT-B/16's 197 tokens or 768 channels.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn as nn
from open_clip.transformer import VisionTransformer

from cliprank.errors import CliprankError


@dataclass(frozen=True)
class VisionArch:
    width: int
    depth: int
    heads: int
    mlp_width: int
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    output_dim: int
    pool: str
    attention: str  # "nn.MultiheadAttention" or "open_clip.Attention"
    layout: str  # "batch-first" or "sequence-first"

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        """Tokens entering block 0: the class token plus one per patch."""
        return self.patches + 1

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def image_size(self) -> tuple[int, int]:
        return self.grid[0] * self.patch_size[0], self.grid[1] * self.patch_size[1]


def describe(visual: nn.Module) -> VisionArch:
    """Read a VisionArch, refusing towers the engine cannot reduce faithfully."""
    if not isinstance(visual, VisionTransformer):
        raise CliprankError(
            f"the vision tower is {type(visual).__name__}, not open_clip's VisionTransformer with a class "
            "token; cliprank supports ViT models such as ViT-B-32, ViT-B-16, ViT-L-14 (see `cliprank models`)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise CliprankError("vision towers with attentional pooling (CoCa) are not supported; use a plain CLIP ViT")
    if visual.pool_type not in ("tok", "avg"):
        raise CliprankError(f"vision pool type '{visual.pool_type}' is not supported; use 'tok' or 'avg' pooling")
    blocks = visual.transformer.resblocks
    first = blocks[0]
    attention = "nn.MultiheadAttention" if isinstance(first.attn, nn.MultiheadAttention) else "open_clip.Attention"
    if attention == "open_clip.Attention" and getattr(first.attn, "logit_scale", None) is not None:
        raise CliprankError("scaled-cosine attention towers are not supported; use a standard CLIP ViT")
    heads = first.attn.num_heads
    batch_first = getattr(visual.transformer, "batch_first", False)
    return VisionArch(
        width=visual.transformer.width,
        depth=len(blocks),
        heads=heads,
        mlp_width=first.mlp.c_fc.out_features,
        grid=tuple(visual.grid_size),
        patch_size=tuple(visual.patch_size) if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2,
        output_dim=visual.proj.shape[1] if visual.proj is not None else visual.transformer.width,
        pool=visual.pool_type,
        attention=attention,
        layout="batch-first" if batch_first else "sequence-first",
    )
