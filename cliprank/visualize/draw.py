"""Patch maps as pictures: one panel per reduction stage, one colour language for every panel.

- kept patch: the image as it is;
- dropped patch: greyed out (its luminance, washed towards light grey);
- merged group (ToMe): every patch of one token tinted with that group's colour — one colour per group,
  distinct within a panel, chosen by the group's first patch so a group keeps its colour from stage to
  stage while it grows;
- fused (EViT): greyed out and striped in one fixed colour — these patches live on only inside the fused
  token;
- outlines (drawn over a stage picture): around the kept patches, each group and each fused token, so what
  survived stays clear where a greyed patch looks like its image (a white patch, a grey photo);
- golden ranking and predictor scores: the patches' importance ranks on one colour scale (bright = kept
  first), over the image in grey.

The composites are plain arrays (what tests check pixel by pixel), upsampled so that every patch is at
least `PATCH_PIXELS` wide; the figure is drawn on matplotlib's Agg canvas, without pyplot.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Sequence
from io import BytesIO
from pathlib import Path

import numpy as np

from cliprank.io import atomic_write_bytes
from cliprank.visualize.capture import ImageView, MethodView
from cliprank.visualize.survival import PatchMap, shown_stages

PATCH_PIXELS = 16  # a patch is drawn at least this many pixels wide (8-px patches are doubled)
WASHED = (222, 227, 234)  # the cool light grey dropped patches fade towards (apart from grey images)
WASH = 0.72  # how far they fade
GROUP_TINT = 0.6  # weight of a group's colour over the image
HEAT_TINT = 0.7  # weight of the importance colour over the grey image
FUSED_RGB = (196, 0, 140)
STRIPE_PERIOD, STRIPE_WIDTH = 6, 2
HEAT_COLORMAP = "viridis"

COLUMNS = 6  # panels per row of the figure
MOST_STAGES = 3  # stage panels per method at most (evenly spread, always the last)
PANEL_INCHES = 1.72
ROW_INCHES = 2.35  # a row of panels with its titles
DPI = 100
RIGHT, WRONG, NEUTRAL = "#1a7f37", "#cf222e", "#24292f"
EDGE_STYLE = {"colors": "#24292f", "linewidths": 0.7, "alpha": 0.75}  # region outlines over a stage picture
LEGEND_TITLE = (
    "each method panel: what is left after that block;\nlines outline the kept patches, each group, each fused token"
)
HEADER_BACKGROUND = "#eef1f4"  # each image's first row: where one image's panels begin


def upsample_factor(image_size: tuple[int, int], grid: tuple[int, int]) -> int:
    patch = min(image_size[0] // grid[0], image_size[1] // grid[1])
    return max(1, math.ceil(PATCH_PIXELS / patch))


def patch_index(shape: tuple[int, int], grid: tuple[int, int]) -> np.ndarray:
    """(H, W) index of the patch each pixel belongs to (row-major, as the patch tokens are)."""
    rows = np.arange(shape[0]) * grid[0] // shape[0]
    cols = np.arange(shape[1]) * grid[1] // shape[1]
    return rows[:, None] * grid[1] + cols[None, :]


def upsampled(pixels: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    factor = upsample_factor(pixels.shape[:2], grid)
    return np.repeat(np.repeat(pixels, factor, axis=0), factor, axis=1)


def greyed(pixels: np.ndarray) -> np.ndarray:
    """The pixels' luminance washed towards a cool light grey: the patch is gone, a ghost of it stays."""
    washed = (1 - WASH) * _luminance(pixels)[..., None] + WASH * np.asarray(WASHED, dtype=np.float64)
    return np.round(washed).astype(np.uint8)


def stripes(shape: tuple[int, int]) -> np.ndarray:
    rows, cols = np.indices(shape)
    return (rows + cols) % STRIPE_PERIOD < STRIPE_WIDTH


