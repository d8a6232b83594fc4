"""Parity with the official baselines: cliprank's ToMe, EViT, Top-K and ATS against transcriptions of
the authors' code (tests/official_baselines), on the same weights and images.

Two towers: a seeded open_clip ViT with a 14×14 patch grid (ViT-B/16's token count, small width), and
the shipped cliprank-tiny with real embedded test images. For each setting: embeddings agree within
1e-4 (max abs), the tokens after every block are the same sets (kept patch indices; for ToMe the very
groups of merged patches), and cliprank's batched result equals its one-image-at-a-time result.
"""

from __future__ import annotations

import pytest
import torch
from official_baselines import ats as official_ats
from official_baselines import evit as official_evit
from official_baselines import tome as official_tome
from open_clip.transformer import VisionTransformer

from cliprank.data.registry import load_dataset
from cliprank.engine import FUSED, Plan, TokenState, Trace, encode
from cliprank.engine.forward import embed, pool, run_blocks
from cliprank.methods import method_class
from cliprank.models import describe, embedded, load_model

TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def seeded():
    """A random open_clip ViT with ViT-B/16's 14×14 grid, and random images."""
    torch.manual_seed(0)
    tower = VisionTransformer(image_size=112, patch_size=8, width=96, layers=6, heads=4, mlp_ratio=4.0, output_dim=48)
    images = torch.randn(3, 3, 112, 112, generator=torch.Generator().manual_seed(1))
    return tower.eval(), images


@pytest.fixture(scope="module")
def shipped():
    """The shipped cliprank-tiny and real test images of each embedded dataset."""
    model = load_model(embedded.MODEL_NAME, embedded.TAG)
    images = []
    for name in ("digits", "textiles", "faces"):
        data = load_dataset(name, "test", transform=model.preprocess, limit=2)
        images += [data.dataset[i][0] for i in range(len(data))]
    return model.visual.eval(), torch.stack(images)


TOWERS = ["seeded", "shipped"]


def cliprank_run(visual, images: torch.Tensor, plan: Plan):
    """cliprank's embeddings and its token state after every block."""
    state = embed(visual, images)
    states = []
    for index in range(plan.depth):
        state = run_blocks(visual, state, plan, start=index, stop=index + 1)
        states.append(state)
    return pool(visual, state), states


def body_patches(state: TokenState, image: int) -> list[int]:
    """Original patch indices of the image's real body tokens (FUSED for a fused token), sorted."""
    pos = state.body(state.pos)[image]
    if state.valid is not None:
        pos = pos[state.body(state.valid)[image]]
    return sorted(p - 1 if p > 0 else FUSED for p in pos.tolist())


def assert_same_as_one_by_one(visual, images, plan, batched):
    alone = torch.cat([cliprank_run(visual, images[i : i + 1], plan)[0] for i in range(len(images))])
    assert (batched - alone).abs().max() <= TOLERANCE


@pytest.mark.parametrize("which", TOWERS)
@pytest.mark.parametrize(
    ("keep", "fuse", "locations"),
    [(0.7, True, None), (0.5, True, [1, 3]), (0.6, False, None), (0.45, False, [2])],
)
def test_evit_and_topk_equal_the_official_evit(request, which, keep, fuse, locations):
    visual, images = request.getfixturevalue(which)
    arch = describe(visual)
    values = {"keep": keep} if locations is None else {"keep": keep, "blocks": locations}
    method = method_class("evit")(arch, **values, fuse=fuse) if fuse else method_class("topk")(arch, **values)
    blocks = list(method.values["blocks"])
    with torch.no_grad():
        got, states = cliprank_run(visual, images, method.plan())
        for image in range(len(images)):
            expected, kept = official_evit.forward(visual, images[image : image + 1], keep, blocks, fuse_token=fuse)
            assert (got[image] - expected[0]).abs().max() <= TOLERANCE
            assert [body_patches(state, image) for state in states] == kept
        assert_same_as_one_by_one(visual, images, method.plan(), got)


