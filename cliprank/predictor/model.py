"""The ranking predictor: a small head that scores patch tokens at the pruning layer.

Patch Ranking (Wu, Lin, Hu, Morgado, WACV 2025) trains a lightweight predictor to approximate the
golden ranking so pruning needs neither labels nor search at inference. cliprank's head follows the
paper's shape — channel reduction, one MLP-Mixer block (Tolstikhin et al., "MLP-Mixer: An all-MLP
Architecture for Vision", NeurIPS 2021), a linear head on the patch tokens, one score per patch.
Its size follows the tower it serves (token count and width come from the architecture), and its
MACs are part of every cost figure.

Deliberate differences from the authors' `train_predictor.py` (CEWu/PatchRanking, L372-406):
- it reads the tokens *entering the pruning block of the same model*; the authors' script took the
  last block of a second timm ViT — costly at inference, and inconsistent with pruning at block 3;
- the channel reduction: `reduction="linear"` (default) is LayerNorm + Linear, which learns which
  channels matter; `reduction="pool"` is the authors' parameter-free AdaptiveAvgPool1d over channels;
- the Mixer block's LayerNorms use torch's default eps (1e-5; timm's MixerBlock uses 1e-6).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from cliprank.cost.analytic import unpruned_macs
from cliprank.models.arch import VisionArch
from cliprank.predictor.settings import REDUCTIONS

MAX_COST_FRACTION = 0.01  # a head costing more than 1% of the tower would eat the savings it ranks for


@dataclass(frozen=True)
class PredictorConfig:
    tokens: int  # tokens entering the pruning block (prefix tokens + patches)
    width: int  # channels of the tower
    dim: int = 64  # reduced channels
    token_hidden: int = 32  # hidden size of the token-mixing MLP
    channel_hidden: int = 256  # hidden size of the channel-mixing MLP
    reduction: str = "linear"  # see REDUCTIONS
    prefix: int = 1  # the tower's prefix tokens (class token, registers), mixed in but not scored

    @classmethod
    def for_arch(cls, arch: VisionArch, dim: int | None = None, **overrides: int) -> PredictorConfig:
        """The paper's head (64 channels, token MLP 32, channel MLP 256) sized down for small towers.

        With `dim=None` the widths are halved until the head costs at most MAX_COST_FRACTION of the
        unpruned tower: ViT-B/16 keeps the paper's sizes (0.1%), a 6-block 192-wide tower gets a
        half-size head.
        """
        shape = {"tokens": arch.tokens, "width": arch.width, "prefix": arch.prefix_tokens}
        if dim is not None:
            return cls(**shape, dim=dim, **overrides)
        config = cls(**shape, **overrides)
        while config.macs() > MAX_COST_FRACTION * unpruned_macs(arch) and config.dim > 8:
            config = cls(
                **shape,
                dim=config.dim // 2,
                token_hidden=max(8, config.token_hidden // 2),
                channel_hidden=config.channel_hidden // 2,
                reduction=config.reduction,
            )
        return config

    def reduction_macs(self) -> int:
        """The channel reduction's MACs: a linear layer's, or one add per input element for the pool
        (fvcore's convention for average pooling)."""
        return self.tokens * self.width * (self.dim if self.reduction == "linear" else 1)

    def macs(self) -> int:
        """Multiply-adds per image (linear layers only, the fvcore convention)."""
        return (
            self.reduction_macs()
            + 2 * self.dim * self.tokens * self.token_hidden  # token mixing
            + 2 * self.tokens * self.dim * self.channel_hidden  # channel mixing
            + (self.tokens - self.prefix) * self.dim  # head
        )

    def to_dict(self) -> dict[str, int]:
        return asdict(self)


class RankingPredictor(nn.Module):
    """Tokens (B, N, C) at the pruning layer → patch scores (B, N - prefix), higher = keep."""

    def __init__(self, config: PredictorConfig):
        super().__init__()
        if config.reduction not in REDUCTIONS:
            raise ValueError(f"unknown channel reduction '{config.reduction}'; use one of {', '.join(REDUCTIONS)}")
        self.config = config
        d = config.dim
        if config.reduction == "linear":
            self.norm_in, self.reduce = nn.LayerNorm(config.width), nn.Linear(config.width, d)
        else:  # the authors' parameter-free pool: averages groups of neighbouring channels
            self.norm_in, self.reduce = nn.Identity(), nn.AdaptiveAvgPool1d(d)
        self.norm_tokens = nn.LayerNorm(d)
        self.token_mlp = nn.Sequential(
            nn.Linear(config.tokens, config.token_hidden), nn.GELU(), nn.Linear(config.token_hidden, config.tokens)
        )
        self.norm_channels = nn.LayerNorm(d)
        self.channel_mlp = nn.Sequential(
            nn.Linear(d, config.channel_hidden), nn.GELU(), nn.Linear(config.channel_hidden, d)
        )
        self.head = nn.Linear(d, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.shape[1:] != (self.config.tokens, self.config.width):
            raise ValueError(
                f"predictor expects (B, {self.config.tokens}, {self.config.width}) tokens, got {tuple(tokens.shape)}"
            )
        x = self.reduce(self.norm_in(tokens.to(self.head.weight.dtype)))
        x = x + self.token_mlp(self.norm_tokens(x).transpose(1, 2)).transpose(1, 2)
        x = x + self.channel_mlp(self.norm_channels(x))
        return self.head(x[:, self.config.prefix :]).squeeze(-1)

    def macs(self) -> int:
        return self.config.macs()
