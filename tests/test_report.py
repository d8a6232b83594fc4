"""The report layer: schema round trip, validation, Markdown, plot, and resumable atomic writing."""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

import cliprank.io
from cliprank.errors import CliprankError
from cliprank.report import (
    SCHEMA_VERSION,
    Environment,
    RankingAgreement,
    Record,
    Report,
    ReportWriter,
    Throughput,
    load_report,
    record_key,
    save_report,
    validate_report,
)
from cliprank.report.markdown import render_markdown
from cliprank.report.plot import save_plot
from cliprank.report.schema import json_ready

FULL_GMACS = 0.2


def environment(**changes) -> Environment:
    values = dict(
        cliprank="0.1.0", torch="2.0", open_clip="3.0", python="3.11", platform="Linux", device="cpu",
        precision="fp32", threads=2, seed=0, git_revision="abc123",
    )  # fmt: skip
    return Environment(**{**values, **changes})


def record(dataset: str, method: str, budget: float | None, acc1: float, **changes) -> Record:
    gmacs = FULL_GMACS * (budget or 1.0)
    values = dict(
        dataset=dataset, model="cliprank-tiny", pretrained="embedded", method=method, method_spec=method,
        budget=budget, metrics={"acc1": acc1, "acc5": math.nan, "mean_per_class_recall": acc1 - 0.01},
        params={} if method == "none" else {"r": 3}, schedule={"attention": [65, 65, 50], "mlp": [65, 50, 50]},
        gmacs=gmacs, gmacs_analytic=gmacs, gmacs_fraction=gmacs / FULL_GMACS, image_tower_params=2744064,
        images=500, dataset_fingerprint="d0", model_fingerprint="m0",
        throughput=Throughput(images_per_second=500.0, batch_size=64, warmup=1, repeats=3, threads=2),
    )  # fmt: skip
    return Record(**{**values, **changes})


def sample_report() -> Report:
    """Two datasets; tome and golden at budgets 0.7 and 0.5 against the unpruned model."""
    agreement = RankingAgreement(kendall_tau=1.0, top_k_overlap=1.0, k=26)
    records = [
        record("digits", "none", None, 0.90),
        record("digits", "tome", 0.7, 0.88),
        record("digits", "tome", 0.5, 0.80),
        record("digits", "golden", 0.7, 0.93, method_label="oracle", ranking_agreement=agreement),
        record("shapes", "none", None, 0.70),
        record("shapes", "tome", 0.7, 0.66),
        record("shapes", "tome", 0.5, 0.60),
    ]
    return Report(environment=environment(), records=records, created="2026-11-28T17:00:00Z")


# --- schema --------------------------------------------------------------------------------------------


def test_round_trip_keeps_every_field_and_writes_nan_as_null(tmp_path):
    report = sample_report()
    path = tmp_path / "report.json"
    save_report(report, path)

    raw = json.loads(path.read_text(), parse_constant=lambda token: pytest.fail(f"non-JSON token {token}"))
    assert raw["schema_version"] == SCHEMA_VERSION
    assert raw["records"][0]["metrics"]["acc5"] is None
    assert raw["records"][1]["key"] == "cliprank-tiny/embedded|digits|tome|0.7"

    loaded = load_report(path)
    assert math.isnan(loaded.records[0].metrics["acc5"])
    assert loaded.records[0].gmacs_counted is None
    assert loaded.records[3].ranking_agreement == RankingAgreement(kendall_tau=1.0, top_k_overlap=1.0, k=26)
    assert loaded.environment == report.environment
    save_report(loaded, tmp_path / "again.json")
    assert (tmp_path / "again.json").read_text() == path.read_text()


def test_record_key_names_model_dataset_method_and_budget():
    assert record_key("ViT-B-16", "openai", "pets", "tome", 0.7) == "ViT-B-16/openai|pets|tome|0.7"
    assert record_key("ViT-B-16", "openai", "pets", "none", None) == "ViT-B-16/openai|pets|none|-"


def test_a_valid_report_has_no_problems():
    assert validate_report(sample_report().to_dict()) == []


