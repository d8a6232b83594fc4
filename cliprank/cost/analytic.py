"""Analytic MACs of a vision tower under a token schedule — the cost convention of every report.

Convention (fvcore's, and ViT papers'): one multiply-add = one MAC, image tower only. Per block with
N tokens in attention and N' after a reduction between attention and MLP, width C, MLP width M:

    4·N·C²  (qkv + output projections)  +  2·N²·C  (QKᵀ and AV)  +  2·N'·C·M  (MLP)

plus the patch embedding (P·C·3·ph·pw) and the final projection (C·D). LayerNorm, softmax, GELU and
residual adds are ignored. A method's own arithmetic (CLS-attention rows, matching, a predictor)
is added as `overhead`, so a method is never cheaper on paper than in fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cliprank.models.arch import VisionArch


@dataclass(frozen=True)
class Schedule:
    """Tokens entering each block's attention and MLP (CLS and extra tokens included).

    For input-adaptive methods these are the per-block means over images; the MACs are the mean of
    per-image MACs (computed from the per-image counts), not the MACs of the mean counts.
    """

    attention: tuple[float, ...]
    mlp: tuple[float, ...]
    overhead: float = 0.0  # MACs the method itself spends per image
    macs: float | None = field(default=None, compare=False)  # set when averaged over real images

    def as_lists(self) -> dict[str, list[float]]:
        return {"attention": [round(n, 3) for n in self.attention], "mlp": [round(n, 3) for n in self.mlp]}


def block_macs(arch: VisionArch, n_attention: float | torch.Tensor, n_mlp: float | torch.Tensor):
    c = arch.width
    return 4 * n_attention * c * c + 2 * n_attention * n_attention * c + 2 * n_mlp * c * arch.mlp_width


def stem_macs(arch: VisionArch) -> float:
    """Patch embedding plus the final projection of the pooled token."""
    ph, pw = arch.patch_size
    return arch.patches * arch.width * 3 * ph * pw + arch.width * arch.output_dim


def schedule_macs(arch: VisionArch, schedule: Schedule) -> float:
    if schedule.macs is not None:
        return schedule.macs
    blocks = sum(block_macs(arch, a, m) for a, m in zip(schedule.attention, schedule.mlp))
    return float(stem_macs(arch) + blocks + schedule.overhead)


def per_image_macs(
    arch: VisionArch, attention: list[torch.Tensor], mlp: list[torch.Tensor], overhead: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """MACs of each image (B,) from its own executed token counts."""
    total = torch.as_tensor(stem_macs(arch), dtype=torch.float64) + torch.as_tensor(overhead, dtype=torch.float64)
    for a, m in zip(attention, mlp):
        total = total + block_macs(arch, a.double(), m.double())
    return total


def full_schedule(arch: VisionArch, extra_tokens: int = 0) -> Schedule:
    tokens = float(arch.tokens + extra_tokens)
    return Schedule(attention=(tokens,) * arch.depth, mlp=(tokens,) * arch.depth)


def unpruned_macs(arch: VisionArch) -> float:
    return schedule_macs(arch, full_schedule(arch))


def gmacs(macs: float) -> float:
    return macs / 1e9
