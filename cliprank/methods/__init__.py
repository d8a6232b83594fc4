"""Token-reduction methods: one module each, registered by name in `REGISTRY`."""

from cliprank.methods import none, prune_at, topk  # noqa: F401  (each module registers its methods)
from cliprank.methods.base import REGISTRY, Method, Param, Resources, method_class

__all__ = ["REGISTRY", "Method", "Param", "Resources", "method_class"]
