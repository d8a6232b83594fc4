"""What a reduction stage left of an image's patches: kept, merged into a group, fused, or dropped.

A recorded `Stage` (see `cliprank.engine.Trace.recording`) holds, per image, the body tokens left after
one operation and the original patches each stands for. Read per patch, that is everything a picture
needs: a patch is *dropped* when no token stands for it, *kept* when its token stands for it alone,
*merged* when its token stands for several patches (ToMe's groups), and *fused* when its token is a
fused token (EViT's weighted sum of the inattentive tokens). Nothing here knows a method by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from cliprank.engine.context import Stage
from cliprank.engine.state import FUSED

DROPPED = -1


@dataclass(frozen=True)
class PatchMap:
    """One image after one stage. `token[p]` is the body token standing for patch p, or DROPPED."""

    grid: tuple[int, int]
    block: int
    before_block: bool
    token: np.ndarray  # (P,) int
    fused_token: np.ndarray  # (tokens,) bool: the token is a fused one
    tokens: int  # body tokens left (real ones), fused tokens included

    @property
    def dropped(self) -> np.ndarray:
        """(P,) bool: patches no token stands for any more."""
        return self.token == DROPPED

    @property
    def fused(self) -> np.ndarray:
        """(P,) bool: patches that live on only inside a fused token."""
        return ~self.dropped & self.fused_token[np.maximum(self.token, 0)]

    def groups(self) -> list[np.ndarray]:
        """Patch indices of every non-fused token standing for two or more patches, by smallest patch first."""
        members: dict[int, list[int]] = {}
        for patch, token in enumerate(self.token.tolist()):
            if token != DROPPED and not self.fused_token[token]:
                members.setdefault(token, []).append(patch)
        return [np.asarray(patches) for patches in sorted(members.values()) if len(patches) > 1]

    @property
    def kept(self) -> np.ndarray:
        """(P,) bool: patches whose token stands for them alone (and is not a fused token)."""
        counts = np.bincount(self.token[~self.dropped], minlength=len(self.fused_token))
        alone = ~self.dropped & (counts[np.maximum(self.token, 0)] == 1)
        return alone & ~self.fused

    @property
    def where(self) -> str:
        return f"before block {self.block}" if self.before_block else f"block {self.block}"


def patch_maps(stage: Stage, grid: tuple[int, int]) -> list[PatchMap]:
    """One PatchMap per image of the stage's batch."""
    sources = stage.sources.detach().float().cpu()
    if stage.valid is not None:
        sources = sources * stage.valid.cpu().unsqueeze(-1)
    real = sources.sum(dim=2) > 0  # tokens standing for at least one patch (padding and extras stand for none)
    covered = sources.max(dim=1)
    token = np.where(covered.values.numpy() > 0, covered.indices.numpy(), DROPPED)
    fused = (stage.pos.cpu() == FUSED).numpy()
    counts = real.sum(dim=1).tolist()
    return [
        PatchMap(grid, stage.block, stage.before_block, token[i], fused[i], int(counts[i]))
        for i in range(sources.shape[0])
    ]


def shown_stages(count: int, most: int) -> list[int]:
    """Which of `count` stages to draw when at most `most` fit: evenly spread, always the last."""
    if count <= most:
        return list(range(count))
    picks = np.linspace(count - 1, 0, most, endpoint=False)[::-1]
    return sorted({int(round(p)) for p in picks})
