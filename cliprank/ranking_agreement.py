"""How closely a method's patch ranking agrees with the golden one.

Two numbers per image, averaged: Kendall's τ-b between the two score vectors (over the patches the
method scored; ties allowed), and the overlap of the top-k sets — k = the patches the golden search
kept — which is the paper's metric phrased for the kept rather than the pruned set.
"""

from __future__ import annotations

import torch


def kendall_tau_b(x: torch.Tensor, y: torch.Tensor) -> float:
    """τ-b of two 1-D score vectors (NaN entries of either are ignored); NaN when undefined."""
    keep = ~(x.isnan() | y.isnan())
    x, y = x[keep].double(), y[keep].double()
    if x.numel() < 2:
        return float("nan")
    dx = torch.sign(x[:, None] - x[None, :])
    dy = torch.sign(y[:, None] - y[None, :])
    upper = torch.triu(torch.ones_like(dx, dtype=torch.bool), diagonal=1)
    dx, dy = dx[upper], dy[upper]
    denominator = torch.sqrt((dx != 0).sum().double() * (dy != 0).sum().double())
    if denominator == 0:
        return float("nan")
    return float((dx * dy).sum() / denominator)


def top_k_overlap(x: torch.Tensor, y: torch.Tensor, k: int) -> float:
    """|top-k(x) ∩ top-k(y)| / k, NaN scores ranked last."""
    top_x = set(x.nan_to_num(float("-inf")).topk(k).indices.tolist())
    top_y = set(y.nan_to_num(float("-inf")).topk(k).indices.tolist())
    return len(top_x & top_y) / k


def agreement(method_scores: torch.Tensor, golden_scores: torch.Tensor, k: int) -> tuple[float, float]:
    """Mean τ-b and mean top-k overlap over images (rows)."""
    taus = [kendall_tau_b(m, g) for m, g in zip(method_scores, golden_scores)]
    overlaps = [top_k_overlap(m, g, k) for m, g in zip(method_scores, golden_scores)]
    finite = [t for t in taus if t == t]
    return (sum(finite) / len(finite) if finite else float("nan")), sum(overlaps) / len(overlaps)