@pytest.mark.parametrize("which", TOWERS)
@pytest.mark.parametrize(("k", "stages"), [(40, [3]), (30, [1, 3]), (80, [1, 2, 4]), (12, [2])])
def test_ats_equals_the_official_ats(request, which, k, stages):
    visual, images = request.getfixturevalue(which)
    method = method_class("ats")(describe(visual), K=k, blocks=stages)
    with torch.no_grad():
        got, states = cliprank_run(visual, images, method.plan())
        for image in range(len(images)):
            expected, kept = official_ats.forward(visual, images[image : image + 1], k, stages)
            assert (got[image] - expected[0]).abs().max() <= TOLERANCE
            assert [body_patches(state, image) for state in states] == kept
        assert_same_as_one_by_one(visual, images, method.plan(), got)


@pytest.mark.parametrize("which", TOWERS)
@pytest.mark.parametrize(("r", "prop_attn"), [([8] * 6, True), ([16, 12, 8, 4, 2, 1], True), ([10] * 6, False)])
def test_tome_equals_the_official_tome(request, which, r, prop_attn):
    visual, images = request.getfixturevalue(which)
    method = method_class("tome")(describe(visual), r=r, prop_attn=prop_attn)
    with torch.no_grad():
        got, states = cliprank_run(visual, images, method.plan())
        groups = tome_groups(visual, images, method.plan())
        for image in range(len(images)):
            expected, official_groups = official_tome.forward(visual, images[image : image + 1], r, prop_attn)
            assert (got[image] - expected[0]).abs().max() <= TOLERANCE
            assert [sorted(map(sorted, block[image])) for block in groups] == [
                sorted(map(sorted, block)) for block in official_groups
            ]
        assert_same_as_one_by_one(visual, images, method.plan(), got)


def tome_groups(visual, images, plan):
    """Per block, per image, the patch groups of cliprank's body tokens, from a recording trace."""
    trace = Trace.recording()
    encode(visual, images, plan, trace=trace)
    patches = describe(visual).patches
    current = [[frozenset([p]) for p in range(patches)] for _ in range(len(images))]
    by_block = {stage.block: stage for stage in trace.stages}
    groups = []
    for index in range(plan.depth):
        stage = by_block.get(index)
        if stage is not None:
            current = [
                [frozenset(row.nonzero().flatten().tolist()) for row in stage.sources[image]]
                for image in range(len(images))
            ]
        groups.append(current)
    return groups


@pytest.fixture(scope="module")
def shipped_with_resources():
    """The shipped model, its shipped rankings, predictor and tokens, and real digits test images with meta."""
    from cliprank.data.meta import image_hashes
    from cliprank.resources import load_resources

    model = load_model(embedded.MODEL_NAME, embedded.TAG)
    data = load_dataset("digits", "test", transform=model.preprocess, limit=5)
    items = [data.dataset[i] for i in range(len(data))]
    images = torch.stack([item[0] for item in items])
    indices = torch.tensor([int(item[2]) for item in items])
    meta = {"dataset": "digits", "split": "test", "index": indices, "image_hash": image_hashes(images)}
    specs = [(name, {}) for name in ("golden", "predictor", "predictor+tokens")]
    return model, images, meta, load_resources(model, specs)


def every_method() -> list[str]:
    from cliprank.methods import REGISTRY

    return sorted(REGISTRY) + ["predictor+tokens"]


@pytest.mark.parametrize("name", every_method())
def test_every_method_gives_an_image_the_same_result_alone_or_in_a_batch(shipped_with_resources, name):
    from cliprank.engine import encode
    from cliprank.methods.budget import solve

    model, images, meta, resources = shipped_with_resources
    method = solve(name, model.arch, {}, 0.7, resources).method
    plan = method.plan()
    with torch.no_grad():
        batched = encode(model.visual, images, plan, meta)
        for image in range(len(images)):
            alone_meta = {k: v[image : image + 1] if isinstance(v, torch.Tensor) else v for k, v in meta.items()}
            alone = encode(model.visual, images[image : image + 1], plan, alone_meta)
            assert (batched[image] - alone[0]).abs().max() <= TOLERANCE, (name, image)


def test_cliprank_methods_names_the_official_code_each_parity_test_follows(capsys, monkeypatch):
    from cli_runner import run_cli

    monkeypatch.setenv("COLUMNS", "500")
    assert run_cli(["methods"]) == 0
    listing = capsys.readouterr().out
    for name, repository in [
        ("tome", "facebookresearch/ToMe"),
        ("evit", "youweiliang/evit"),
        ("topk", "youweiliang/evit"),
        ("ats", "adaptivetokensampling/ATS"),
    ]:
        assert method_class(name).reference.startswith(repository)
        assert repository in listing
