"""The command line: recipes are defaults the CLI overrides (bad input: `test_bad_input.py`)."""

from __future__ import annotations

import json

import pytest
import typer.main

from cliprank.cli import _register_commands, main
from cliprank.commands import app
from cliprank.commands.recipes import SHIPPED, load_recipe, resolve_recipe


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(argv)
        code = 0
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_recipe_values_are_defaults_the_command_line_overrides(capsys, tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    out = tmp_path / "run"
    recipe.write_text(
        f"pretrained: none\nmethod: [none, topk]\nbudget: [0.5]\ndataset: faces\nlimit: 8\nspeed: false\n"
        f"flops: false\nout: {out}\n"
    )
    code, _, err = run(["evaluate", "--recipe", str(recipe), "--budget", "0.9"], capsys)
    assert code == 0, err
    records = json.loads((out / "report.json").read_text())["records"]
    assert {r["budget"] for r in records} == {None, 0.9}
    assert {r["method"] for r in records} == {"none", "topk"}
    assert all(r["images"] == 8 for r in records)


@pytest.mark.parametrize("name", sorted(path.stem for path in SHIPPED.glob("*.yaml")))
def test_shipped_recipes_are_package_data_with_valid_keys(name: str) -> None:
    """Shipped recipes live inside the package (so an installed cliprank finds them) and name real options."""
    path = resolve_recipe(name)
    assert path.parent == SHIPPED and SHIPPED.parent.name == "cliprank"
    _register_commands()
    assert load_recipe(path, typer.main.get_command(app).commands["evaluate"])
