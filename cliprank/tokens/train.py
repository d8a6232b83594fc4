"""Train learnable tokens for one pruning setup, with CLIP frozen.

Objectives:
- `distill` (default, label-free): make the pruned model's image embedding match the unpruned one's,
  loss = 1 − cos. No labels are used, so the tokens are not tied to a dataset's classes.
- `fewshot`: cross-entropy of 100·cos against the zero-shot classifier on K images per class
  (with optional learned text context, CoOp-style).

Only the tokens (and text context) have gradients; in a float16 precision (`amp`, the GPU default) the
loss is scaled against underflow (`torch.amp.GradScaler`). The tokens entering the insertion block do not
depend on them, so when the method leaves those blocks untouched they come from the feature cache
shared with the predictor, and only the blocks from the insertion point on run each step. Training
validates every epoch on a held-out split, keeps the best epoch, and resumes from its checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cliprank.data.items import ZeroShotDataset
from cliprank.distributed import Distributed
from cliprank.engine.forward import pool, resume, run_blocks
from cliprank.engine.plan import Plan
from cliprank.errors import CliprankError
from cliprank.methods.base import Method
from cliprank.models.loading import LoadedModel
from cliprank.predictor.features import block_features
from cliprank.tokens.model import LearnedTokens
from cliprank.tokens.settings import TokenTrainSettings
from cliprank.training import Trainable, run_epochs
from cliprank.zeroshot import LOGIT_SCALE, compute_classifier

log = logging.getLogger(__name__)


@dataclass
class SplitData:
    """One dataset split ready for token training: entering tokens, targets, labels, classifier."""

    dataset: ZeroShotDataset
    entering: torch.Tensor  # (N, T, C) tokens entering the insertion block (fp16)
    target: torch.Tensor  # (N, D) unpruned embeddings, normalised
    labels: torch.Tensor  # (N,)
    index: torch.Tensor  # (N,) dataset indices
    image_hash: torch.Tensor  # (N,)
    classifier: torch.Tensor  # (D, K)


def _prefix_is_identity(plan: Plan, block: int) -> bool:
    return all(layer.is_identity for layer in plan.layers[:block])


@torch.no_grad()
def prepare_split(
    model: LoadedModel, dataset: ZeroShotDataset, method: Method, block: int, progress: Any = None
) -> SplitData:
    """Tokens entering `block` under the method's plan, and the unpruned targets, for every image."""
    identity = Plan.identity(model.arch.depth)
    plan = method.plan()
    if not _prefix_is_identity(plan, block):
        raise CliprankError(
            f"add-tokens: {method.name} reduces tokens before block {block}; insert the tokens at or before "
            "its first reduction (--block)"
        )
    features = block_features(model, dataset, block, progress=progress)
    targets = []
    for start in range(0, len(features.tokens), 256):
        x = features.tokens[start : start + 256].to(model.device, model.precision.weights_dtype)
        with model.autocast():
            state = run_blocks(model.visual, resume(model.visual, x), identity, start=block)
            targets.append(F.normalize(pool(model.visual, state, float32=True), dim=-1))
    classifier = compute_classifier(model, dataset.classnames, dataset.templates)
    return SplitData(
        dataset=dataset,
        entering=features.tokens,
        target=torch.cat(targets).float(),
        labels=features.labels,
        index=features.index,
        image_hash=features.image_hash,
        classifier=classifier,
    )


def few_shot_rows(labels: torch.Tensor, shots: int, seed: int) -> torch.Tensor:
    """K rows per class, seeded."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().squeeze(1)
        rows.append(members[torch.randperm(len(members), generator=generator)[:shots]])
    return torch.cat(rows).sort().values


class TokenForward:
    """The forward from the insertion block with the method's plan followed by the tokens."""

    def __init__(self, model: LoadedModel, method: Method, tokens: LearnedTokens, block: int):
        self.model = model
        self.block = block
        self.tokens = tokens
        self.plan = method.plan().then(tokens.plan())

    def embeddings(self, data: SplitData, rows: torch.Tensor) -> torch.Tensor:
        """Float32 embeddings (the loss compares them a few ulps apart), the blocks in the model's precision."""
        model = self.model
        x = data.entering[rows].to(model.device, model.precision.weights_dtype)
        meta = {
            "dataset": data.dataset.name,
            "split": data.dataset.split,
            "index": data.index[rows],
            "image_hash": data.image_hash[rows],
        }
        with model.autocast():
            state = run_blocks(model.visual, resume(model.visual, x, meta), self.plan, start=self.block)
            return pool(model.visual, state, float32=True)

    def classifier(self, data: SplitData) -> torch.Tensor:
        if self.tokens.context is None:
            return data.classifier
        return self.tokens.text_classifier(self.model, data.dataset.classnames)


def loss_on(
    forward: TokenForward, data: SplitData, rows: torch.Tensor, objective: str, batch: int | None = None
) -> torch.Tensor:
    """Mean loss over `rows`; or, given `batch`, their summed loss over it (a rank's share of a global mean)."""
    embeddings = F.normalize(forward.embeddings(data, rows).float(), dim=-1)
    if objective == "distill":
        losses = 1 - (embeddings * data.target[rows].to(embeddings.device)).sum(-1)
        return losses.mean() if batch is None else losses.sum() / batch
    logits = LOGIT_SCALE * embeddings @ forward.classifier(data)
    labels = data.labels[rows].to(embeddings.device)
    if batch is None:
        return F.cross_entropy(logits, labels)
    return F.cross_entropy(logits, labels, reduction="sum") / batch


