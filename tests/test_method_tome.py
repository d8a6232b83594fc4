"""ToMe (`tome`): bipartite merging of the most similar body tokens in every block."""

from __future__ import annotations

import math

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from cliprank.cost.analytic import schedule_macs, unpruned_macs
from cliprank.engine import KEYS, LayerContext, TokenState, Trace, encode
from cliprank.errors import CliprankError
from cliprank.methods import method_class
from cliprank.methods.budget import solve
from cliprank.methods.tome import bipartite_merge, merge_op, r_per_block
from cliprank.models import load_model
from cliprank.models.arch import VisionArch

VIT_B_16 = VisionArch(
    width=768,
    depth=12,
    heads=12,
    mlp_width=3072,
    grid=(14, 14),
    patch_size=(16, 16),
    output_dim=512,
    pool="tok",
    attention="nn.MultiheadAttention",
    layout="batch-first",
)
ToMe = method_class("tome")


@pytest.fixture(scope="module")
def tiny():
    return load_model("cliprank-tiny", "none")


def hand_state(x_body, size_body, keys_body, cls_key=(2.0, 2.0)):
    """1 CLS + the given body tokens; returns the state and the block context carrying the keys."""
    x = torch.cat([torch.zeros(1, 1, 2), torch.tensor([x_body])], dim=1)
    state = TokenState.initial(x)
    state.size = torch.cat([torch.ones(1, 1), torch.tensor([size_body])], dim=1)
    keys = torch.cat([torch.tensor([[cls_key]]), torch.tensor([keys_body])], dim=1)
    context = LayerContext(index=0, patches=len(x_body), trace=Trace(), keys=keys)
    return state, context


# body tokens b0..b3. ToMe splits the whole sequence, class token first: A = {CLS, b1, b3}, B = {b0, b2}.
# b3's keys are parallel to b2's (similarity 1); b1's best match is b2 (similarity 0), beating b0 (-0.71).
# CLS has the very keys of b2, and never merges.
X = [[4.0, 4.0], [9.0, 9.0], [2.0, 0.0], [0.0, 4.0]]
SIZES = [2.0, 1.0, 1.0, 3.0]
KEYS_BODY = [[0.0, 1.0], [1.0, -1.0], [2.0, 2.0], [1.0, 1.0]]


def test_reference_gmacs_on_vit_b_16():
    assert unpruned_macs(VIT_B_16) / 1e9 == pytest.approx(17.56, abs=0.01)
    for r, reference in [(4, 15.32), (8, 13.10), (13, 10.37), (16, 8.77)]:
        schedule = ToMe(VIT_B_16, r=r).schedule()
        macs = schedule_macs(VIT_B_16, schedule)
        assert (macs - schedule.overhead) / 1e9 == pytest.approx(reference, abs=0.01)
        assert macs / 1e9 == pytest.approx(reference, rel=0.01)
        assert 0 < schedule.overhead < 0.01e9  # the A·Bᵀ similarities are declared, and small


