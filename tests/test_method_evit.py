"""EViT (`evit`): keep the attentive tokens at a few blocks, fuse the inattentive ones into one."""

from __future__ import annotations

import math

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from cliprank.cost.analytic import schedule_macs, unpruned_macs
from cliprank.engine import CLS_ATTENTION, FUSED, LayerContext, TokenState, Trace, encode
from cliprank.errors import CliprankError
from cliprank.methods import method_class
from cliprank.methods.budget import solve
from cliprank.methods.evit import evit_op, reorganize
from cliprank.methods.topk import kept_after
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
EViT = method_class("evit")

# reference.md §2, keep at blocks (3, 6, 9) of ViT-B/16: these figures count no fused token
REFERENCE = {0.9: 15.27, 0.8: 13.20, 0.7: 11.48, 0.6: 9.98, 0.5: 8.72}

X = [[1.0, 0.0], [0.0, 1.0], [2.0, 2.0], [3.0, 0.0], [0.0, 5.0]]
SIZES = [1.0, 2.0, 1.0, 1.0, 3.0]
# two heads' class-token rows over [CLS, b0..b4]; their mean over the body is 0.30, 0.05, 0.20, 0.10, 0.15
CLS_ROWS = [[0.2, 0.4, 0.0, 0.3, 0.05, 0.05], [0.2, 0.2, 0.1, 0.1, 0.15, 0.25]]


@pytest.fixture(scope="module")
def tiny():
    return load_model("cliprank-tiny", "none")


def hand_state() -> TokenState:
    state = TokenState.initial(torch.cat([torch.zeros(1, 1, 2), torch.tensor([X])], dim=1))
    state.size = torch.tensor([[1.0] + SIZES])
    return state


def context_with(rows) -> LayerContext:
    return LayerContext(index=3, patches=5, trace=Trace(), cls_attention=torch.tensor([rows]))


def test_reference_gmacs_without_fusion_on_vit_b_16():
    for keep, reference in REFERENCE.items():
        schedule = EViT(VIT_B_16, keep=keep, fuse=False).schedule()
        assert (schedule_macs(VIT_B_16, schedule) - schedule.overhead) / 1e9 == pytest.approx(reference, abs=0.01)


def test_fused_token_adds_one_token_per_location_on_vit_b_16():
    schedule = EViT(VIT_B_16, keep=0.7).schedule()
    # ceil(0.7·196) = 138 kept + 1 fused; ceil(0.7·139) = 98 + 1; ceil(0.7·99) = 70 + 1 (CLS counted too)
    assert schedule.attention == (197.0,) * 4 + (140.0,) * 3 + (100.0,) * 3 + (72.0,) * 2
    assert schedule.mlp == (197.0,) * 3 + (140.0,) * 3 + (100.0,) * 3 + (72.0,) * 3
    for keep, reference in REFERENCE.items():
        macs = schedule_macs(VIT_B_16, EViT(VIT_B_16, keep=keep).schedule())
        assert reference < macs / 1e9 < reference * 1.015
    # overhead: the class token's attention row at each location plus the fused weighted sum
    width = VIT_B_16.width
    assert schedule.overhead == (197 + 58) * width + (140 + 41) * width + (100 + 29) * width


def test_keeps_the_most_attended_and_fuses_the_rest_with_unnormalised_attention():
    state = hand_state()
    out = evit_op(0.4, fuse=True)(state, context_with(CLS_ROWS))  # ceil(0.4·5) = 2 kept
    assert out.pos[0].tolist() == [0, 1, 3, FUSED]
    assert torch.allclose(out.x[0, 1:3], torch.tensor([X[0], X[2]]))
    fused = 0.05 * torch.tensor(X[1]) + 0.10 * torch.tensor(X[3]) + 0.15 * torch.tensor(X[4])
    assert torch.allclose(out.x[0, 3], fused)
    assert out.size[0].tolist() == [1.0, 1.0, 1.0, 6.0]
    assert torch.equal(out.x[0, 0], state.x[0, 0])


def test_normalised_fusion_is_the_attention_weighted_mean_of_the_fused_tokens():
    out = evit_op(0.4, fuse=True, normalize_fused=True)(hand_state(), context_with(CLS_ROWS))
    fused = (0.05 * torch.tensor(X[1]) + 0.10 * torch.tensor(X[3]) + 0.15 * torch.tensor(X[4])) / 0.30
    assert torch.allclose(out.x[0, 3], fused)
    assert out.pos[0].tolist() == [0, 1, 3, FUSED] and out.size[0].tolist() == [1.0, 1.0, 1.0, 6.0]
    assert EViT(VIT_B_16, keep=0.7, normalize_fused=True).schedule() == EViT(VIT_B_16, keep=0.7).schedule()


def test_kept_count_is_the_official_ceil_in_floating_point():
    # evit.py L209: left_tokens = math.ceil(keep_rate * (N - 1)); 0.07 · 100 is 7.000000000000001 there
    assert kept_after(0.07, 100) == 8
    for keep in [k / 100 for k in range(1, 101)]:
        for body in (10, 50, 64, 100, 139, 196):
            assert kept_after(keep, body) == max(1, math.ceil(keep * body))