@pytest.mark.parametrize(
    ("corrupt", "expected"),
    [
        (lambda r: r.pop("gmacs"), "missing 'gmacs'"),
        (lambda r: r.update(images="500"), "'images' must be an integer"),
        (lambda r: r.update(colour="blue"), "unknown field 'colour'"),
        (lambda r: r["metrics"].pop("acc1"), "lacks acc1"),
        (lambda r: r["metrics"].update(acc1=None), "acc1 must be a finite number"),
        (lambda r: r.update(budget=0.5), "does not match its fields"),
        (lambda r: r["schedule"].update(mlp=[1]), "differ in length"),
        (lambda r: r.update(throughput={"images_per_second": 1.0}), "'throughput' must be an object with exactly"),
    ],
)
def test_validation_names_the_record_and_the_problem(corrupt, expected):
    data = sample_report().to_dict()
    corrupt(data["records"][1])
    problems = validate_report(data)
    assert len(problems) == 1
    assert problems[0].startswith("records[1]") and expected in problems[0]


def test_optional_fields_may_be_absent():
    data = sample_report().to_dict()
    for name in ("method_label", "gmacs_counted", "throughput", "latency_ms", "peak_memory_mb", "extra"):
        data["records"][0].pop(name)
    assert validate_report(data) == []


