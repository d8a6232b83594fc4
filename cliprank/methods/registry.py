"""Every method cliprank can run, found by name: the built-ins, methods of other packages, `module:Class`.

- A built-in method registers itself with `@register` (`cliprank.methods.base`).
- Another installed package adds methods through the `cliprank.methods` entry-point group, the way
  packages add models to timm or open_clip; the entry point's name is the method's name:

      [project.entry-points."cliprank.methods"]
      mine = "my_package.my_module:MyMethod"

- For a quick try without packaging, `--method my_module:MyMethod` imports the class from a module on
  the path or in the current directory.
- `NAME+tokens` is NAME followed by learned tokens (`cliprank.methods.with_tokens`).

Whatever its source, a method is then listed, solved for budgets, counted, profiled and reported
like a built-in. `--method all` is derived from here too (`expand_all`): no list is kept by hand.

The command line lists methods and checks specs before torch is loaded, from `catalog`: the built-ins'
`catalog.json` is written from this registry by `python -m cliprank.methods.registry`.
"""

from __future__ import annotations

import importlib
import os
import sys
from collections.abc import Sequence
from dataclasses import fields
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType

from cliprank.errors import CliprankError
from cliprank.io import reason
from cliprank.methods import ats, evit, golden, none, predictor, prune_at, tome, topk  # noqa: F401 (they register)
from cliprank.methods.base import REGISTRY, Method, Resources
from cliprank.methods.catalog import (
    ALL,
    CATALOG,
    ENTRY_POINTS,
    MethodInfo,
    describe,
    plugin_origin,
    plugin_points,
    to_json,
)
from cliprank.methods.spec import MethodSpec
from cliprank.methods.with_tokens import SUFFIX, with_tokens

RESOURCE_KINDS = frozenset(f.name for f in fields(Resources)) - {"extra"}


def installed() -> dict[str, type[Method]]:
    """Methods that installed packages declare in the `cliprank.methods` entry-point group, by name."""
    return {point.name: _load(point) for point in plugin_points()}


def methods() -> dict[str, type[Method]]:
    """Every available method by name: the built-ins, then those of installed packages, each by name."""
    return {**{name: REGISTRY[name] for name in sorted(REGISTRY)}, **installed()}


def method_class(name: str) -> type[Method]:
    """The class `name` stands for: a built-in, an installed plug-in, `module:Class`, or any of them `+tokens`."""
    if name.endswith(SUFFIX):
        return with_tokens(method_class(name[: -len(SUFFIX)]))
    if name in REGISTRY:
        return REGISTRY[name]
    if ":" in name:
        return _import_class(name)
    points = entry_points(group=ENTRY_POINTS, name=name)
    if points:
        return _load(next(iter(points)))
    raise CliprankError(f"unknown method '{name}'; available: {', '.join(methods())}")


def described() -> list[MethodInfo]:
    """Every available method as its class describes itself (built-ins, then imported plug-ins)."""
    builtins = [describe(REGISTRY[name]) for name in sorted(REGISTRY)]
    return builtins + [describe(_load(point), plugin_origin(point)) for point in plugin_points()]


def write_catalog() -> None:
    """Write the built-ins' `catalog.json`: what the command line knows of them without importing them."""
    CATALOG.write_text(to_json([describe(REGISTRY[name]) for name in sorted(REGISTRY)]), encoding="utf-8")


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


def _load(point: EntryPoint) -> type[Method]:
    where = f"the method plug-in '{point.name}' ({point.value}"
    where += f", from {point.dist.name})" if point.dist is not None else ")"
    if point.name in REGISTRY:
        raise CliprankError(f"{where} has a built-in method's name; rename its entry point")
    try:
        cls = point.load()
    except Exception as err:  # a broken plug-in is named, never a traceback from inside it
        raise CliprankError(f"{where} failed to load ({type(err).__name__}: {err}); fix or uninstall it") from err
    _check(cls, where)
    if cls.name != point.name:
        raise CliprankError(f"{where} is a method named '{cls.name}'; name its entry point '{cls.name}'")
    return cls


def _import_class(path: str) -> type[Method]:
    module_name, _, attribute = path.partition(":")
    try:
        module = _import_here(module_name)
    except ImportError as err:
        raise CliprankError(
            f"cannot import '{module_name}' for method '{path}' ({reason(err)}); run from its folder or install it"
        ) from err
    cls = getattr(module, attribute, None)
    if cls is None:
        raise CliprankError(f"module '{module_name}' has no '{attribute}'; write --method {module_name}:CLASS")
    _check(cls, f"'{path}'")
    return cls


def _import_here(module_name: str) -> ModuleType:
    """Import a module from the path, or else from the current directory (as `python -m` would)."""
    here = os.getcwd()
    if here in sys.path or "" in sys.path:
        return importlib.import_module(module_name)
    sys.path.insert(0, here)
    try:
        return importlib.import_module(module_name)
    finally:
        sys.path.remove(here)


def _check(cls: object, where: str) -> None:
    """A plug-in is a Method subclass that says what it is and needs only files cliprank can load."""
    if not (isinstance(cls, type) and issubclass(cls, Method)):
        raise CliprankError(f"{where} is not a subclass of cliprank.methods.base.Method")
    missing = [attr for attr in ("name", "summary", "paper") if not isinstance(getattr(cls, attr, None), str)]
    if missing:
        raise CliprankError(f"{where} does not declare {', '.join(missing)} (class attributes, text)")
    unknown = set(cls.requires) - RESOURCE_KINDS
    if unknown:
        raise CliprankError(
            f"{where} requires {', '.join(sorted(unknown))}; a method can require {', '.join(sorted(RESOURCE_KINDS))}"
        )


if __name__ == "__main__":
    write_catalog()
    print(f"wrote {CATALOG}")
