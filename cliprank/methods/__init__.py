"""Token-reduction methods: one module each, behind one small interface (`base`), found by name (`registry`).

The names below are loaded on first use: the methods import torch, and the command line must check
what was typed (`spec`) and answer `--help` without waiting for it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cliprank.methods.base import Method, Param, Resources
    from cliprank.methods.registry import REGISTRY, method_class, methods

_EXPORTS = {
    "Method": "cliprank.methods.base",
    "Param": "cliprank.methods.base",
    "Resources": "cliprank.methods.base",
    "REGISTRY": "cliprank.methods.registry",
    "method_class": "cliprank.methods.registry",
    "methods": "cliprank.methods.registry",
}

__all__ = ["REGISTRY", "Method", "Param", "Resources", "method_class", "methods"]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'cliprank.methods' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
