"""The `add-tokens` pipeline: solve the pruning setup, train tokens for it, judge them, save them."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from cliprank.data import load_dataset
from cliprank.distributed import Distributed
from cliprank.errors import CliprankError
from cliprank.io import checkpoint_path
from cliprank.methods.base import Method, Resources
from cliprank.methods.budget import solve
from cliprank.methods.registry import method_class
from cliprank.methods.with_tokens import SUFFIX
from cliprank.models.loading import LoadedModel
from cliprank.report.schema import json_ready
from cliprank.resources import ResourceFiles, load_resources
from cliprank.tokens.io import LoadedTokens, TokensSet, save_tokens
from cliprank.tokens.model import LearnedTokens, TokenConfig
from cliprank.tokens.settings import TokenTrainSettings, check_token_config
from cliprank.tokens.train import (
    SplitData,
    TokenForward,
    prepare_split,
    train_tokens,
    validate,
)


@dataclass
class TokensJob:
    method: str
    values: dict[str, Any]
    budget: float | None
    datasets: list[str]
    out: Path
    count: int = 4
    block: int | None = None  # default: the method's first reduction block
    placement: str = "shallow"
    text_context: int = 0
    train_split: str = "train"
    val_split: str = "val"
    limit: int | None = None
    dataset_root: Path | None = None
    files: ResourceFiles = field(default_factory=ResourceFiles)  # rankings or predictor the method needs
    settings: TokenTrainSettings = field(default_factory=TokenTrainSettings)
    skip_unreadable: bool = False  # leave out image files that cannot be decoded


def default_block(model: LoadedModel, job: TokensJob, resources: Resources) -> int:
    """Where the tokens go by default: the first block the method, solved without them, changes."""
    block = solve(job.method, model.arch, job.values, job.budget, resources).method.first_reduction_block()
    if block is None:
        raise CliprankError(f"add-tokens: {job.method} changes no tokens; say where the tokens go with --block")
    return block


def solve_setup(model: LoadedModel, job: TokensJob, tokens: LearnedTokens, resources: Resources) -> Method:
    """The method's setting the tokens are for, solved *with* the tokens' cost when a budget is given."""
    placeholder = LoadedTokens(tokens, {"method": job.method, "values": {}}, {}, job.out)
    resources = replace(resources, tokens=TokensSet([placeholder]))
    solved = solve(job.method + SUFFIX, model.arch, job.values, job.budget, resources).method
    return method_class(job.method)(model.arch, resources, **solved.values)


def sample_patch_tokens(splits: list[SplitData], seed: int, images: int = 512) -> torch.Tensor:
    """Patch tokens entering the insertion block from up to `images` training images per split (N, C)."""
    generator = torch.Generator().manual_seed(seed)
    rows = []
    for split in splits:
        chosen = torch.randperm(len(split.entering), generator=generator)[:images]
        rows.append(split.entering[chosen, 1:].flatten(0, 1))
    return torch.cat(rows)


def run_add_tokens(
    model: LoadedModel, job: TokensJob, progress: Any = None, dist: Distributed | None = None
) -> tuple[Path, dict[str, Any]]:
    """Train, judge and save tokens. Under torchrun all ranks train; rank 0 alone judges and saves."""
    dist = dist or Distributed()
    dist.log_to(job.out.with_name(job.out.name + ".logs"))
    job.settings.validate()
    if "tokens" in method_class(job.method).requires:
        raise CliprankError(f"add-tokens: {job.method} has learned tokens already; give the method they are for")
    resources = load_resources(model, [(job.method, job.values)], job.files)
    block = job.block if job.block is not None else default_block(model, job, resources)
    check_token_config(job.count, block, job.placement, job.text_context, model.arch.depth, job.settings.objective)
    config = TokenConfig(
        count=job.count,
        block=block,
        placement=job.placement,
        text_context=job.text_context,
        width=model.arch.width,
        text_width=model.model.token_embedding.embedding_dim,
        depth=model.arch.depth,
    )
    tokens = LearnedTokens(config, seed=job.settings.seed).to(model.device)
    method = solve_setup(model, job, tokens, resources)

    def prepare(name: str, split: str) -> SplitData:
        with dist.main_first():  # rank 0 fills the dataset and feature caches, the other ranks read them
            dataset = load_dataset(
                name,
                split=split,
                root=job.dataset_root,
                transform=model.preprocess,
                limit=job.limit,
                skip_unreadable=job.skip_unreadable,
            )
            return prepare_split(model, dataset, method, block, progress)

    def splits(split: str) -> list[SplitData]:
        return [prepare(name, split) for name in job.datasets]

    train_splits, val_splits = splits(job.train_split), splits(job.val_split)
    tokens.start_from(sample_patch_tokens(train_splits, seed=job.settings.seed), seed=job.settings.seed)
    checkpoint = checkpoint_path(job.out)
    tokens.train()
    history = train_tokens(model, method, tokens, train_splits, val_splits, job.settings, checkpoint, progress, dist)
    tokens.eval()
    without = _without_tokens(model, method, tokens, val_splits) if dist.is_main else None
    setup = {"method": method.name, "values": json_ready(method.values), "budget": job.budget}
    info = {**history, "trained_on": job.datasets, "heldout_split": job.val_split, "heldout_without_tokens": without}
    if dist.is_main:
        save_tokens(job.out, tokens, model, setup, info)
        checkpoint.unlink(missing_ok=True)
    dist.barrier()  # the other ranks finish only once the tokens are saved
    return job.out, info


def _without_tokens(model, method, tokens, val_splits) -> dict[str, Any]:
    """The same validation with zero tokens: what the tokens are compared against."""
    empty = LearnedTokens(TokenConfig(**{**tokens.config.to_dict(), "count": 0, "text_context": 0}))
    return validate(TokenForward(model, method, empty, tokens.config.block), val_splits)
