"""Train the ranking predictor on golden rankings: KL to a ranking-derived target, or a margin loss.

Losses (Patch Ranking, Wu et al., WACV 2025):
- `kl` (the paper's): the target distribution puts logit 0 on every patch the search kept and
  −5 − 0.1·i on the i-th removed patch (i grows towards the least important), softmaxed; the loss is
  KL(target ‖ softmax(scores)).
- `margin`: pairwise margin ranking — for sampled pairs (a ranked above b), max(0, m − (s_a − s_b)).
Defaults follow the paper: Adam, lr 1e-3, weight decay 1e-4, cosine schedule, 50 epochs, batch 64.

Training reads cached block features (`features.py`), validates every epoch on a held-out split
(top-k overlap with the golden kept set, Kendall τ), keeps the best epoch, checkpoints atomically
after every epoch and resumes from the checkpoint when rerun with the same settings.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cliprank.errors import CliprankError
from cliprank.io import atomic_save_torch
from cliprank.models.loading import LoadedModel
from cliprank.predictor.features import Features
from cliprank.predictor.model import PredictorConfig, RankingPredictor
from cliprank.ranking_agreement import agreement
from cliprank.search.greedy import ranking_to_scores
from cliprank.search.store import Rankings

LOSSES = ("kl", "margin")


@dataclass(frozen=True)
class TrainSettings:
    loss: str = "kl"
    epochs: int = 50
    batch_size: int = 64
    lr: float = 1e-3
    weight_decay: float = 1e-4
    margin: float = 1.0
    pairs: int = 256  # sampled pairs per image for the margin loss
    dim: int = 64
    token_hidden: int = 32
    channel_hidden: int = 256
    seed: int = 0

    def validate(self) -> None:
        checks = {
            "loss": (self.loss in LOSSES, f"must be one of {', '.join(LOSSES)}"),
            "epochs": (self.epochs >= 1, "must be >= 1"),
            "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "lr": (self.lr > 0, "must be > 0"),
            "weight_decay": (self.weight_decay >= 0, "must be >= 0"),
            "margin": (self.margin > 0, "must be > 0"),
            "dim": (self.dim >= 1, "must be >= 1"),
        }
        for name, (ok, problem) in checks.items():
            if not ok:
                raise CliprankError(f"train-predictor: {name}={getattr(self, name)!r} {problem}")

    def key(self) -> str:
        return hashlib.sha256(json.dumps(asdict(self), sort_keys=True).encode()).hexdigest()[:12]


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
    return TrainingData(
        torch.cat([p.tokens for p in parts]), torch.cat([p.ranking for p in parts]), kept.pop()
    )


def kl_target(ranking: torch.Tensor, kept: int) -> torch.Tensor:
    """The paper's target distribution over patches for rankings (B, P)."""
    batch, patches = ranking.shape
    removed = patches - kept
    target_logits = torch.zeros(batch, patches)
    tail = ranking[:, kept:]
    values = (-5.0 - 0.1 * torch.arange(removed, dtype=torch.float32)).expand(batch, removed)
    target_logits.scatter_(1, tail, values)
    return target_logits.softmax(dim=1)


def kl_loss(scores: torch.Tensor, ranking: torch.Tensor, kept: int) -> torch.Tensor:
    target = kl_target(ranking, kept).to(scores.device)
    return F.kl_div(scores.log_softmax(dim=1), target, reduction="batchmean")


def margin_loss(
    scores: torch.Tensor, ranking: torch.Tensor, margin: float, pairs: int, generator: torch.Generator
) -> torch.Tensor:
    """Hinge on sampled ordered pairs: the higher-ranked patch must outscore the lower by `margin`."""
    batch, patches = ranking.shape
    first = torch.randint(0, patches, (batch, pairs), generator=generator)
    second = torch.randint(0, patches, (batch, pairs), generator=generator)
    high, low = torch.minimum(first, second), torch.maximum(first, second)
    valid = high != low
    high_patch = ranking.gather(1, high).to(scores.device)
    low_patch = ranking.gather(1, low).to(scores.device)
    gap = scores.gather(1, high_patch) - scores.gather(1, low_patch)
    hinge = F.relu(margin - gap)
    return (hinge * valid.to(scores.device)).sum() / valid.sum().clamp(min=1)


@torch.no_grad()
def validate(module: RankingPredictor, data: TrainingData, batch_size: int = 256) -> dict[str, float]:
    module.eval()
    scores = torch.cat(
        [module(data.tokens[i : i + batch_size].float()).cpu() for i in range(0, len(data), batch_size)]
    )
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
) -> tuple[RankingPredictor, dict[str, Any]]:
    """Train and return the best-on-validation predictor and its history; resumes from `checkpoint`."""
    settings.validate()
    torch.manual_seed(settings.seed)
    config = PredictorConfig.for_arch(
        model.arch, dim=settings.dim, token_hidden=settings.token_hidden, channel_hidden=settings.channel_hidden
    )
    module = RankingPredictor(config).to(model.device)
    optimizer = torch.optim.Adam(module.parameters(), lr=settings.lr, weight_decay=settings.weight_decay)
    steps_per_epoch = math.ceil(len(train_data) / settings.batch_size)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=settings.epochs * steps_per_epoch)
    generator = torch.Generator().manual_seed(settings.seed)
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_state": None, "history": []}
    identity = {"settings": settings.key(), "model": model.fingerprint, "rows": len(train_data)}
    if checkpoint.is_file():
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
        if saved.get("identity") != identity:
            raise CliprankError(
                f"checkpoint {checkpoint} belongs to another training run; delete it or choose another --out"
            )
        module.load_state_dict(saved["module"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        generator.set_state(saved["generator"])
        state = saved["state"]
    task = progress.add_task("train predictor", total=settings.epochs, completed=state["epoch"]) if progress else None
    module.train()
    for epoch in range(state["epoch"], settings.epochs):
        order = torch.randperm(len(train_data), generator=generator)
        total = 0.0
        for start in range(0, len(train_data), settings.batch_size):
            rows = order[start : start + settings.batch_size]
            scores = module(train_data.tokens[rows].float().to(model.device))
            ranking = train_data.ranking[rows]
            if settings.loss == "kl":
                loss = kl_loss(scores, ranking, train_data.kept)
            else:
                loss = margin_loss(scores, ranking, settings.margin, settings.pairs, generator)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += loss.item() * len(rows)
        metrics = validate(module, val_data)
        entry = {"epoch": epoch + 1, "loss": total / len(train_data), **metrics}
        state["history"].append(entry)
        if state["best"] is None or metrics["top_k_overlap"] > state["best"]["top_k_overlap"]:
            state["best"] = entry
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
        state["epoch"] = epoch + 1
        atomic_save_torch(
            {
                "identity": identity, "module": module.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "generator": generator.get_state(), "state": state,
            },
            checkpoint,
        )
        if progress is not None:
            progress.update(
                task, advance=1,
                description=f"train predictor · loss {entry['loss']:.4f} · val overlap {metrics['top_k_overlap']:.3f}",
            )
    module.load_state_dict(state["best_state"])
    module.eval()
    return module, {"best": state["best"], "history": state["history"], "settings": asdict(settings)}
