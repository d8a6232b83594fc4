"""The shipped embedded default: its weights, rankings, predictor and tokens load, fit, and reproduce results/ci."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cli_runner import run_cli as run

from cliprank.cost.analytic import unpruned_macs
from cliprank.data.registry import load_dataset
from cliprank.engine import Plan, encode
from cliprank.methods.registry import expand_all
from cliprank.models import embedded, load_model
from cliprank.predictor.io import load_predictor
from cliprank.resources import load_resources
from cliprank.search.store import Rankings
from cliprank.tokens.io import load_tokens

REPO = Path(__file__).resolve().parents[1]
MAX_WEIGHTS_BYTES = 25 * 1024 * 1024
MAX_ASSETS_BYTES = 40 * 1024 * 1024


@pytest.fixture(scope="module")
def trained():
    return load_model(embedded.MODEL_NAME, embedded.TAG)


def test_shipped_assets_stay_small() -> None:
    assert embedded.weights_path().stat().st_size <= MAX_WEIGHTS_BYTES
    total = sum(path.stat().st_size for path in embedded.ASSETS.rglob("*") if path.is_file())
    assert total <= MAX_ASSETS_BYTES, f"{total / 2**20:.1f} MiB of shipped model assets"


def test_trained_weights_load_and_keep_all_is_encode_image(trained) -> None:
    """The shipped weights go through open_clip's loader, and the engine's identity plan reproduces it."""
    assert trained.arch.patches >= 64 and trained.arch.depth >= 6
    random_init = load_model(embedded.MODEL_NAME, "none")
    assert trained.fingerprint != random_init.fingerprint
    ds = load_dataset("digits", "test", transform=trained.preprocess, limit=6)
    images = torch.stack([ds.dataset[i][0] for i in range(len(ds))])
    with torch.no_grad():
        expected = trained.model.encode_image(images)
        got = encode(trained.visual, images, Plan.identity(trained.arch.depth))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_recipe_is_shipped_beside_the_weights() -> None:
    recipe = json.loads((embedded.ASSETS / f"{embedded.MODEL_NAME}.recipe.json").read_text())
    assert recipe["model"] == embedded.MODEL_NAME
    assert {"seed", "steps", "batch_size", "lr"} <= set(recipe["recipe"])


def test_shipped_rankings_predictor_and_tokens_belong_to_the_shipped_model(trained) -> None:
    rankings = sorted(embedded.rankings_dir().glob("*.rankings"))
    assert {path.name.split("-")[0] for path in rankings} == {"digits", "textiles", "faces"}
    for path in rankings:
        stored = Rankings.load(path)
        assert stored.meta.model_fingerprint == trained.fingerprint
        assert stored.meta.split == "test"
    predictor = load_predictor(embedded.predictor_path(), trained)
    assert predictor.macs <= 0.01 * unpruned_macs(trained.arch)
    tokens = load_tokens(embedded.tokens_dir(), trained)
    assert tokens.items, "no learned tokens shipped"


def test_ci_recipe_reproduces_the_committed_baseline(tmp_path) -> None:
    """The CI gate itself: `evaluate --recipe ci` then `compare` against results/ci (accuracy and GMACs)."""
    baseline = REPO / "results" / "ci" / "report.json"
    out = tmp_path / "ci"
    assert run(["evaluate", "--recipe", "ci", "--out", str(out)]) == 0
    assert run(["compare", str(baseline), str(out / "report.json")]) == 0


def test_all_runs_every_method_with_what_the_embedded_model_ships(trained) -> None:
    """`--method all` on the embedded model: every method, golden and predictor from the shipped files,
    and predictor+tokens because the shipped tokens were trained for the predictor."""
    names = [name for name, _ in expand_all([("all", {})], load_resources(trained, [("all", {})]))]
    assert sorted(names) == sorted(
        ["none", "random", "topk", "evit", "tome", "ats", "golden", "predictor", "predictor+tokens"]
    )
    assert names.index("predictor+tokens") == names.index("predictor") + 1
