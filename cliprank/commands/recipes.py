"""YAML recipes: a file of option values for any command; the command line overrides them.

The recipes cliprank ships live in `cliprank/recipes/` (package data), so `--recipe ci` works from any
folder once cliprank is installed.

A recipe's keys are the command's option names (dashes or underscores). Unknown keys are errors
that list the valid ones, so a typo never silently falls back to a default, and every value is
checked against its option's type here, so a bad one is blamed on the recipe's key, not on an option
the user never typed. Loaded with
`yaml.safe_load` and applied through click's `default_map`, so precedence is exactly:
command line > recipe > built-in default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
import yaml

from cliprank.errors import CliprankError

SHIPPED = Path(__file__).resolve().parent.parent / "recipes"  # package data: installed with cliprank


def shipped_recipes() -> list[str]:
    return sorted(path.stem for path in SHIPPED.glob("*.yaml"))


def resolve_recipe(value: str) -> Path:
    """A recipe path, or the name of a recipe shipped with cliprank (`demo`, `ci`, `paper-vitb16`, …)."""
    path = Path(value).expanduser()
    if path.is_file():
        return path
    for candidate in (SHIPPED / value, SHIPPED / f"{value}.yaml"):
        if candidate.is_file():
            return candidate
    raise CliprankError(
        f"recipe not found: {value}; pass a YAML file path or a shipped recipe name ({', '.join(shipped_recipes())})"
    )


def _check_value(param: Any, value: Any, ctx: Any, path: Path, key: Any) -> None:
    """Convert `value` as the option would; a value it refuses is one line naming the recipe and key."""
    try:
        param.process_value(ctx, value)
    except Exception as err:  # click's BadParameter (Typer may vendor its own click): one line, not a usage box
        if not hasattr(err, "format_message"):
            raise
        problem = getattr(err, "message", None) or err.format_message()  # without "Invalid value for '--key'"
        raise CliprankError(f"recipe {path}: '{key}: {value}' is invalid ({problem}); fix the file") from err


def load_recipe(path: Path, command: Any, ctx: Any = None) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise CliprankError(f"recipe {path} is not valid YAML ({str(err).splitlines()[0]}); fix the file") from err
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise CliprankError(f"recipe {path} must be a mapping of option names to values")
    options = {p.name: p for p in command.params if p.name and p.name != "recipe"}
    values: dict[str, Any] = {}
    for key, value in data.items():
        name = str(key).replace("-", "_")
        if name not in options:
            valid = ", ".join(sorted(n.replace("_", "-") for n in options))
            raise CliprankError(f"recipe {path}: unknown key '{key}' for `{command.name}`; valid keys: {valid}")
        param = options[name]
        if getattr(param, "multiple", False) and not isinstance(value, list):
            value = [value]
        if isinstance(value, list) and not getattr(param, "multiple", False):
            value = ",".join(str(v) for v in value)
        _check_value(param, value, ctx or command.context_class(command), path, key)
        values[name] = value
    return values


def apply_recipe(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Eager callback of `--recipe`: turn the file into defaults for the other options."""
    if value is None or ctx.resilient_parsing:
        return value
    path = resolve_recipe(value)
    ctx.default_map = {**(ctx.default_map or {}), **load_recipe(path, ctx.command, ctx)}
    return str(path)


RecipeOption = typer.Option(
    None,
    "--recipe",
    help="YAML file of option values (command-line options override it).",
    callback=apply_recipe,
    is_eager=True,
)
