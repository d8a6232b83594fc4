"""The settings of a golden-ranking search, judged before torch loads as far as no tower is needed.

Kept apart from the search itself (`greedy`) so the command line can refuse `--total 1.5` or
`--score cosine` at once; what depends on the tower (the pruning block, the unit size) is judged
once the model is loaded.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from cliprank.errors import CliprankError

if TYPE_CHECKING:
    from cliprank.models.arch import VisionArch

SCORE_MODES = ("similarity", "label", "max")
DIRECTIONS = ("backward", "forward")


@dataclass(frozen=True)
class SearchSettings:
    block: int = 3
    unit: int = 2
    step_tokens: int = 10
    total: float = 0.4
    score: str = "similarity"
    direction: str = "backward"

    def validate(self, arch: VisionArch | None) -> None:
        """One line for the first setting out of range; `arch` None: only what holds for every tower."""
        last_block, side = (arch.depth - 1, min(arch.grid)) if arch is not None else (self.block, self.unit)
        problems = {
            "block": (1 <= self.block <= last_block, f"must be in 1..{last_block}" if arch else "must be >= 1"),
            "unit": (1 <= self.unit <= side, f"must be in 1..{side}" if arch else "must be >= 1"),
            "step_tokens": (self.step_tokens >= 1, "must be >= 1"),
            "total": (0 < self.total < 1, "must be a fraction in (0, 1)"),
            "score": (self.score in SCORE_MODES, f"must be one of {', '.join(SCORE_MODES)}"),
            "direction": (self.direction in DIRECTIONS, f"must be one of {', '.join(DIRECTIONS)}"),
        }
        for name, (ok, problem) in problems.items():
            if not ok:
                raise CliprankError(f"search: {name}={getattr(self, name)!r} {problem}")

    def total_patches(self, patches: int) -> int:
        """Patches removed in total (backward) — forward keeps the complement."""
        return max(1, min(patches - 1, round(self.total * patches)))

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]
