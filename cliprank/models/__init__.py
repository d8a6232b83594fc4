"""Loading open_clip models (any source), their vision-tower adapters and shape facts, fingerprints, and the
embedded default.

The names below are loaded on first use: they import torch and open_clip, and the command line checks
model names and lists models (`catalog`) without waiting for either.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cliprank.models.arch import VisionArch
    from cliprank.models.loading import LoadedModel, load_model
    from cliprank.models.towers import describe

_EXPORTS = {
    "VisionArch": "cliprank.models.arch",
    "LoadedModel": "cliprank.models.loading",
    "load_model": "cliprank.models.loading",
    "describe": "cliprank.models.towers",
}

__all__ = ["LoadedModel", "VisionArch", "describe", "load_model"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cliprank.models' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
