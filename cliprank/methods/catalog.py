"""What methods exist and what knobs they take, known without importing them (or torch).

`cliprank methods` lists, and `--method` is checked, before torch is loaded — within a fraction of a
second — so this module answers from data rather than from the method classes:

- the built-in methods come from `catalog.json`, a description of the registry (name, knob, parameters,
  summary, paper, parity reference, required files) written from the classes themselves by
  `python -m cliprank.methods.registry`; a test keeps it identical to the live registry;
- plug-ins come from their entry points' metadata (`importlib.metadata`, which imports nothing), with
  details read from the plug-in's source file (`ast`) where its class states them literally. What
  cannot be read so is marked unread rather than guessed; `cliprank methods --load` imports every
  plug-in and lists what the classes say.

Specs naming a class by import path (`module:Class`) are checked when they are imported, as before.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import json
from dataclasses import asdict, dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliprank.errors import CliprankError
from cliprank.methods.spec import MethodSpec

if TYPE_CHECKING:
    from cliprank.methods.base import Method

CATALOG = Path(__file__).with_name("catalog.json")
ENTRY_POINTS = "cliprank.methods"  # the entry-point group of plug-in methods
ALL = "all"
SUFFIX = "+tokens"
UNREAD = "?"  # a detail of a plug-in that its source does not state literally
UNREAD_PARAMS = ((UNREAD, UNREAD),)


@dataclass(frozen=True)
class MethodInfo:
    """What `cliprank methods` shows of a method and what the command line checks a spec against."""

    name: str
    knob: str | None
    params: tuple[tuple[str, str], ...]  # (name, default as text)
    summary: str
    paper: str
    reference: str
    requires: tuple[str, ...]
    source: str  # "cliprank", or the plug-in's entry point and distribution


def describe(cls: type[Method], source: str = "cliprank") -> MethodInfo:
    """A method class as the catalog records it (for writing `catalog.json` and for `--load`)."""
    return MethodInfo(
        name=cls.name,
        knob=cls.knob,
        params=tuple((param.name, str(param.default)) for param in cls.params),
        summary=cls.summary,
        paper=cls.paper,
        reference=cls.reference,
        requires=tuple(cls.requires),
        source=source,
    )


def _from_json(data: dict[str, Any]) -> MethodInfo:
    return MethodInfo(
        **{**data, "params": tuple(data["params"].items()), "requires": tuple(data["requires"]), "source": "cliprank"}
    )


def to_json(infos: list[MethodInfo]) -> str:
    """The built-ins' catalog.json (each entry without `source`: they are all cliprank's)."""
    entries = [{**asdict(info), "params": dict(info.params)} for info in infos]
    return (
        json.dumps(
            [{k: v for k, v in entry.items() if k != "source"} for entry in entries], indent=2, ensure_ascii=False
        )
        + "\n"
    )


@functools.cache
def builtin() -> dict[str, MethodInfo]:
    """The built-in methods by name, as `catalog.json` records them."""
    return {entry["name"]: _from_json(entry) for entry in json.loads(CATALOG.read_text(encoding="utf-8"))}


# ----- plug-ins, from their metadata and source -----


def plugin_points() -> list[EntryPoint]:
    return sorted(entry_points(group=ENTRY_POINTS), key=lambda point: point.name)


def plugin_origin(point: EntryPoint) -> str:
    where = f"plug-in {point.value}"
    return f"{where} ({point.dist.name} {point.dist.version})" if point.dist is not None else where


def _module_file(module: str) -> Path | None:
    """The source file of `module`, found without importing it or its packages."""
    top, *rest = module.split(".")
    spec = importlib.util.find_spec(top)
    if spec is None:
        return None
    if not rest:
        return Path(spec.origin) if spec.origin and spec.origin.endswith(".py") else None
    if not spec.submodule_search_locations:
        return None
    base = Path(list(spec.submodule_search_locations)[0]).joinpath(*rest)
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _literal(node: ast.expr) -> Any:
    try:
        return ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError):
        return UNREAD


def _params(node: ast.expr) -> tuple[tuple[str, str], ...]:
    if not isinstance(node, (ast.Tuple, ast.List)):
        return UNREAD_PARAMS
    params = []
    for item in node.elts:
        if not (isinstance(item, ast.Call) and len(item.args) >= 2):
            return UNREAD_PARAMS
        name, default = _literal(item.args[0]), _literal(item.args[1])
        params.append((str(name), str(default)))
    return tuple(params)


def _class_body(point: EntryPoint) -> ast.ClassDef | None:
    module, _, attribute = point.value.partition(":")
    try:
        path = _module_file(module.strip())
        tree = ast.parse(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, SyntaxError, ValueError, ImportError):
        return None
    classes = [n for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef) and n.name == attribute.strip()]
    return classes[0] if classes else None


def read_plugin(point: EntryPoint) -> MethodInfo:
    """A plug-in's details as its source states them in its class body; UNREAD where it does not.

    A class deriving from `Method` itself has Method's defaults for what it leaves out (no knob, no
    parameters); for any other base, what the class body does not state is unknown without importing.
    """
    node = _class_body(point)
    direct = node is not None and [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases] == ["Method"]
    values: dict[str, Any] = {"knob": None, "params": (), "reference": "", "requires": ()} if direct else {}
    for item in node.body if node is not None else []:
        if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
            key = item.targets[0].id
            values[key] = _params(item.value) if key == "params" else _literal(item.value)
    requires = values.get("requires", UNREAD)
    return MethodInfo(
        name=point.name,
        knob=values.get("knob", UNREAD),
        params=values.get("params", UNREAD_PARAMS),
        summary=str(values.get("summary", UNREAD)),
        paper=str(values.get("paper", UNREAD)),
        reference=str(values.get("reference", UNREAD)),
        requires=tuple(requires) if isinstance(requires, (tuple, list)) else (UNREAD,),
        source=plugin_origin(point),
    )


def listing() -> dict[str, MethodInfo]:
    """Every method by name: the built-ins, then the installed plug-ins (read from their source)."""
    return {**builtin(), **{point.name: read_plugin(point) for point in plugin_points()}}


# ----- checking specs before anything is imported -----


def available() -> list[str]:
    return [*builtin(), *(point.name for point in plugin_points())]


def check_specs(specs: list[MethodSpec]) -> None:
    """Refuse unknown method names and unknown knobs of built-in methods, in the registry's words.

    Import paths (`module:Class`) and plug-ins are checked when loaded; knob values when a method is
    configured for a model (many checks need its tower).
    """
    for name, knobs in specs:
        base = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
        if name == ALL or ":" in base:
            continue
        info = builtin().get(base)
        if info is None:
            if any(point.name == base for point in plugin_points()):
                continue
            raise CliprankError(f"unknown method '{base}'; available: {', '.join(available())}")
        declared = [param for param, _ in info.params]
        unknown = sorted(set(knobs) - set(declared))
        if unknown:
            valid = ", ".join(declared) or "none"
            raise CliprankError(f"{name}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")
