"""Method specs and budgets as users type them: `topk,tome(r=8),evit(keep=0.7,blocks=[3,6,9])`, `0.6,0.7`.

A spec list is split on the commas outside parentheses and brackets; each spec is a method name with
optional `key=value` knobs in parentheses. Values are read as YAML (`8` → int, `0.7` → float,
`[3,6,9]` → list, `true` → bool, anything else → text), the same reader recipes use, so a knob looks
the same on the command line and in a recipe. Names and knobs are checked later, by the method itself,
which knows its valid parameters; this module only checks the syntax. A method defined outside cliprank
can be named by its import path, `package.module:Class(keep=0.5)` (see `cliprank.methods.registry`).

Budgets are fractions of the unpruned model's GMACs in (0, 1]; `none` (or nothing) means "knobs as given".

Nothing here imports torch: the command line checks what the user typed before any model is loaded.
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from cliprank.errors import CliprankError

MethodSpec = tuple[str, dict[str, Any]]

_NAME = re.compile(r"^(?:[A-Za-z_][\w.]*:)?[A-Za-z_][\w\-+]*$")  # name, or module.path:Class
_OPENING = {"(": ")", "[": "]", "{": "}"}


def split_top_level(text: str, separator: str = ",") -> list[str]:
    """Split on `separator` where no (), [] or {} is open; raise on unbalanced brackets."""
    parts, depth_stack, current = [], [], []
    for char in text:
        if char in _OPENING:
            depth_stack.append(_OPENING[char])
        elif char in _OPENING.values():
            if not depth_stack or depth_stack.pop() != char:
                raise CliprankError(f"unbalanced '{char}' in '{text}'; check the brackets")
        if char == separator and not depth_stack:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    if depth_stack:
        raise CliprankError(f"unclosed bracket in '{text}'; expected '{depth_stack[-1]}'")
    parts.append("".join(current))
    return [part.strip() for part in parts]


def parse_value(text: str) -> Any:
    """A knob value read as YAML; a number YAML 1.1 reads as text (`1e-3`) is still a number."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise CliprankError(f"cannot read value '{text}' ({str(err).splitlines()[0]})") from err
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def parse_method_spec(text: str) -> MethodSpec:
    """One `name` or `name(key=value, ...)`; `name(...)+tokens` reads as `name+tokens(...)`."""
    text = text.strip()
    if text.endswith(")+tokens"):
        name, knobs = parse_method_spec(text[: -len("+tokens")])
        return f"{name}+tokens", knobs
    name, _, rest = text.partition("(")
    name = name.strip()
    if not _NAME.match(name):
        raise CliprankError(f"bad method spec '{text}'; write NAME or NAME(key=value,...), e.g. tome(r=8)")
    if not rest:
        return name, {}
    if not rest.endswith(")"):
        raise CliprankError(f"bad method spec '{text}'; write NAME(key=value,...) ending in one ')'")
    knobs: dict[str, Any] = {}
    for item in split_top_level(rest[:-1]):
        if not item:
            continue
        key, equals, value = item.partition("=")
        key = key.strip()
        if not equals or not key.isidentifier():
            raise CliprankError(
                f"bad knob '{item}' in '{text}'; write key=value pairs separated by commas, a list as [8,8,4] or 8/8/4"
            )
        if key in knobs:
            raise CliprankError(f"knob '{key}' is given twice in '{text}'")
        if not value.strip():
            raise CliprankError(f"knob '{key}' has no value in '{text}'; write {key}=VALUE, or leave it out")
        knobs[key] = parse_value(value.strip())
    return name, knobs


def parse_method_specs(text: str) -> list[MethodSpec]:
    """A comma-separated list of method specs, in the order given."""
    specs = [parse_method_spec(part) for part in split_top_level(text) if part]
    if not specs:
        raise CliprankError("no method given; pass e.g. --method topk,tome(r=8)")
    return specs


def format_method_spec(name: str, knobs: dict[str, Any]) -> str:
    """The canonical text of a spec (stable knob order), for record keys and table rows."""
    if not knobs:
        return name
    inner = ",".join(f"{key}={_format_value(value)}" for key, value in sorted(knobs.items()))
    return f"{name}({inner})"


def _format_value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_format_value(v) for v in value) + "]"
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_budget(budget: float) -> None:
    """A budget is a fraction of the unpruned model's GMACs: (0, 1]."""
    if not 0 < budget <= 1:
        raise CliprankError(f"budget {budget} is out of range; give a fraction of the unpruned GMACs in (0, 1]")


def parse_budgets(text: str | None) -> list[float | None]:
    """Comma-separated budgets; `none` or nothing is one unbudgeted pass (knobs as given)."""
    if text is None or text.strip().lower() in ("", "none"):
        return [None]
    budgets: list[float | None] = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError as err:
            raise CliprankError(f"budget '{part}' is not a number; give fractions like 0.5,0.7") from err
        check_budget(value)
        budgets.append(value)
    return budgets
