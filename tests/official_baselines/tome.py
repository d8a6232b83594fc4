"""ToMe, transcribed from facebookresearch/ToMe (commit af95e4b).

- tome/merge.py L16-97 `bipartite_soft_matching`: metric normalised; a, b = metric[..., ::2, :],
  metric[..., 1::2, :] over the *whole* sequence; the class token's row is set to -inf; each a token's
  best b match; edges sorted descending; the first r are merged (src), the rest kept (unm, sorted so
  the class token stays first); merge = scatter_reduce of src into dst, result cat([unm, dst]).
- tome/merge.py L100-… `merge_wavg`: x = merge(x·size, "sum"), size = merge(size, "sum"), x /= size.
- tome/merge.py `merge_source`: source = merge(source, "amax") tracks which patches each token holds.
- tome/patch/timm.py `ToMeBlock._forward` / `ToMeAttention.forward`: attention (with log(size) added to
  the logits once a size exists: proportional attention), x += attn; r = min(r, (N - 1) // 2)
  merges using the head-mean keys as the metric; then the MLP.
- tome/utils.py `parse_r`: the per-layer r list (the tests pass an explicit list).
"""

from __future__ import annotations

import math

import torch

from official_baselines import vit


def bipartite_soft_matching(metric: torch.Tensor, r: int):
    """The official matching with class_token=True; returns merge(x, mode) and the chosen indices."""
    t = metric.shape[1]
    r = min(r, (t - 1) // 2)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    scores = a @ b.transpose(-1, -2)
    scores[..., 0, :] = -math.inf
    node_max, node_idx = scores.max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx = edge_idx[..., r:, :]
    src_idx = edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)
    unm_idx = unm_idx.sort(dim=1)[0]

    def merge(x: torch.Tensor, mode: str = "mean") -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        dst = dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce=mode)
        return torch.cat([unm, dst], dim=1)

    return merge, r


def forward(visual, image: torch.Tensor, r_per_layer: list[int], prop_attn: bool = True):
    """Embedding (1, D) and, per block, the token groups after it: a list of frozensets of patch indices."""
    x = vit.embed(visual, image)
    tokens = x.shape[1]
    size = None
    source = torch.eye(tokens, dtype=x.dtype).unsqueeze(0)  # row i: the original tokens token i holds
    groups = []
    for block, r in zip(visual.transformer.resblocks, r_per_layer, strict=True):
        bias = size.log()[:, None, None, :, 0] if (prop_attn and size is not None) else None
        out, _, k, _ = vit.attention(block, x, bias)
        x = x + block.ls_1(out)
        r = min(r, (x.shape[1] - 1) // 2)
        if r > 0:
            merge, _ = bipartite_soft_matching(k.mean(1), r)
            size = torch.ones_like(x[..., 0, None]) if size is None else size
            x = merge(x * size, mode="sum")
            size = merge(size, mode="sum")
            x = x / size
            source = merge(source, mode="amax")
        x = x + vit.mlp(block, x)
        groups.append(_groups(source))
    return vit.head(visual, x), groups


def _groups(source: torch.Tensor) -> list[frozenset[int]]:
    """Body tokens' patch sets (0-based patch indices), in token order; the class token is left out."""
    return [frozenset((row.nonzero().flatten() - 1).tolist()) for row in source[0, 1:]]
