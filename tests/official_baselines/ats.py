"""ATS, transcribed from adaptivetokensampling/ATS (commit 9271257), libs/models/transformers/.

- ats_block.py L87-113 `score_assignment_step`: significance = Σ_heads attn[:, :, 0] · ‖v‖ (value norm
  over all heads), class token dropped, normalised to sum 1, sorted ascending.
- ats_block.py L115-196 `inverse_transform_sampling`: cdf = cumsum; normalised by (cdf − min)/(max − min);
  ys = `create_ys` (L55-84): n_ref_tokens − 1 evenly spaced points from the smallest non-zero normalised
  cdf value up to 1; the cdf is left-padded with zeros (or, when there are fewer points than tokens,
  cropped from the left) to the number of points, and each point picks the nearest entry (first on
  ties), shifted back; `get_unique_indices` (L36-52) deduplicates; the kept tokens follow in ascending
  significance order after the class token.
- ats_block.py L198-287 `AdaptiveTokenSampler.forward` and L334-355 `ATSBlock.forward`: the attention
  output rows of the kept tokens are added to the kept input tokens; the MLP runs on them.
- vit.py L362-396 `forward_features`: every ATS block gets n_ref_tokens = the initial token count and
  n_tokens = NUM_TOKENS (197 in configs/ImageNet/DeiT_S.yaml, i.e. no cap below the current count).
  cliprank's knob K plays the role of n_ref_tokens: every stage draws K − 1 points.
Left out, as they do not act at batch 1: the policy masks and `softmax_with_policy`'s 1e-6 smoothing
(only padded rows use them) and the drop_tokens scatter that packs a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from official_baselines import vit


def create_ys(normalized_cdf: torch.Tensor, n_tokens: int) -> torch.Tensor:
    batch = normalized_cdf.shape[0]
    ys = torch.linspace(0, 1.0, n_tokens - 1).unsqueeze(0).repeat(batch, 1)
    ys_start = torch.min(normalized_cdf + (normalized_cdf == 0).float() * 1e8, dim=1)[0].unsqueeze(-1).expand_as(ys)
    steps = torch.arange(0, n_tokens - 1, dtype=ys.dtype).unsqueeze(0).expand_as(ys_start)
    return ys_start + (((ys * (n_tokens - 2)) - ys_start * steps) / (n_tokens - 2))


def unique_indices(indices: torch.Tensor, max_value: int) -> torch.Tensor:
    ordered = torch.sort(indices, dim=1)[0]
    shift_left = F.pad(ordered[:, 1:], (0, 1), value=1.0)
    unique = torch.where((shift_left - ordered) == 0, max_value * torch.ones_like(indices), ordered)
    return torch.sort(unique, dim=1)[0]


def sample(weights: torch.Tensor, values: torch.Tensor, n_ref_tokens: int) -> torch.Tensor:
    """Token indices (into the full sequence, class token = 0) that one ATS stage keeps, in its order."""
    batch, heads, n, _ = weights.shape
    v_norm = torch.linalg.norm(values.transpose(1, 2).reshape(batch, n, -1), ord=2, dim=2)
    significance = (weights[:, :, 0].sum(dim=1) * v_norm)[:, 1:]
    significance = significance / significance.sum(dim=1, keepdim=True)
    sorted_scores, sorted_indices = torch.sort(significance, descending=False, dim=1)
    cdf = torch.cumsum(sorted_scores, dim=1)
    low, high = cdf.min(dim=1)[0].unsqueeze(1), cdf.max(dim=1)[0].unsqueeze(1)
    normalized_cdf = (cdf - low) / (high - low)
    ys = create_ys(normalized_cdf, n_ref_tokens).unsqueeze(2)
    normalized_cdf = normalized_cdf.unsqueeze(1)
    expanded_ys = ys.expand(batch, ys.shape[1], ys.shape[1])
    diff_tokens = ys.shape[1] - (n - 1)
    picked = torch.min(torch.abs(expanded_ys - F.pad(normalized_cdf, (diff_tokens, 0))), dim=2)[1] - diff_tokens
    unique = unique_indices(picked, max_value=n - 1)[:, : n - 1]
    unique = unique[unique != n - 1].unsqueeze(0)  # batch 1: the kept positions in the sorted order
    return torch.cat([torch.zeros(1, 1, dtype=torch.long), sorted_indices.gather(1, unique) + 1], dim=1)


def forward(visual, image: torch.Tensor, n_ref_tokens: int, stages: list[int]):
    """Embedding (1, D) and, per block, the sorted original patch indices of the body tokens after it."""
    x = vit.embed(visual, image)
    origin = torch.arange(-1, x.shape[1] - 1).unsqueeze(0)
    kept_per_block = []
    for index, block in enumerate(visual.transformer.resblocks):
        out, weights, _, values = vit.attention(block, x)
        x = x + block.ls_1(out)
        if index in stages:
            keep = sample(weights, values, n_ref_tokens)
            x = x.gather(1, keep.unsqueeze(-1).expand(-1, -1, x.shape[2]))
            origin = origin.gather(1, keep)
        x = x + vit.mlp(block, x)
        kept_per_block.append(sorted(origin[0, 1:].tolist()))
    return vit.head(visual, x), kept_per_block
