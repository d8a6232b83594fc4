"""Methods from other packages: the README's example, installed as a plug-in, works like a built-in.

The plug-in is "installed" the way pip leaves a package: a module and a `*.dist-info` folder with an
`entry_points.txt` on sys.path. Its code and its entry point are read from the README's
"Add your own method" section, so the documented example is the one that is tested.
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest
from cli_runner import run_cli

from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.budget import solve_rows
from cliprank.methods.registry import expand_all, method_class, methods
from cliprank.report.schema import load_report

README = Path(__file__).resolve().parent.parent / "README.md"


def readme_example() -> tuple[str, str, str]:
    """(module name, module code, entry-point line) of the README's plug-in example."""
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## Add your own method") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    module = re.match(r"# (\w+)\.py\n", code).group(1)
    toml = re.search(r'```toml\n\[project\.entry-points\."cliprank\.methods"\]\n(.*?)```', section, re.S).group(1)
    name, value = re.fullmatch(r'\s*([\w-]+)\s*=\s*"([^"]+)"\s*', toml).groups()
    return module, code, f"{name} = {value}"  # as entry_points.txt writes it


def install(folder: Path, module: str, code: str | None, entry_point: str) -> None:
    """What `pip install` leaves on sys.path for a package with a `cliprank.methods` entry point."""
    if code is not None:
        (folder / f"{module}.py").write_text(code)
    info = folder / f"{module}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {module}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[cliprank.methods]\n{entry_point}\n")


@pytest.fixture
def plugin(tmp_path, monkeypatch) -> str:
    """The README's plug-in, installed for one test; returns the method's name."""
    module, code, entry_point = readme_example()
    install(tmp_path, module, code, entry_point)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield entry_point.split("=")[0].strip()
    sys.modules.pop(module, None)


def test_the_plugin_is_listed_with_the_built_ins(plugin, capsys, monkeypatch) -> None:
    assert plugin in methods() and "tome" in methods()
    monkeypatch.setenv("COLUMNS", "400")  # a table wide enough that no cell wraps
    for argv in (["methods"], ["methods", "--load"]):  # read from its source, then from its imported class
        assert run_cli(argv) == 0
        listing = capsys.readouterr().out
        assert plugin in listing and "my_pruning" in listing and "keep=None, block=2" in listing
        assert "keep the patches with the largest token norm" in listing


def test_a_plugin_read_from_its_source_is_what_its_class_declares(plugin) -> None:
    """`cliprank methods` reads a plug-in without importing it; what it reads agrees with the class."""
    from cliprank.methods.catalog import describe, listing

    read = listing()[plugin]
    assert read == describe(methods()[plugin], source=read.source)


def test_the_plugin_is_evaluated_next_to_the_built_ins_at_the_same_budget(plugin, tmp_path) -> None:
    out = tmp_path / "run"
    argv = ["evaluate", "--pretrained", "none", "--dataset", "faces", "--limit", "8", "--batch-size", "8"]
    argv += ["--method", f"none,topk,{plugin}", "--budget", "0.7", "--no-speed", "--out", str(out)]
    assert run_cli(argv) == 0
    records = {r.method: r for r in load_report(out / "report.json").records}
    assert set(records) == {"none", "topk", plugin}
    mine = records[plugin]
    assert mine.budget == 0.7 and mine.gmacs_fraction <= 0.7 + 1e-9 and mine.params["keep"] < 1  # solved
    assert mine.gmacs_counted == pytest.approx(mine.gmacs, rel=0.01)  # counted by fvcore, as it declared
    assert mine.images == 8 and 0 <= mine.metrics["acc1"] <= 1
    assert f"| {plugin} " in (out / "report.md").read_text()  # reported like the others


def test_the_plugin_is_profiled_and_runs_the_schedule_it_declares(plugin, tmp_path) -> None:
    out = tmp_path / "profile"
    argv = ["profile", "--pretrained", "none", "--method", plugin, "--budget", "0.7", "--batch-size", "2"]
    argv += ["--repeats", "1", "--warmup", "0", "--images", "2", "--out", str(out)]
    assert run_cli(argv) == 0
    rows = json.loads((out / "profile.json").read_text())["rows"]
    assert [row["spec"] for row in rows] == ["none", plugin]
    assert rows[1]["schedule"]["check"] == "matches" and not rows[1]["gmacs"]["flagged"]


def test_all_runs_every_installed_method_whose_files_exist(plugin) -> None:
    names = [name for name, _ in expand_all([("all", {})], Resources())]
    assert plugin in names and "tome" in names
    assert "golden" not in names and "predictor" not in names  # no rankings, no predictor given
    assert "prune-at" not in names  # its scores are random, golden and predictor, run as methods of their own


def test_a_class_named_by_import_path_needs_no_installing(tmp_path, monkeypatch, tiny) -> None:
    module, code, _ = readme_example()
    (tmp_path / f"{module}.py").write_text(code)
    monkeypatch.chdir(tmp_path)  # a module in the current folder, as `cliprank` is run beside it
    try:
        rows = solve_rows(tiny.arch, [(f"{module}:NormPrune", {})], [0.7])
        assert rows[1].spec == f"{module}:NormPrune" and rows[1].solved.fraction <= 0.7
        with pytest.raises(CliprankError, match="has no 'Nope'"):
            method_class(f"{module}:Nope")
        with pytest.raises(CliprankError, match="cannot import 'no_such_module'"):
            method_class("no_such_module:NormPrune")
    finally:
        sys.modules.pop(module, None)


def test_a_broken_plugin_is_one_line_naming_it(tmp_path, monkeypatch, capsys) -> None:
    install(
        tmp_path, "broken_plugin", "raise ImportError('needs a package that is missing')\n", "bad = broken_plugin:X"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("COLUMNS", "400")
    try:
        assert run_cli(["methods"]) == 0  # listed from its metadata, not imported: nothing it states is read
        listing = capsys.readouterr().out
        assert "bad " in listing and "broken_plugin:X" in listing and "--load" in listing
        assert run_cli(["methods", "--load"]) == 2
    finally:
        sys.modules.pop("broken_plugin", None)
    err = capsys.readouterr().err
    assert "the method plug-in 'bad'" in err and "needs a package that is missing" in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1


def test_a_plugins_knob_values_are_judged_from_its_source_without_importing_it(plugin) -> None:
    from cliprank.methods.catalog import check_specs

    module = readme_example()[0]
    with pytest.raises(CliprankError, match=rf"{plugin}: keep=0 must be in \(0, 1\]"):
        check_specs([(plugin, {"keep": 0})])
    with pytest.raises(CliprankError, match="unknown parameter"):
        check_specs([(plugin, {"kep": 0.5})])
    check_specs([(plugin, {"keep": 0.5, "block": 40})])  # block 40: the tower decides, once loaded
    assert module not in sys.modules
