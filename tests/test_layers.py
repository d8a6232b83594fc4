"""The import contract in pyproject.toml places every module, so a new one cannot slip past `lint-imports`."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import re
from pathlib import Path

import pytest

import cliprank

PYPROJECT = Path(__file__).resolve().parent.parent / "pyproject.toml"


def layer_modules() -> set[str]:
    tomllib = pytest.importorskip("tomllib", reason="Python 3.10 has no TOML reader in its standard library")
    config = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    contract = next(c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "layers")
    return {name.strip() for layer in contract["layers"] for name in re.split(r"[|:]", layer)}


def test_every_module_is_in_a_layer() -> None:
    layers = layer_modules()
    modules = {info.name: info.ispkg for info in pkgutil.walk_packages(cliprank.__path__, "cliprank.")}
    placed = lambda name: any(name == layer or name.startswith(f"{layer}.") for layer in layers)  # noqa: E731
    unplaced = [name for name, is_package in modules.items() if not placed(name) and not is_package]
    assert not unplaced, f"give these modules a layer in pyproject.toml: {unplaced}"
    # A package whose modules sit in different layers is in none itself: its __init__ must import nothing.
    for name in (n for n, is_package in modules.items() if is_package and not placed(n)):
        source = Path(importlib.util.find_spec(name).origin).read_text(encoding="utf-8")
        imports = [n for n in ast.walk(ast.parse(source)) if isinstance(n, (ast.Import, ast.ImportFrom))]
        assert not imports, f"{name}/__init__.py imports, but the package spans layers; move what it imports"
