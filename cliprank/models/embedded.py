"""The embedded default model: `cliprank-tiny`, a small CLIP trained by `train_embedded.py`.

Its config is registered with open_clip like any other model and its weights load through the same
checkpoint path as any open_clip checkpoint; only the file location is cliprank's.
"""

from __future__ import annotations

import functools
from pathlib import Path

from cliprank.errors import CliprankError

MODEL_NAME = "cliprank-tiny"
TAG = "embedded"
ASSETS = Path(__file__).parent / "assets"
CONFIG = ASSETS / f"{MODEL_NAME}.json"


@functools.cache
def register() -> None:
    """Make open_clip aware of the embedded config (idempotent)."""
    import open_clip  # on use: the file locations below are read without loading open_clip

    open_clip.add_model_config(CONFIG)


def weights_path() -> Path:
    path = ASSETS / f"{MODEL_NAME}.safetensors"
    if not path.is_file():
        raise CliprankError(
            f"the embedded weights {path.name} are missing from the installed package; reinstall cliprank "
            "or rebuild them with `python -m cliprank.models.train_embedded`"
        )
    return path


def rankings_dir() -> Path:
    """Golden rankings of the embedded model on the embedded test splits (shipped, made by `cliprank search`)."""
    return ASSETS / "rankings"


def has_rankings() -> bool:
    return rankings_dir().is_dir() and any(rankings_dir().glob("*.rankings"))


def predictor_path() -> Path:
    return ASSETS / f"{MODEL_NAME}.predictor.safetensors"


def has_predictor() -> bool:
    return predictor_path().is_file()


def tokens_dir() -> Path:
    """Learned tokens of the embedded model, one file per pruning setup (made by `cliprank add-tokens`)."""
    return ASSETS / "tokens"


def has_tokens() -> bool:
    return tokens_dir().is_dir() and any(tokens_dir().glob("*.tokens.safetensors"))
