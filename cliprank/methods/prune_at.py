"""`prune-at`: one-shot removal of a fraction of the patch tokens before a chosen block.

This is the pruning mechanism of Patch Ranking (Wu, Lin, Hu, Morgado, "Patch Ranking: Token
Pruning as Ranking Prediction for Efficient CLIP", WACV 2025): blocks before `block` see every
token; before `block`, only the `keep` fraction of patches ranked highest by a per-patch score
survive, and every later block runs on them. The score is pluggable — a `Scorer` in `SCORERS` —
which is how `random`, `golden` (the searched ranking) and `predictor` share one implementation.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from cliprank.cost.analytic import Schedule
from cliprank.engine.context import LayerContext
from cliprank.engine.plan import Plan
from cliprank.engine.state import TokenState
from cliprank.errors import CliprankError
from cliprank.methods.base import Method, Resources, register
from cliprank.methods.knobs import Param, as_float, as_int, as_text, block_index, fraction
from cliprank.methods.ops import keep_top
from cliprank.models.arch import VisionArch

DEFAULT_BLOCK = 3


@dataclass
class Scorer:
    """Per-patch importance for the tokens entering the pruning block.

    `score(state, context)` returns (B, body) scores, higher = keep; `overhead(tokens)` the MACs it
    spends per image given the tokens entering the block.
    """

    score: Callable[[TokenState, LayerContext], torch.Tensor]
    overhead: Callable[[int], float] = lambda tokens: 0.0


ScorerFactory = Callable[[VisionArch, Resources, dict[str, Any]], Scorer]
SCORERS: dict[str, ScorerFactory] = {}


def register_scorer(name: str):
    def wrap(factory: ScorerFactory) -> ScorerFactory:
        SCORERS[name] = factory
        return factory

    return wrap


def image_seeds(state: TokenState, seed: int) -> list[int]:
    """One seed per image: from its dataset index when known, so results do not depend on batching."""
    indices = state.meta.get("index")
    if indices is None:
        indices = range(state.batch)
    return [(seed * 2654435761 + int(i) * 40503 + 1) % (2**31 - 1) for i in indices]


@register_scorer("random")
def random_scorer(arch: VisionArch, resources: Resources, values: dict[str, Any]) -> Scorer:
    seed = values.get("seed", 0)

    def score(state: TokenState, context: LayerContext) -> torch.Tensor:
        # drawn on the CPU on purpose: a CPU generator gives every device the same patches for a seed
        rows = []
        for image_seed in image_seeds(state, seed):
            generator = torch.Generator().manual_seed(image_seed)
            rows.append(torch.rand(state.body_count, generator=generator, device="cpu", dtype=torch.float32))
        return torch.stack(rows).to(state.x.device)

    return Scorer(score)


def kept_patches(keep: float, patches: int) -> int:
    return max(1, min(patches, round(keep * patches)))


class PruneAtBase(Method):
    """Shared machinery; subclasses fix the scorer (`scorer_name`) or let the user pick it."""

    scorer_name: ClassVar[str | None] = None
    knob = "keep"
    produces_ranking = True
    params: ClassVar[tuple[Param, ...]] = (
        Param(
            "keep",
            None,
            "fraction of patch tokens kept, in (0, 1]",
            as_float,
            fraction,
        ),
        Param("block", DEFAULT_BLOCK, "block before which patches are removed", as_int, block_index),
    )

    def validate(self) -> None:
        if self.values["keep"] is None:
            raise CliprankError(f"{self.name}: set keep=FRACTION or pass --budget")
        self.scorer = self.make_scorer()

    def make_scorer(self) -> Scorer:
        return SCORERS[self.scorer_name](self.arch, self.resources, self.values)

    @property
    def kept(self) -> int:
        return kept_patches(self.values["keep"], self.arch.patches)

    def schedule(self) -> Schedule:
        full, reduced = float(self.arch.tokens), float(self.arch.prefix_tokens + self.kept)
        counts = tuple(full if i < self.values["block"] else reduced for i in range(self.arch.depth))
        return Schedule(counts, counts, overhead=self.scorer.overhead(self.arch.tokens))

    def plan(self) -> Plan:
        kept = self.kept
        op = keep_top(lambda body: kept, self.scorer.score)
        return Plan.build(self.arch.depth, before={self.values["block"]: [op]})

    @classmethod
    def knob_candidates(cls, arch: VisionArch, values: dict[str, Any]) -> Sequence[Any]:
        return [k / arch.patches for k in range(1, arch.patches + 1)]

    def describe(self) -> dict[str, Any]:
        return {**self.values, "kept_patches": self.kept}


@register
class PruneAt(PruneAtBase):
    name = "prune-at"
    summary = "one-shot pruning before a block by a chosen per-patch score"
    paper = "Wu et al., Patch Ranking: Token Pruning as Ranking Prediction for Efficient CLIP, WACV 2025"
    in_all = False  # its scores are random, golden and predictor, which `all` runs as methods of their own
    params = PruneAtBase.params + (Param("score", "random", "per-patch score: random, golden or predictor", as_text),)

    def make_scorer(self) -> Scorer:
        name = self.values["score"]
        if name not in SCORERS:
            raise CliprankError(f"prune-at: unknown score '{name}'; available: {', '.join(sorted(SCORERS))}")
        return SCORERS[name](self.arch, self.resources, self.values)


@register
class RandomPrune(PruneAtBase):
    name = "random"
    summary = "seeded uniformly random patches removed before a block (the floor)"
    paper = (
        "Uniform random token dropping; see e.g. Li et al., Scaling Language-Image Pre-training via Masking, CVPR 2023"
    )
    scorer_name = "random"
    params = PruneAtBase.params + (Param("seed", 0, "random seed", as_int),)
