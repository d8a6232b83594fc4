"""The reduced forward: a keep-everything plan is open_clip's encode_image, on every layout."""

from __future__ import annotations

import open_clip
import pytest
import torch
from open_clip.transformer import ResidualAttentionBlock, VisionTransformer

from cliprank.engine import Plan, TokenState, Trace, encode
from cliprank.engine.forward import embed, pool, run_blocks
from cliprank.models import describe, load_model
from cliprank.models.arch import VisionArch


def _tower(**kwargs) -> VisionTransformer:
    torch.manual_seed(0)
    config = dict(image_size=32, patch_size=8, width=64, layers=3, heads=4, mlp_ratio=4.0, output_dim=32)
    config.update(kwargs)
    return VisionTransformer(**config).eval()


def _sequence_first(tower: VisionTransformer) -> VisionTransformer:
    """The same tower with open_clip's sequence-first blocks (the layout of open_clip <= 2.24)."""
    width, heads = tower.transformer.width, tower.transformer.resblocks[0].attn.num_heads
    blocks = []
    for old in tower.transformer.resblocks:
        new = ResidualAttentionBlock(width, heads, batch_first=False)
        new.load_state_dict(old.state_dict())
        blocks.append(new)
    tower.transformer.resblocks = torch.nn.ModuleList(blocks)
    tower.transformer.batch_first = False
    return tower.eval()


TOWERS = {
    "default": lambda: _tower(),
    "sequence-first": lambda: _sequence_first(_tower()),
    "custom-attention-qk-norm": lambda: _tower(qk_norm=True, scale_heads=True),
    "avg-pool": lambda: _tower(pool_type="avg"),
    "final-ln-after-pool": lambda: _tower(final_ln_after_pool=True),
    "layer-scale": lambda: _tower(ls_init_value=0.1),
    "non-square-grid": lambda: _tower(image_size=(32, 48)),
}


@pytest.mark.parametrize("name", list(TOWERS))
def test_keep_everything_equals_open_clip_forward(name: str) -> None:
    tower = TOWERS[name]()
    arch = describe(tower)
    images = torch.randn(3, 3, *arch.image_size)
    with torch.no_grad():
        expected = tower(images)
        got = encode(tower, images, Plan.identity(arch.depth))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()


def test_layouts_are_detected() -> None:
    assert describe(_tower()).layout == "batch-first"
    assert describe(_sequence_first(_tower())).layout == "sequence-first"
    assert describe(_tower(qk_norm=True)).attention == "open_clip.Attention"
    assert describe(_tower()).attention == "nn.MultiheadAttention"


@pytest.mark.parametrize("model_name", ["cliprank-tiny", "ViT-B-32"])
def test_keep_everything_equals_encode_image(model_name: str) -> None:
    model = load_model(model_name, "none")
    images = torch.randn(2, 3, *model.arch.image_size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = model.model.encode_image(images)
        got = encode(model.visual, images, Plan.identity(model.arch.depth))
    assert torch.allclose(got, expected, atol=1e-5)


def test_split_forward_equals_whole(tiny, tiny_images) -> None:
    plan = Plan.identity(tiny.arch.depth)
    with torch.no_grad():
        whole = encode(tiny.visual, tiny_images, plan)
        entering = run_blocks(tiny.visual, embed(tiny.visual, tiny_images), plan, stop=3)
        split = pool(tiny.visual, run_blocks(tiny.visual, entering, plan, start=3))
    assert torch.equal(whole, split)


def test_trace_records_full_schedule(tiny, tiny_images) -> None:
    trace = Trace()
    with torch.no_grad():
        encode(tiny.visual, tiny_images, Plan.identity(tiny.arch.depth), trace=trace)
    assert trace.schedule() == [(65.0, 65.0)] * 6


def test_padded_tokens_do_not_change_real_ones(tiny, tiny_images) -> None:
    """A padded (input-adaptive) batch gives each image the embedding it gets alone."""
    visual = tiny.visual
    with torch.no_grad():
        state = embed(visual, tiny_images[:2])
        keep_a, keep_b = torch.arange(0, 40), torch.arange(10, 30)
        alone = []
        for row, keep in ((0, keep_a), (1, keep_b)):
            single = TokenState.initial(state.x[row : row + 1])
            single = single.keep_body(keep[None])
            alone.append(pool(visual, run_blocks(visual, single, Plan.identity(6))))
        index = torch.stack([keep_a, torch.cat([keep_b, torch.zeros(20, dtype=torch.long)])])
        valid = torch.stack([torch.ones(40, dtype=torch.bool), torch.arange(40) < 20])
        padded = state.keep_body(index, valid)
        together = pool(visual, run_blocks(visual, padded, Plan.identity(6)))
    assert torch.allclose(together, torch.cat(alone), atol=1e-5)


def test_arch_reads_shapes() -> None:
    arch = describe(open_clip.create_model("ViT-B-16").visual)
    assert (arch.width, arch.depth, arch.heads, arch.patches, arch.tokens) == (768, 12, 12, 196, 197)
    assert isinstance(arch, VisionArch) and arch.mlp_width == 3072 and arch.output_dim == 512
