"""Token-reduction methods: one module each, registered by name in `REGISTRY`."""

from cliprank.methods import (  # noqa: F401  (each module registers its methods)
    ats,
    evit,
    golden,
    none,
    predictor,
    prune_at,
    tome,
    topk,
)
from cliprank.methods.base import REGISTRY, Method, Param, Resources, method_class

__all__ = ["REGISTRY", "Method", "Param", "Resources", "method_class"]
