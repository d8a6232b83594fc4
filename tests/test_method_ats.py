"""ATS (`ats`): inverse-CDF sampling of attention × value-norm significance; input-adaptive counts."""

from __future__ import annotations

import pytest
import torch
from fvcore.nn import FlopCountAnalysis

from cliprank.cost.analytic import per_image_macs, schedule_macs, unpruned_macs
from cliprank.engine import CLS_ATTENTION, VALUE_NORMS, LayerContext, TokenState, Trace, encode
from cliprank.errors import CliprankError
from cliprank.methods import method_class
from cliprank.methods.ats import ats_op, compact, sample_tokens, significance
from cliprank.methods.budget import solve
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
ATS = method_class("ats")

# sorted ascending: b3 .05, b1 .10, b4 .15, b2 .20, b0 .50 → CDF min-max normalised: 0, .105, .263, .474, 1
SCORES = torch.tensor([[0.5, 0.1, 0.2, 0.05, 0.15]])
ALL = torch.ones(1, 5, dtype=torch.bool)


@pytest.fixture(scope="module")
def tiny():
    return load_model("cliprank-tiny", "none")


def chosen(mask: torch.Tensor) -> list[list[int]]:
    return [row.nonzero().flatten().tolist() for row in mask]


def test_sampling_picks_the_tokens_nearest_to_evenly_spaced_cdf_points():
    # 3 points for 5 tokens: the official code matches them only against the 3 most significant tokens'
    # CDF values (b4 .263, b2 .474, b0 1): points 1, .553, .105 → b0, b2, b4 (b1's .105 is outside the window)
    assert chosen(sample_tokens(SCORES, ALL, 3)) == [[0, 2, 4]]
    # points 1, .702, .404, .105 → b0, b2, b2, b1: the repeat counts once, so 3 < K − 1 = 4 survive
    assert chosen(sample_tokens(SCORES, ALL, 4)) == [[0, 1, 2]]
    # as many points as tokens still drops the least significant one (b3)
    assert chosen(sample_tokens(SCORES, ALL, 5)) == [[0, 1, 2, 4]]
    # a single point takes the most significant token
    assert chosen(sample_tokens(SCORES, ALL, 1)) == [[0]]


def test_concentrated_significance_keeps_fewer_tokens():
    scores = torch.tensor([[0.96, 0.01, 0.01, 0.01, 0.01], [0.2, 0.2, 0.2, 0.2, 0.2]])
    counts = sample_tokens(scores, torch.ones(2, 5, dtype=torch.bool), 4).sum(dim=1)
    assert counts.tolist() == [3, 4]


def test_padding_is_never_sampled_and_takes_no_part_in_the_distribution():
    scores = torch.tensor([[0.5, 0.1, 0.2, 9.0, 0.15]])  # b3 is padding, with the largest score
    valid = torch.tensor([[True, True, True, False, True]])
    for samples in (1, 2, 3, 4, 5):
        picked = chosen(sample_tokens(scores, valid, samples))[0]
        assert 3 not in picked
        without = chosen(
            sample_tokens(torch.tensor([[0.5, 0.1, 0.2, 0.15]]), torch.ones(1, 4, dtype=torch.bool), samples)
        )
        assert picked == [[0, 1, 2, 4][i] for i in without[0]]


