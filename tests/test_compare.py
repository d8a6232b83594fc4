"""`cliprank compare`: exit 0 when nothing regressed, 1 on a regression, 2 when the input is unusable."""

from __future__ import annotations

import json
import math
from dataclasses import replace
from pathlib import Path

import pytest

from cliprank.cli import main
from cliprank.report import Environment, Record, Report, Throughput, save_report
from cliprank.report.compare import Tolerances, compare_reports, render_summary


def environment(**changes) -> Environment:
    values = dict(
        cliprank="0.1.0", torch="2.0", open_clip="3.0", python="3.11", platform="Linux", device="cpu",
        precision="fp32", threads=2, seed=0, git_revision=None,
    )  # fmt: skip
    return Environment(**{**values, **changes})


def record(dataset: str, method: str, budget: float | None, acc1: float, gmacs: float, **changes) -> Record:
    values = dict(
        dataset=dataset, model="cliprank-tiny", pretrained="embedded", method=method, method_spec=method,
        budget=budget, metrics={"acc1": acc1, "acc5": math.nan, "mean_per_class_recall": acc1},
        params={}, schedule={"attention": [65], "mlp": [65]}, gmacs=gmacs, gmacs_analytic=gmacs,
        gmacs_fraction=gmacs / 0.2, image_tower_params=1000, images=100, dataset_fingerprint="d",
        model_fingerprint="m",
        throughput=Throughput(images_per_second=400.0, batch_size=64, warmup=1, repeats=3, threads=2),
    )  # fmt: skip
    return Record(**{**values, **changes})


def baseline() -> Report:
    return Report(
        environment=environment(),
        records=[
            record("digits", "none", None, 0.90, 0.20),
            record("digits", "tome", 0.7, 0.88, 0.14),
            record("digits", "golden", 0.7, 0.93, 0.14, method_label="oracle"),
        ],
    )


def changed(report: Report, index: int, **changes) -> Report:
    records = list(report.records)
    records[index] = replace(records[index], **changes)
    return replace(report, records=records)


def with_acc1(report: Report, index: int, acc1: float) -> Report:
    return changed(report, index, metrics={**report.records[index].metrics, "acc1": acc1})


def run(tmp_path: Path, base: Report, new: Report, *options: str, capsys) -> tuple[int, str, str]:
    save_report(base, tmp_path / "base.json")
    save_report(new, tmp_path / "new.json")
    return invoke([str(tmp_path / "base.json"), str(tmp_path / "new.json"), *options], capsys)


def invoke(argv: list[str], capsys) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as exited:
        main(["compare", *argv])
    out, err = capsys.readouterr()
    return exited.value.code, out, err


# --- the comparison itself -------------------------------------------------------------------------------


def test_identical_reports_have_no_changes():
    result = compare_reports(baseline(), baseline())
    assert (result.compared, result.regressions, result.improvements, result.exit_code) == (3, [], [], 0)


def test_a_drop_exactly_at_the_tolerance_passes_and_beyond_it_regresses():
    assert compare_reports(baseline(), with_acc1(baseline(), 1, 0.875)).exit_code == 0
    result = compare_reports(baseline(), with_acc1(baseline(), 1, 0.874))
    assert [(c.metric, c.record.method) for c in result.regressions] == [("acc1", "tome")]
    assert result.exit_code == 1


def test_accuracy_gains_and_cost_savings_are_improvements():
    result = compare_reports(baseline(), changed(with_acc1(baseline(), 1, 0.90), 1, gmacs=0.13))
    assert [c.metric for c in result.improvements] == ["acc1", "GMACs"]
    assert result.exit_code == 0


def test_throughput_is_gated_only_when_asked():
    slower = changed(baseline(), 1, throughput=Throughput(300.0, 64, 1, 3, 2))
    assert compare_reports(baseline(), slower).exit_code == 0
    result = compare_reports(baseline(), slower, Tolerances(throughput_relative=0.1))
    assert [c.metric for c in result.regressions] == ["img/s"]
    assert result.regressions[0].text == ("400.0", "300.0", "-25.0%")


