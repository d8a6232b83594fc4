"""Run solved methods on a few images with a recording trace; keep what a patch map needs.

For every image: the pixels the model saw, its label, the unpruned prediction, the golden ranking
(when the image was searched) and the predictor's scores (when a predictor is loaded), and per method
its solved knob, its GMACs on this very image (input-adaptive methods differ per image), its
zero-shot prediction and one `PatchMap` per reduction stage.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from cliprank.cost.analytic import per_image_macs, unpruned_macs
from cliprank.engine.context import Trace
from cliprank.engine.forward import encode
from cliprank.engine.plan import Plan
from cliprank.methods.base import Method, Resources
from cliprank.methods.registry import method_class
from cliprank.models.loading import LoadedModel
from cliprank.ranking_agreement import kendall_tau_b
from cliprank.report.schema import display_name
from cliprank.visualize.survival import PatchMap, patch_maps
from cliprank.zeroshot import logits


@dataclass
class Row:
    """One method to draw: its name as shown, the solved method, the classifier its logits go through."""

    name: str
    method: Method
    classifier: torch.Tensor

    @classmethod
    def of(cls, spec: str, method: Method, classifier: torch.Tensor) -> Row:
        """A row named as reports name it: the spec, with the method's label ("oracle", "CLS-free score")."""
        return cls(display_name(spec, method.label), method, classifier)


@dataclass
class MethodView:
    name: str
    knob: str  # the solved knob, e.g. "keep=0.594"; empty for knob-less methods
    gmacs: float  # on this image
    fraction: float  # of the unpruned tower's GMACs
    predicted: int
    stages: list[PatchMap]


@dataclass
class ImageView:
    caption: str
    pixels: np.ndarray  # (H, W, 3) uint8: the image as the model saw it (resized, cropped)
    grid: tuple[int, int]
    label: int | None  # None for an image file
    classnames: list[str]
    unpruned: int  # the unpruned model's prediction
    unpruned_gmacs: float
    golden: np.ndarray | None  # (P,) importance, higher = kept longer; None when not searched
    predictor: np.ndarray | None  # (P,) the predictor's scores; None without a predictor
    methods: list[MethodView]

    @property
    def predictor_tau(self) -> float | None:
        """Kendall's τ-b between the predictor's scores and the golden ranking, when both exist."""
        if self.golden is None or self.predictor is None:
            return None
        return kendall_tau_b(torch.as_tensor(self.predictor), torch.as_tensor(self.golden))

    def correct(self, predicted: int) -> bool | None:
        return None if self.label is None else predicted == self.label


def changes_tokens(method: Method) -> bool:
    """Whether the method's plan does anything at all (the unpruned reference does not)."""
    return not all(layer.is_identity for layer in method.plan().layers)


def displayable(images: torch.Tensor, preprocess: Any) -> np.ndarray:
    """(B, H, W, 3) uint8 pixels of preprocessed images: the preprocessing's normalisation undone."""
    normalize = next(
        (t for t in getattr(preprocess, "transforms", ()) if hasattr(t, "mean") and hasattr(t, "std")), None
    )
    pixels = images.detach().float().cpu()
    if normalize is not None:
        mean = torch.as_tensor(normalize.mean, dtype=torch.float32).view(1, -1, 1, 1)
        std = torch.as_tensor(normalize.std, dtype=torch.float32).view(1, -1, 1, 1)
        pixels = pixels * std + mean
    else:  # no known normalisation: stretch each image to the full range
        low = pixels.amin(dim=(1, 2, 3), keepdim=True)
        pixels = (pixels - low) / (pixels.amax(dim=(1, 2, 3), keepdim=True) - low).clamp_min(1e-12)
    return (pixels.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()


def knob_text(method: Method) -> str:
    """The solved knob as `name=value` (floats to 3 significant digits), or empty."""
    if method.knob is None:
        return ""
    value = method.values.get(method.knob)
    if isinstance(value, float):
        text = f"{value:.3g}"
    elif isinstance(value, (list, tuple)):
        text = "[" + ",".join(str(v) for v in value) + "]"
    else:
        text = str(value)
    return f"{method.knob}={text}"


def predictor_scores(model: LoadedModel, images: torch.Tensor, meta: dict[str, Any], predictor: Any) -> np.ndarray:
    """(B, P) the predictor's per-patch scores, read from a keep-everything run of the `predictor` method."""
    scorer = method_class("predictor")(model.arch, Resources(predictor=predictor), keep=1.0, block=predictor.block)
    trace = Trace()
    with model.autocast():
        encode(model.visual, images, scorer.plan(), dict(meta), trace)
    return trace.patch_scores.cpu().numpy()


@torch.inference_mode()
def capture(
    model: LoadedModel,
    images: torch.Tensor,
    meta: dict[str, Any],
    labels: Sequence[int | None],
    captions: Sequence[str],
    classnames: list[str],
    reference: torch.Tensor,
    rows: Sequence[Row],
    golden: np.ndarray | None = None,
    predictor: Any = None,
) -> list[ImageView]:
    """Every row's forward on `images` (preprocessed, one batch), recorded stage by stage.

    `reference` is the plain zero-shot classifier (for the unpruned prediction); `golden` (B, P) the
    images' golden scores when they were searched; `predictor` a loaded ranking predictor, if any.
    """
    images = images.to(model.device)
    full = unpruned_macs(model.arch)
    with model.autocast():
        unpruned_embeddings = encode(model.visual, images, Plan.identity(model.arch.depth), dict(meta))
    unpruned = logits(unpruned_embeddings, reference).argmax(dim=1).tolist()
    scores = None if predictor is None else predictor_scores(model, images, meta, predictor)
    per_row = []
    for row in rows:
        trace = Trace.recording()
        with model.autocast():
            embeddings = encode(model.visual, images, row.method.plan(), dict(meta), trace)
        predicted = logits(embeddings, row.classifier).argmax(dim=1).tolist()
        macs = per_image_macs(
            model.arch, trace.attention_tokens, trace.mlp_tokens, row.method.schedule().overhead
        ).tolist()
        stages = [patch_maps(stage, model.arch.grid) for stage in trace.stages]
        per_row.append((row, predicted, macs, stages))
    pixels = displayable(images, model.preprocess)
    views = []
    for i in range(images.shape[0]):
        methods = [
            MethodView(
                name=row.name,
                knob=knob_text(row.method),
                gmacs=macs[i] / 1e9,
                fraction=macs[i] / full,
                predicted=predicted[i],
                stages=[stage[i] for stage in stages],
            )
            for row, predicted, macs, stages in per_row
        ]
        views.append(
            ImageView(
                caption=captions[i],
                pixels=pixels[i],
                grid=model.arch.grid,
                label=labels[i],
                classnames=classnames,
                unpruned=unpruned[i],
                unpruned_gmacs=full / 1e9,
                golden=None if golden is None else np.asarray(golden[i]),
                predictor=None if scores is None else scores[i],
                methods=methods,
            )
        )
    return views
