"""Learnable tokens: insertion, cost, frozen CLIP, training, saved files and resume."""

from __future__ import annotations

import pytest
import torch

from cliprank.cost.analytic import schedule_macs
from cliprank.engine import Plan, Trace, encode
from cliprank.engine.state import LEARNABLE
from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.budget import solve
from cliprank.models.loading import LoadedModel
from cliprank.tokens.io import LoadedTokens, TokensSet, load_tokens, save_tokens
from cliprank.tokens.model import LearnedTokens, TokenConfig
from cliprank.tokens.pipeline import TokensJob, run_add_tokens
from cliprank.tokens.settings import TokenTrainSettings


def config(tiny, **changes) -> TokenConfig:
    base = dict(count=4, block=3, width=tiny.arch.width, text_width=tiny.model.token_embedding.embedding_dim, depth=6)
    return TokenConfig(**{**base, **changes})


def capture_state(plan: Plan, block: int):
    """A plan that also records the state entering `block`'s attention."""
    seen = {}

    def record(state, context):
        seen["state"] = state
        return state

    return plan.then(Plan.build(plan.depth, before={block: [record]})), seen


@pytest.mark.parametrize("placement", ["shallow", "deep"])
def test_tokens_are_appended_after_the_kept_patches(tiny, tiny_images, placement: str) -> None:
    tokens = LearnedTokens(config(tiny, placement=placement))
    base = solve("random", tiny.arch, {"keep": 0.5}, None).method
    plan, at_insert = capture_state(base.plan().then(tokens.plan()), 3)
    plan, next_block = capture_state(plan, 4)
    trace = Trace()
    with torch.no_grad():
        out = encode(tiny.visual, tiny_images, plan, trace=trace)
    assert out.shape == (4, tiny.arch.output_dim)
    state = at_insert["state"]
    assert state.tokens == 1 + 32 + 4 and state.n_extra == 4
    assert (state.pos[:, 0] == 0).all() and (state.pos[:, -4:] == LEARNABLE).all()
    assert torch.equal(state.x[0, -4:], tokens.visual[0])
    fresh = torch.equal(next_block["state"].x[0, -4:], tokens.visual[min(1, len(tokens.visual) - 1)])
    assert fresh == (placement == "deep")  # deep: block 4 gets its own tokens; shallow: block 3's carry on
    assert trace.schedule()[3:] == [(37.0, 37.0)] * 3


def test_zero_tokens_reproduce_the_method(tiny, tiny_images) -> None:
    base = solve("random", tiny.arch, {"keep": 0.5}, None).method
    none = LearnedTokens(config(tiny, count=0))
    with torch.no_grad():
        assert torch.equal(
            encode(tiny.visual, tiny_images, base.plan().then(none.plan())),
            encode(tiny.visual, tiny_images, base.plan()),
        )


def test_tokens_are_in_the_cost_and_the_budget(tiny) -> None:
    tokens = LearnedTokens(config(tiny))
    resources = Resources(tokens=TokensSet([LoadedTokens(tokens, {"method": "random", "values": {}}, {}, None)]))
    plain = solve("random", tiny.arch, {}, 0.7)
    with_tokens = solve("random+tokens", tiny.arch, {}, 0.7, resources)
    assert with_tokens.macs <= 0.7 * schedule_macs(tiny.arch, solve("none", tiny.arch, {}, None).method.schedule())
    assert with_tokens.method.values["keep"] < plain.method.values["keep"]
    assert with_tokens.method.schedule().attention[3] == 1 + with_tokens.method.kept + 4
    with pytest.raises(CliprankError, match="no learned tokens for random"):
        with_tokens.method.plan()  # these tokens were trained for another setup


def _job(tmp_path, epochs: int = 2, **changes) -> TokensJob:
    base = dict(
        method="random",
        values={"keep": 0.5},
        budget=None,
        datasets=["faces"],
        out=tmp_path / "t.safetensors",
        limit=24,
        settings=TokenTrainSettings(epochs=epochs, batch_size=8, lr=5e-2),
    )
    return TokensJob(**{**base, **changes})


def test_training_changes_only_the_tokens_and_lowers_the_loss(tiny, tmp_path) -> None:
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    path, info = run_add_tokens(tiny, _job(tmp_path, epochs=3))
    after = tiny.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    history = info["history"]
    assert history[-1]["loss"] < history[0]["loss"]
    assert set(info["heldout_without_tokens"]["top1"]) == {"faces"}
    loaded = load_tokens(path, tiny)
    assert loaded.items[0].setup["method"] == "random" and loaded.items[0].setup["values"]["keep"] == 0.5


