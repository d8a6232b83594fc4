"""Small open_clip models with a timm vision tower of each supported family, for offline tests.

open_clip builds a timm tower by its timm name only, so each family gets a timm entry point of its
own: the real architecture (the same timm class, blocks, attention, MLP, head and position scheme)
at 32 px, 4 px patches (64 of them, like cliprank-tiny), 64 channels and 6 blocks. Each is
registered with open_clip as a model config and loaded through `cliprank.models.load_model` like any
other model. Random weights are perturbed
(`perturbed`) so that biases, layer scales and heads that initialise at zero or near zero take part
in every comparison.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import open_clip
import timm
import torch
from timm.models import register_model

SMALL = {"img_size": 32, "patch_size": 4, "embed_dim": 64, "depth": 6, "num_heads": 4}
TEXT = {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1}

# family -> (timm architecture, its overrides, open_clip's timm_pool, timm_proj)
FAMILIES = {
    "vit-map": ("vit_base_patch16_siglip_224", {}, "map", "none"),  # SigLIP's architecture
    "eva02": ("eva02_base_patch16_clip_224", {"ref_feat_shape": (8, 8)}, "token", None),
    "eva02-postnorm": ("eva02_enormous_patch14_clip_224", {}, "token", None),
    "eva01": ("eva_giant_patch14_224", {}, "token", None),
    "pe-core": ("vit_pe_core_base_patch16_224", {"ref_feat_shape": (8, 8), "attn_pool_num_heads": 4}, "map", None),
    "pe-core-no-cls": (
        "vit_pe_core_gigantic_patch14_448",
        {"ref_feat_shape": (8, 8), "attn_pool_num_heads": 4, "img_size": 32, "patch_size": 4},
        "map",
        None,
    ),
    "vit-gap": ("vit_medium_patch16_gap_256", {}, "", "linear"),
}


def model_name(family: str) -> str:
    """The config name (open_clip would give any name containing "siglip" SigLIP's Hugging Face tokenizer)."""
    return f"cliprank-test-{family}"


def _entry_point(family: str, architecture: str, overrides: dict):
    def build(pretrained: bool = False, **kwargs):
        return timm.create_model(architecture, pretrained=False, **{**SMALL, **overrides, **kwargs})

    build.__name__ = f"cliprank_test_{family.replace('-', '_')}"
    return build


def register() -> None:
    """Register every family's timm entry point and open_clip config (idempotent)."""
    folder = Path(tempfile.mkdtemp(prefix="cliprank-test-towers-"))
    for family, (architecture, overrides, pool, proj) in FAMILIES.items():
        if model_name(family) in open_clip.list_models():
            continue
        entry = register_model(_entry_point(family, architecture, overrides))
        vision = {
            "timm_model_name": entry.__name__,
            "timm_model_pretrained": False,
            "timm_pool": pool,
            "image_size": 32,
        }
        if proj is not None:
            vision["timm_proj"] = proj
        config = {"embed_dim": 64 if proj == "none" else 32, "vision_cfg": vision, "text_cfg": TEXT}
        path = folder / f"{model_name(family)}.json"
        path.write_text(json.dumps(config))
        open_clip.add_model_config(path)


@torch.no_grad()
def perturbed(model: torch.nn.Module, seed: int = 0, std: float = 0.05) -> torch.nn.Module:
    """The model with seeded noise added to every vision parameter (zero-initialised ones included)."""
    generator = torch.Generator().manual_seed(seed)
    for parameter in model.visual.parameters():
        noise = torch.randn(parameter.shape, generator=generator) * std
        parameter.add_(noise.to(parameter.dtype))
    return model
