"""One figure of what each method keeps on a few images: what `cliprank show` and evaluate reports draw."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cliprank.data.meta import batch_meta
from cliprank.models.loading import LoadedModel
from cliprank.search.store import RankingLookup
from cliprank.visualize.capture import ImageView, Row, capture
from cliprank.visualize.draw import save_figure
from cliprank.visualize.images import Batch


def batch_views(
    model: LoadedModel,
    batch: Batch,
    dataset: Any,
    split: str,
    reference: torch.Tensor,
    rows: Sequence[Row],
    golden: RankingLookup | None,
    predictor: Any,
) -> list[ImageView]:
    """Views of one batch: dataset images carry their index (for golden and seeded methods), files do not."""
    meta: dict[str, Any] = {}
    scores = None
    if batch.indices is not None:
        meta = batch_meta(dataset.name, split, batch.images, batch.indices, hashes=True)
        if golden is not None and all(int(i) in golden.row_of for i in batch.indices):
            scores = golden.patch_scores(meta["index"], meta["image_hash"]).numpy()
    return capture(
        model,
        batch.images,
        meta,
        batch.labels,
        batch.captions,
        list(dataset.classnames),
        reference,
        rows,
        golden=scores,
        predictor=predictor,
    )


def render_patch_maps(
    path: Path,
    title: str,
    model: LoadedModel,
    batches: Sequence[Batch],
    dataset: Any,
    split: str,
    reference: torch.Tensor,
    rows: Sequence[Row],
    golden: RankingLookup | None = None,
    predictor: Any = None,
) -> Path:
    """Capture every batch and draw all their images into one PNG at `path`."""
    views = [
        view
        for batch in batches
        for view in batch_views(model, batch, dataset, split, reference, rows, golden, predictor)
    ]
    return save_figure(views, title, path)


def budget_title(model: LoadedModel, budget: float | None) -> str:
    cost = (
        "methods as specified" if budget is None else f"budget {budget:g} (≤ {100 * budget:.0f}% of the unpruned GMACs)"
    )
    return f"What each method keeps — {model.label} · {cost}"