@torch.no_grad()
def validate(forward: TokenForward, splits: list[SplitData], batch_size: int = 256) -> dict[str, Any]:
    cosines, accuracies = [], {}
    for data in splits:
        rows = torch.arange(len(data.labels))
        embeddings = torch.cat(
            [
                F.normalize(forward.embeddings(data, rows[i : i + batch_size]).float(), dim=-1)
                for i in range(0, len(rows), batch_size)
            ]
        ).cpu()
        cosines.append((embeddings * data.target).sum(-1))
        predictions = (embeddings @ forward.classifier(data).cpu()).argmax(-1)
        accuracies[data.dataset.name] = float((predictions == data.labels).float().mean())
    return {
        "cosine": float(torch.cat(cosines).mean()),
        "top1": accuracies,
        "mean_top1": sum(accuracies.values()) / len(accuracies),
    }


def train_tokens(
    model: LoadedModel,
    method: Method,
    tokens: LearnedTokens,
    train_splits: list[SplitData],
    val_splits: list[SplitData],
    settings: TokenTrainSettings,
    checkpoint: Path,
    progress: Any = None,
    dist: Distributed | None = None,
) -> dict[str, Any]:
    """Optimise `tokens` in place; leaves the best epoch's values loaded and returns the history.

    Under torchrun every rank draws the same batches; each computes its slice of every global batch,
    gradients are summed over ranks (the one-process gradient of the global batch), and rank 0
    validates and checkpoints. Every rank ends with the same best tokens and history.
    """
    settings.validate()
    dist = dist or Distributed()
    torch.manual_seed(settings.seed)
    block = tokens.config.block
    forward = TokenForward(model, method, tokens, block)
    dist.broadcast_module(tokens)
    optimizer = torch.optim.AdamW(tokens.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    pools = [
        few_shot_rows(d.labels, settings.shots, settings.seed)
        if settings.objective == "fewshot"
        else torch.arange(len(d.labels))
        for d in train_splits
    ]
    steps = sum((len(p) + settings.batch_size - 1) // settings.batch_size for p in pools)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps)
    generator = torch.Generator().manual_seed(settings.seed)
    scaler = torch.amp.GradScaler(model.device.type) if model.precision.scales_gradients else None
    identity = hashlib.sha256(
        json.dumps(
            {
                "settings": asdict(settings),
                "config": tokens.config.to_dict(),
                "model": model.fingerprint,
                "precision": model.precision.name,
                "method": method.name,
                "values": str(sorted(method.values.items())),
            }
        ).encode()
    ).hexdigest()[:16]
    selector = "cosine" if settings.objective == "distill" else "mean_top1"
    trainable = Trainable(tokens, optimizer, scheduler, generator, scaler)
    result = run_epochs(
        trainable,
        epochs=settings.epochs,
        checkpoint=checkpoint,
        identity=identity,
        train_epoch=lambda: train_epoch(forward, trainable, pools, train_splits, settings, dist),
        validate=lambda: validate(forward, val_splits),
        selector=selector,
        describe=lambda entry: (
            f"loss {entry['loss']:.4f} · val cos {entry['cosine']:.4f} · val top-1 {100 * entry['mean_top1']:.1f}"
        ),
        title="train tokens",
        dist=dist,
        log=log,
        progress=progress,
    )
    return {**result, "settings": asdict(settings), "selected_by": selector}


def train_epoch(
    forward: TokenForward,
    trainable: Trainable,
    pools: list[torch.Tensor],
    splits: list[SplitData],
    settings: TokenTrainSettings,
    dist: Distributed,
) -> float:
    """One epoch: every split's rows in shuffled global batches, the batches in shuffled order; mean loss.

    With a gradient scaler, a step whose scaled gradients overflowed is skipped, and so is its
    learning-rate step: the schedule follows the steps actually taken.
    """
    optimizer, scheduler, generator, scaler = (
        trainable.optimizer,
        trainable.scheduler,
        trainable.generator,
        trainable.scaler,
    )
    batches = [
        (which, rows[order[i : i + settings.batch_size]])
        for which, rows in enumerate(pools)
        for order in [torch.randperm(len(rows), generator=generator)]
        for i in range(0, len(rows), settings.batch_size)
    ]
    total = 0.0
    parameters = list(forward.tokens.parameters())
    for position in torch.randperm(len(batches), generator=generator).tolist():
        which, rows = batches[position]
        optimizer.zero_grad(set_to_none=True)
        mine = rows[dist.part(len(rows))]  # all rows in one process
        if len(mine):
            loss = loss_on(forward, splits[which], mine, settings.objective, len(rows) if dist.enabled else None)
            (loss if scaler is None else scaler.scale(loss)).backward()
        else:  # this rank's slice of a short batch is empty: it contributes zero gradients
            loss = torch.zeros((), device=forward.model.device)
        (loss,) = dist.sum_gradients(parameters, loss)
        if scaler is None:
            optimizer.step()
            scheduler.step()
        else:
            scale = scaler.get_scale()
            scaler.step(optimizer)
            scaler.update()
            if scaler.get_scale() >= scale:  # the scale drops exactly when the step was skipped
                scheduler.step()
        total += loss.item()
    return total / max(1, len(batches))
