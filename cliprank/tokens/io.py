"""Saved learnable tokens: tensors + the pruning setup and model they were trained for.

Tokens compensate one specific pruning setup (method, knob values, block) of one specific model, so
the file records both; `load_tokens` refuses another model and `TokensSet.for_setup` refuses another
setup, each in one line that says what the tokens were trained for.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cliprank.errors import CliprankError
from cliprank.io import header_json, load_tensors, reason, save_tensors
from cliprank.models.loading import LoadedModel
from cliprank.tokens.model import LearnedTokens, TokenConfig

FORMAT = "cliprank.tokens/1"
HEADER = {"config": dict, "setup": dict, "info": dict}  # JSON fields every file has


@dataclass
class LoadedTokens:
    module: LearnedTokens
    setup: dict[str, Any]  # {"method": name, "values": {...}}
    info: dict[str, Any]
    path: Path

    def matches(self, method: str, values: dict[str, Any]) -> bool:
        return self.setup["method"] == method and _canonical(self.setup["values"]) == _canonical(values)

    def describe(self) -> str:
        values = ", ".join(f"{k}={v}" for k, v in sorted(self.setup["values"].items()))
        return f"{self.setup['method']}({values})"


def _canonical(values: dict[str, Any]) -> str:
    def plain(value: Any) -> Any:
        if isinstance(value, (tuple, list)):
            return [plain(v) for v in value]
        if isinstance(value, float):
            return round(value, 9)
        return value

    return json.dumps({k: plain(v) for k, v in values.items() if k != "kept_patches"}, sort_keys=True)


def save_tokens(
    path: Path, module: LearnedTokens, model: LoadedModel, setup: dict[str, Any], info: dict[str, Any]
) -> None:
    header = {
        "format": FORMAT,
        "config": json.dumps(module.config.to_dict()),
        "model": model.name,
        "pretrained": model.pretrained,
        "model_fingerprint": model.fingerprint,
        "precision": model.precision.name,  # the model's, while the tokens were trained
        "setup": json.dumps(setup),
        "info": json.dumps(info),
    }
    save_tensors(path, module.state_dict(), header)


def load_tokens_file(path: Path, model: LoadedModel) -> LoadedTokens:
    """A saved tokens file, every header field and tensor checked; any damage is one line naming the file."""
    path = Path(path)
    state, header = load_tensors(path, FORMAT, "tokens file", "train tokens with `cliprank add-tokens` or fix --tokens")
    retrain = "retrain them with `cliprank add-tokens`"
    fields = {key: header_json(header, key, kind, "tokens file", path, retrain) for key, kind in HEADER.items()}
    if header.get("model_fingerprint") != model.fingerprint:
        raise CliprankError(
            f"tokens {path} were trained for {header.get('model')}/{header.get('pretrained')}, not {model.label}; "
            "train tokens for this model"
        )
    setup = fields["setup"]
    problem = None
    if not (isinstance(setup.get("method"), str) and isinstance(setup.get("values"), dict)):
        problem = "its header field 'setup' lacks the method and its values"
    elif not all(torch.isfinite(tensor).all() for tensor in state.values()):
        problem = "it holds non-finite values"
    if problem is not None:
        raise CliprankError(f"tokens file {path} is damaged: {problem}; {retrain}")
    try:
        config = TokenConfig(**fields["config"])
        arch = model.arch
        if (config.width, config.depth) != (arch.width, arch.depth) or not 0 <= config.block < arch.depth:
            raise ValueError(f"it is shaped for width {config.width}, block {config.block} of {config.depth}")
        module = LearnedTokens(config)
        module.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CliprankError(
            f"tokens file {path} does not match its recorded config ({reason(err)}); retrain it"
        ) from err
    module.eval().requires_grad_(False).to(model.device)
    return LoadedTokens(module, setup, fields["info"], path)


@dataclass
class TokensSet:
    """Every tokens file given for a model; a method+tokens row picks the one trained for its setup."""

    items: list[LoadedTokens]

    def methods(self) -> set[str]:
        """The methods these tokens were trained for."""
        return {item.setup["method"] for item in self.items}

    def for_setup(self, method: str, values: dict[str, Any]) -> LoadedTokens:
        for item in self.items:
            if item.matches(method, values):
                return item
        have = "; ".join(item.describe() for item in self.items) or "none"
        wanted = ", ".join(f"{k}={v}" for k, v in sorted(values.items()) if k != "kept_patches")
        raise CliprankError(
            f"no learned tokens for {method}({wanted}) (have: {have}); train them with `cliprank add-tokens` "
            "for this setup or evaluate the setup the tokens were trained for"
        )


def load_tokens(path: Path, model: LoadedModel) -> TokensSet:
    """A tokens file, or a folder of them."""
    path = Path(path)
    files = sorted(path.glob("*.tokens.safetensors")) if path.is_dir() else [path]
    if path.is_dir() and not files:
        raise CliprankError(f"no *.tokens.safetensors files in {path}")
    return TokensSet([load_tokens_file(file, model) for file in files])
