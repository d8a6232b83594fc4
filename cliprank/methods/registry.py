"""Every method cliprank can run, found by name: the registered built-ins and their `+tokens` variants.

A built-in method registers itself with `@register` (`cliprank.methods.base`); `NAME+tokens` is NAME
followed by learned tokens (`cliprank.methods.with_tokens`). What a pipeline needs to know about a
method is declared on its class, so the name is only ever used to find the class.
"""

from __future__ import annotations

from cliprank.errors import CliprankError
from cliprank.methods import ats, evit, golden, none, predictor, prune_at, tome, topk  # noqa: F401 (they register)
from cliprank.methods.base import REGISTRY, Method
from cliprank.methods.with_tokens import SUFFIX, with_tokens


def methods() -> dict[str, type[Method]]:
    """Every available method by name."""
    return {name: REGISTRY[name] for name in sorted(REGISTRY)}


def method_class(name: str) -> type[Method]:
    """The class `name` stands for: a registered method, or one of them followed by `+tokens`."""
    if name.endswith(SUFFIX):
        return with_tokens(method_class(name[: -len(SUFFIX)]))
    if name in REGISTRY:
        return REGISTRY[name]
    raise CliprankError(f"unknown method '{name}'; available: {', '.join(methods())}")
