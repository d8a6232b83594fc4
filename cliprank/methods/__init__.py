"""Token-reduction methods: one module each, behind one small interface (`base`), found by name (`registry`)."""

from cliprank.methods.base import Method, Param, Resources
from cliprank.methods.registry import REGISTRY, method_class, methods

__all__ = ["REGISTRY", "Method", "Param", "Resources", "method_class", "methods"]
