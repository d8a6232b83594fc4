"""A plain forward of an open_clip ViT (batch-first), block by block, with explicit attention weights.

open_clip (mlfoundations/open_clip, src/open_clip/transformer.py, `VisionTransformer.forward` and
`ResidualAttentionBlock.forward`): conv1 → class token + positional embedding → ln_pre → blocks
`x + ls_1(attn(ln_1(x)))`, `x + ls_2(mlp(ln_2(x)))` → ln_post on the class token → @ proj.
The attention is written the way the baselines' own timm-style code writes it: softmax(q·kᵀ·scale).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def embed(visual, image: torch.Tensor) -> torch.Tensor:
    x = visual.conv1(image)
    x = x.flatten(2).transpose(1, 2)
    cls = visual.class_embedding.view(1, 1, -1).expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + visual.positional_embedding
    return visual.ln_pre(x)


def attention(block, x: torch.Tensor, logit_bias: torch.Tensor | None = None):
    """Attention output (B, N, C) on ln_1(x), plus its weights (B, H, N, N), keys and values (B, H, N, d)."""
    module = block.attn
    batch, tokens, width = x.shape
    heads = module.num_heads
    q, k, v = F.linear(block.ln_1(x), module.in_proj_weight, module.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, tokens, heads, width // heads).permute(0, 2, 1, 3) for t in (q, k, v))
    logits = (q @ k.transpose(-2, -1)) * (width // heads) ** -0.5
    if logit_bias is not None:
        logits = logits + logit_bias
    weights = logits.softmax(dim=-1)
    out = (weights @ v).permute(0, 2, 1, 3).reshape(batch, tokens, width)
    return module.out_proj(out), weights, k, v


def mlp(block, x: torch.Tensor) -> torch.Tensor:
    return block.ls_2(block.mlp(block.ln_2(x)))


def head(visual, x: torch.Tensor) -> torch.Tensor:
    return visual.ln_post(x[:, 0]) @ visual.proj
