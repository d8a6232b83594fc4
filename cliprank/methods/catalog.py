"""What methods exist and what knobs they take, known without importing them (or torch).

`cliprank methods` lists, and `--method` is checked, before torch is loaded — within a fraction of a
second — so this module answers from data rather than from the method classes:

- the built-in methods come from `catalog.json`, a description of the registry (name, knob, parameters
  and the names of the `knobs` functions that coerce and check them, summary, paper, parity reference,
  required files) written from the classes themselves by
  `python -m cliprank.methods.registry`; a test keeps it identical to the live registry;
- plug-ins come from their entry points' metadata (`importlib.metadata`, which imports nothing), with
  details read from the plug-in's source file (`ast`) where its class states them literally. What
  cannot be read so is marked unread rather than guessed; `cliprank methods --load` imports every
  plug-in and lists what the classes say.

A built-in's knob values are judged here by the same `knobs` functions the method uses, with the
rules that need no tower (`keep=0`, `r=-1`, `blocks=3,1` are refused at once); what depends on the tower
(a block beyond its depth, `score=cls` without a class token) is judged when the model is loaded. Specs
naming a class by import path (`module:Class`) are checked when imported; plug-ins as far as their
source states their parameters with `knobs` functions.
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
from cliprank.methods.knobs import NAMED, Param, check_known, judge, name_of, no_check
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
    # (param, coerce, check, help), naming `knobs` functions; None: a function of the method's own
    rules: tuple[tuple[str, str | None, str | None, str], ...] = ()


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
        rules=tuple((param.name, name_of(param.coerce), name_of(param.check), param.help) for param in cls.params),
    )


def _from_json(data: dict[str, Any]) -> MethodInfo:
    rules = tuple((name, rule["coerce"], rule["check"], rule["help"]) for name, rule in data["rules"].items())
    return MethodInfo(
        **{
            **data,
            "params": tuple(data["params"].items()),
            "requires": tuple(data["requires"]),
            "source": "cliprank",
            "rules": rules,
        }
    )


def to_json(infos: list[MethodInfo]) -> str:
    """The built-ins' catalog.json (each entry without `source`: they are all cliprank's)."""
    entries = [
        {
            **asdict(info),
            "params": dict(info.params),
            "rules": {name: {"coerce": c, "check": k, "help": h} for name, c, k, h in info.rules},
        }
        for info in infos
    ]
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


PARAM_FIELDS = ("name", "default", "help", "coerce", "check")
PARAM_DEFAULTS = {"coerce": name_of(Param.coerce), "check": name_of(Param.check)}


def _rules(node: ast.expr, from_knobs: dict[str, str]) -> tuple[tuple[str, str | None, str | None, str], ...]:
    """Each `Param(...)`'s coercion and check, named only when the source imports them from `knobs`."""
    rules = []
    for item in node.elts if isinstance(node, (ast.Tuple, ast.List)) else []:
        if not isinstance(item, ast.Call):
            return ()
        given = dict(zip(PARAM_FIELDS, item.args)) | {k.arg: k.value for k in item.keywords if k.arg}
        functions: dict[str, str | None] = {}
        for field in ("coerce", "check"):
            function = given.get(field)
            if function is None:
                functions[field] = PARAM_DEFAULTS[field]
            else:
                named = isinstance(function, ast.Name) and function.id in from_knobs
                functions[field] = from_knobs[function.id] if named else None
        name, help_text = (str(_literal(given[f])) if f in given else UNREAD for f in ("name", "help"))
        rules.append((name, functions["coerce"], functions["check"], help_text))
    return tuple(rules)


def _knobs_imports(tree: ast.Module) -> dict[str, str]:
    """Names the module imports from `cliprank.methods.knobs` (as bound there → as defined there)."""
    return {
        alias.asname or alias.name: alias.name
        for node in tree.body
        if isinstance(node, ast.ImportFrom) and node.module == "cliprank.methods.knobs"
        for alias in node.names
        if alias.name in NAMED
    }


def _source(point: EntryPoint) -> tuple[ast.Module | None, ast.ClassDef | None]:
    """The plug-in's module and class, parsed from its file (nothing is imported)."""
    module, _, attribute = point.value.partition(":")
    try:
        path = _module_file(module.strip())
        tree = ast.parse(path.read_text(encoding="utf-8")) if path is not None else None
    except (OSError, SyntaxError, ValueError, ImportError):
        return None, None
    classes = [n for n in (tree.body if tree else []) if isinstance(n, ast.ClassDef) and n.name == attribute.strip()]
    return tree, classes[0] if classes else None


def read_plugin(point: EntryPoint) -> MethodInfo:
    """A plug-in's details as its source states them in its class body; UNREAD where it does not.

    A class deriving from `Method` itself has Method's defaults for what it leaves out (no knob, no
    parameters); for any other base, what the class body does not state is unknown without importing.
    """
    tree, node = _source(point)
    direct = node is not None and [ast.unparse(base).rsplit(".", 1)[-1] for base in node.bases] == ["Method"]
    values: dict[str, Any] = {"knob": None, "params": (), "reference": "", "requires": ()} if direct else {}
    for item in node.body if node is not None else []:
        if isinstance(item, ast.Assign) and len(item.targets) == 1 and isinstance(item.targets[0], ast.Name):
            key = item.targets[0].id
            values[key] = _params(item.value) if key == "params" else _literal(item.value)
            if key == "params" and values[key] != UNREAD_PARAMS:
                values["rules"] = _rules(item.value, _knobs_imports(tree))
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
        rules=values.get("rules", ()),
    )


def listing() -> dict[str, MethodInfo]:
    """Every method by name: the built-ins, then the installed plug-ins (read from their source)."""
    return {**builtin(), **{point.name: read_plugin(point) for point in plugin_points()}}


# ----- checking specs before anything is imported -----


def available() -> list[str]:
    return [*builtin(), *(point.name for point in plugin_points())]


def check_specs(specs: list[MethodSpec]) -> None:
    """Refuse unknown method names, and unknown knobs and knob values of built-in methods, in the
    words the method itself would use.

    A plug-in is judged as far as its source states its parameters (`read_plugin`); import paths
    (`module:Class`) when they are imported; what depends on the tower when a method is configured for
    a model.
    """
    for name, knobs in specs:
        base = name[: -len(SUFFIX)] if name.endswith(SUFFIX) else name
        if name == ALL or ":" in base:
            continue
        info = builtin().get(base)
        if info is None:
            point = next((point for point in plugin_points() if point.name == base), None)
            if point is None:
                raise CliprankError(f"unknown method '{base}'; available: {', '.join(available())}")
            info = read_plugin(point)
            if info.params == UNREAD_PARAMS:
                continue  # what it takes is known once it is imported
        check_known(name, [param for param, _ in info.params], knobs)
        _judge_values(base, info, knobs)


def _judge_values(method: str, info: MethodInfo, knobs: dict[str, Any]) -> None:
    """Each given value coerced and checked by the method's own `knobs` functions, without a tower."""
    for param, coerce, check, help_text in info.rules:
        if param in knobs and coerce is not None:
            rule = Param(param, None, help_text, NAMED[coerce], NAMED[check] if check is not None else no_check)
            judge(method, rule, knobs[param], arch=None)
