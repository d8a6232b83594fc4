"""A model fingerprint: changes whenever any weight, the architecture or the activation changes.

Rankings, predictors and learned tokens are tied to the exact weights they were made with; this is
the key that lets cliprank refuse to apply them to another model.
"""

from __future__ import annotations

import hashlib

import torch

from cliprank.models.towers import describe


def fingerprint_tensors(named: dict[str, torch.Tensor], salt: str = "") -> str:
    digest = hashlib.sha256(salt.encode())
    for name in sorted(named):
        tensor = named[name].detach().to("cpu", torch.float32).contiguous()
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:16]


def fingerprint_model(model: torch.nn.Module, name: str) -> str:
    """Hash of the vision and text weights plus the activation type (QuickGELU changes outputs)."""
    activation = describe(model.visual).activation
    return fingerprint_tensors(dict(model.state_dict()), salt=f"{name}|{activation}")
