"""Train the ranking predictor on golden rankings: KL to a ranking-derived target, or a margin loss.

Losses (Patch Ranking, Wu et al., WACV 2025):
- `kl` (the paper's): KL(target ‖ softmax(scores)), the target a softmax over per-patch logits built
  from the ranking (see TARGETS);
- `margin`: pairwise margin ranking — for sampled pairs (a ranked above b), max(0, m − (s_a − s_b)).
Adam, lr 1e-3, weight decay 1e-4, 50 epochs, batch 64, cosine schedule, as the authors.

Two named configurations (`settings.PRESETS`):
- `cliprank` (default): the `graded` target, LayerNorm + Linear channel reduction, cosine annealing
  per step down to 0. Every patch the search removed gets its own graded logit, so the predictor
  learns the order of all removed patches, whatever the tower's patch count.
- `authors`: CEWu/PatchRanking `train_predictor.py` as written — the `authors` target (L229-254:
  logit −5 − 0.1·j for the list positions j of the ranking's last 50 entries of 196, 0 for all
  others), the parameter-free average-pool reduction (L389-406), and CosineAnnealingLR stepped per
  epoch down to 1e-4 (L411, L456). Its 50 of 196 entries become the same fraction of other patch
  counts (16 of cliprank-tiny's 64).

Training reads cached block features (`features.py`), validates every epoch on a held-out split
(top-k overlap with the golden kept set, Kendall τ), keeps the best epoch, checkpoints atomically
after every epoch and resumes from the checkpoint when rerun with the same settings.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cliprank.distributed import Distributed
from cliprank.errors import CliprankError
from cliprank.models.loading import LoadedModel
from cliprank.predictor.features import Features
from cliprank.predictor.model import PredictorConfig, RankingPredictor
from cliprank.predictor.settings import TrainSettings
from cliprank.ranking_agreement import agreement
from cliprank.search.greedy import ranking_to_scores
from cliprank.search.store import Rankings
from cliprank.training import Trainable, run_epochs

AUTHORS_TAIL_FRACTION = 50 / 196  # the authors' target covers the last 50 of ViT-B/16's 196 ranking entries


def graded_target_logits(ranking: torch.Tensor, kept: int) -> torch.Tensor:
    """0 for every patch the search kept; −5 − 0.1·i for the i-th removed patch in ranking order."""
    batch, patches = ranking.shape
    removed = patches - kept
    logits = torch.zeros(batch, patches)
    values = (-5.0 - 0.1 * torch.arange(removed, dtype=torch.float32)).expand(batch, removed)
    return logits.scatter_(1, ranking[:, kept:], values)


def authors_target_logits(ranking: torch.Tensor, kept: int) -> torch.Tensor:
    """The authors' `ranking_to_prob_distribution`: −5 − 0.1·j at list positions j of the last entries
    (50 of 196, the same fraction elsewhere), 0 elsewhere; the search's kept count plays no part."""
    batch, patches = ranking.shape
    tail = max(1, round(AUTHORS_TAIL_FRACTION * patches))
    positions = torch.arange(patches - tail, patches, dtype=torch.float32)
    logits = torch.zeros(batch, patches)
    return logits.scatter_(1, ranking[:, patches - tail :], (-5.0 - 0.1 * positions).expand(batch, tail))


TARGETS = {"graded": graded_target_logits, "authors": authors_target_logits}  # keys: settings.TARGET_NAMES


@dataclass(frozen=True)
class Schedule:
    """A learning-rate schedule: how to build it, and whether it steps per batch or per epoch."""

    build: Any  # (optimizer, epochs, steps_per_epoch) -> torch LR scheduler
    per_step: bool


SCHEDULES = {  # keys: settings.SCHEDULE_NAMES
    "cosine-steps": Schedule(
        lambda optimizer, epochs, steps: torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps),
        per_step=True,
    ),
    "cosine-epochs": Schedule(
        lambda optimizer, epochs, steps: torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=epochs, eta_min=1e-4
        ),
        per_step=False,
    ),
}

log = logging.getLogger(__name__)


@dataclass
class TrainingData:
    """Features and their rankings, row-aligned."""

    tokens: torch.Tensor  # (N, T, C) fp16
    ranking: torch.Tensor  # (N, P) patch indices, most important first
    kept: int  # patches the search kept

    def __len__(self) -> int:
        return len(self.ranking)


