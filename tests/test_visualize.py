"""Patch maps: the engine records what every stage kept, merged and fused; the pictures show exactly that."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from cli_runner import run_cli
from PIL import Image

from cliprank.cost.analytic import per_image_macs
from cliprank.engine import Trace, encode
from cliprank.methods.budget import solve
from cliprank.visualize.capture import Row, capture
from cliprank.visualize.draw import (
    FUSED_RGB,
    PATCH_PIXELS,
    greyed,
    render_heatmap,
    render_stage,
    save_figure,
    upsample_factor,
)
from cliprank.visualize.images import report_images
from cliprank.visualize.survival import DROPPED, PatchMap, shown_stages

# ----- helpers -----


def flat_patch_image(grid: tuple[int, int], patch: int, seed: int = 0) -> np.ndarray:
    """(H, W, 3) uint8: every patch one saturated colour (never grey, so greying it is visible)."""
    rng = np.random.default_rng(seed)
    colours = rng.integers(0, 256, size=(grid[0] * grid[1], 3))
    colours[:, rng.integers(0, 3, len(colours))] = 0  # one channel off: far from grey
    colours[np.arange(len(colours)), rng.integers(0, 3, len(colours))] = 255
    tiles = colours.reshape(grid[0], grid[1], 3).astype(np.uint8)
    return np.repeat(np.repeat(tiles, patch, axis=0), patch, axis=1)


def model_input(pixels: np.ndarray, model) -> torch.Tensor:
    """uint8 pixels as the model's preprocessing would hand them over (normalised, (1, 3, H, W))."""
    normalize = next(t for t in model.preprocess.transforms if hasattr(t, "std"))
    tensor = torch.as_tensor(pixels).permute(2, 0, 1).float().div(255)
    mean = torch.tensor(normalize.mean).view(3, 1, 1)
    std = torch.tensor(normalize.std).view(3, 1, 1)
    return ((tensor - mean) / std).unsqueeze(0)


def patch_blocks(picture: np.ndarray, grid: tuple[int, int]) -> list[np.ndarray]:
    """Each patch's pixels in a drawn picture, row-major like the patch tokens: (P,) arrays of (h, w, 3)."""
    rows, cols = picture.shape[0] // grid[0], picture.shape[1] // grid[1]
    return [
        picture[r * rows : (r + 1) * rows, c * cols : (c + 1) * cols] for r in range(grid[0]) for c in range(grid[1])
    ]


def one_capture(model, pixels: np.ndarray, name: str, values: dict, classnames=("a", "b")):
    """A patch-map capture of one synthetic image under one method, with the method's own trace."""
    from cliprank.zeroshot import zero_shot_classifier

    images = model_input(pixels, model)
    method = solve(name, model.arch, values, None).method
    classifier = zero_shot_classifier(model, list(classnames), ["a photo of a {c}."], use_cache=False)
    trace = Trace()
    with torch.inference_mode():
        encode(model.visual, images, method.plan(), {}, trace)
    rows = [Row(name, method, classifier)]
    [view] = capture(model, images, {}, [0], ["synthetic"], list(classnames), classifier, rows)
    return view, method, trace


# ----- the pictures -----


def test_greyed_patches_are_exactly_the_dropped_ones(tiny) -> None:
    pixels = flat_patch_image(tiny.arch.grid, tiny.arch.patch_size[0])
    view, method, trace = one_capture(tiny, pixels, "random", {"keep": 0.5, "seed": 4})
    np.testing.assert_array_equal(view.pixels, pixels)  # the picture is what the model saw
    expected_dropped = set(trace.patch_scores[0].argsort()[:32].tolist())  # the method's own scores
    [stage] = view.methods[0].stages
    picture = render_stage(view.pixels, stage)
    flat = pixels[:: tiny.arch.patch_size[0], :: tiny.arch.patch_size[1]].reshape(-1, 3)
    greyed_patches = set()
    for patch, block in enumerate(patch_blocks(picture, tiny.arch.grid)):
        colours = np.unique(block.reshape(-1, 3), axis=0)
        assert len(colours) == 1
        if (colours[0] == greyed(flat[patch])).all():
            greyed_patches.add(patch)
        else:
            assert (colours[0] == flat[patch]).all()
    assert greyed_patches == expected_dropped
    assert stage.tokens == 64 - 32 == int(trace.mlp_tokens[-1][0]) - 1


