"""How the ranking predictor is trained: the settings, their named presets, and their checks.

Torch-free, so `cliprank train-predictor` refuses a bad `--target` or `--lr 0` at once; the functions
the names stand for (`train.TARGETS`, `train.SCHEDULES`, `model.RankingPredictor`'s reductions) live
with the training, and a test keeps the names here equal to theirs.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from cliprank.errors import CliprankError

LOSSES = ("kl", "margin")
TARGET_NAMES = ("graded", "authors")  # KL targets from a ranking: cliprank's, the authors' code's
SCHEDULE_NAMES = ("cosine-steps", "cosine-epochs")  # per step to 0; the authors' per epoch to 1e-4
REDUCTIONS = ("linear", "pool")  # cliprank's LayerNorm + Linear, or the authors' average pool over channels


@dataclass(frozen=True)
class TrainSettings:
    loss: str = "kl"
    target: str = "graded"  # see TARGET_NAMES
    schedule: str = "cosine-steps"  # see SCHEDULE_NAMES
    reduction: str = "linear"  # the predictor's channel reduction (PredictorConfig.reduction)
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 1.0
    pairs: int = 256  # sampled pairs per image for the margin loss
    dim: int | None = None  # None: the paper's head, sized down to <= 1% of the tower (PredictorConfig.for_arch)
    token_hidden: int = 32
    channel_hidden: int = 256
    seed: int = 0

    def validate(self) -> None:
        checks = {
            "loss": (self.loss in LOSSES, f"must be one of {', '.join(LOSSES)}"),
            "target": (self.target in TARGET_NAMES, f"must be one of {', '.join(TARGET_NAMES)}"),
            "schedule": (self.schedule in SCHEDULE_NAMES, f"must be one of {', '.join(SCHEDULE_NAMES)}"),
            "reduction": (self.reduction in REDUCTIONS, f"must be one of {', '.join(REDUCTIONS)}"),
            "epochs": (self.epochs >= 1, "must be >= 1"),
            "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "lr": (self.lr > 0, "must be > 0"),
            "weight_decay": (self.weight_decay >= 0, "must be >= 0"),
            "margin": (self.margin > 0, "must be > 0"),
            "dim": (self.dim is None or self.dim >= 1, "must be >= 1"),
        }
        for name, (ok, problem) in checks.items():
            if not ok:
                raise CliprankError(f"train-predictor: {name}={getattr(self, name)!r} {problem}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


PRESETS = {
    "cliprank": {},
    "authors": {"target": "authors", "reduction": "pool", "schedule": "cosine-epochs"},
}


def preset_settings(preset: str, **values: Any) -> TrainSettings:
    """TrainSettings of a named configuration, with `values` (those not None) on top."""
    if preset not in PRESETS:
        raise CliprankError(f"train-predictor: unknown preset '{preset}'; use one of {', '.join(PRESETS)}")
    given = {key: value for key, value in values.items() if value is not None}
    return TrainSettings(**{**PRESETS[preset], **given})
