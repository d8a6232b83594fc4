"""The shape facts of a vision tower that schedules, costs and the engine need.

Read once from a tower by its adapter (`cliprank.models.towers`); everything downstream works from
this record, so nothing assumes ViT-B/16's 197 tokens, 768 channels, a class token or a GELU MLP.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class VisionArch:
    width: int
    depth: int
    heads: int
    mlp_width: int  # hidden width of a block's MLP (of each branch for a gated MLP)
    grid: tuple[int, int]
    patch_size: tuple[int, int]
    output_dim: int
    pool: str  # "tok" (class token), "avg" (mean of patch tokens) or "map" (attention-pool head)
    attention: str  # the attention module, e.g. "nn.MultiheadAttention", "timm.Attention"
    layout: str  # "batch-first" or "sequence-first"
    kind: str = "open_clip"  # the tower adapter that runs it
    prefix_tokens: int = 1  # protected tokens before the patches: class token and registers
    class_token: bool = True  # prefix token 0 is a class token (a CLS attention row exists)
    mlp_matrices: int = 2  # weight matrices of a block's MLP: 2, or 3 for gated ones (SwiGLU)
    rotary: bool = False  # rotary position embeddings in the attention
    projection: bool = True  # a final linear map width -> output_dim after pooling
    pool_heads: int = 0  # attention-pool head: heads (0 without one)
    pool_mlp_width: int = 0  # attention-pool head: hidden width of its MLP
    pool_prefix: bool = True  # the attention pool reads the prefix tokens too
    input_size: tuple[int, int] | None = None  # image size the tower takes, when not grid x patch
    activation: str = "GELU"  # MLP activation (part of the model fingerprint)

    @property
    def patches(self) -> int:
        return self.grid[0] * self.grid[1]

    @property
    def tokens(self) -> int:
        """Tokens entering block 0: the prefix tokens plus one per patch."""
        return self.patches + self.prefix_tokens

    @property
    def head_dim(self) -> int:
        return self.width // self.heads

    @property
    def image_size(self) -> tuple[int, int]:
        if self.input_size is not None:
            return self.input_size
        return self.grid[0] * self.patch_size[0], self.grid[1] * self.patch_size[1]