def test_each_tome_colour_is_exactly_one_merged_group(tiny) -> None:
    pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
    view, method, _ = one_capture(tiny, pixels, "tome", {"r": 6})
    merges = method.merges()
    for count, stage in enumerate(view.methods[0].stages, start=1):
        picture = render_stage(view.pixels, stage)
        by_colour: dict[tuple, set[int]] = {}
        for patch, block in enumerate(patch_blocks(picture, tiny.arch.grid)):
            colours = np.unique(block.reshape(-1, 3), axis=0)
            assert len(colours) == 1
            if tuple(colours[0]) != (128, 128, 128):  # an unmerged patch shows the image as it is
                by_colour.setdefault(tuple(colours[0]), set()).add(patch)
        groups = {frozenset(members.tolist()) for members in stage.groups()}
        assert {frozenset(patches) for patches in by_colour.values()} == groups
        assert sum(len(group) - 1 for group in groups) == sum(merges[:count])  # ToMe's own schedule
        assert stage.tokens == 64 - sum(merges[:count])


def test_evit_fused_patches_are_striped_and_kept_ones_untouched(tiny) -> None:
    pixels = flat_patch_image(tiny.arch.grid, tiny.arch.patch_size[0], seed=1)
    view, method, trace = one_capture(tiny, pixels, "evit", {"keep": 0.7, "blocks": [1]})
    [stage] = view.methods[0].stages
    expected_fused = set(trace.patch_scores[0].argsort()[: 64 - math.ceil(0.7 * 64)].tolist())  # CLS attention
    assert set(np.flatnonzero(stage.fused).tolist()) == expected_fused
    flat = pixels[::8, ::8].reshape(-1, 3)
    for patch, block in enumerate(patch_blocks(render_stage(view.pixels, stage), tiny.arch.grid)):
        colours = {tuple(c) for c in np.unique(block.reshape(-1, 3), axis=0)}
        if patch in expected_fused:
            assert colours == {FUSED_RGB, tuple(greyed(flat[patch]))}
        else:
            assert colours == {tuple(flat[patch])}


def test_ats_maps_and_costs_are_per_image(tiny) -> None:
    images = torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(5))
    images[1] *= 0.05  # a flat image concentrates less: another count
    method = solve("ats", tiny.arch, {"K": 30}, None).method
    classifier = torch.nn.functional.normalize(torch.randn(tiny.arch.output_dim, 2), dim=0)
    trace = Trace()
    with torch.inference_mode():
        encode(tiny.visual, images, method.plan(), {}, trace)
    rows = [Row("ats", method, classifier)]
    views = capture(tiny, images, {}, [None] * 3, ["a", "b", "c"], ["x", "y"], classifier, rows)
    macs = per_image_macs(tiny.arch, trace.attention_tokens, trace.mlp_tokens, method.schedule().overhead)
    block = method.values["blocks"][0]
    for i, view in enumerate(views):
        [stage] = view.methods[0].stages
        assert stage.tokens == int(trace.mlp_tokens[block][i]) - 1 == int((~stage.dropped).sum())
        assert view.methods[0].gmacs == pytest.approx(float(macs[i]) / 1e9)
        assert view.correct(view.methods[0].predicted) is None  # no label: a prediction, not a verdict


@pytest.mark.parametrize(("grid", "patch"), [((14, 14), 16), ((16, 16), 14), ((8, 8), 8)])
def test_every_patch_is_drawn_whole_and_visible(grid: tuple[int, int], patch: int) -> None:
    """ViT-B-16 (14×14 patches of 16 px), ViT-L-14 (16×16 of 14 px), the embedded model (8×8 of 8 px)."""
    pixels = flat_patch_image(grid, patch, seed=2)
    patches = grid[0] * grid[1]
    token = np.arange(patches)
    token[::3] = DROPPED  # every third patch dropped
    stage = PatchMap(grid, 3, True, token, np.zeros(patches, dtype=bool), int((token >= 0).sum()))
    picture = render_stage(pixels, stage)
    factor = upsample_factor(pixels.shape[:2], grid)
    assert picture.shape[0] == grid[0] * patch * factor and patch * factor >= PATCH_PIXELS
    flat = pixels[::patch, ::patch].reshape(-1, 3)
    for index, block in enumerate(patch_blocks(picture, grid)):
        expected = greyed(flat[index]) if index % 3 == 0 else flat[index]
        assert (block == expected).all()
    heat = render_heatmap(pixels, np.arange(patches, dtype=float), grid)
    assert heat.shape == picture.shape
    corners = [blocks[0, 0] for blocks in patch_blocks(heat, grid)]
    assert not np.array_equal(corners[0], corners[-1])  # least and most important differ in colour


