"""The command line: bad input is one line and exit status 2; recipes are defaults the CLI overrides."""

from __future__ import annotations

import json
import os
import subprocess
import sys

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


BAD_INPUTS = {
    "unknown model": (["evaluate", "--model", "ViT-Q-99", "--pretrained", "none"], "unknown model"),
    "unknown method": (["evaluate", "--pretrained", "none", "--method", "magic"], "unknown method 'magic'"),
    "budget out of range": (
        ["evaluate", "--pretrained", "none", "--method", "topk", "--budget", "1.5"],
        "out of range",
    ),
    "bad knob": (["evaluate", "--pretrained", "none", "--method", "topk(keep=0)"], "keep=0"),
    "unknown knob": (["evaluate", "--pretrained", "none", "--method", "tome(speed=3)"], "unknown parameter"),
    "missing checkpoint": (["evaluate", "--pretrained", "/nowhere/model.pt"], "checkpoint not found"),
    "unknown dataset": (
        ["evaluate", "--pretrained", "none", "--dataset", "mnistt", "--method", "none"],
        "unknown dataset",
    ),
    "missing dataset offline": (
        ["evaluate", "--pretrained", "none", "--dataset", "pets", "--method", "none"],
        "dataset-root",
    ),
    "golden without rankings": (
        ["evaluate", "--pretrained", "none", "--method", "golden", "--budget", "0.7"],
        "rankings",
    ),
    "search knob out of range": (["search", "--pretrained", "none", "--dataset", "digits", "--unit", "0"], "unit"),
    "unknown recipe": (["evaluate", "--recipe", "no-such-recipe"], "recipe not found"),
    "profile unknown method": (["profile", "--pretrained", "none", "--method", "magic"], "unknown method"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_one_line_and_exit_2(case: str, capsys, tmp_path) -> None:
    argv, expected = BAD_INPUTS[case]
    code, out, err = run([*argv, "--out", str(tmp_path / "out")] if argv[0] != "profile" else argv, capsys)
    assert code == 2, (out, err)
    assert expected in err
    assert "Traceback" not in err + out
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out" / "report.json").exists()


def test_recipe_unknown_key_lists_valid_keys(capsys, tmp_path) -> None:
    recipe = tmp_path / "r.yaml"
    recipe.write_text("modle: cliprank-tiny\n")
    code, _, err = run(["evaluate", "--recipe", str(recipe)], capsys)
    assert code == 2 and "unknown key 'modle'" in err and "model" in err


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


def test_help_and_typed_input_checks_do_not_import_torch() -> None:
    """`--help` answers at once: neither the commands nor the spec and budget parsers import torch."""
    code = (
        "import sys; from cliprank.cli import _register_commands; _register_commands()\n"
        "from cliprank.methods.spec import parse_budgets, parse_method_specs\n"
        "parse_method_specs('tome(r=8),evit'); parse_budgets('0.5,0.7')\n"
        "print(sorted(m for m in ('torch', 'open_clip', 'matplotlib') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=os.environ)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
