"""The golden-ranking search: greedy semantics, units, score modes, the store, resume, golden pruning."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cliprank.data.meta import image_hashes
from cliprank.engine import Plan, encode
from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.budget import solve
from cliprank.search.greedy import SearchSettings, greedy_rankings, ranking_to_scores, search_batch
from cliprank.search.store import RankingIndex, RankingLookup, Rankings, RankingsMeta, RankingStore
from cliprank.search.units import make_units


def planted_scorer(weights: torch.Tensor):
    """Score of a kept set = sum of planted patch weights: greedy must follow the weights exactly."""

    def score(image_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        return (keep.float() * weights[image_ids]).sum(1)

    return score


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_greedy_recovers_planted_order_with_single_patches(direction: str) -> None:
    weights = torch.randn(3, 20, generator=torch.Generator().manual_seed(0))
    settings = SearchSettings(unit=1, step_tokens=3, total=0.5, direction=direction)
    result = greedy_rankings(planted_scorer(weights), 3, (4, 5), settings)
    assert torch.equal(result.ranking, weights.argsort(dim=1, descending=True))


def test_backward_removes_least_important_first_and_records_steps() -> None:
    weights = torch.arange(16, dtype=torch.float32)[None]  # patch 0 least important
    result = greedy_rankings(planted_scorer(weights), 1, (4, 4), SearchSettings(unit=1, step_tokens=2, total=0.5))
    assert result.step_of[0, :8].tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert (result.step_of[0, 8:] == -1).all()
    assert result.ranking[0, -1] == 0  # removed first = least important = last
    trajectory = result.trajectory[0]
    assert trajectory[0] == weights.sum() and torch.all(trajectory[1:] <= trajectory[:-1])


def test_units_cover_non_divisible_grids() -> None:
    units = make_units((5, 3), 2)
    assert sorted(p for unit in units for p in unit) == list(range(15))
    assert [len(u) for u in units] == [4, 2, 4, 2, 2, 1]


def test_block_units_move_together() -> None:
    weights = torch.randn(1, 25, generator=torch.Generator().manual_seed(3))
    result = greedy_rankings(planted_scorer(weights), 1, (5, 5), SearchSettings(unit=2, step_tokens=4, total=0.4))
    for unit in make_units((5, 5), 2):
        assert len(set(result.step_of[0, unit].tolist())) == 1


def test_ranking_is_a_permutation_on_a_real_tower(tiny, tiny_images) -> None:
    for settings in (SearchSettings(), SearchSettings(unit=3, direction="forward"), SearchSettings(unit=1, total=0.2)):
        result, evaluator = search_batch(tiny.visual, tiny.arch, tiny_images, settings, max_batch_tokens=4096)
        assert all(sorted(row.tolist()) == list(range(64)) for row in result.ranking)
        assert evaluator.token_count > 0


def test_label_and_max_scores_need_a_classifier(tiny, tiny_images) -> None:
    with pytest.raises(CliprankError, match="classifier"):
        search_batch(tiny.visual, tiny.arch, tiny_images, SearchSettings(score="label"))
    classifier = F.normalize(torch.randn(tiny.arch.output_dim, 5), dim=0)
    labels = torch.tensor([0, 1, 2, 3])
    result, _ = search_batch(tiny.visual, tiny.arch, tiny_images, SearchSettings(score="label"), classifier, labels)
    assert result.trajectory.shape[0] == 4
    result, _ = search_batch(tiny.visual, tiny.arch, tiny_images, SearchSettings(score="max"), classifier)
    assert result.ranking.shape == (4, 64)


def test_bad_settings_are_refused(tiny) -> None:
    for bad in (SearchSettings(block=0), SearchSettings(unit=9), SearchSettings(total=1.0), SearchSettings(score="x")):
        with pytest.raises(CliprankError):
            bad.validate(tiny.arch)


def _meta(tiny, images: int = 4) -> RankingsMeta:
    return RankingsMeta(
        model=tiny.name,
        pretrained=tiny.pretrained,
        model_fingerprint=tiny.fingerprint,
        dataset="toy",
        split="test",
        dataset_fingerprint="abc",
        images=images,
        patches=64,
        grid=(8, 8),
        settings={
            "block": 3,
            "unit": 2,
            "step_tokens": 10,
            "total": 0.4,
            "score": "similarity",
            "direction": "backward",
        },
        chunk_size=2,
    )


def _store_with_rankings(tiny, tiny_images, path):
    result, _ = search_batch(tiny.visual, tiny.arch, tiny_images, SearchSettings())
    store = RankingStore(path, _meta(tiny))
    hashes = image_hashes(tiny_images)
    for chunk in range(2):
        rows = slice(2 * chunk, 2 * chunk + 2)
        part = type(result)(result.ranking[rows], result.step_of[rows], result.trajectory[rows])
        store.write_chunk(chunk, torch.arange(4)[rows], hashes[rows], part)
    return store.merge(2), result, hashes


def test_store_round_trip_and_validation(tiny, tiny_images, tmp_path) -> None:
    path, result, hashes = _store_with_rankings(tiny, tiny_images, tmp_path / "toy.rankings")
    loaded = Rankings.load(path)
    assert torch.equal(loaded.ranking.long(), result.ranking)
    lookup = RankingLookup(loaded, tiny.fingerprint)
    assert torch.equal(
        lookup.patch_scores(torch.tensor([2, 0]), hashes[[2, 0]]), ranking_to_scores(result.ranking[[2, 0]])
    )
    with pytest.raises(CliprankError, match="content hash"):
        lookup.patch_scores(torch.tensor([0]), hashes[[1]])
    with pytest.raises(CliprankError, match="no ranking for image 9"):
        lookup.patch_scores(torch.tensor([9]), None)
    with pytest.raises(CliprankError, match="not the model being evaluated"):
        RankingLookup(loaded, "another-model")
    with pytest.raises(CliprankError, match="belong to toy/test"):
        lookup.check_dataset("digits", "test")


def test_corrupt_rankings_file_is_one_clear_error(tmp_path) -> None:
    bad = tmp_path / "bad.rankings"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(CliprankError, match="unreadable or corrupt"):
        Rankings.load(bad)


def test_golden_pruning_reproduces_the_search_score(tiny, tiny_images, tmp_path) -> None:
    """Pruning with the stored ranking at the searched keep count gives the search's final similarity."""
    path, result, _ = _store_with_rankings(tiny, tiny_images, tmp_path / "toy.rankings")
    resources = Resources(rankings=RankingIndex([path], tiny.fingerprint))
    kept = Rankings.load(path).kept
    method = solve("golden", tiny.arch, {"keep": kept / 64}, None, resources).method
    meta = {"dataset": "toy", "split": "test", "index": torch.arange(4), "image_hash": image_hashes(tiny_images)}
    with torch.no_grad():
        pruned = encode(tiny.visual, tiny_images, method.plan(), meta)
        full = encode(tiny.visual, tiny_images, Plan.identity(6))
    similarity = F.cosine_similarity(pruned, full)
    final = torch.stack([row[~row.isnan()][-1] for row in result.trajectory])
    assert torch.allclose(similarity.double(), final, atol=1e-5)


