"""The epoch loop shared by `train-predictor` and `add-tokens`: validate, keep the best, checkpoint, resume.

After every epoch rank 0 validates, remembers the best epoch's weights by one validation metric,
and writes the whole training state (weights, optimiser, schedule, random generator, history)
atomically; a rerun with the same run identity continues from there and ends exactly where an
uninterrupted run would. Other ranks only train and receive the final state.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cliprank.distributed import Distributed
from cliprank.errors import CliprankError
from cliprank.io import atomic_save_torch, reason

CHECKPOINT_KEYS = frozenset({"identity", "module", "optimizer", "scheduler", "generator", "state"})
STATE_KEYS = frozenset({"epoch", "best", "best_state", "history"})


@dataclass
class Trainable:
    """What the loop checkpoints besides its own bookkeeping."""

    module: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any
    generator: torch.Generator
    scaler: torch.amp.GradScaler | None = None  # float16 precisions: the loss scale is training state too


def _damaged(checkpoint: Path, problem: str) -> CliprankError:
    return CliprankError(
        f"training checkpoint {checkpoint} is damaged ({problem}); delete it to train from the first epoch"
    )


def read_checkpoint(checkpoint: Path, identity: Any) -> dict[str, Any] | None:
    """The saved training state, or None when there is none; refuses a damaged one or one of another run."""
    if not checkpoint.exists():
        return None
    try:
        saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    except Exception as err:  # zip, pickle and unpickling errors share no base class
        raise _damaged(checkpoint, reason(err)) from err
    if not isinstance(saved, dict) or not CHECKPOINT_KEYS <= set(saved):
        raise _damaged(checkpoint, "it does not hold a whole training state")
    if saved["identity"] != identity:
        raise CliprankError(
            f"checkpoint {checkpoint} belongs to another training run; delete it or choose another --out"
        )
    if not isinstance(saved["state"], dict) or not STATE_KEYS <= set(saved["state"]):
        raise _damaged(checkpoint, "it does not hold a whole training state")
    return saved


def restore(trainable: Trainable, saved: dict[str, Any], checkpoint: Path) -> dict[str, Any]:
    """Load a checkpoint's states into `trainable`; returns the loop's bookkeeping."""
    try:
        trainable.module.load_state_dict(saved["module"])
        trainable.optimizer.load_state_dict(saved["optimizer"])
        trainable.scheduler.load_state_dict(saved["scheduler"])
        trainable.generator.set_state(saved["generator"])
        if trainable.scaler is not None:
            trainable.scaler.load_state_dict(saved["scaler"])
    except (RuntimeError, KeyError, ValueError, TypeError) as err:
        raise _damaged(checkpoint, f"its states do not fit this run: {reason(err)}") from err
    return saved["state"]


def run_epochs(
    trainable: Trainable,
    *,
    epochs: int,
    checkpoint: Path,
    identity: Any,
    train_epoch: Callable[[], float],
    validate: Callable[[], dict[str, Any]],
    selector: str,
    describe: Callable[[dict[str, Any]], str],
    title: str,
    dist: Distributed,
    log: logging.Logger,
    progress: Any = None,
) -> dict[str, Any]:
    """Train up to `epochs`, resuming from `checkpoint`; load the best epoch (by `selector`) and return
    `{"best": entry, "history": [entry per epoch]}`, each entry the epoch, its loss and its metrics."""
    state: dict[str, Any] = {"epoch": 0, "best": None, "best_state": None, "history": []}
    saved = dist.broadcast_object(read_checkpoint(checkpoint, identity) if dist.is_main else None)
    if saved is not None:
        state = restore(trainable, saved, checkpoint)
        log.info("resumed from %s after epoch %d", checkpoint, state["epoch"])
    task = progress.add_task(title, total=epochs, completed=state["epoch"]) if progress is not None else None
    for epoch in range(state["epoch"], epochs):
        loss = train_epoch()
        log.info("epoch %d: training loss %.5f", epoch + 1, loss)
        if not dist.is_main:
            continue
        entry = {"epoch": epoch + 1, "loss": loss, **validate()}
        state["history"].append(entry)
        if state["best"] is None or entry[selector] > state["best"][selector]:
            state["best"] = entry
            state["best_state"] = {k: v.detach().cpu().clone() for k, v in trainable.module.state_dict().items()}
        state["epoch"] = epoch + 1
        atomic_save_torch(
            {
                "identity": identity,
                "module": trainable.module.state_dict(),
                "optimizer": trainable.optimizer.state_dict(),
                "scheduler": trainable.scheduler.state_dict(),
                "generator": trainable.generator.get_state(),
                "scaler": None if trainable.scaler is None else trainable.scaler.state_dict(),
                "state": state,
            },
            checkpoint,
        )
        if progress is not None:
            progress.update(task, advance=1, description=f"{title} · {describe(entry)}")
    state = dist.broadcast_object(state)
    trainable.module.load_state_dict(state["best_state"])
    return {"best": state["best"], "history": state["history"]}