@functools.cache
def group_palette(count: int) -> np.ndarray:
    """`count` saturated colours, pairwise apart, consecutive ones far apart in hue.

    Indexed by a group's first patch: distinct groups in a panel get distinct colours, and tinting them over
    the same background keeps them distinct. Candidate k has hue k·(golden angle) and one of a few
    saturation/value shades in turn; it is taken when it is at least `gap` levels from every colour taken
    (in some channel); `gap` narrows only when the candidates cannot supply enough (from 16 levels for a few
    hundred patches to 4 for a thousand).
    """
    from matplotlib.colors import hsv_to_rgb  # matplotlib is slow to import; loaded only when a figure is drawn

    shades = np.array([(s, v) for v in (0.95, 0.78, 0.62) for s in (0.95, 0.7, 0.5)])
    k = np.arange(8 * max(count, 64))
    hsv = np.column_stack([(k * (math.sqrt(5) - 1) / 2) % 1.0, shades[k % len(shades)]])
    candidates = np.round(hsv_to_rgb(hsv) * 255).astype(np.int64)
    for gap in (16, 12, 8, 6, 4, 2):
        chosen = np.empty((count, 3), dtype=np.int64)
        taken = 0
        for candidate in candidates:
            if taken == 0 or np.abs(chosen[:taken] - candidate).max(axis=1).min() >= gap:
                chosen[taken] = candidate
                taken += 1
                if taken == count:
                    return chosen.astype(np.uint8)
    return candidates[:count].astype(np.uint8)  # thousands of patches: colours may repeat, groups are unreadable anyway


def render_stage(pixels: np.ndarray, stage: PatchMap) -> np.ndarray:
    """The image after one stage: kept patches as they are, the others greyed, tinted or striped."""
    image = upsampled(pixels, stage.grid)
    index = patch_index(image.shape[:2], stage.grid)
    out = image.copy()
    faded = greyed(image)
    dropped = stage.dropped[index] | stage.fused[index]
    out[dropped] = faded[dropped]
    striped = stage.fused[index] & stripes(image.shape[:2])
    out[striped] = FUSED_RGB
    palette = group_palette(len(stage.token))
    for members in stage.groups():
        inside = np.isin(index, members)
        tint = GROUP_TINT * palette[members[0]].astype(np.float64)
        out[inside] = np.round(tint + (1 - GROUP_TINT) * image[inside]).astype(np.uint8)
    return out


def region_edges(stage: PatchMap, shape: tuple[int, int]) -> list[tuple[tuple[float, float], tuple[float, float]]]:
    """Patch edges between different regions, in the pixel coordinates of a (H, W) = `shape` picture.

    Regions: all kept patches together, each merged group, each fused token, all dropped patches together.
    Drawn as lines over the picture, they outline what survived even where a greyed patch looks like its
    image (a white patch, a grey photo).
    """
    rows, cols = stage.grid
    region = np.where(stage.kept, len(stage.fused_token), stage.token).reshape(rows, cols)
    height, width = shape[0] / rows, shape[1] / cols
    edges = []
    for r, c in np.ndindex(rows, cols):
        if c + 1 < cols and region[r, c] != region[r, c + 1]:
            x = (c + 1) * width - 0.5
            edges.append(((x, r * height - 0.5), (x, (r + 1) * height - 0.5)))
        if r + 1 < rows and region[r, c] != region[r + 1, c]:
            y = (r + 1) * height - 0.5
            edges.append(((c * width - 0.5, y), ((c + 1) * width - 0.5, y)))
    return edges


def importance_ranks(scores: np.ndarray) -> np.ndarray:
    """Scores (P,) as ranks in [0, 1], 1 = most important; NaN where a patch has no score."""
    scores = np.asarray(scores, dtype=np.float64)
    ranks = np.full(scores.shape, np.nan)
    scored = ~np.isnan(scores)
    order = np.argsort(np.argsort(scores[scored], kind="stable"), kind="stable")
    ranks[scored] = order / max(1, scored.sum() - 1)
    return ranks


