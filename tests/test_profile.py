"""`cliprank profile`: rows, GMACs, schedules, parameters, speed and memory, in JSON and Markdown.

Timings are recorded, never asserted: they depend on the machine and its load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from typer.testing import CliRunner

from cliprank.cli import _register_commands
from cliprank.commands import app
from cliprank.cost.analytic import Schedule
from cliprank.engine import ReducedVisual
from cliprank.errors import CliprankError
from cliprank.methods import Resources, method_class
from cliprank.methods.budget import solve_rows
from cliprank.models.loading import load_model
from cliprank.profiling import check_schedule, method_parameters
from cliprank.report.profile import CONVENTION, SCHEMA_VERSION, compact_schedule
from cliprank.speed import measure_peak_memory

os.environ["HF_HUB_OFFLINE"] = "1"
TINY = ["--model", "cliprank-tiny", "--pretrained", "none"]
QUICK = ["--batch-size", "2", "--repeats", "1", "--warmup", "0", "--images", "2"]


# ----- the pipeline's pieces --------------------------------------------------------------------------


def test_rows_start_with_the_unpruned_model_and_explicit_knobs_ignore_budgets(tiny):
    rows = solve_rows(tiny.arch, [("random", {}), ("topk", {"keep": 0.5}), ("none", {})], [0.7, 0.8])
    assert [(row.spec, row.budget) for row in rows] == [
        ("none", None),
        ("random", 0.7),
        ("random", 0.8),
        ("topk(keep=0.5)", None),
    ]


def test_rows_refuse_out_of_range_budgets_and_unknown_methods(tiny):
    with pytest.raises(CliprankError, match="out of range"):
        solve_rows(tiny.arch, [("random", {})], [1.5])
    with pytest.raises(CliprankError, match="unknown method"):
        solve_rows(tiny.arch, [("nosuch", {})], [0.7])


def test_schedule_check_is_exact_for_fixed_methods_and_a_bound_for_adaptive_ones():
    declared = Schedule(attention=(5.0, 5.0), mlp=(5.0, 3.0))
    assert check_schedule(declared, [(5.0, 5.0), (5.0, 3.0)], adaptive=False) == "matches"
    assert check_schedule(declared, [(5.0, 5.0), (5.0, 2.0)], adaptive=False) == "differs"
    assert check_schedule(declared, [(5.0, 4.5), (4.5, 2.5)], adaptive=True) == "within bound"
    assert check_schedule(declared, [(5.0, 5.0), (5.0, 3.5)], adaptive=True) == "exceeds bound"


def test_compact_schedule_run_length_encodes():
    assert compact_schedule([197, 197, 197, 119, 119, 60.5]) == "197×3 119×2 60.5"


def test_method_parameters_count_what_the_method_adds():
    tiny = load_model("cliprank-tiny", "none")
    method = method_class("none")(tiny.arch, Resources(tokens=torch.zeros(4, tiny.arch.width)))
    assert method_parameters(method) == 4 * tiny.arch.width
    assert method_parameters(method_class("none")(tiny.arch)) == 0


def test_cpu_peak_memory_is_measured_and_says_what_it_is():
    tiny = load_model("cliprank-tiny", "none")
    module = ReducedVisual(tiny.visual, method_class("none")(tiny.arch).plan())
    memory = measure_peak_memory(module, torch.randn(2, 3, *tiny.arch.image_size))
    assert memory.peak_bytes is not None and memory.peak_bytes > 0
    assert "peak" in memory.measure


# ----- the command --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    """One real run, from a recipe overridden on the command line: none, random at 0.7, topk(keep=0.5)."""
    _register_commands()
    directory = tmp_path_factory.mktemp("profile")
    recipe = directory / "recipe.yaml"
    recipe.write_text("method: [random, 'topk(keep=0.5)']\nbudget: 0.7\nbatch-size: 2\nrepeats: 1\nwarmup: 0\n")
    result = CliRunner().invoke(
        app, ["profile", *TINY, "--images", "2", "--recipe", str(recipe), "--out", str(directory / "out")]
    )
    assert result.exit_code == 0, result.output
    return result, directory / "out"


def test_profile_writes_versioned_json_with_every_field(profiled):
    _, out = profiled
    data = json.loads((out / "profile.json").read_text())
    assert data["schema_version"] == SCHEMA_VERSION == "cliprank.profile/1"
    assert data["convention"] == CONVENTION
    for key in ("cliprank", "torch", "open_clip", "device", "threads", "git_revision"):
        assert key in data["environment"]
    assert [(row["spec"], row["budget"]) for row in data["rows"]] == [
        ("none", None),
        ("random", 0.7),
        ("topk(keep=0.5)", None),
    ]
    for row in data["rows"]:
        gmacs = row["gmacs"]
        assert gmacs["counted"] > 0 and gmacs["analytic"] > 0 and not gmacs["flagged"]
        assert row["schedule"]["check"] == "matches"
        assert row["schedule"]["executed"] == row["schedule"]["declared"]
        assert row["parameters"]["image_tower"] > 0 and row["parameters"]["method"] == 0
        assert row["throughput"]["batch_size"] == 2 and row["throughput"]["repeats"] == 1
        assert row["throughput"]["images_per_second"] > 0 and row["latency_ms_batch1"] > 0
        assert row["memory"]["peak_bytes"] > 0 and row["memory"]["measure"]
    assert data["images"]["source"] == "seeded random noise" and data["images"]["count"] == 2
    random_row = data["rows"][1]
    assert random_row["gmacs_fraction"] <= 0.7 * 1.01  # solved to the budget (counted within 1% of analytic)
    assert random_row["params"]["keep"] < 1


def test_profile_writes_markdown_and_prints_tables_with_the_convention(profiled):
    result, out = profiled
    markdown = (out / "profile.md").read_text()
    assert CONVENTION in markdown and "topk(keep=0.5)" in markdown and "| matches |" in markdown
    assert "fvcore convention" in result.output and "random" in result.output


def test_profile_on_a_dataset_says_what_it_measured(tmp_path):
    """Real images are named as such: nothing claims noise, the adaptive row says what it averaged."""
    _register_commands()
    out = tmp_path / "out"
    argv = ["profile", *TINY, *QUICK, "--method", "ats", "--budget", "0.7", "--dataset", "faces", "--out", str(out)]
    result = CliRunner().invoke(app, argv)
    assert result.exit_code == 0, result.output
    data = json.loads((out / "profile.json").read_text())
    assert data["images"]["source"] == "faces (test)"
    ats_notes = " ".join(data["rows"][1]["notes"])
    assert "faces (test)" in ats_notes and "noise" not in ats_notes
    markdown = (out / "profile.md").read_text()
    assert "faces (test)" in markdown and "noise" not in markdown


def test_the_installed_entry_point_reports_errors_without_a_traceback():
    done = subprocess.run(
        [sys.executable, "-m", "cliprank", "profile", *TINY, "--method", "nosuch"],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in done.stderr