def test_duplicate_keys_and_foreign_schemas_are_problems():
    data = sample_report().to_dict()
    data["records"].append(data["records"][0])
    assert any("duplicate key" in p for p in validate_report(data))
    assert validate_report({"dataset": "cifar10", "metrics": {}}) == [
        f"no schema_version; expected '{SCHEMA_VERSION}' (is this a cliprank report?)"
    ]


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "cannot read report"),
        ("{not json", "is not valid JSON"),
        (json.dumps({"schema_version": "cliprank.report/0", "records": []}), "schema_version 'cliprank.report/0'"),
        (json.dumps({"schema_version": SCHEMA_VERSION}), "is unusable"),
    ],
)
def test_unusable_files_raise_one_line_naming_the_file(tmp_path, content, expected):
    path = tmp_path / "report.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CliprankError) as caught:
        load_report(path)
    message = str(caught.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_saving_an_invalid_report_is_refused(tmp_path):
    report = sample_report()
    report.records[0].gmacs = math.nan
    with pytest.raises(ValueError, match="gmacs"):
        save_report(report, tmp_path / "report.json")
    assert not (tmp_path / "report.json").exists()


def test_environment_collect_records_versions_and_settings():
    env = Environment.collect(device="cpu", precision="fp32", threads=2, seed=0)
    assert env.cliprank and env.torch and env.python
    assert (env.device, env.precision, env.threads, env.seed) == ("cpu", "fp32", 2, 0)


# --- markdown ------------------------------------------------------------------------------------------


def test_markdown_tables_show_accuracy_delta_and_cost_per_budget():
    text = render_markdown(sample_report())
    digits = text.split("## digits")[1].split("## shapes")[0]
    lines = [line for line in digits.splitlines() if line.startswith("|")]
    assert lines[0] == (
        "| method | acc1 @0.7 | Δ @0.7 | GMACs @0.7 | img/s @0.7 | acc1 @0.5 | Δ @0.5 | GMACs @0.5 | img/s @0.5 |"
    )
    assert lines[2] == "| none (unpruned) | 90.00 | — | 0.2 (100%) | 500 | 90.00 | — | 0.2 (100%) | 500 |"
    assert lines[3] == "| golden (oracle) | 93.00 | +3.00 | 0.14 (70%) | 500 |  |  |  |  |"
    assert lines[4] == "| tome | 88.00 | -2.00 | 0.14 (70%) | 500 | 80.00 | -10.00 | 0.1 (50%) | 500 |"


def test_markdown_keeps_a_no_budget_column_group_when_a_method_ran_without_budget():
    report = sample_report()
    report.records.append(record("digits", "tome:r=8", None, 0.85))
    digits = render_markdown(report).split("## digits")[1].split("## shapes")[0]
    assert "| method | acc1 | Δ | GMACs | img/s | acc1 @0.7 |" in digits
    assert "| tome:r=8 | 85.00 | -5.00 | 0.2 (100%) | 500 |  |" in digits


def test_markdown_mean_table_averages_over_datasets_and_marks_partial_cells():
    text = render_markdown(sample_report())
    mean = text.split("## Mean over 2 datasets")[1].split("##")[0]
    assert "| none (unpruned) | 80.00 | — | 80.00 | — |" in mean
    assert "| tome | 77.00 | -3.00 | 70.00 | -10.00 |" in mean
    assert "| golden (oracle) | 93.00† | +3.00 |  |  |" in mean
    assert "† mean over fewer than all 2 datasets." in mean


def test_markdown_header_agreement_and_details():
    text = render_markdown(sample_report())
    assert "`cliprank-tiny` / `embedded` (2,744,064 image-tower parameters)" in text
    assert "fvcore (1 MAC = 1 FLOP), image tower" in text
    assert "cpu, fp32, 2 threads, seed 0" in text
    assert "digits 500, shapes 500" in text
    assert "| digits | golden (oracle) | 0.7 | 1.000 | 1.000 | 26 |" in text
    assert "65×2, 50" in text  # the attention schedule, run-length encoded
    assert "| n/a |" in text  # acc5 under five classes


def test_markdown_says_what_the_predictor_was_trained_on():
    report = sample_report()
    assert "Predictor trained on" not in render_markdown(report)
    report.records.append(record("digits", "predictor", 0.7, 0.8, extra={"predictor_trained_on": ["digits"]}))
    assert "- **Predictor trained on:** digits" in render_markdown(report)


def test_markdown_is_independent_of_record_order():
    report = sample_report()
    shuffled = Report(environment=report.environment, records=report.records[::-1], created=report.created)
    assert render_markdown(shuffled) == render_markdown(report)


# --- plot ----------------------------------------------------------------------------------------------


def test_plot_is_a_png(tmp_path):
    path = save_plot(sample_report(), tmp_path / "accuracy_vs_gmacs.png")
    data = path.read_bytes()
    assert data.startswith(b"\x89PNG") and len(data) > 10_000


# --- writer --------------------------------------------------------------------------------------------


def test_writer_resumes_and_skips_complete_records(tmp_path):
    first = ReportWriter(tmp_path, environment())
    done = record("digits", "none", None, 0.9)
    first.add(done)

    resumed = ReportWriter(tmp_path, environment(git_revision="def456", threads=4))
    same = (done.model_fingerprint, done.dataset_fingerprint)
    assert resumed.has(done.key, *same)
    assert not resumed.has(record_key("cliprank-tiny", "embedded", "digits", "tome", 0.7), *same)
    with pytest.raises(CliprankError, match="other weights or images"):
        resumed.has(done.key, "retrained-model", done.dataset_fingerprint)
    resumed.add(record("digits", "tome", 0.7, 0.85))
    resumed.add(record("digits", "tome", 0.7, 0.86))  # same key: replaced, not duplicated

    stored = load_report(tmp_path / "report.json")
    assert [r.key for r in stored.records] == [done.key, "cliprank-tiny/embedded|digits|tome|0.7"]
    assert stored.records[1].acc1 == 0.86
    assert stored.environment.git_revision == "def456"  # refreshed on each write


def test_writer_refuses_to_resume_under_other_settings(tmp_path):
    ReportWriter(tmp_path, environment()).add(record("digits", "none", None, 0.9))
    with pytest.raises(CliprankError, match="device cpu → cuda"):
        ReportWriter(tmp_path, environment(device="cuda"))


def test_a_crash_while_writing_leaves_the_previous_complete_report(tmp_path, monkeypatch):
    writer = ReportWriter(tmp_path, environment())
    writer.add(record("digits", "none", None, 0.9))
    before = (tmp_path / "report.json").read_bytes()

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cliprank.io.os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        writer.add(record("digits", "tome", 0.7, 0.85))
    monkeypatch.undo()

    assert (tmp_path / "report.json").read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == [".report.json.lock", "report.json"]  # no temporary file left behind
    assert len(ReportWriter(tmp_path, environment()).records) == 1


def test_atomic_writes_get_the_umask_mode_not_mkstemps_0600(tmp_path):
    path = tmp_path / "out.txt"
    cliprank.io.atomic_write_text(path, "x")
    assert path.stat().st_mode & 0o777 == cliprank.io._DEFAULT_MODE


def test_writer_rejects_an_incomplete_record(tmp_path):
    with pytest.raises(ValueError, match="image_tower_params"):
        ReportWriter(tmp_path, environment()).add(record("digits", "none", None, 0.9, image_tower_params=None))


def test_finalize_writes_json_markdown_and_plot(tmp_path):
    writer = ReportWriter(tmp_path, environment())
    for item in sample_report().records:
        writer.add(item)
    written = writer.finalize()
    assert [p.name for p in written] == ["report.json", "report.md", "accuracy_vs_gmacs.png"]
    assert "## shapes" in Path(tmp_path / "report.md").read_text()
    assert (tmp_path / "accuracy_vs_gmacs.png").stat().st_size > 0


def test_writer_normalises_records_to_what_a_resumed_run_loads(tmp_path):
    import numpy as np

    timing = {"images_per_second": 9.0, "batch_size": 1, "warmup": 0, "repeats": 1, "threads": 1}
    writer = ReportWriter(tmp_path, environment())
    writer.add(record("digits", "none", None, np.float32(0.5), throughput=timing))

    held = writer.records[0]
    assert type(held.acc1) is float and held.throughput == Throughput(**timing)
    reloaded = ReportWriter(tmp_path, environment()).records[0]
    assert json_ready(held.to_dict()) == json_ready(reloaded.to_dict())


def test_two_runs_into_one_folder_keep_each_others_records(tmp_path):
    first, second = ReportWriter(tmp_path, environment()), ReportWriter(tmp_path, environment())
    first.add(record("digits", "none", None, 0.9))
    second.add(record("faces", "tome", 0.7, 0.8))  # it started before the first wrote anything
    first.add(record("digits", "tome", 0.7, 0.85))
    first.finalize()
    second.finalize()  # the last to finish writes everything, its own records and the other's
    stored = {r.key for r in load_report(tmp_path / "report.json").records}
    assert stored == {r.key for r in [*first.records, *second.records]} and len(stored) == 3
    assert "## faces" in (tmp_path / "report.md").read_text() and "## digits" in (tmp_path / "report.md").read_text()


def test_a_concurrent_run_with_other_settings_is_refused_not_mixed_in(tmp_path):
    first, second = ReportWriter(tmp_path, environment()), ReportWriter(tmp_path, environment(seed=1))
    first.add(record("digits", "none", None, 0.9))
    with pytest.raises(CliprankError, match="seed 0 → 1"):
        second.add(record("faces", "none", None, 0.8))
    assert [r.dataset for r in load_report(tmp_path / "report.json").records] == ["digits"]


def _add_records(folder: Path, prefix: str, count: int) -> None:
    writer = ReportWriter(folder, environment())
    for index in range(count):
        writer.add(record(f"{prefix}-{index}", "none", None, 0.5))


def test_concurrent_processes_writing_one_report_lose_no_record(tmp_path):
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_add_records, args=(tmp_path, name, 8)) for name in ("a", "b", "c")]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert len(load_report(tmp_path / "report.json").records) == 24