def render_heatmap(pixels: np.ndarray, scores: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """Importance ranks in colour over the image in grey; unscored patches greyed out."""
    from matplotlib import colormaps  # matplotlib is slow to import; loaded only when a figure is drawn

    image = upsampled(pixels, grid)
    index = patch_index(image.shape[:2], grid)
    ranks = importance_ranks(scores)
    colours = colormaps[HEAT_COLORMAP](np.nan_to_num(ranks))[:, :3] * 255
    out = HEAT_TINT * colours[index] + (1 - HEAT_TINT) * _luminance(image)[..., None]
    out = np.round(out).astype(np.uint8)
    unscored = np.isnan(ranks)[index]
    out[unscored] = greyed(image)[unscored]
    return out


def _luminance(image: np.ndarray) -> np.ndarray:
    return image[..., :3].astype(np.float64) @ np.array([0.299, 0.587, 0.114])


# ----- the figure -----


def _wrapped(text: str, panels: int, lines: int = 2) -> str:
    """Text broken to fit `panels` panels side by side (about 24 characters of 8-pt text each)."""
    return "\n".join(textwrap.wrap(text, 24 * panels, break_long_words=True)[:lines])


def _label(view: ImageView, predicted: int, panels: int = 1) -> tuple[str, str]:
    """The prediction as text (✓/✗ and the class; → when the true class is unknown) and its colour."""
    name = view.classnames[predicted]
    correct = view.correct(predicted)
    mark, colour = ("→", NEUTRAL) if correct is None else (("✓", RIGHT) if correct else ("✗", WRONG))
    return _wrapped(f"{mark} {name}", panels), colour


def _cells(methods: Sequence[MethodView]) -> list[list[tuple[MethodView, list[int]]]]:
    """Methods packed into rows of at most COLUMNS panels, first fit, keeping their order within a row.

    Each comes with the stages it shows (all, or MOST_STAGES evenly spread ones including the last).
    """
    rows: list[list[tuple[MethodView, list[int]]]] = []
    used: list[int] = []
    for method in methods:
        stages = shown_stages(len(method.stages), MOST_STAGES)
        width = max(1, len(stages))
        row = next((i for i, taken in enumerate(used) if taken + width <= COLUMNS), None)
        if row is None:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append((method, stages))
        used[row] += width
    return rows


def _image_axis(axis, picture: np.ndarray) -> None:
    axis.imshow(picture, interpolation="nearest")
    axis.set_xticks([])
    axis.set_yticks([])
    for spine in axis.spines.values():
        spine.set_linewidth(0.5)
        spine.set_color("#8c959f")


def _header(subfigure, view: ImageView, show_legend: bool) -> None:
    subfigure.set_facecolor(HEADER_BACKGROUND)
    panels = subfigure.subfigures(1, 2, width_ratios=[3, COLUMNS - 3])
    axes = panels[0].subplots(1, 3)
    label = "" if view.label is None else f"true: {view.classnames[view.label]}"
    text, colour = _label(view, view.unpruned)
    _image_axis(axes[0], upsampled(view.pixels, view.grid))
    axes[0].set_title(f"{view.caption}\n{label}", fontsize=8, fontweight="bold", loc="left")
    axes[0].set_xlabel(f"{text}\nunpruned, {view.unpruned_gmacs:.3g} GMACs", fontsize=8, color=colour)
    for axis, scores, name in (
        (axes[1], view.golden, "golden ranking"),
        (axes[2], view.predictor, "predictor scores"),
    ):
        if scores is None:
            _image_axis(axis, np.full((8, 8, 3), 246, dtype=np.uint8))
            axis.text(0.5, 0.5, f"no {name}\nfor this image", ha="center", va="center", fontsize=7, color="#57606a")
        else:
            _image_axis(axis, render_heatmap(view.pixels, scores, view.grid))
        axis.set_title(name, fontsize=8)
    if view.predictor_tau is not None:
        axes[2].set_xlabel(f"Kendall τ vs golden {view.predictor_tau:.2f}", fontsize=7)
    if show_legend:
        _legend(panels[1])


def _legend(subfigure) -> None:
    from matplotlib import colormaps  # matplotlib is slow to import; loaded only when a figure is drawn
    from matplotlib.colorbar import ColorbarBase
    from matplotlib.colors import Normalize
    from matplotlib.legend_handler import HandlerTuple
    from matplotlib.patches import Patch

    grey = greyed(np.full((1, 3), 128, dtype=np.uint8))[0] / 255
    palette = group_palette(12)
    kept = Patch(facecolor="#ffffff", edgecolor="#57606a", label="kept patch: the image as it is")
    dropped = Patch(facecolor=grey, edgecolor="#57606a", label="dropped patch: greyed out")
    groups = tuple(Patch(facecolor=palette[i] / 255, edgecolor="none") for i in (0, 1, 2))
    fused = Patch(
        facecolor=grey, edgecolor=np.array(FUSED_RGB) / 255, hatch="////", label="fused into one token (EViT)"
    )
    legend_axis, bar_axis = subfigure.subplots(2, 1, height_ratios=[4, 1])
    legend_axis.axis("off")
    legend_axis.legend(
        [kept, dropped, groups, fused],
        [kept.get_label(), dropped.get_label(), "merged: one colour per token (ToMe)", fused.get_label()],
        handler_map={tuple: HandlerTuple(ndivide=None, pad=0)},
        loc="center left",
        fontsize=8,
        frameon=False,
        title=LEGEND_TITLE,
        title_fontsize=8,
        alignment="left",
    )
    ColorbarBase(bar_axis, cmap=colormaps[HEAT_COLORMAP], norm=Normalize(0, 1), orientation="horizontal")
    bar_axis.set_xticks([0, 1], ["least", "most important"], fontsize=7)
    bar_axis.set_title("golden / predictor: importance rank", fontsize=8)


def _method_cell(subfigure, view: ImageView, method: MethodView, stages: list[int]) -> None:
    # matplotlib is slow to import; loaded only when a figure is drawn
    from matplotlib.collections import LineCollection

    width = max(1, len(stages))
    axes = subfigure.subplots(1, width, squeeze=False)[0]
    solved = method.knob and method.knob.split("=")[0] + "=" not in method.name  # not already in the spec
    head = _wrapped(method.name + (f" · {method.knob}" if solved else ""), width)
    subfigure.suptitle(f"{head}\n{method.gmacs:.3g} GMACs ({100 * method.fraction:.0f}%)", fontsize=8)
    text, colour = _label(view, method.predicted, width)
    subfigure.supxlabel(text, fontsize=8, color=colour, fontweight="bold")
    if not stages:
        _image_axis(axes[0], upsampled(view.pixels, view.grid))
        axes[0].set_title("nothing reduced", fontsize=7)
        return
    for axis, chosen in zip(axes, stages, strict=True):
        stage = method.stages[chosen]
        picture = render_stage(view.pixels, stage)
        _image_axis(axis, picture)
        axis.add_collection(LineCollection(region_edges(stage, picture.shape[:2]), **EDGE_STYLE))
        axis.set_title(f"{stage.where}: {stage.tokens} tokens", fontsize=7)


def draw_figure(views: Sequence[ImageView], title: str):
    # matplotlib is slow to import; loaded only when a figure is drawn
    """The whole figure: per image a header (image, golden, predictor, legend), then every method."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    layout = [(view, _cells(view.methods)) for view in views]
    count = sum(1 + len(cells) for _, cells in layout)  # a header row per image, then its method rows
    figure = Figure(figsize=(COLUMNS * PANEL_INCHES, ROW_INCHES * count + 0.35), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=10, fontweight="bold")
    rows = iter(figure.subfigures(count, 1, squeeze=False)[:, 0])
    for number, (view, cells) in enumerate(layout):
        _header(next(rows), view, show_legend=number == 0)
        for cell_row in cells:
            widths = [max(1, len(stages)) for _, stages in cell_row]
            spare = COLUMNS - sum(widths)
            parts = next(rows).subfigures(1, len(widths) + (spare > 0), width_ratios=widths + [spare] * (spare > 0))
            for part, (method, stages) in zip(np.atleast_1d(parts), cell_row):
                _method_cell(part, view, method, stages)
    return figure


def save_figure(views: Sequence[ImageView], title: str, path: Path) -> Path:
    """Draw and write the PNG atomically; returns the path."""
    buffer = BytesIO()
    draw_figure(views, title).savefig(buffer, format="png", dpi=DPI)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)
