"""`golden`: prune with the searched golden ranking — the oracle every cheaper ranking is judged by.

Patch Ranking (Wu, Lin, Hu, Morgado, "Patch Ranking: Token Pruning as Ranking Prediction for
Efficient CLIP", WACV 2025) finds, per image, a ranking of patch tokens by greedy search with the
model itself (`cliprank search`). Pruning before the search's block with that ranking is the
oracle: it needs the image's search result, so it is not deployable, and reports label it so.
Any keep fraction works: the ranking orders all patches, not only the removed ones.
"""

from __future__ import annotations

from typing import Any

import torch

from cliprank.engine.context import LayerContext
from cliprank.engine.state import TokenState
from cliprank.errors import CliprankError
from cliprank.methods.base import Resources, register
from cliprank.methods.prune_at import PruneAtBase, Scorer, register_scorer
from cliprank.models.arch import VisionArch


def body_patch_scores(state: TokenState, patch_scores: torch.Tensor) -> torch.Tensor:
    """Map per-patch scores (B, P) onto the body tokens via their original positions."""
    pos = state.body(state.pos)
    if (pos <= 0).any():
        raise CliprankError("golden/predictor pruning must come before any merging or fusion of tokens")
    return patch_scores.to(state.x.device).gather(1, pos - 1)


@register_scorer("golden")
def golden_scorer(arch: VisionArch, resources: Resources, values: dict[str, Any]) -> Scorer:
    index = resources.rankings
    if not index:
        raise CliprankError("golden needs stored rankings: run `cliprank search`, then pass --rankings FILE")
    block = values.get("block")

    def score(state: TokenState, context: LayerContext) -> torch.Tensor:
        if "index" not in state.meta or "dataset" not in state.meta:
            raise CliprankError("golden needs each image's dataset and index; run it through evaluate or search")
        lookup = index.require(state.meta["dataset"], state.meta.get("split", "test"))
        searched = lookup.rankings.meta.settings.get("block")
        if searched != block:
            raise CliprankError(
                f"golden: rankings were searched at block {searched}, not {block}; pass block={searched}"
            )
        indices = torch.as_tensor(state.meta["index"], device="cpu")  # looked up in the rankings file, on the CPU
        patch_scores = lookup.patch_scores(indices, state.meta.get("image_hash"))
        return body_patch_scores(state, patch_scores)

    return Scorer(score)


@register
class Golden(PruneAtBase):
    name = "golden"
    summary = "prune with the searched golden ranking (oracle: needs the search result)"
    paper = "Wu et al., Patch Ranking: Token Pruning as Ranking Prediction for Efficient CLIP, WACV 2025"
    scorer_name = "golden"
    label = "oracle"
    oracle = True
    requires = ("rankings",)
