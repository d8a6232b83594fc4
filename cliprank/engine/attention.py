"""Self-attention of one block on per-head queries, keys and values, with the by-products methods read.

Neither open_clip nor timm returns attention weights, and their modules differ (fused or separate
projections, q/k norms, rotary embeddings). The tower adapter (`cliprank.models.towers`) turns a
block's input into per-head q, k, v with the block's own parameters; this module does the part
every tower shares — scaled dot-product attention, the same arithmetic as the towers' fused path —
plus the by-products a reduction method asks for, at the marginal cost of that by-product only:

- CLS_ATTENTION: the class token's softmax row, one extra query (N·C MACs);
- RECEIVED_ATTENTION: the attention each token receives, averaged over heads and real queries — the
  CLS-free importance score. It needs the full attention matrix, so blocks that ask for it compute
  attention explicitly (softmax(QKᵀ)·V, the same MACs as the fused kernel) instead of calling it;
- KEYS: keys averaged over heads (ToMe's metric), before any rotary embedding, so the similarity of
  two tokens is that of their content and not of their positions;
- VALUE_NORMS: the norm of each token's value vector over all heads (ATS).

The by-products are scores that decide which tokens stay, so they are float32 whatever the model's
precision: the CLS row is recomputed from upcast q and k with autocast off, softmax, means and norms
accumulate into float32. In a float32 model that is the same arithmetic as before; the block's own
output stays in the model's precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cliprank.engine.plan import CLS_ATTENTION, KEYS, RECEIVED_ATTENTION, VALUE_NORMS
from cliprank.precision import autocast_off


def attention_bias(size: torch.Tensor | None, valid: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """Additive logits bias (B, 1, 1, N): log(size) for proportional attention, -inf for padding."""
    bias = None
    if size is not None:
        bias = size.to(dtype).log()
    if valid is not None:
        masked = torch.zeros(valid.shape, dtype=dtype, device=valid.device).masked_fill(~valid, float("-inf"))
        bias = masked if bias is None else bias + masked
    return None if bias is None else bias[:, None, None, :]


def received_attention(weights: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """(B, N): mean over heads and real queries of the attention each key receives (sums to 1 per image)."""
    per_query = weights.mean(dim=1, dtype=torch.float32)  # (B, N queries, N keys)
    if valid is None:
        return per_query.mean(dim=1)
    queries = valid.to(per_query.dtype).unsqueeze(-1)
    return (per_query * queries).sum(dim=1) / queries.sum(dim=1).clamp_min(1.0)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    bias: torch.Tensor | None = None,
    needs: frozenset[str] = frozenset(),
    valid: torch.Tensor | None = None,
    content_keys: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Attention output (B, H, N, d) of per-head q, k, v (B, H, N, d), and the requested by-products.

    `valid` (B, N) marks real tokens when a batch is padded; `content_keys` are the keys before rotary
    position embeddings (default: `k`), which KEYS averages.
    """
    batch, heads, tokens, head_dim = q.shape
    by_products: dict[str, torch.Tensor] = {}
    if RECEIVED_ATTENTION in needs:
        logits = (q * head_dim**-0.5) @ k.transpose(-2, -1)
        if bias is not None:
            logits = logits + bias
        weights = logits.softmax(dim=-1, dtype=torch.float32)
        out = weights.to(v.dtype) @ v
        by_products[RECEIVED_ATTENTION] = received_attention(weights, valid)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
    if CLS_ATTENTION in needs:
        with autocast_off(q):
            logits = (q[:, :, :1].float() @ k.float().transpose(-2, -1)) * head_dim**-0.5
            if bias is not None:
                logits = logits + bias.float()
            by_products[CLS_ATTENTION] = logits.softmax(dim=-1)[:, :, 0]
    if KEYS in needs:
        by_products[KEYS] = (k if content_keys is None else content_keys).mean(dim=1, dtype=torch.float32)
    if VALUE_NORMS in needs:
        values = v.transpose(1, 2).reshape(batch, tokens, heads * v.shape[-1])
        by_products[VALUE_NORMS] = torch.linalg.vector_norm(values, dim=-1, dtype=torch.float32)
    return out, by_products