def test_stage_choice_is_spread_and_ends_with_the_last() -> None:
    assert shown_stages(2, 3) == [0, 1]
    assert shown_stages(6, 3) == [2, 3, 5]
    assert shown_stages(24, 3) == [8, 15, 23]


def test_report_images_are_deterministic_and_cover_classes() -> None:
    class Items:  # what report_images reads of a dataset
        labels = np.array([2, 0, 1, 0, 2, 1, 3, 3])
        indices = np.array([10, 11, 12, 13, 14, 15, 16, 17])

    assert report_images(Items, 2) == [11, 10]  # first image of classes 0 and 2
    assert report_images(Items, 6) == [11, 12, 10, 16, 13, 15]  # every class, then each class's next


def test_vit_b_16_figure_is_a_readable_png(tmp_path) -> None:
    from cliprank.models import load_model

    model = load_model("ViT-B-16", "none")
    pixels = flat_patch_image(model.arch.grid, 16, seed=3)
    view, _, _ = one_capture(model, pixels, "tome", {"r": 8})
    assert [stage.grid for stage in view.methods[0].stages][-1] == (14, 14)
    path = save_figure([view], "title", tmp_path / "maps.png")
    with Image.open(path) as image:
        assert image.format == "PNG" and 800 <= image.width <= 1100  # reads in a browser and GitHub without zoom


# ----- the command and the report -----


def test_show_draws_dataset_images_and_image_files_of_the_embedded_default(tmp_path) -> None:
    picture, out = tmp_path / "mine.png", tmp_path / "maps.png"
    Image.fromarray(flat_patch_image((8, 8), 8)).save(picture)
    assert run_cli(["show", "-d", "digits", "-i", "7", "--image", str(picture), "-b", "0.6", "-o", str(out)]) == 0
    with Image.open(out) as image:  # every method but golden (an image file has no golden ranking)
        assert image.format == "PNG" and 800 <= image.width <= 1100


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["-d", "digitz", "-i", "0"], "unknown dataset"),
        (["-d", "digits", "-i", "500"], "image 500 is not in digits/test"),
        (["-d", "digits", "-i", "three"], "is not a list of image indices"),
        (["-d", "digits"], "no image chosen"),
        (["-d", "digits", "--image", "NOT_AN_IMAGE"], "cannot read image"),
        (["-d", "digits", "--image", "NOT_AN_IMAGE", "--method", "golden"], "golden needs the searched ranking"),
        (["-d", "digits", "-i", "0", "-b", "0.6,0.7"], "one budget at a time"),
    ],
)
def test_show_bad_input_is_one_line_and_exit_2(argv, message, tmp_path, capsys) -> None:
    argv = [str(tmp_path / "bad.png") if part == "NOT_AN_IMAGE" else part for part in argv]
    (tmp_path / "bad.png").write_text("not a picture")
    code = run_cli(["show", *argv, "-o", str(tmp_path / "out.png")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "out.png").exists()


EVALUATE = [
    "evaluate", "--pretrained", "none", "--dataset", "faces", "--method", "none,topk,tome", "--budget", "0.7,0.8",
    "--limit", "8", "--no-speed", "--no-flops",
]  # fmt: skip


def test_evaluate_adds_patch_maps_and_links_them(tmp_path) -> None:
    from cliprank.report.figures import patch_maps_file

    assert run_cli([*EVALUATE, "--out", str(tmp_path / "on")]) == 0
    figure = patch_maps_file("cliprank-tiny", "none", "faces")
    assert (tmp_path / "on" / figure).stat().st_size > 0
    assert f"]({figure})" in (tmp_path / "on" / "report.md").read_text()
    assert run_cli([*EVALUATE, "--patch-maps", "0", "--out", str(tmp_path / "off")]) == 0
    assert not (tmp_path / "off" / figure).exists()
    assert "What each method keeps" not in (tmp_path / "off" / "report.md").read_text()
