"""Saved predictors: weights + config + the fingerprint of the model they serve, in one safetensors file.

A predictor reads one model's tokens at one block; loading it for another model would silently
produce nonsense rankings, so the file records the model fingerprint and `load_predictor` refuses a
mismatch. safetensors holds tensors only — nothing executable is ever unpickled.
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
from cliprank.predictor.model import PredictorConfig, RankingPredictor

FORMAT = "cliprank.predictor/1"
HEADER = {"config": dict, "block": int, "trained_on": list, "info": dict}  # JSON fields every file has


@dataclass
class LoadedPredictor:
    module: RankingPredictor
    block: int
    model_fingerprint: str
    trained_on: list[str]
    info: dict[str, Any]

    @property
    def macs(self) -> int:
        return self.module.macs()


def save_predictor(
    path: Path, module: RankingPredictor, model: LoadedModel, block: int, trained_on: list[str], info: dict[str, Any]
) -> None:
    header = {
        "format": FORMAT,
        "config": json.dumps(module.config.to_dict()),
        "model": model.name,
        "pretrained": model.pretrained,
        "model_fingerprint": model.fingerprint,
        "precision": model.precision.name,  # of the features it was trained on
        "block": str(block),
        "trained_on": json.dumps(trained_on),
        "info": json.dumps(info),
    }
    save_tensors(path, module.state_dict(), header)


def load_predictor(path: Path, model: LoadedModel, device: str | torch.device | None = None) -> LoadedPredictor:
    """A saved predictor, every header field and tensor checked; any damage is one line naming the file."""
    fix = "train one with `cliprank train-predictor` or fix --predictor"
    state, header = load_tensors(path, FORMAT, "predictor", fix)
    retrain = "retrain it with `cliprank train-predictor`"
    fields = {key: header_json(header, key, kind, "predictor", path, retrain) for key, kind in HEADER.items()}
    if header.get("model_fingerprint") != model.fingerprint:
        raise CliprankError(
            f"predictor {path} was trained for {header.get('model')}/{header.get('pretrained')} "
            f"(fingerprint {header.get('model_fingerprint')}), not {model.label}; train one for this model"
        )
    block, trained_on = fields["block"], fields["trained_on"]
    problem = None
    if not 0 <= block < model.arch.depth:
        problem = f"its block {block} is not a block of {model.label} (0..{model.arch.depth - 1})"
    elif not all(isinstance(name, str) for name in trained_on):
        problem = "its header field 'trained_on' is not a list of dataset names"
    elif not all(torch.isfinite(tensor).all() for tensor in state.values()):
        problem = "it holds non-finite weights"
    if problem is not None:
        raise CliprankError(f"predictor {path} is damaged: {problem}; {retrain}")
    try:
        config = PredictorConfig(**fields["config"])
        if (config.tokens, config.width) != (model.arch.tokens, model.arch.width):
            raise ValueError(f"it is shaped for {config.tokens} tokens of width {config.width}")
        module = RankingPredictor(config)
        module.load_state_dict(state)
    except (KeyError, TypeError, ValueError, RuntimeError) as err:
        raise CliprankError(f"predictor {path} does not match its recorded config ({reason(err)}); retrain it") from err
    module.eval().requires_grad_(False).to(device or model.device)
    return LoadedPredictor(
        module=module,
        block=block,
        model_fingerprint=header["model_fingerprint"],
        trained_on=trained_on,
        info=fields["info"],
    )