def test_schedule_counts_and_similarity_overhead():
    schedule = ToMe(VIT_B_16, r=16).schedule()
    assert schedule.attention[:3] == (197.0, 181.0, 165.0)
    assert schedule.mlp[:3] == (181.0, 165.0, 149.0)
    # the last block enters with 196 − 11·16 = 20 body tokens: merges are capped at half of them
    assert schedule.attention[-1] == 21.0 and schedule.mlp[-1] == 11.0
    body, expected = 196, 0
    for _ in range(12):
        expected += math.ceil(body / 2) * (body // 2) * VIT_B_16.head_dim
        body -= min(16, body // 2)
    assert schedule.overhead == expected


def test_r_schedules_follow_tome():
    assert r_per_block(8, 0.0, 12) == [8] * 12
    # ToMe's linear trend: from int(r·(1−inflect)) to 2r minus that, truncated per block
    assert r_per_block(8, 0.5, 12) == [int(4 + 8 / 11 * i) for i in range(12)]
    assert r_per_block(8, 0.5, 12)[0] == 4 and r_per_block(8, 0.5, 12)[-1] == 12
    assert r_per_block(8, -1.0, 4) == [16, 10, 5, 0]
    assert r_per_block((5, 3), 0.0, 4) == [5, 3, 0, 0]
    assert ToMe(VIT_B_16, r="5,3").values["r"] == (5, 3)
    assert ToMe(VIT_B_16, r="[5]").merges() == [5] + [0] * 11


def test_merge_takes_the_most_similar_pair_by_size_weighted_mean():
    state, context = hand_state(X, SIZES, KEYS_BODY)
    merged = merge_op(1)(state, context)
    assert merged.tokens == 4
    assert torch.equal(merged.x[0, 0], state.x[0, 0])  # CLS untouched
    assert merged.pos[0].tolist() == [0, 2, 1, 3]  # [CLS, unmerged A: b1, B: b0, b2 (took in b3)]
    assert merged.size[0].tolist() == [1.0, 1.0, 2.0, 4.0]
    expected = (1 * torch.tensor([2.0, 0.0]) + 3 * torch.tensor([0.0, 4.0])) / 4
    assert torch.allclose(merged.x[0, 3], expected)
    assert torch.allclose(merged.x[0, 1:3], torch.tensor([X[1], X[0]]))


def test_second_edge_merges_next_and_sizes_accumulate():
    state, context = hand_state(X, SIZES, KEYS_BODY)
    merged = merge_op(2)(state, context)
    assert merged.pos[0].tolist() == [0, 1, 3]
    assert merged.size[0].tolist() == [1.0, 2.0, 5.0]
    expected = (1 * torch.tensor(X[1]) + 1 * torch.tensor(X[2]) + 3 * torch.tensor(X[3])) / 5
    assert torch.allclose(merged.x[0, 2], expected)
    # total size, i.e. the patches represented, is preserved
    assert merged.size.sum() == state.size.sum()


def test_merges_capped_at_half_the_body_and_never_touch_cls_or_extras():
    state, context = hand_state(X, SIZES, KEYS_BODY)
    state = state.append_extras(torch.full((1, 2), 7.0))
    context.keys = torch.cat([context.keys, torch.tensor([[[2.0, 2.0]]])], dim=1)  # extra as similar as can be
    merged = merge_op(50)(state, context)
    assert merged.body_count == 2  # 4 body tokens: at most 2 merges
    assert merged.pos[0, 0] == 0 and torch.equal(merged.x[0, 0], state.x[0, 0])
    assert merged.n_extra == 1 and merged.x[0, -1].tolist() == [7.0, 7.0] and merged.size[0, -1] == 1.0
    assert merged.size[0].sum() == state.size[0].sum()


def test_similarity_is_a_matmul_fvcore_counts():
    torch.manual_seed(0)
    body, dim = 9, 8

    class Merge(torch.nn.Module):
        def forward(self, x: torch.Tensor, keys: torch.Tensor) -> torch.Tensor:
            state = TokenState.initial(x)
            return bipartite_merge(state, state.body(keys), 3).x

    x, keys = torch.randn(2, 1 + body, 4), torch.randn(2, 1 + body, dim)
    counter = FlopCountAnalysis(Merge(), (x, keys)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    assert counter.total() == 2 * math.ceil(body / 2) * (body // 2) * dim


def test_executed_schedule_equals_declared(tiny):
    torch.manual_seed(0)
    images = torch.randn(2, 3, *tiny.arch.image_size)
    for values in ({"r": 6}, {"r": 6, "inflect": 0.5}, {"r": [20, 20, 20, 20]}, {"r": 3, "prop_attn": False}):
        method = ToMe(tiny.arch, **values)
        trace = Trace()
        out = encode(tiny.visual, images, method.plan(), trace=trace)
        declared = method.schedule()
        assert trace.schedule() == list(zip(declared.attention, declared.mlp, strict=True)), values
        assert torch.isfinite(out).all()
        assert trace.patch_scores is None  # ToMe produces no ranking


def test_plan_merges_in_every_block_with_proportional_attention(tiny):
    plan = ToMe(tiny.arch, r=4).plan()
    assert all(layer.after_attention and layer.needs == {KEYS} for layer in plan.layers)
    assert [layer.proportional for layer in plan.layers] == [False] + [True] * (tiny.arch.depth - 1)
    assert not any(layer.proportional for layer in ToMe(tiny.arch, r=4, prop_attn="false").plan().layers)
    late = ToMe(tiny.arch, r=[0, 0, 4]).plan()
    assert [bool(layer.after_attention) for layer in late.layers] == [False, False, True, False, False, False]
    assert [layer.proportional for layer in late.layers] == [False, False, False, True, True, True]


def test_budget_picks_the_costliest_r_within_budget():
    solved = solve("tome", VIT_B_16, {}, 0.7)
    limit = 0.7 * unpruned_macs(VIT_B_16)
    assert solved.macs <= limit
    costs = [schedule_macs(VIT_B_16, ToMe(VIT_B_16, r=r).schedule()) for r in ToMe.knob_candidates(VIT_B_16, {})]
    assert max(c for c in costs if c <= limit) == solved.macs
    constant = [c for r, c in zip(ToMe.knob_candidates(VIT_B_16, {}), costs) if isinstance(r, int) and c <= limit]
    assert limit - solved.macs < limit - max(constant)  # per-block steps land closer than a constant r


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"r": -1}, "must be >= 0"),
        ({"r": [4] * 13}, "at most 12"),
        ({"r": [4, -2]}, "must be >= 0"),
        ({"r": 2.5}, "r=2.5 is invalid"),
        ({"r": 4, "inflect": 1.5}, "[-1, 1]"),
        ({"r": [4, 4], "inflect": 0.5}, "inflect applies to a constant r"),
        ({"r": 4, "prop_attn": "maybe"}, "true or false"),
        ({"r": 4, "ratio": 2}, "unknown parameter(s) ratio"),
        ({}, "set r=INT or pass --budget"),
    ],
)
def test_bad_knobs_are_refused_with_a_fix(values, message):
    with pytest.raises(CliprankError) as error:
        ToMe(VIT_B_16, **values)
    assert message in str(error.value)
