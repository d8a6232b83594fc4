"""`predictor`: prune with a learned ranking predictor — Patch Ranking's deployable method.

Wu, Lin, Hu, Morgado, "Patch Ranking: Token Pruning as Ranking Prediction for Efficient CLIP",
WACV 2025: a lightweight head, trained to imitate the golden ranking (`cliprank train-predictor`),
scores the tokens entering the pruning block; the lowest-scored patches are removed there. It needs
no labels and no search at inference, and its own MACs are part of the method's cost.
"""

from __future__ import annotations

from typing import Any

import torch

from cliprank.engine.context import LayerContext
from cliprank.engine.state import TokenState
from cliprank.errors import CliprankError
from cliprank.methods.base import Resources, register
from cliprank.methods.golden import body_patch_scores
from cliprank.methods.prune_at import PruneAtBase, Scorer, register_scorer
from cliprank.models.arch import VisionArch
from cliprank.precision import autocast_off


@register_scorer("predictor")
def predictor_scorer(arch: VisionArch, resources: Resources, values: dict[str, Any]) -> Scorer:
    predictor = resources.predictor
    if predictor is None:
        raise CliprankError(
            "predictor needs a trained predictor: pass --predictor FILE (see `cliprank train-predictor`)"
        )
    if predictor.block != values.get("block"):
        raise CliprankError(
            f"predictor: it was trained for block {predictor.block}, not block {values.get('block')}; "
            f"pass block={predictor.block} or train one for that block"
        )
    module = predictor.module

    def score(state: TokenState, context: LayerContext) -> torch.Tensor:
        if state.n_extra or state.tokens != module.config.tokens:
            raise CliprankError("predictor must act on the full token set, before any other reduction")
        with autocast_off(state.x):  # a float32 head (≈1% of the tower): its ranking is not rounded to bf16
            patch_scores = module(state.x.float()).float()
        return body_patch_scores(state, patch_scores)

    return Scorer(score, overhead=lambda tokens: float(module.macs()))


@register
class Predictor(PruneAtBase):
    name = "predictor"
    summary = "prune with a trained ranking predictor (no labels, no search)"
    paper = "Wu et al., Patch Ranking: Token Pruning as Ranking Prediction for Efficient CLIP, WACV 2025"
    scorer_name = "predictor"
    requires = ("predictor",)
