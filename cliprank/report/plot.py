"""`accuracy_vs_gmacs.png`: zero-shot acc1 against GMACs, one panel per dataset plus their mean.

The figure is drawn on matplotlib's Agg canvas directly (no pyplot), so it needs no display, touches no
global backend state and works in any thread. Each method keeps one colour and marker in every panel;
the unpruned model is a star with a dashed reference line, the ceiling every method is judged against,
and a grey band for its 95% interval. What the paired tests support is drawn, not left to the eye: a
filled marker differs from the unpruned model (p < 0.05 on the same images), a hollow one is within
noise; bars are each point's 95% Wilson interval (dataset panels).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from io import BytesIO
from pathlib import Path

from cliprank.io import atomic_write_bytes
from cliprank.report import claims as claims_of
from cliprank.report import grouping
from cliprank.report.schema import Report

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")


@dataclass(frozen=True)
class Point:
    gmacs: float
    acc1: float  # %
    real: bool  # the paired test says it differs from the unpruned model
    interval: tuple[float, float] | None = None  # 95% interval of acc1, %


@dataclass
class Panel:
    title: str
    lines: dict[str, list[Point]] = field(default_factory=dict)  # spec -> its points, one per budget
    unpruned: tuple[str, Point] | None = None  # the reference


def save_plot(report: Report, path: Path) -> Path:
    """Draw the report and write the PNG atomically; returns the path."""
    # matplotlib takes about a second to import; only drawing needs it
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    panels = _panels(report)
    labels = dict(grouping.methods(report.records))
    pruned = [spec for spec in labels if spec != grouping.UNPRUNED]
    palette = colormaps["tab10"].colors
    style = {spec: (palette[i % len(palette)], MARKERS[i % len(MARKERS)]) for i, spec in enumerate(pruned)}
    gmacs_label = "GMACs, " + "; ".join(sorted({r.gmacs_convention for r in report.records}))

    ncols = max(1, min(3, len(panels)))
    nrows = max(1, math.ceil(len(panels) / ncols))
    figure = Figure(figsize=(4.8 * ncols, 3.6 * nrows + 0.9), layout="constrained")
    FigureCanvasAgg(figure)
    axes = list(figure.subplots(nrows, ncols, squeeze=False).flat)
    handles: dict[str, object] = {}
    for axis, panel in zip(axes[: len(panels)], panels, strict=True):
        for spec, points in panel.lines.items():
            points = sorted(points, key=lambda p: p.gmacs)
            color, marker = style[spec]
            xs, ys = [p.gmacs for p in points], [p.acc1 for p in points]
            (handles[labels[spec]],) = axis.plot(xs, ys, color=color, marker=marker, markersize=5, linewidth=1.5)
            hollow = [p for p in points if not p.real]
            axis.plot(
                [p.gmacs for p in hollow], [p.acc1 for p in hollow], linestyle="none", marker=marker,
                markersize=5, markerfacecolor="white", markeredgecolor=color, zorder=3,
            )  # fmt: skip
            for p in points:
                if p.interval is not None:
                    axis.plot([p.gmacs, p.gmacs], p.interval, color=color, linewidth=0.7, alpha=0.5)
        if panel.unpruned is not None:
            spec, point = panel.unpruned
            axis.axhline(point.acc1, color="black", linestyle="--", linewidth=0.8, alpha=0.6)
            if point.interval is not None:
                axis.axhspan(*point.interval, color="black", alpha=0.07, linewidth=0)
            (handles[labels[spec]],) = axis.plot(
                [point.gmacs], [point.acc1], color="black", marker="*", markersize=13, linestyle="none"
            )
        axis.set_title(panel.title, fontsize=10)
        axis.set_xlabel(gmacs_label, fontsize=8)
        axis.set_ylabel("acc1 (%)", fontsize=8)
        axis.tick_params(labelsize=8)
        axis.grid(alpha=0.3)
    for axis in axes[len(panels) :]:
        axis.set_visible(False)
    if handles:
        ordered = [label for label in labels.values() if label in handles]
        figure.legend(
            [handles[label] for label in ordered], ordered, loc="outside lower center", ncols=min(5, len(ordered)),
            fontsize=8, frameon=False,
        )  # fmt: skip
        figure.suptitle(
            "filled: differs from the unpruned model (paired test on the same images, p < 0.05) · "
            "hollow: within noise · bars and grey band: 95% intervals",
            fontsize=8,
        )
    buffer = BytesIO()
    figure.savefig(buffer, format="png", dpi=110)
    atomic_write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _panels(report: Report) -> list[Panel]:
    models = grouping.by_model(report.records)
    panels: list[Panel] = []
    for (model, pretrained), records in models.items():
        suffix = f" — {model}/{pretrained}" if len(models) > 1 else ""
        datasets = grouping.by_dataset(records)
        for dataset, dataset_records in datasets.items():
            panel = Panel(f"{dataset}{suffix}")
            reference = grouping.baseline(dataset_records)
            claims = claims_of.dataset_claims(dataset_records)
            for record in dataset_records:
                interval = None if record.acc1_ci95 is None else tuple(100 * v for v in record.acc1_ci95)
                real = claims[record.budget].significant(record.method_spec)
                point = Point(record.gmacs, 100 * record.acc1, real, interval)
                if record is reference:
                    panel.unpruned = (record.method_spec, point)
                elif record.method != grouping.UNPRUNED:
                    panel.lines.setdefault(record.method_spec, []).append(point)
            panels.append(panel)
        if len(datasets) > 1:
            panels.append(_mean_panel(records, len(datasets), f"mean over {len(datasets)} datasets{suffix}"))
    return panels


def _mean_panel(records: list, n_datasets: int, title: str) -> Panel:
    """Only method × budget cells measured on every dataset: a partial mean would mislead."""
    panel = Panel(title)
    claims = claims_of.mean_claims(records)
    for (spec, budget), cell in grouping.means(records).items():
        if cell.datasets != n_datasets:
            continue
        point = Point(cell.gmacs, 100 * cell.acc1, claims[budget].significant(spec))
        if cell.reference:
            panel.unpruned = (spec, point)
        elif cell.method != grouping.UNPRUNED:
            panel.lines.setdefault(spec, []).append(point)
    return panel
