"""evaluate end to end: metrics, the classifier cache, report → compare, resume, golden from a search."""

from __future__ import annotations

import json
import math

import pytest
import torch
from cli_runner import run_cli as run

from cliprank import zeroshot
from cliprank.cli import main
from cliprank.evaluation.passes import InMemory
from cliprank.report.schema import load_report


def test_metrics_match_hand_computed_values() -> None:
    scores = torch.tensor([[0.9, 0.1, 0.0], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7], [0.5, 0.4, 0.1]])
    labels = torch.tensor([0, 1, 1, 1])
    result = zeroshot.metrics(scores, labels)
    assert result["acc1"] == pytest.approx(0.5)
    assert math.isnan(result["acc5"])  # fewer than 5 classes
    assert result["mean_per_class_recall"] == pytest.approx((1.0 + 1 / 3) / 2)
    wide = torch.eye(6) + 0.01 * torch.arange(6.0)  # class 0 is the least likely runner-up everywhere
    top = zeroshot.metrics(wide, torch.tensor([5, 1, 2, 3, 4, 0]))
    assert top["acc1"] == pytest.approx(4 / 6) and top["acc5"] == pytest.approx(5 / 6)


def test_classifier_is_cached_and_invalidated(tiny, monkeypatch) -> None:
    names, templates = ["cat", "dog"], ["a photo of a {c}."]
    first = zeroshot.zero_shot_classifier(tiny, names, templates)
    assert first.shape == (tiny.arch.output_dim, 2)

    def fail(*args, **kwargs):
        raise AssertionError("the cache should have been used")

    monkeypatch.setattr(zeroshot, "compute_classifier", fail)
    assert torch.equal(zeroshot.zero_shot_classifier(tiny, names, templates), first)
    with pytest.raises(AssertionError, match="cache"):
        zeroshot.zero_shot_classifier(tiny, names, ["a drawing of a {c}."])


ARGS = [
    "evaluate",
    "--pretrained",
    "none",
    "--method",
    "none,topk,random,tome",
    "--budget",
    "0.7",
    "--limit",
    "12",
    "--no-speed",
    "--no-flops",
    "--batch-size",
    "8",
]


def test_report_compare_round_trip_and_injected_regression(tmp_path) -> None:
    assert run([*ARGS, "--dataset", "faces", "--out", str(tmp_path / "a")]) == 0
    report = tmp_path / "a" / "report.json"
    assert run(["compare", str(report), str(report)]) == 0
    data = json.loads(report.read_text())
    topk = next(r for r in data["records"] if r["method"] == "topk")
    topk["metrics"]["acc1"] -= 0.05
    worse = tmp_path / "worse.json"
    worse.write_text(json.dumps(data))
    assert run(["compare", str(report), str(worse)]) == 2  # the per-image results no longer add up to acc1
    topk["acc1_per_image"] = topk["acc1_ci95"] = None
    worse.write_text(json.dumps(data))
    assert run(["compare", str(report), str(worse)]) == 1
    assert (tmp_path / "a" / "report.md").is_file() and (tmp_path / "a" / "accuracy_vs_gmacs.png").stat().st_size > 0


def test_records_carry_cost_and_schedule(tmp_path) -> None:
    assert run([*ARGS, "--dataset", "faces", "--out", str(tmp_path / "a")]) == 0
    records = {r.method: r for r in load_report(tmp_path / "a" / "report.json").records}
    assert records["none"].gmacs_fraction == pytest.approx(1.0)
    for name in ("topk", "random", "tome"):
        assert records[name].gmacs_fraction <= 0.7 + 1e-9
        assert records[name].gmacs == pytest.approx(records[name].gmacs_analytic)
    assert records["random"].schedule["attention"][:4] == [65.0, 65.0, 65.0, records["random"].schedule["mlp"][3]]


class Killed(Exception):
    """Stands for the process being killed mid-dataset."""


def test_interrupted_run_resumes_without_redoing_complete_records(tmp_path, monkeypatch) -> None:
    out = tmp_path / "run"
    real = InMemory.run
    seen: list[str] = []

    def crash_on_textiles(self, work, *args, **kwargs):
        seen.append(work.dataset.name)
        if work.dataset.name == "textiles":
            raise Killed
        return real(self, work, *args, **kwargs)

    monkeypatch.setattr(InMemory, "run", crash_on_textiles)
    with pytest.raises(Killed):
        main([*ARGS, "--dataset", "faces,textiles", "--out", str(out)])
    partial = load_report(out / "report.json")
    assert {r.dataset for r in partial.records} == {"faces"}
    seen.clear()
    monkeypatch.setattr(
        InMemory, "run", lambda self, work, *a, **k: (seen.append(work.dataset.name), real(self, work, *a, **k))[1]
    )
    assert run([*ARGS, "--dataset", "faces,textiles", "--out", str(out)]) == 0
    assert seen == ["textiles"]
    final = load_report(out / "report.json")
    assert {r.dataset for r in final.records} == {"faces", "textiles"}
    before = {r.key: r.metrics for r in partial.records}
    assert all(final.by_key()[key].metrics == metrics for key, metrics in before.items())


