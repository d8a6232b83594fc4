"""EViT, transcribed from youweiliang/evit (commit 5ca95a7).

- evit.py L192-224 `Attention.forward`: left_tokens = ceil(keep_rate·(N − 1)); when it equals N − 1
  nothing happens; else cls_attn = attn[:, :, 0, 1:].mean(heads) and idx = topk(cls_attn, left_tokens,
  sorted=True) — the kept tokens in descending attention order.
- evit.py L245-267 `Block.forward`: x += attn output; the kept non-class tokens are gathered; with
  fuse_token the others (helpers.py L52-73 `complement_idx`) become one extra token Σ cls_attn·x, not
  renormalised, appended after the kept ones; then the MLP on the reduced set.
- The Top-K baseline is this code with fuse_token=False.
"""

from __future__ import annotations

import math

import torch

from official_baselines import vit

FUSED = -1


def complement(idx: torch.Tensor, dim: int) -> torch.Tensor:
    """set(range(dim)) − set(idx) per row, ascending (helpers.py `complement_idx`, for 2-D idx)."""
    everything = torch.arange(dim).expand(idx.shape[0], dim)
    masked = torch.scatter(everything, -1, idx, 0)
    ordered = torch.sort(masked, dim=-1).values
    return ordered[:, idx.shape[1] :]


def forward(visual, image: torch.Tensor, keep_rate: float, locations: list[int], fuse_token: bool = True):
    """Embedding (1, D) and, per block, the body tokens' original patch indices (FUSED for a fused token)."""
    x = vit.embed(visual, image)
    origin = torch.arange(-1, x.shape[1] - 1).unsqueeze(0)  # patch index per token; the class token is -1
    kept_per_block = []
    for index, block in enumerate(visual.transformer.resblocks):
        out, weights, _, _ = vit.attention(block, x)
        x = x + block.ls_1(out)
        n, c = x.shape[1], x.shape[2]
        left = math.ceil(keep_rate * (n - 1)) if index in locations and keep_rate < 1 else n - 1
        if left != n - 1:
            cls_attn = weights[:, :, 0, 1:].mean(dim=1)
            _, idx = torch.topk(cls_attn, left, dim=1, largest=True, sorted=True)
            non_cls = x[:, 1:]
            body_origin = origin[:, 1:]
            x_others = torch.gather(non_cls, 1, idx.unsqueeze(-1).expand(-1, -1, c))
            kept_origin = torch.gather(body_origin, 1, idx)
            if fuse_token:
                compl = complement(idx, n - 1)
                non_topk = torch.gather(non_cls, 1, compl.unsqueeze(-1).expand(-1, -1, c))
                non_topk_attn = torch.gather(cls_attn, 1, compl)
                extra = torch.sum(non_topk * non_topk_attn.unsqueeze(-1), dim=1, keepdim=True)
                x = torch.cat([x[:, :1], x_others, extra], dim=1)
                kept_origin = torch.cat([kept_origin, torch.full((1, 1), FUSED)], dim=1)
            else:
                x = torch.cat([x[:, :1], x_others], dim=1)
            origin = torch.cat([origin[:, :1], kept_origin], dim=1)
        x = x + vit.mlp(block, x)
        kept_per_block.append(sorted(origin[0, 1:].tolist()))
    return vit.head(visual, x), kept_per_block