def test_saved_tokens_refuse_another_model_or_setup(tiny, tmp_path) -> None:
    tokens = LearnedTokens(config(tiny))
    path = tmp_path / "x.tokens.safetensors"
    save_tokens(path, tokens, tiny, {"method": "predictor", "values": {"keep": 0.6, "block": 3}}, {})
    other = LoadedModel(**{**tiny.__dict__, "fingerprint": "other"})
    with pytest.raises(CliprankError, match="were trained for"):
        load_tokens(path, other)
    tokens_set = load_tokens(tmp_path, tiny)
    assert tokens_set.for_setup("predictor", {"keep": 0.6, "block": 3}).path == path
    with pytest.raises(CliprankError, match="have: predictor"):
        tokens_set.for_setup("predictor", {"keep": 0.5, "block": 3})


def test_text_context_needs_labels(tiny, tmp_path) -> None:
    with pytest.raises(CliprankError, match="fewshot"):
        run_add_tokens(tiny, _job(tmp_path, text_context=2))


def test_fewshot_with_text_context_trains(tiny, tmp_path) -> None:
    job = _job(
        tmp_path,
        text_context=2,
        settings=TokenTrainSettings(objective="fewshot", shots=4, epochs=2, batch_size=4, lr=5e-2),
    )
    path, info = run_add_tokens(tiny, job)
    loaded = load_tokens(path, tiny).items[0]
    assert loaded.module.context.shape == (2, tiny.model.token_embedding.embedding_dim)
    assert info["selected_by"] == "mean_top1"


class KillAfter:
    def __init__(self, epochs: int):
        self.epochs, self.seen = epochs, 0

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def advance(self, *args, **kwargs) -> None:
        pass

    def update(self, *args, **kwargs) -> None:
        if kwargs.get("advance"):
            self.seen += 1
            if self.seen == self.epochs:
                raise RuntimeError("killed")


def test_training_resumes_to_the_same_tokens(tiny, tmp_path) -> None:
    whole, _ = run_add_tokens(tiny, _job(tmp_path / "a", epochs=3))
    with pytest.raises(RuntimeError, match="killed"):
        run_add_tokens(tiny, _job(tmp_path / "b", epochs=3), progress=KillAfter(2))
    resumed, info = run_add_tokens(tiny, _job(tmp_path / "b", epochs=3))
    assert [h["epoch"] for h in info["history"]] == [1, 2, 3]
    a, b = load_tokens(whole, tiny).items[0].module, load_tokens(resumed, tiny).items[0].module
    assert torch.equal(a.visual, b.visual)


@pytest.mark.parametrize(
    "method, values, block",
    [
        ("random", {"keep": 0.5}, 3),
        ("random", {"keep": 0.5, "block": 1}, 1),
        ("evit", {"keep": 0.7}, 1),
        ("tome", {"r": 2}, 0),
    ],
)
def test_tokens_go_where_the_method_first_changes_tokens(tiny, method, values, block) -> None:
    """Read from the method's plan: EViT's default blocks on 6 blocks are 1, 3, 4; ToMe merges from block 0."""
    assert solve(method, tiny.arch, values, None).method.first_reduction_block() == block
    assert solve("none", tiny.arch, {}, None).method.first_reduction_block() is None


def test_a_method_that_changes_no_tokens_needs_a_block(tiny, tmp_path) -> None:
    with pytest.raises(CliprankError, match="--block"):
        run_add_tokens(tiny, _job(tmp_path, method="none", values={}))


def test_text_context_replaces_the_classifier_of_its_rows_only(tiny) -> None:
    names = ["cat", "dog"]
    default = torch.zeros(tiny.arch.output_dim, 2)
    plain = solve("random", tiny.arch, {"keep": 0.5}, None).method
    tokens = LearnedTokens(config(tiny, text_context=2))
    setup = {"method": "random", "values": dict(plain.values)}
    resources = Resources(tokens=TokensSet([LoadedTokens(tokens, setup, {}, None)]))
    with_context = solve("random+tokens", tiny.arch, {"keep": 0.5}, None, resources).method
    assert plain.text_classifier(tiny, names, default) is default
    learned = with_context.text_classifier(tiny, names, default)
    assert learned.shape == default.shape and not torch.equal(learned, default)
