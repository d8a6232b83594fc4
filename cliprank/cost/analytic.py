"""Analytic MACs of a vision tower under a token schedule — the cost convention of every report.

Convention (fvcore's, and ViT papers'): one multiply-add = one MAC, image tower only. Per block with
N tokens in attention and N' after a reduction between attention and MLP, width C, MLP width M:

    4·N·C²  (qkv + output projections)  +  2·N²·C  (QKᵀ and AV)  +  m·N'·C·M  (MLP)

where m = 2 weight matrices for a plain MLP and 3 for a gated one (SwiGLU: two input branches of
width M and the output), plus the patch embedding (P·C·3·ph·pw) and the head. The head is the final
projection (C·D) when the tower has one, and for towers with an attention-pool ("MAP") head, that
head on the N_p tokens it reads (the last block's output, less the prefix when it skips it):

    C² (latent query) + 2·N_p·C² (keys, values) + 2·N_p·C (one query's QKᵀ and AV) + C² (output)
    + 2·C·M_p (its MLP)

LayerNorm, softmax, activations, residual adds and rotary position embeddings (a few multiplies per
query and key element, ~0.1% of a block) are ignored. A method's own arithmetic (attention rows,
matching, a predictor) is added as `overhead`, so a method is never cheaper on paper than in fact.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from cliprank.models.arch import VisionArch


@dataclass(frozen=True)
class Schedule:
    """Tokens entering each block's attention and MLP (prefix and extra tokens included).

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
    return 4 * n_attention * c * c + 2 * n_attention * n_attention * c + arch.mlp_matrices * n_mlp * c * arch.mlp_width


def stem_macs(arch: VisionArch) -> float:
    """Patch embedding plus the final projection of the pooled embedding (token-count independent)."""
    ph, pw = arch.patch_size
    projection = arch.width * arch.output_dim if arch.projection else 0
    return arch.patches * arch.width * 3 * ph * pw + projection


def pool_macs(arch: VisionArch, n_final: float | torch.Tensor):
    """The attention-pool head on the tokens leaving the last block (0 for class-token or mean pooling)."""
    if arch.pool != "map":
        return 0
    c = arch.width
    pooled = n_final if arch.pool_prefix else n_final - arch.prefix_tokens
    return 2 * c * c + 2 * pooled * c * c + 2 * pooled * c + 2 * c * arch.pool_mlp_width


def schedule_macs(arch: VisionArch, schedule: Schedule) -> float:
    if schedule.macs is not None:
        return schedule.macs
    blocks = sum(block_macs(arch, a, m) for a, m in zip(schedule.attention, schedule.mlp))
    return float(stem_macs(arch) + blocks + pool_macs(arch, schedule.mlp[-1]) + schedule.overhead)


def per_image_macs(
    arch: VisionArch, attention: list[torch.Tensor], mlp: list[torch.Tensor], overhead: torch.Tensor | float = 0.0
) -> torch.Tensor:
    """MACs of each image (B,) from its own executed token counts."""
    total = torch.as_tensor(stem_macs(arch), dtype=torch.float64) + torch.as_tensor(overhead, dtype=torch.float64)
    for a, m in zip(attention, mlp):
        total = total + block_macs(arch, a.double(), m.double())
    return total + pool_macs(arch, mlp[-1].double())


def full_schedule(arch: VisionArch, extra_tokens: int = 0) -> Schedule:
    tokens = float(arch.tokens + extra_tokens)
    return Schedule(attention=(tokens,) * arch.depth, mlp=(tokens,) * arch.depth)


def unpruned_macs(arch: VisionArch) -> float:
    return schedule_macs(arch, full_schedule(arch))


def gmacs(macs: float) -> float:
    return macs / 1e9
