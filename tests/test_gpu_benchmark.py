"""benchmarks/gpu.py runs every section end to end on the CPU at tiny sizes (`--device cpu --quick`).

Its numbers are a GPU's to give; here the sections' code paths, the JSON and the table are checked, and
the parts that do not depend on timing: agreement with open_clip, budgets met by the executed schedules,
and `torchrun --nproc_per_node 1` (gloo here, NCCL on a GPU) writing the records one process writes.
"""

from __future__ import annotations

import importlib
from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_quick_mode_runs_every_section_and_writes_json_and_table(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    gpu = importlib.import_module("gpu")
    result = gpu.main(["--device", "cpu", "--quick", "--out-dir", str(tmp_path)])
    assert result["schema_version"] == "cliprank.gpu/1"
    assert result["environment"]["device"] == "cpu" and result["environment"]["precision"] == "fp32,amp_bf16"
    assert result["targets"] == {"overhead_max": 1.05, "measured_over_ideal_min": 0.85}

    assert {r["precision"] for r in result["overhead"]} == {"fp32", "amp_bf16"}
    assert all(r["cosine_min"] >= 0.999 and r["ratio"] > 0 for r in result["overhead"])

    rows = result["speedups"]
    assert {(r["precision"], r["method"]) for r in rows if r["budget"] is None} == {
        ("fp32", "none"),
        ("amp_bf16", "none"),
    }
    assert {r["method"] for r in rows} >= {"topk", "evit", "tome", "ats", "random"}
    for row in rows:
        if row["budget"] is not None:  # every setting's executed cost is within its budget
            assert row["speedup_ideal"] >= 1 / row["budget"] - 1e-9, row

    assert result["search"]["images_per_second"] > 0 and result["search"]["precision"] == "fp32"
    run = result["torchrun"]
    assert run["backend"] == "gloo" and run["records"] == 3 and run["equal"], run
    table = (tmp_path / "gpu-cpu-quick.md").read_text()
    assert "| gloo | 3 | yes |" in table and "## Measured ÷ ideal speed-up" in table
