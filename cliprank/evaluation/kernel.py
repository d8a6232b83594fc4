"""The kernel every evaluation pass runs: one batch of images under one row (a solved method setting).

Its result is a plain dict of CPU tensors — logits, per-image MACs, the executed schedule and, for
methods that rank patches, their patch scores — so a rank of a distributed run can save a batch's
results in a part file, and rank 0 can merge them into exactly what one process accumulates.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch

from cliprank.cost.analytic import per_image_macs
from cliprank.engine.context import Trace
from cliprank.engine.forward import encode
from cliprank.engine.plan import Plan
from cliprank.methods.base import Method
from cliprank.models.loading import LoadedModel
from cliprank.zeroshot import logits


def encode_batch(
    model: LoadedModel,
    images: torch.Tensor,
    meta: dict[str, Any],
    method: Method,
    plan: Plan,
    classifier: torch.Tensor,
    indices: Any,
) -> dict[str, Any]:
    """One batch under one method setting (`plan` is `method.plan()`, built once per pass)."""
    trace = Trace()
    with model.autocast():
        embeddings = encode(model.visual, images, plan, dict(meta), trace)
    result: dict[str, Any] = {
        "logits": logits(embeddings, classifier).cpu(),
        "attention": [t.cpu() for t in trace.attention_tokens],
        "mlp": [t.cpu() for t in trace.mlp_tokens],
        "macs": per_image_macs(model.arch, trace.attention_tokens, trace.mlp_tokens, method.schedule().overhead).cpu(),
    }
    if trace.patch_scores is not None:
        result["patch_scores"] = trace.patch_scores.cpu()
        result["indices"] = torch.as_tensor(indices)
    return result


@dataclass
class Accumulator:
    """One row's batch results over a dataset, in dataset order."""

    logits: list[torch.Tensor] = field(default_factory=list)
    macs: list[torch.Tensor] = field(default_factory=list)
    attention: list[list[torch.Tensor]] = field(default_factory=list)
    mlp: list[list[torch.Tensor]] = field(default_factory=list)
    patch_scores: list[torch.Tensor] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)

    def add(self, batch: dict[str, Any]) -> None:
        """Append one batch's results (see `encode_batch`)."""
        self.logits.append(batch["logits"])
        self.attention.append(list(batch["attention"]))
        self.mlp.append(list(batch["mlp"]))
        self.macs.append(batch["macs"])
        if batch.get("patch_scores") is not None:
            self.patch_scores.append(batch["patch_scores"])
            self.indices.append(batch["indices"])

    def schedule(self) -> dict[str, list[float]]:
        """Mean tokens per image entering each block's attention and MLP, as executed."""
        return {"attention": _means(self.attention), "mlp": _means(self.mlp)}


def _means(batches: list[list[torch.Tensor]]) -> list[float]:
    if not batches:
        return []
    return [round(float(torch.cat(blocks).float().mean()), 3) for blocks in zip(*batches)]