def test_golden_through_evaluate_matches_the_search(tmp_path) -> None:
    """evaluate's golden row, at the searched keep count, scores what the searched sets score."""
    rankings = tmp_path / "faces.rankings"
    assert (
        run(
            [
                "search",
                "--pretrained",
                "none",
                "--dataset",
                "faces",
                "--split",
                "test",
                "--limit",
                "8",
                "--score",
                "label",
                "--chunk-size",
                "3",
                "--out",
                str(rankings),
            ]
        )
        == 0
    )
    from cliprank.search.store import Rankings

    stored = Rankings.load(rankings)
    keep = stored.kept / 64
    out = tmp_path / "golden"
    assert (
        run(
            [
                "evaluate",
                "--pretrained",
                "none",
                "--dataset",
                "faces",
                "--limit",
                "8",
                "--method",
                f"none,golden(keep={keep}),topk(keep={keep})",
                "--rankings",
                str(rankings),
                "--no-speed",
                "--no-flops",
                "--out",
                str(out),
            ]
        )
        == 0
    )
    records = {r.method: r for r in load_report(out / "report.json").records}
    golden = records["golden"]
    assert golden.method_label == "oracle"
    assert golden.ranking_agreement is None  # an oracle is not judged against its own search
    assert records["topk"].ranking_agreement is not None
    assert -1 <= records["topk"].ranking_agreement.kendall_tau <= 1

    # The search's own kept sets, encoded directly, classify exactly as evaluate's golden row did.
    from cliprank.data import load_dataset, make_loader
    from cliprank.engine import Plan, TokenState
    from cliprank.engine.forward import embed, pool, run_blocks
    from cliprank.models import load_model

    model = load_model("cliprank-tiny", "none")
    dataset = load_dataset("faces", "test", transform=model.preprocess, limit=8)
    classifier = zeroshot.zero_shot_classifier(model, dataset.classnames, dataset.templates)
    images, labels, indices = next(iter(make_loader(dataset, batch_size=8)))
    rows = [stored.index.tolist().index(int(i)) for i in indices]
    kept = stored.step_of[rows] < 0
    with torch.no_grad():
        state = run_blocks(model.visual, embed(model.visual, images), Plan.identity(6), stop=3)
        index = torch.stack([row.nonzero().squeeze(1) for row in kept])
        pruned = TokenState.initial(state.x).keep_body(index)
        embeddings = pool(model.visual, run_blocks(model.visual, pruned, Plan.identity(6), start=3))
    accuracy = zeroshot.metrics(zeroshot.logits(embeddings, classifier), labels)["acc1"]
    assert golden.metrics["acc1"] == pytest.approx(accuracy)


def test_unreadable_images_are_skipped_when_asked_and_named_in_the_report(tmp_path) -> None:
    from PIL import Image

    photos = tmp_path / "photos"
    for label in ("cat", "dog"):
        (photos / label).mkdir(parents=True)
        for k in range(3):
            Image.new("RGB", (16, 16), (80 * k, 40, 0)).save(photos / label / f"{k}.png")
    (photos / "dog" / "scraped.jpg").write_bytes(b"<html>not found</html>")
    argv = ["evaluate", "--pretrained", "none", "--dataset", f"imagefolder:{photos}", "--method", "none,topk"]
    argv += ["--budget", "0.7", "--no-speed", "--no-flops", "--patch-maps", "0", "--out", str(tmp_path / "run")]
    assert run(argv) == 2  # by default the first unreadable image stops the run
    assert run([*argv, "--skip-unreadable"]) == 0
    records = load_report(tmp_path / "run" / "report.json").records
    assert {record.images for record in records} == {6}
    assert all(record.extra["skipped_images"] == ["dog/scraped.jpg"] for record in records)
    assert (
        "1 unreadable image file(s) left out (`--skip-unreadable`): `dog/scraped.jpg`"
        in (tmp_path / "run" / "report.md").read_text()
    )
