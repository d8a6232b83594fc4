"""Zero-shot classification: the text classifier (built once, cached) and the metrics.

Protocol of CLIP and CLIP_benchmark: for every class, format each template with the class name,
encode, L2-normalise, average, re-normalise; logits = 100 · normalise(image embedding) · Wᵀ.
Metrics: top-1, top-5 (NaN under 5 classes) and mean per-class recall (balanced accuracy).

The classifier depends only on the text tower (and the precision it runs in), the class names and
the templates, never on the pruning method, so it is computed once per (model, dataset) and cached on
disk under a key made of the model fingerprint, the precision and a hash of names and templates.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from cliprank.io import atomic_save_torch
from cliprank.models.loading import LoadedModel
from cliprank.precision import autocast_off

LOGIT_SCALE = 100.0


def cache_dir() -> Path:
    return Path(os.environ.get("CLIPRANK_CACHE", Path.home() / ".cache" / "cliprank"))


def format_prompt(template: str, classname: str) -> str:
    """Templates use `{c}` (CLIP_benchmark style) or a bare `{}`."""
    return template.replace("{c}", "{}").format(classname)


def classifier_key(model: LoadedModel, classnames: Sequence[str], templates: Sequence[str]) -> str:
    text = json.dumps(
        {
            "model": model.fingerprint,
            "precision": model.precision.name,
            "classnames": list(classnames),
            "templates": list(templates),
        }
    )
    return hashlib.sha256(text.encode()).hexdigest()[:20]


@torch.no_grad()
def compute_classifier(
    model: LoadedModel, classnames: Sequence[str], templates: Sequence[str], batch_size: int = 256
) -> torch.Tensor:
    """Class weights (D, K): the normalised mean of each class's normalised prompt embeddings."""
    prompts = [format_prompt(t, c) for c in classnames for t in templates]
    embeddings = []
    for start in range(0, len(prompts), batch_size):
        tokens = model.tokenizer(prompts[start : start + batch_size]).to(model.device)
        with model.autocast():
            text = model.model.encode_text(tokens)
        embeddings.append(F.normalize(text.float(), dim=-1))
    per_prompt = torch.cat(embeddings).view(len(classnames), len(templates), -1)
    return F.normalize(per_prompt.mean(dim=1), dim=-1).t().contiguous()


def zero_shot_classifier(
    model: LoadedModel, classnames: Sequence[str], templates: Sequence[str], use_cache: bool = True
) -> torch.Tensor:
    """The classifier for (model, classnames, templates), from the disk cache when present."""
    path = cache_dir() / "classifiers" / f"{classifier_key(model, classnames, templates)}.pt"
    if use_cache and path.is_file():
        try:
            cached = torch.load(path, map_location="cpu", weights_only=True)
            if cached.shape[1] == len(classnames):
                return cached.to(model.device)
        except Exception:  # a corrupt cache entry is rebuilt, never trusted
            path.unlink(missing_ok=True)
    weights = compute_classifier(model, classnames, templates)
    if use_cache:
        atomic_save_torch(weights.cpu(), path)
    return weights


def logits(image_embeddings: torch.Tensor, classifier: torch.Tensor) -> torch.Tensor:
    """Float32 logits whatever the model's precision (a bf16 logit ties near classes)."""
    with autocast_off(image_embeddings):
        return LOGIT_SCALE * F.normalize(image_embeddings.float(), dim=-1) @ classifier.float()


def top1_correct(scores: torch.Tensor, labels: torch.Tensor) -> list[bool]:
    """Whether each image's highest logit is its label, in the order given."""
    return (scores.argmax(dim=1) == labels).tolist()


def metrics(scores: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
    """acc1, acc5 and mean per-class recall from logits (N, K) and labels (N,)."""
    classes = scores.shape[1]
    top1 = scores.argmax(dim=1)
    acc1 = float((top1 == labels).double().mean())
    if classes >= 5:
        top5 = scores.topk(5, dim=1).indices
        acc5 = float((top5 == labels[:, None]).any(dim=1).double().mean())
    else:
        acc5 = float("nan")
    recalls = [float((top1[labels == k] == k).double().mean()) for k in labels.unique().tolist()]
    return {"acc1": acc1, "acc5": acc5, "mean_per_class_recall": sum(recalls) / len(recalls)}