def test_missing_records_make_the_comparison_unusable_and_new_ones_are_listed():
    new = replace(baseline(), records=[*baseline().records[:2], record("shapes", "none", None, 0.7, 0.2)])
    result = compare_reports(baseline(), new)
    assert result.missing == ["cliprank-tiny/embedded|digits|golden|0.7"]
    assert result.added == ["cliprank-tiny/embedded|shapes|none|-"]
    assert result.exit_code == 2


def test_summary_states_verdict_counts_and_differing_environments():
    new = replace(with_acc1(baseline(), 1, 0.80), environment=environment(device="cuda"))
    new = changed(new, 0, dataset_fingerprint="other")
    tolerances = Tolerances()
    text = render_summary(compare_reports(baseline(), new, tolerances), "base.json", "new.json", tolerances)
    assert text.startswith("## cliprank compare: ❌ 1 regression(s)")
    assert "| 3 | 1 | 0 | 0 | 0 |" in text
    assert "| digits | tome | 0.7 | acc1 | 88.00 | 80.00 | -8.00 pts |" in text
    assert "device cpu → cuda" in text
    assert "dataset_fingerprint differs for 1 record(s)" in text


# --- the command -----------------------------------------------------------------------------------------


def test_identical_reports_exit_0(tmp_path, capsys):
    code, out, _ = run(tmp_path, baseline(), baseline(), capsys=capsys)
    assert code == 0
    assert "✅ no regressions" in out


def test_an_accuracy_regression_exits_1_and_names_it(tmp_path, capsys):
    code, out, _ = run(tmp_path, baseline(), with_acc1(baseline(), 2, 0.91), capsys=capsys)
    assert code == 1
    assert "| digits | golden (oracle) | 0.7 | acc1 | 93.00 | 91.00 | -2.00 pts |" in out


def test_a_gmacs_regression_exits_1(tmp_path, capsys):
    code, out, _ = run(tmp_path, baseline(), changed(baseline(), 1, gmacs=0.15), capsys=capsys)
    assert code == 1
    assert "| digits | tome | 0.7 | GMACs | 0.14 | 0.15 | +7.1% |" in out


def test_tolerances_come_from_options_or_a_recipe(tmp_path, capsys):
    new = with_acc1(baseline(), 1, 0.86)
    assert run(tmp_path, baseline(), new, "--acc-tol", "3", capsys=capsys)[0] == 0
    recipe = tmp_path / "gate.yaml"
    recipe.write_text("acc-tol: 3\n")
    assert run(tmp_path, baseline(), new, "--recipe", str(recipe), capsys=capsys)[0] == 0
    assert run(tmp_path, baseline(), new, capsys=capsys)[0] == 1


def test_summary_file_receives_the_same_markdown(tmp_path, capsys):
    summary = tmp_path / "step_summary.md"
    summary.write_text("earlier step\n")
    code, out, _ = run(tmp_path, baseline(), baseline(), "--summary", str(summary), capsys=capsys)
    assert code == 0
    assert summary.read_text() == "earlier step\n" + out


def test_missing_records_exit_2_listing_them(tmp_path, capsys):
    new = replace(baseline(), records=baseline().records[:1])
    code, out, err = run(tmp_path, baseline(), new, capsys=capsys)
    assert code == 2
    assert "### Missing in NEW" in out
    assert len(err.strip().splitlines()) == 1
    assert "lacks 2 record(s)" in err and "cliprank-tiny/embedded|digits|tome|0.7" in err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read report"),
        ("[1, 2", "is not valid JSON"),
        (json.dumps({"dataset": "cifar10", "metrics": {"acc1": 0.9}}), "no schema_version"),
    ],
)
def test_unusable_input_exits_2_with_one_line_and_no_traceback(tmp_path, capsys, content, expected):
    save_report(baseline(), tmp_path / "base.json")
    if content is not None:
        (tmp_path / "new.json").write_text(content)
    code, out, err = invoke([str(tmp_path / "base.json"), str(tmp_path / "new.json")], capsys)
    assert code == 2
    assert out == ""
    assert len(err.strip().splitlines()) == 1
    assert expected in err and "new.json" in err and "Traceback" not in err
