"""Parsing shared by commands: model lists, budgets, method lists, threads."""

from __future__ import annotations

from pathlib import Path

import torch
import typer

from cliprank.errors import CliprankError
from cliprank.methods.spec import MethodSpec, parse_method_specs

QuickGeluOption = typer.Option(
    None,
    "--quick-gelu/--no-quick-gelu",
    help="Force QuickGELU on or off (default: decided from the weights; OpenAI weights need it).",
)

# `--method all`: every method, in report order; those needing missing resources are dropped with a note.
ALL_METHODS = ("none", "random", "topk", "evit", "tome", "ats", "golden", "predictor", "predictor+tokens")


def split_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def parse_models(models: str, pretrained: str) -> list[tuple[str, str]]:
    names, tags = split_list(models), split_list(pretrained)
    if not names:
        raise CliprankError("no model given; pass --model NAME")
    if len(tags) == 1:
        tags = tags * len(names)
    if len(tags) != len(names):
        raise CliprankError(f"{len(names)} models but {len(tags)} --pretrained values; give one, or one per model")
    return list(zip(names, tags))


def resolve_methods(
    text: str,
    models: list[tuple[str, str]],
    rankings: list[Path] | None,
    predictor: Path | None,
    tokens: Path | None,
) -> list[MethodSpec]:
    """Method specs; `all` expands to every method whose inputs exist for these models."""
    if text.strip() != "all":
        return parse_method_specs(text)
    from cliprank.models import embedded

    embedded_only = all(pretrained == embedded.TAG for _, pretrained in models)
    available = {
        "golden": bool(rankings) or (embedded_only and embedded.has_rankings()),
        "predictor": predictor is not None or (embedded_only and embedded.has_predictor()),
        "predictor+tokens": (predictor is not None or (embedded_only and embedded.has_predictor()))
        and (tokens is not None or (embedded_only and embedded.has_tokens())),
    }
    return [(name, {}) for name in ALL_METHODS if available.get(name, True)]


def set_threads(threads: int | None) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