def align(features: Features, rankings: Rankings, source: str) -> TrainingData:
    """Rows of `rankings` matched to `features` by dataset index, with content hashes checked."""
    row_of = {int(i): r for r, i in enumerate(rankings.index.tolist())}
    missing = [int(i) for i in features.index.tolist() if int(i) not in row_of]
    if missing:
        raise CliprankError(
            f"{source}: no golden ranking for {len(missing)} images (e.g. index {missing[0]}); "
            "search the same split and subset you train on"
        )
    rows = torch.tensor([row_of[int(i)] for i in features.index.tolist()])
    if not torch.equal(rankings.image_hash[rows], features.image_hash):
        raise CliprankError(f"{source}: rankings were searched on other images or preprocessing; search again")
    return TrainingData(features.tokens, rankings.ranking[rows].long(), rankings.kept)


def concatenate(parts: list[TrainingData]) -> TrainingData:
    kept = {p.kept for p in parts}
    if len(kept) != 1:
        raise CliprankError("rankings searched with different totals cannot train one predictor; use one setting")
    return TrainingData(torch.cat([p.tokens for p in parts]), torch.cat([p.ranking for p in parts]), kept.pop())


def kl_target(ranking: torch.Tensor, kept: int, target: str = "graded") -> torch.Tensor:
    """The target distribution over patches for rankings (B, P), built by TARGETS[target]."""
    return TARGETS[target](ranking, kept).softmax(dim=1)


def kl_loss(
    scores: torch.Tensor, ranking: torch.Tensor, kept: int, batch: int | None = None, target: str = "graded"
) -> torch.Tensor:
    """KL(target ‖ softmax(scores)) summed over rows and divided by `batch` (default: these rows — batchmean).

    A distributed rank passes the global batch size, so the ranks' losses add up to the global mean.
    """
    target = kl_target(ranking, kept, target).to(scores.device)
    return F.kl_div(scores.log_softmax(dim=1), target, reduction="sum") / (len(scores) if batch is None else batch)


