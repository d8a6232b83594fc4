"""Every tensor the engine and the methods create follows the input's device and dtype — checked without a GPU.

`stray_tensors.creation_audit` turns a tensor created without `device=` into a meta tensor and a float
tensor created without `dtype=` into float64, and records both; see that module for why that finds on a
CPU what would only break, or silently slow down, on a GPU.
"""

from __future__ import annotations

import pytest
import torch
import towers
from stray_tensors import creation_audit

from cliprank.data import load_dataset, make_loader
from cliprank.data.meta import batch_meta
from cliprank.engine import LayerPlan, Plan, Trace, encode
from cliprank.methods.budget import solve, solve_rows
from cliprank.methods.registry import expand_all
from cliprank.models import embedded, load_model
from cliprank.resources import load_resources
from cliprank.search.greedy import SearchSettings, search_batch


def test_the_audit_catches_a_tensor_made_on_the_default_device_or_dtype(tiny, tiny_images) -> None:
    def on_the_cpu(state, context):  # `torch.ones(n)`: fine on a CPU, a device mismatch on a GPU
        return state.with_x(state.x * torch.ones(state.x.shape[-1]))

    def in_float32(state, context):  # an integer count scaled by a Python float: the default dtype, not x's
        return state.with_x(state.x + torch.arange(state.x.shape[-1], device=state.x.device) * 0.5)

    for op, found in ((on_the_cpu, "meta"), (in_float32, "float64")):
        plan = Plan((LayerPlan(before=(op,)), *Plan.identity(tiny.arch.depth - 1).layers))
        with pytest.raises(AssertionError, match=found), torch.no_grad():
            with creation_audit():
                encode(tiny.visual, tiny_images, plan)


@pytest.mark.parametrize("precision", ["fp32", "amp_bf16", "bf16"])
def test_every_method_creates_its_tensors_on_the_inputs_device_and_dtype(precision: str) -> None:
    model = load_model(embedded.MODEL_NAME, embedded.TAG, precision=precision)
    resources = load_resources(model, [("all", {})])
    dataset = load_dataset("digits", "test", transform=model.preprocess, limit=4)
    images, _, indices = next(iter(make_loader(dataset, batch_size=4)))
    meta = batch_meta(dataset.name, "test", images, indices, hashes=True)
    rows = solve_rows(model.arch, expand_all([("all", {})], resources), [0.6], resources)
    assert len(rows) == 9
    for row in rows:
        with creation_audit() as strays, torch.no_grad(), model.autocast():
            encode(model.visual, images, row.method.plan(), dict(meta), Trace.recording())
        assert not strays, (row.spec, strays)


def test_the_search_creates_its_tensors_on_the_inputs_device(tiny, tiny_images) -> None:
    """Its scores are float64 on purpose, so only devices are audited; its results go to the CPU explicitly."""
    with creation_audit(float64=True) as strays, torch.autocast("cpu", dtype=torch.bfloat16):
        search_batch(tiny.visual, tiny.arch, tiny_images, SearchSettings(unit=2, step_tokens=8, total=0.25))
    assert not strays


@pytest.mark.parametrize("family", ["vit-map", "eva02", "pe-core"])
def test_timm_tower_adapters_create_their_tensors_on_the_inputs_device_and_dtype(family: str) -> None:
    towers.register()
    model = load_model(towers.model_name(family), "none", precision="bf16")
    images = torch.randn(2, 3, *model.arch.image_size, generator=torch.Generator().manual_seed(0))
    for name in ("none", "random", "topk", "evit", "tome", "ats"):
        method = solve(name, model.arch, {}, None if name == "none" else 0.6).method
        with creation_audit() as strays, torch.no_grad():
            encode(model.visual, images, method.plan(), None, Trace.recording())
        assert not strays, (name, strays)
