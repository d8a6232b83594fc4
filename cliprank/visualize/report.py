"""The patch maps an evaluate report carries: a few images per dataset, every method at one budget."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from cliprank.models.loading import LoadedModel
from cliprank.report.figures import patch_maps_file
from cliprank.search.store import RankingLookup
from cliprank.visualize.capture import Row, changes_tokens
from cliprank.visualize.images import dataset_batch, report_images
from cliprank.visualize.patch_maps import budget_title, render_patch_maps


def report_patch_maps(
    out_dir: Path,
    model: LoadedModel,
    dataset: Any,
    split: str,
    rows: Sequence[tuple[Row, float | None]],
    reference: torch.Tensor,
    golden: RankingLookup | None,
    predictor: Any,
    images: int,
) -> Path:
    """Draw `images` images of `dataset` (see `report_images`) into the report folder; returns the PNG.

    Of a multi-budget run the tightest budget is drawn, where methods differ most; rows given with
    explicit knobs (no budget) are drawn too.
    """
    budgets = [budget for _, budget in rows if budget is not None]
    budget = min(budgets) if budgets else None
    drawn = [row for row, row_budget in rows if row_budget in (budget, None) and changes_tokens(row.method)]
    batch = dataset_batch(dataset, report_images(dataset, images))
    path = Path(out_dir) / patch_maps_file(model.name, model.pretrained, dataset.name)
    title = budget_title(model, budget)
    return render_patch_maps(path, title, model, [batch], dataset, split, reference, drawn, golden, predictor)
