"""The registry of vision-tower adapters: which towers cliprank can reduce, and why not the others.

Each adapter claims the towers of its kind (`Tower.claims`) and may still refuse one with a feature it
does not run (`Tower.unsupported`). Towers no adapter claims are refused with the reason below; both
kinds of refusal are one line, for `cliprank models` and for the error a load raises.
"""

from __future__ import annotations

import weakref

import torch.nn as nn

from cliprank.errors import CliprankError
from cliprank.models.arch import VisionArch
from cliprank.models.catalog import NOT_TOKEN_TOWERS
from cliprank.models.towers.base import Block, PoolInput, Tower
from cliprank.models.towers.open_clip_vit import OpenClipViT
from cliprank.models.towers.timm_towers import TimmEva, TimmViT

TOWERS: tuple[type[Tower], ...] = (OpenClipViT, TimmViT, TimmEva)

_ADAPTED: weakref.WeakKeyDictionary[nn.Module, Tower] = weakref.WeakKeyDictionary()


def _trunk(visual: nn.Module) -> nn.Module:
    return getattr(visual, "trunk", visual)


def _adapt(visual: nn.Module) -> Tower | str:
    """The adapter for `visual`, or the reason none can reduce it."""
    for kind in TOWERS:
        if kind.claims(visual):
            tower = kind(visual)
            return tower.unsupported() or tower
    name = type(_trunk(visual)).__name__
    return NOT_TOKEN_TOWERS.get(name, f"no adapter for a {name} tower (supported: open_clip ViT, timm ViT and Eva)")


def refusal(visual: nn.Module) -> str | None:
    """Why cliprank cannot reduce this tower, in one line; None when it can."""
    adapted = _ADAPTED.get(visual) or _adapt(visual)
    return adapted if isinstance(adapted, str) else None


def tower_for(visual: nn.Module) -> Tower:
    """The adapter of a supported tower (cached per module); CliprankError naming the reason otherwise."""
    tower = _ADAPTED.get(visual)
    if tower is None:
        adapted = _adapt(visual)
        if isinstance(adapted, str):
            raise CliprankError(f"cliprank cannot reduce this vision tower: {adapted}; see `cliprank models`")
        tower = _ADAPTED[visual] = adapted
    return tower


def describe(visual: nn.Module) -> VisionArch:
    """The shape facts of a supported tower; CliprankError for the others."""
    return tower_for(visual).arch


__all__ = ["TOWERS", "Block", "PoolInput", "Tower", "describe", "refusal", "tower_for"]
