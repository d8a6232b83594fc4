"""GMACs counted by fvcore (with attention handled) agree with the reference values and the analytic ones."""

from __future__ import annotations

import os

import pytest
import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis

from cliprank.cost.analytic import unpruned_macs
from cliprank.cost.counting import (
    CostReport,
    UncountedOpsError,
    count_macs,
    count_macs_torch,
    fvcore_count,
    mean_counted_macs,
    measure_cost,
    native_mha_macs,
    sdpa_macs,
)
from cliprank.engine import Plan, ReducedVisual
from cliprank.methods import REGISTRY
from cliprank.methods.budget import solve
from cliprank.models.loading import load_model

os.environ.setdefault("HF_HUB_OFFLINE", "1")

# reference.md §2: image tower at 224 px, fvcore convention (1 MAC = 1 flop)
REFERENCE_GMACS = {"ViT-B-32": 4.41, "ViT-B-16": 17.56, "ViT-L-14": 81.0}


def within(value: float, target: float, tolerance: float = 0.01) -> bool:
    return abs(value - target) <= tolerance * abs(target)


@pytest.fixture(scope="module")
def vit_b16():
    return load_model("ViT-B-16", "none")


@pytest.fixture(scope="module")
def vit_b32():
    return load_model("ViT-B-32", "none")


@pytest.fixture(scope="module")
def tiny():
    return load_model("cliprank-tiny", "none")


# ----- formulas -------------------------------------------------------------------------------------


def test_sdpa_macs_is_batch_heads_lq_lk_times_qk_plus_v_dims():
    assert sdpa_macs((2, 12, 197, 64), (2, 12, 197, 64), (2, 12, 197, 64)) == 2 * 12 * 197 * 197 * 128
    assert sdpa_macs((1, 8, 10, 32), (1, 2, 30, 32), (1, 2, 30, 16)) == 8 * 10 * 30 * 48  # GQA: per query head


def test_native_mha_macs_is_projections_plus_attention():
    n, c = 197, 768
    assert native_mha_macs((1, n, c), (1, n, c), c) == 4 * n * c * c + 2 * n * n * c


def test_cost_report_flags_disagreement_over_one_percent_and_missing_counts():
    assert not CostReport(analytic=100.0, counted=100.9, declared=100.0).flagged
    assert CostReport(analytic=100.0, counted=101.5, declared=100.0).flagged
    missing = CostReport(analytic=100.0, counted=None, declared=100.0, problem="untraceable")
    assert missing.flagged and missing.macs == 100.0 and missing.as_dict()["counted"] is None


def test_an_unhandled_matmul_fails_loudly_instead_of_counting_zero():
    class Hidden(nn.Module):
        def forward(self, x):
            return torch.baddbmm(x, x, x)  # fvcore has no handle for baddbmm

    with pytest.raises(UncountedOpsError, match="baddbmm"):
        fvcore_count(Hidden(), torch.randn(2, 4, 4))


# ----- reference values -----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["ViT-B-32", "ViT-B-16", "ViT-L-14"])
def test_unpruned_counted_and_analytic_gmacs_match_the_reference(name, request):
    shared = {"ViT-B-32": "vit_b32", "ViT-B-16": "vit_b16"}
    loaded = request.getfixturevalue(shared[name]) if name in shared else load_model(name, "none")
    counted = count_macs(loaded.visual, Plan.identity(loaded.arch.depth), 224) / 1e9
    assert within(counted, REFERENCE_GMACS[name]), counted
    assert within(unpruned_macs(loaded.arch) / 1e9, REFERENCE_GMACS[name])


# ----- pruned towers --------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["topk", "random"])
def test_counted_equals_analytic_for_fixed_schedules(vit_b16, method):
    solved = solve(method, vit_b16.arch, {}, 0.7)
    images = torch.randn(1, 3, 224, 224)
    report = measure_cost(solved.method, vit_b16.visual, images)
    assert not report.flagged, report.as_dict()
    assert report.cross_check_disagreement < 0.01  # torch's FlopCounterMode agrees with fvcore
    assert 0.6 < report.counted / unpruned_macs(vit_b16.arch) <= 0.71


def test_the_sdpa_handle_adds_exactly_the_attention_macs_plain_fvcore_misses(vit_b16):
    """Without the handle fvcore counts SDPA as zero (≈0.7 GMACs of the unpruned ViT-B/16)."""
    method = solve("random", vit_b16.arch, {}, 0.7).method
    module, images = ReducedVisual(vit_b16.visual, method.plan()), torch.randn(1, 3, 224, 224)
    plain = FlopCountAnalysis(module, images).unsupported_ops_warnings(False).tracer_warnings("none")
    with torch.no_grad():
        without = plain.total()
    with_handle = fvcore_count(module, images).macs
    c = vit_b16.arch.width
    attention = sum(2 * n * n * c for n in method.schedule().attention)
    assert with_handle - without == pytest.approx(attention, rel=1e-6)
    assert attention / with_handle > 0.02  # big enough that the count without the handle would be flagged


def test_open_clips_own_forward_counts_like_the_keep_everything_plan(vit_b32):
    """model.visual runs nn.MultiheadAttention (its fused fast path for ViT-B-32's even head count)."""
    loaded, arch = vit_b32, vit_b32.arch
    original = count_macs(loaded.visual, None, arch.image_size)
    engine = count_macs(loaded.visual, Plan.identity(arch.depth), arch.image_size)
    assert within(original, engine)
    images = torch.randn(1, 3, *arch.image_size)
    assert within(count_macs_torch(loaded.visual, None, images), engine)


def test_open_clips_own_forward_on_the_slow_attention_path(tiny):
    """cliprank-tiny has 3 heads, so nn.MultiheadAttention takes its SDPA path instead of the fast one."""
    arch = tiny.arch
    original = count_macs(tiny.visual, None, arch.image_size)
    assert within(original, count_macs(tiny.visual, Plan.identity(arch.depth), arch.image_size))


# ----- input-adaptive methods -------------------------------------------------------------------------


def test_mean_counted_macs_of_a_fixed_plan_is_its_single_image_count(tiny):
    plan = solve("topk", tiny.arch, {}, 0.8).method.plan()
    images = torch.randn(3, 3, *tiny.arch.image_size)
    single = count_macs(tiny.visual, plan, tiny.arch.image_size)
    assert mean_counted_macs(tiny.visual, plan, images) == pytest.approx(single)


@pytest.mark.skipif("ats" not in REGISTRY, reason="ats is not available")
def test_adaptive_methods_are_counted_per_image_and_stay_under_their_declared_bound(tiny):
    method = solve("ats", tiny.arch, {}, 0.7).method
    images = torch.randn(3, 3, *tiny.arch.image_size)
    report = measure_cost(method, tiny.visual, images)
    assert report.images == 3
    assert report.problem is None, report.problem
    assert not report.flagged, report.as_dict()
    assert report.analytic <= report.declared * (1 + 1e-9)
