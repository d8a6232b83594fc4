"""Self-attention of one open_clip block, computed from its own parameters.

open_clip never returns attention weights (`need_weights=False`), and its layouts differ across
versions (sequence-first blocks up to 2.24, batch-first `nn.MultiheadAttention` later, a custom
SDPA `Attention` after 3.3). All of them keep `in_proj_weight`, `in_proj_bias` and `out_proj`, so
cliprank computes attention itself, batch-first, from those: one code path for every layout, the
same arithmetic as open_clip (fused qkv projection + scaled_dot_product_attention), plus the
by-products a reduction method asks for — the class token's attention row, head-averaged keys,
value norms — at the marginal cost of that by-product only.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from cliprank.engine.plan import CLS_ATTENTION, KEYS, VALUE_NORMS


def attention_bias(size: torch.Tensor | None, valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive logits bias (B, 1, 1, N): log(size) for proportional attention, -inf for padding."""
    bias = None
    if size is not None:
        bias = size.to(dtype).log()
    if valid is not None:
        masked = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, float("-inf"))
        bias = masked if bias is None else bias + masked
    return None if bias is None else bias[:, None, None, :]


def attend(
    module: nn.Module,
    x: torch.Tensor,
    bias: torch.Tensor | None = None,
    needs: frozenset[str] = frozenset(),
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attention output (B, N, C) of `module` on batch-first `x`, and the requested by-products."""
    batch, tokens, width = x.shape
    heads = module.num_heads
    head_dim = width // heads
    qkv = F.linear(x, module.in_proj_weight, module.in_proj_bias)
    q, k, v = (t.reshape(batch, tokens, heads, head_dim).transpose(1, 2) for t in qkv.chunk(3, dim=-1))
    q = getattr(module, "ln_q", nn.Identity())(q)
    k = getattr(module, "ln_k", nn.Identity())(k)

    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)

    by_products: dict[str, torch.Tensor] = {}
    if CLS_ATTENTION in needs:
        logits = (q[:, :, :1] @ k.transpose(-2, -1)) * head_dim**-0.5
        if bias is not None:
            logits = logits + bias
        by_products[CLS_ATTENTION] = logits.softmax(dim=-1)[:, :, 0]
    if KEYS in needs:
        by_products[KEYS] = k.mean(dim=1)
    if VALUE_NORMS in needs:
        by_products[VALUE_NORMS] = v.transpose(1, 2).reshape(batch, tokens, width).norm(dim=-1)

    head_scale = getattr(module, "head_scale", None)
    if head_scale is not None:
        out = out * head_scale
    out = out.transpose(1, 2).reshape(batch, tokens, width)
    out = getattr(module, "ln_inner", nn.Identity())(out)
    return module.out_proj(out), by_products
