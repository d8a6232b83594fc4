"""open_clip's own VisionTransformer (OpenAI CLIP, LAION, DataComp, CLIPA, cliprank-tiny, ...).

Its layouts differ across versions (sequence-first blocks up to 2.24, batch-first
`nn.MultiheadAttention` later, a custom SDPA `Attention` after 3.3), but all of them keep
`in_proj_weight`, `in_proj_bias` and `out_proj`, so one batch-first path computes the attention of
every layout from those, with the same arithmetic as open_clip (fused qkv projection, then SDPA).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.transformer import VisionTransformer

from cliprank.models.arch import VisionArch
from cliprank.models.towers.base import Block, PoolInput, Tower


class OpenClipBlock(Block):
    def __init__(self, block: nn.Module):
        self.block = block
        self.heads = block.attn.num_heads

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = self.block.attn
        batch, tokens, width = x.shape
        qkv = F.linear(self.block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias)
        q, k, v = (t.reshape(batch, tokens, self.heads, -1).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
        return getattr(attn, "ln_q", nn.Identity())(q), getattr(attn, "ln_k", nn.Identity())(k), v

    def attention_update(self, out: torch.Tensor) -> torch.Tensor:
        attn = self.block.attn
        head_scale = getattr(attn, "head_scale", None)
        if head_scale is not None:
            out = out * head_scale
        batch, heads, tokens, head_dim = out.shape
        out = getattr(attn, "ln_inner", nn.Identity())(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim))
        out = getattr(self.block, "ln_attn", nn.Identity())(attn.out_proj(out))
        return self.block.ls_1(out)

    def mlp_update(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.ls_2(self.block.mlp(self.block.ln_2(x)))


class OpenClipViT(Tower):
    kind = "open_clip"
    head = ("ln_post", "proj")

    @classmethod
    def claims(cls, visual: nn.Module) -> bool:
        return isinstance(visual, VisionTransformer)

    def unsupported(self) -> str | None:
        visual = self.visual
        if getattr(visual, "attn_pool", None) is not None:
            return "attentional pooling (CoCa)"
        if visual.pool_type not in ("tok", "avg"):
            return f"pool type '{visual.pool_type}' (supported: tok, avg)"
        first = visual.transformer.resblocks[0].attn
        if not isinstance(first, nn.MultiheadAttention) and getattr(first, "logit_scale", None) is not None:
            return "scaled-cosine attention (not supported)"
        return None

    def read_arch(self) -> VisionArch:
        visual = self.visual
        first = visual.transformer.resblocks[0]
        multihead = isinstance(first.attn, nn.MultiheadAttention)
        patch_size = visual.patch_size if isinstance(visual.patch_size, tuple) else (visual.patch_size,) * 2
        return VisionArch(
            width=visual.transformer.width,
            depth=len(visual.transformer.resblocks),
            heads=first.attn.num_heads,
            mlp_width=first.mlp.c_fc.out_features,
            grid=tuple(visual.grid_size),
            patch_size=tuple(patch_size),
            output_dim=visual.proj.shape[1] if visual.proj is not None else visual.transformer.width,
            pool=visual.pool_type,
            attention="nn.MultiheadAttention" if multihead else "open_clip.Attention",
            layout="batch-first" if getattr(visual.transformer, "batch_first", False) else "sequence-first",
            kind=self.kind,
            projection=visual.proj is not None,
            activation=type(first.mlp.gelu).__name__,
        )

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual.conv1(images.to(visual.conv1.weight.dtype))
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).view(1, 1, -1).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1) + visual.positional_embedding.to(x.dtype)
        return visual.ln_pre(x)

    def blocks(self) -> Sequence[Block]:
        return [OpenClipBlock(block) for block in self.visual.transformer.resblocks]

    def pool(self, tokens: PoolInput) -> torch.Tensor:
        """open_clip's pooling and projection; "avg" is the size-weighted mean over the real patch tokens.

        LayerNorm acts per token, so normalising before or after picking the class token is the same.
        """
        visual = self.visual
        if visual.pool_type == "tok":
            pooled = visual.ln_post(tokens.x[:, 0])
        elif getattr(visual, "final_ln_after_pool", False):
            pooled = visual.ln_post(tokens.patch_mean(tokens.x))
        else:
            pooled = tokens.patch_mean(visual.ln_post(tokens.x))
        if visual.proj is not None:
            pooled = pooled @ visual.proj
        return pooled