def test_later_writes_remove_the_temporaries_of_dead_writers_only(tmp_path):
    """A kill between write and rename leaves `.NAME.HOST~PID~XXXX.tmp`; the next write into the folder
    removes it once its writer is gone, and never touches a live writer's file or one that is not cliprank's."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    host, day_ago = cliprank.io._HOST, time.time() - 2 * cliprank.io.STALE_AFTER_S
    names = {
        f".report.json.{host}~{dead.pid}~abcdefgh.tmp": "removed",  # its writer died
        f".report.md.{host}~{os.getppid()}~abcdefgh.tmp": "kept",  # its writer is alive
        ".report.json.elsewhere~123~abcdefgh.tmp": "kept",  # another machine's, recent
        ".plot.png.elsewhere~123~abcdefgh.tmp": "removed",  # another machine's, two days old
        ".report.json.a1b2c3d4.tmp": "removed",  # an older cliprank's, two days old
        ".notes.txt.a1b2c3d4.tmp": "kept",  # not the file being written: not known to be cliprank's
        ".editor.tmp": "kept",
    }
    for name in names:
        (tmp_path / name).write_text("partial")
        if name.startswith((".plot", ".report.json.a1", ".notes")):
            os.utime(tmp_path / name, (day_ago, day_ago))
    cliprank.io.atomic_write_text(tmp_path / "report.json", "complete")
    assert {name for name in names if (tmp_path / name).exists()} == {n for n, fate in names.items() if fate == "kept"}