def test_fused_token_is_an_ordinary_body_token_at_the_next_location():
    first = evit_op(0.4, fuse=True)(hand_state(), context_with(CLS_ROWS))  # body: b0, b2, fused
    second = evit_op(0.5, fuse=True)(first, context_with([[0.25, 0.3, 0.05, 0.4]]))  # ceil(0.5·3) = 2 kept
    assert second.pos[0].tolist() == [0, 1, FUSED, FUSED]  # the fused token survived, b2 is fused now
    assert second.size[0].tolist() == [1.0, 1.0, 6.0, 1.0]
    assert torch.allclose(second.x[0, 2], first.x[0, 3])
    assert torch.allclose(second.x[0, 3], 0.05 * torch.tensor(X[2]))


def test_without_fusion_the_rest_is_dropped_and_nothing_changes_when_all_are_kept():
    out = evit_op(0.4, fuse=False)(hand_state(), context_with(CLS_ROWS))
    assert out.pos[0].tolist() == [0, 1, 3]
    state = hand_state()
    assert evit_op(1.0, fuse=True)(state, context_with(CLS_ROWS)) is state


def test_first_location_scores_are_recorded_as_the_ranking():
    context = context_with(CLS_ROWS)
    evit_op(0.4, fuse=True)(hand_state(), context)
    assert torch.allclose(context.trace.patch_scores, torch.tensor([[0.30, 0.05, 0.20, 0.10, 0.15]]))


def test_fused_sum_is_a_matmul_fvcore_counts():
    body, kept, width = 7, 3, 4

    class Reorganize(torch.nn.Module):
        def forward(self, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            return reorganize(TokenState.initial(x), scores, kept, fuse=True).x

    x, scores = torch.randn(2, 1 + body, width), torch.rand(2, body)
    counter = (
        FlopCountAnalysis(Reorganize(), (x, scores)).unsupported_ops_warnings(False).uncalled_modules_warnings(False)
    )
    assert counter.total() == 2 * (body - kept) * width


def test_keep_compounds_and_executed_schedule_equals_declared(tiny):
    torch.manual_seed(0)
    images = torch.randn(2, 3, *tiny.arch.image_size)
    method = EViT(tiny.arch, keep=0.7)
    assert method.values["blocks"] == (1, 3, 4)  # EViT's (3, 6, 9) scaled to 6 blocks
    # 64 → ceil(44.8) = 45 (+1 fused) → ceil(0.7·46) = 33 (+1) → ceil(0.7·34) = 24 (+1); CLS included below
    declared = method.schedule()
    assert declared.mlp == (65.0, 47.0, 47.0, 35.0, 26.0, 26.0)
    for values in ({"keep": 0.7}, {"keep": 0.55, "fuse": False}, {"keep": 0.3, "blocks": "0,5"}):
        method = EViT(tiny.arch, **values)
        trace = Trace()
        out = encode(tiny.visual, images, method.plan(), trace=trace)
        declared = method.schedule()
        assert trace.schedule() == list(zip(declared.attention, declared.mlp, strict=True)), values
        assert torch.isfinite(out).all()
        assert trace.patch_scores.shape == (2, tiny.arch.patches) and torch.isfinite(trace.patch_scores).all()
    assert all(EViT(tiny.arch, keep=0.7).plan().layers[b].needs == {CLS_ATTENTION} for b in (1, 3, 4))


def test_budget_picks_the_costliest_keep_within_budget():
    solved = solve("evit", VIT_B_16, {}, 0.7)
    limit = 0.7 * unpruned_macs(VIT_B_16)
    assert solved.macs <= limit
    for keep in EViT.knob_candidates(VIT_B_16, {}):
        macs = schedule_macs(VIT_B_16, EViT(VIT_B_16, keep=keep).schedule())
        assert macs <= solved.macs or macs > limit
    assert solved.fraction > 0.69  # the fine grid lets the solver get close to the target


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"keep": 0}, "must be in (0, 1]"),
        ({"keep": 1.2}, "must be in (0, 1]"),
        ({"keep": "most"}, "is invalid"),
        ({"keep": 0.7, "blocks": (3, 12)}, "outside 0..11"),
        ({"keep": 0.7, "blocks": (6, 3)}, "increasing order"),
        ({"keep": 0.7, "fuse": "maybe"}, "true or false"),
        ({"keep": 0.7, "fuse": False, "normalize_fused": True}, "set fuse=true or drop it"),
        ({"keep": 0.7, "locations": (3,)}, "unknown parameter(s) locations"),
        ({}, "set keep=FRACTION or pass --budget"),
    ],
)
def test_bad_knobs_are_refused_with_a_fix(values, message):
    with pytest.raises(CliprankError) as error:
        EViT(VIT_B_16, **values)
    assert message in str(error.value)
