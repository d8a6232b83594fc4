"""Every method cliprank can run, found by name: the registered built-ins and their `+tokens` variants.

A built-in method registers itself with `@register` (`cliprank.methods.base`); `NAME+tokens` is NAME
followed by learned tokens (`cliprank.methods.with_tokens`). What a pipeline needs to know about a
method is declared on its class, so the name is only ever used to find the class. `--method all` is
derived from here too (`expand_all`): no list is kept by hand.
"""

from __future__ import annotations

from collections.abc import Sequence

from cliprank.errors import CliprankError
from cliprank.methods import ats, evit, golden, none, predictor, prune_at, tome, topk  # noqa: F401 (they register)
from cliprank.methods.base import REGISTRY, Method, Resources
from cliprank.methods.spec import MethodSpec
from cliprank.methods.with_tokens import SUFFIX, with_tokens

ALL = "all"


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


def is_all(specs: Sequence[MethodSpec]) -> bool:
    return [name for name, _ in specs] == [ALL]


def expand_all(specs: Sequence[MethodSpec], resources: Resources) -> list[MethodSpec]:
    """`all` → every method that runs in `all` and finds the files it requires in `resources`, each
    followed by `NAME+tokens` when learned tokens for it are there. Other spec lists are kept as given.
    """
    if not is_all(specs):
        return list(specs)
    trained = resources.tokens.methods() if resources.tokens else set()
    expanded: list[MethodSpec] = []
    for name, cls in methods().items():
        if cls.in_all and all(getattr(resources, kind) for kind in cls.requires):
            expanded.append((name, {}))
            if name in trained:
                expanded.append((f"{name}{SUFFIX}", {}))
    return expanded