def test_sampling_traces_for_flop_counting():
    class Sample(torch.nn.Module):
        def forward(self, x: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
            state = TokenState.initial(x)
            return compact(state, sample_tokens(scores, torch.ones_like(scores, dtype=torch.bool), 3)).x

    counter = FlopCountAnalysis(Sample(), (torch.randn(1, 6, 2), SCORES))
    assert counter.unsupported_ops_warnings(False).uncalled_modules_warnings(False).total() == 0  # no matmul in it


def test_significance_is_head_summed_cls_attention_times_value_norm_normalised():
    state = TokenState.initial(torch.zeros(1, 4, 2))
    context = LayerContext(
        index=3,
        patches=3,
        trace=Trace(),
        cls_attention=torch.tensor([[[0.1, 0.2, 0.3, 0.4], [0.3, 0.4, 0.1, 0.2]]]),
        value_norms=torch.tensor([[5.0, 1.0, 2.0, 3.0]]),
    )
    # heads summed: .6, .4, .6 over the body; times norms 1, 2, 3 → .6, .8, 1.8; over 3.2
    assert torch.allclose(significance(state, context), torch.tensor([[0.1875, 0.25, 0.5625]]))
    state.valid = torch.tensor([[True, True, False, True]])
    assert torch.allclose(significance(state, context), torch.tensor([[0.25, 0.0, 0.75]]))


def test_images_keep_different_counts_padded_with_a_valid_mask():
    state = TokenState.initial(torch.randn(2, 6, 3)).append_extras(torch.ones(1, 3))
    body = torch.tensor([[0.9, 0.01, 0.02, 0.03, 0.04], [0.16, 0.18, 0.2, 0.22, 0.24]])
    attention = torch.cat([torch.zeros(2, 1), body, torch.zeros(2, 1)], dim=1)  # [CLS, body, extra]
    context = LayerContext(
        index=3, patches=5, trace=Trace(), cls_attention=attention.unsqueeze(1), value_norms=torch.ones(2, 7)
    )
    out = ats_op(5)(state, context)  # K = 5: 4 points over the body
    # concentrated: points 1, .673, .347, .020 → b0, b0, b4, b2; spread: 1, .738, .476, .214 → b4, b3, b2, b1
    assert out.pos[1].tolist() == [0, 2, 3, 4, 5, -2]
    assert out.pos[0, :4].tolist() == [0, 1, 3, 5] and out.pos[0, -1] == -2  # then a padding slot, the extra
    assert out.counts().tolist() == [1 + 3 + 1, 1 + 4 + 1]  # CLS + sampled body + the protected extra
    assert out.valid is not None and out.valid.tolist() == [[True] * 4 + [False, True], [True] * 6]
    assert torch.equal(out.x[:, -1], torch.ones(2, 3)) and out.n_extra == 1
    assert torch.allclose(context.trace.patch_scores, body)


def test_a_later_stage_on_a_padded_state_never_selects_padding():
    state = TokenState.initial(torch.randn(2, 6, 3))
    state.valid = torch.tensor([[True] * 6, [True, True, True, False, False, True]])
    attention = torch.tensor([[0.1, 0.3, 0.2, 0.1, 0.2, 0.1], [0.1, 0.1, 0.1, 0.3, 0.3, 0.1]])  # padding attended
    context = LayerContext(
        index=5, patches=5, trace=Trace(), cls_attention=attention.unsqueeze(1), value_norms=torch.ones(2, 6)
    )
    out = ats_op(6)(state, context)
    kept = out.pos[1][out.valid[1]] if out.valid is not None else out.pos[1]
    assert not set(kept.tolist()) & {3, 4}
    assert out.counts()[1] <= 4


def test_declared_bound_schedule_and_overhead():
    schedule = ATS(VIT_B_16, K=100).schedule()
    assert schedule.attention == (197.0,) * 4 + (100.0,) * 8
    assert schedule.mlp == (197.0,) * 3 + (100.0,) * 9
    assert schedule.overhead == 2 * 197 * 768  # CLS attention row and value norms at block 3
    assert ATS(VIT_B_16, K=500).schedule().mlp == (197.0,) * 12  # the bound never exceeds the body
    two = ATS(VIT_B_16, K=100, blocks="3,6").schedule()
    assert two.mlp[6] == 100.0 and two.overhead == 2 * (197 + 100) * 768


def test_executed_counts_stay_under_the_declared_bound_and_padding_is_exact(tiny):
    torch.manual_seed(0)
    images = torch.randn(4, 3, *tiny.arch.image_size)
    method = ATS(tiny.arch, K=40, blocks=(1, 3))
    trace = Trace()
    batched = encode(tiny.visual, images, method.plan(), trace=trace)
    declared = method.schedule()
    for block, (attention, mlp) in enumerate(zip(trace.attention_tokens, trace.mlp_tokens, strict=True)):
        assert (attention <= declared.attention[block]).all() and (mlp <= declared.mlp[block]).all()
    assert (
        per_image_macs(tiny.arch, trace.attention_tokens, trace.mlp_tokens) <= schedule_macs(tiny.arch, declared)
    ).all()
    assert len(set(trace.mlp_tokens[3].tolist())) > 1  # the batch was padded at the second stage
    for i in range(len(images)):
        alone = encode(tiny.visual, images[i : i + 1], method.plan())
        assert torch.allclose(alone[0], batched[i], atol=1e-4)
    assert trace.patch_scores.shape == (4, tiny.arch.patches) and torch.isfinite(trace.patch_scores).all()
    assert method.plan().layers[1].needs == {CLS_ATTENTION, VALUE_NORMS}
    assert ATS.adaptive


def test_budget_picks_the_largest_k_within_budget():
    solved = solve("ats", VIT_B_16, {}, 0.7)
    limit = 0.7 * unpruned_macs(VIT_B_16)
    assert solved.macs <= limit
    k = solved.method.values["K"]
    assert schedule_macs(VIT_B_16, ATS(VIT_B_16, K=k + 1).schedule()) > limit


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"K": 1}, "must be >= 2"),
        ({"K": -5}, "must be >= 2"),
        ({"K": 2.5}, "is invalid"),
        ({"K": 100, "blocks": (12,)}, "outside 0..11"),
        ({"K": 100, "keep": 0.5}, "unknown parameter(s) keep"),
        ({}, "set K=INT"),
    ],
)
def test_bad_knobs_are_refused_with_a_fix(values, message):
    with pytest.raises(CliprankError) as error:
        ATS(VIT_B_16, **values)
    assert message in str(error.value)