@pytest.fixture(scope="module")
def shipped_and_real_images():
    from cliprank.data.registry import load_dataset
    from cliprank.models import embedded, load_model

    model = load_model(embedded.MODEL_NAME, embedded.TAG)
    images = []
    for name in ("digits", "textiles", "faces"):
        data = load_dataset(name, "test", transform=model.preprocess, limit=1)
        images += [data.dataset[i][0] for i in range(len(data))]
    return model, torch.stack(images)


def test_single_patch_search_is_decided_by_scores_not_ties(shipped_and_real_images) -> None:
    """With 1×1 units one patch barely moves the embedding: no two candidates of an image may score the
    same (a float32 cosine ties for ~10% of them), and the rankings equal those of the model run in float64."""
    import copy

    from cliprank.engine.forward import embed, pool, run_blocks
    from cliprank.search.greedy import CandidateEvaluator, make_scorer

    model, images = shipped_and_real_images
    settings = SearchSettings(unit=1, step_tokens=6, total=0.4)
    identity = Plan.identity(model.arch.depth)
    with torch.no_grad():
        entering = run_blocks(model.visual, embed(model.visual, images), identity, stop=settings.block)
        reference = pool(model.visual, run_blocks(model.visual, entering, identity, start=settings.block))
    score = make_scorer(settings.score, reference, None, None)
    evaluator = CandidateEvaluator(model.visual, entering.x, settings.block, 32768)
    ties = []

    def score_sets(image_ids: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        scores = score(evaluator.embeddings(image_ids, keep), image_ids)
        ties.extend(len(scores[image_ids == i]) - len(scores[image_ids == i].unique()) for i in image_ids.unique())
        return scores

    found = greedy_rankings(score_sets, len(images), model.arch.grid, settings)
    assert sum(ties) == 0
    exact, _ = search_batch(copy.deepcopy(model.visual).double(), model.arch, images.double(), settings)
    assert torch.equal(found.ranking, exact.ranking)


def test_a_damaged_chunk_is_searched_again_and_what_runs_leave_behind_goes(tmp_path, capsys, monkeypatch) -> None:
    """A rerun recomputes a damaged chunk (never fails on it), removes a killed write's temporary file, and
    a run that finds the rankings complete removes the chunks a concurrent search left behind."""
    import subprocess
    import sys

    from cli_runner import run_cli

    from cliprank.io import _HOST
    from cliprank.search.greedy import SearchResult

    monkeypatch.setenv("COLUMNS", "300")
    out = tmp_path / "digits.rankings"
    argv = ["search", "--dataset", "digits", "--split", "test", "--limit", "4", "--chunk-size", "2", "--out", str(out)]
    assert run_cli(argv) == 0
    reference = Rankings.load(out)
    out.unlink()
    store = RankingStore(out, reference.meta)  # a killed run's parts: chunk 0 damaged, chunk 1 written
    store.parts.mkdir()
    store.chunk_path(0).write_bytes(b"half a file")
    rows = slice(2, 4)
    tensors = [reference.ranking[rows], reference.step_of[rows], reference.trajectory[rows]]
    store.write_chunk(1, reference.index[rows], reference.image_hash[rows], SearchResult(*tensors))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = store.parts / f".chunk-000000.safetensors.{_HOST}~{dead.pid}~abcdefgh.tmp"
    stale.write_bytes(b"killed between write and rename")
    capsys.readouterr()
    assert run_cli(argv) == 0
    assert "searched 2 in" in capsys.readouterr().out  # chunk 0 only
    again = Rankings.load(out)
    assert torch.equal(again.ranking, reference.ranking) and torch.equal(again.index, reference.index)
    assert not store.parts.exists()

    store.parts.mkdir()  # a concurrent search wrote a chunk after this one merged
    store.write_chunk(1, reference.index[rows], reference.image_hash[rows], SearchResult(*tensors))
    assert run_cli(argv) == 0
    printed = capsys.readouterr().out
    assert "every ranking was already stored" in printed and "nan" not in printed
    assert not store.parts.exists()