def sample_pairs(
    batch: int, patches: int, pairs: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ranks (positions in a ranking) of sampled pairs per row: higher, lower, and whether they differ."""
    first = torch.randint(0, patches, (batch, pairs), generator=generator)
    second = torch.randint(0, patches, (batch, pairs), generator=generator)
    high, low = torch.minimum(first, second), torch.maximum(first, second)
    return high, low, high != low


def margin_hinge(
    scores: torch.Tensor,
    ranking: torch.Tensor,
    high: torch.Tensor,
    low: torch.Tensor,
    valid: torch.Tensor,
    margin: float,
) -> torch.Tensor:
    """Summed hinge of the valid pairs: the higher-ranked patch must outscore the lower by `margin`."""
    high_patch = ranking.gather(1, high).to(scores.device)
    low_patch = ranking.gather(1, low).to(scores.device)
    gap = scores.gather(1, high_patch) - scores.gather(1, low_patch)
    return (F.relu(margin - gap) * valid.to(scores.device)).sum()


def margin_loss(
    scores: torch.Tensor, ranking: torch.Tensor, margin: float, pairs: int, generator: torch.Generator
) -> torch.Tensor:
    """Hinge on sampled ordered pairs, averaged over the valid pairs."""
    high, low, valid = sample_pairs(*ranking.shape, pairs, generator)
    return margin_hinge(scores, ranking, high, low, valid, margin) / valid.sum().clamp(min=1)


def share_of_batch_loss(
    module: RankingPredictor,
    data: TrainingData,
    rows: torch.Tensor,
    part: slice,
    settings: TrainSettings,
    generator: torch.Generator,
    device: torch.device | str,
) -> torch.Tensor | None:
    """This process's share of the global batch `rows`' loss: the loss of `rows[part]`, normalised globally.

    The margin loss's pairs are drawn for the whole global batch on every rank (the generator stays in
    step everywhere) and sliced, so the shares add up to the one-process loss of the global batch.
    None when the slice is empty (a short last batch split over many ranks).
    """
    if settings.loss == "margin":
        high, low, valid = sample_pairs(len(rows), data.ranking.shape[1], settings.pairs, generator)
    mine = rows[part]
    if not len(mine):
        return None
    scores = module(data.tokens[mine].float().to(device))
    ranking = data.ranking[mine]
    if settings.loss == "kl":
        return kl_loss(scores, ranking, data.kept, batch=len(rows), target=settings.target)
    hinge = margin_hinge(scores, ranking, high[part], low[part], valid[part], settings.margin)
    return hinge / valid.sum().clamp(min=1)


@torch.no_grad()
def validate(module: RankingPredictor, data: TrainingData, batch_size: int = 256) -> dict[str, float]:
    module.eval()
    scores = torch.cat([module(data.tokens[i : i + batch_size].float()).cpu() for i in range(0, len(data), batch_size)])
    module.train()
    tau, overlap = agreement(scores, ranking_to_scores(data.ranking), data.kept)
    return {"kendall_tau": tau, "top_k_overlap": overlap}


def train(
    model: LoadedModel,
    train_data: TrainingData,
    val_data: TrainingData,
    settings: TrainSettings,
    checkpoint: Path,
    progress: Any = None,
    dist: Distributed | None = None,
) -> tuple[RankingPredictor, dict[str, Any]]:
    """Train and return the best-on-validation predictor and its history; resumes from `checkpoint`.

    Under torchrun every rank holds the same data and draws the same shuffled order; each takes its
    slice of every global batch and the gradients are summed over ranks before the step, which is the
    one-process gradient of the global batch. Rank 0 validates and checkpoints; on resume it reads the
    checkpoint and sends it to the others (no shared filesystem needed). Every rank returns the same
    best module and history.
    """
    settings.validate()
    dist = dist or Distributed()
    torch.manual_seed(settings.seed)
    config = (
        PredictorConfig.for_arch(model.arch, reduction=settings.reduction)
        if settings.dim is None
        else PredictorConfig.for_arch(
            model.arch,
            dim=settings.dim,
            token_hidden=settings.token_hidden,
            channel_hidden=settings.channel_hidden,
            reduction=settings.reduction,
        )
    )
    module = RankingPredictor(config).to(model.device)
    dist.broadcast_module(module)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    schedule = SCHEDULES[settings.schedule]
    scheduler = schedule.build(optimizer, settings.epochs, steps_per_epoch)
    generator = torch.Generator().manual_seed(settings.seed)
    # the features it learns from were computed in the model's precision
    identity = {
        "settings": settings.key(),
        "model": model.fingerprint,
        "precision": model.precision.name,
        "rows": len(train_data),
    }
    result = run_epochs(
        Trainable(module, optimizer, scheduler, generator),
        epochs=settings.epochs,
        checkpoint=checkpoint,
        identity=identity,
        train_epoch=lambda: train_epoch(
            module, optimizer, scheduler, generator, train_data, settings, model.device, dist
        ),
        validate=lambda: validate(module, val_data),
        selector="top_k_overlap",
        describe=lambda entry: f"loss {entry['loss']:.4f} · val overlap {entry['top_k_overlap']:.3f}",
        title="train predictor",
        dist=dist,
        log=log,
        progress=progress,
    )
    module.eval()
    return module, {**result, "settings": asdict(settings)}


def train_epoch(
    module: RankingPredictor,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    generator: torch.Generator,
    data: TrainingData,
    settings: TrainSettings,
    device: torch.device | str,
    dist: Distributed,
) -> float:
    """One pass over the shuffled data in global batches; returns the mean training loss (all ranks)."""
    order = torch.randperm(len(data), generator=generator)
    total = 0.0
    for start in range(0, len(data), settings.batch_size):
        rows = order[start : start + settings.batch_size]
        optimizer.zero_grad(set_to_none=True)
        loss = share_of_batch_loss(module, data, rows, dist.part(len(rows)), settings, generator, device)
        if loss is None:
            loss = torch.zeros((), device=device)
        else:
            loss.backward()
        (loss,) = dist.sum_gradients(module.parameters(), loss)
        optimizer.step()
        if SCHEDULES[settings.schedule].per_step:
            scheduler.step()
        total += loss.item() * len(rows)
    if not SCHEDULES[settings.schedule].per_step:
        scheduler.step()
    return total / len(data)
