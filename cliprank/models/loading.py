"""One entry point that loads any supported open_clip model, from any source, or fails in one clear line.

Supported means: its vision tower has an adapter in `cliprank.models.towers` (open_clip's ViT, timm's
ViT and Eva towers: SigLIP, EVA-CLIP, PE-Core, ...). The check builds the tower on PyTorch's meta
device — shapes without memory — so even a 4-billion-parameter tower is judged in a fraction of a second.

Sources (`pretrained`):
- a tag open_clip knows (`openai`, `laion2b_s34b_b88k`, ...): downloaded by open_clip when online,
  read from its cache otherwise;
- a local checkpoint file (.pt / .bin / .pth / .safetensors, read with weights_only=True); an OpenAI
  TorchScript archive only with `trust_torchscript` (`--trust-torchscript`): `torch.jit.load` runs the
  code stored in the file, which weights_only cannot check;
- `embedded`: the small model shipped with cliprank (see `cliprank.models.embedded`);
- `none`: random initialisation (seeded), for cost measurements.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import logging
import os
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import _build_vision_tower, build_model_from_openai_state_dict

from cliprank.errors import CliprankError
from cliprank.io import reason
from cliprank.models import catalog, embedded
from cliprank.models.arch import VisionArch
from cliprank.models.cast import cast_weights
from cliprank.models.catalog import RANDOM_INIT, check_checkpoint, is_torchscript, looks_like_path
from cliprank.models.fingerprint import fingerprint_model
from cliprank.models.towers import describe, refusal
from cliprank.precision import FP32, Precision, resolve_precision

MISMATCH_WORDS = ("size mismatch", "Missing key", "Unexpected key", "changed", "shape")


@dataclass
class LoadedModel:
    """A CLIP model ready for cliprank: the model, its preprocessing, tokenizer and identity."""

    name: str
    pretrained: str
    model: torch.nn.Module
    preprocess: Callable
    tokenizer: Callable
    arch: VisionArch
    fingerprint: str
    quick_gelu: bool
    notes: tuple[str, ...] = ()
    precision: Precision = FP32

    @property
    def visual(self) -> torch.nn.Module:
        return self.model.visual

    def autocast(self) -> contextlib.AbstractContextManager:
        """The context every forward of this model runs in: autocast for `amp` precisions, else nothing."""
        return self.precision.autocast_context(self.device)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def label(self) -> str:
        return f"{self.name}/{Path(self.pretrained).name if self._is_path else self.pretrained}"

    @property
    def _is_path(self) -> bool:
        return self.pretrained not in (RANDOM_INIT, embedded.TAG) and looks_like_path(self.pretrained)


class LazyTokenizer:
    """open_clip's tokenizer for a model, loaded on first use.

    SigLIP-style models tokenize with a Hugging Face tokenizer (the `transformers` package and files
    from the hub); cost measurements never tokenize, so they must not need it.
    """

    def __init__(self, name: str):
        self.name = name
        self._tokenizer: Callable | None = None

    def __call__(self, texts: list[str]) -> torch.Tensor:
        if self._tokenizer is None:
            try:
                with _quiet():
                    self._tokenizer = open_clip.get_tokenizer(self.name)
            except Exception as err:
                raise CliprankError(
                    f"the tokenizer of {self.name} could not be loaded ({reason(err, typed=True)}); "
                    "Hugging Face tokenizers (SigLIP) need `pip install transformers` and one online download"
                ) from err
        return self._tokenizer(texts)


def known_models() -> list[str]:
    embedded.register()
    return open_clip.list_models()


def check_model_name(name: str) -> dict[str, Any]:
    """The model's config, or an error naming close matches or why its vision tower is not supported."""
    embedded.register()
    config = open_clip.get_model_config(name)
    if config is None:
        raise CliprankError(catalog.unknown_model(name, open_clip.list_models()))
    reason = vision_refusal(name)
    if reason:
        raise CliprankError(catalog.unsupported(name, reason))
    return config


@functools.cache
def vision_refusal(name: str) -> str | None:
    """Why cliprank cannot reduce the vision tower of registered model `name` (None: it can).

    Judged on the tower itself, as open_clip builds it from the config, on the meta device. open_clip's
    own vision-tower builder is used (private, but the same function since open_clip 2.0): building
    the whole model would also build text towers that need packages cost checks do not (nllb's).
    """

    config = open_clip.get_model_config(name)
    if config.get("multimodal_cfg"):
        return catalog.COCA
    try:
        with torch.device("meta"), _quiet():
            visual = _build_vision_tower(
                config["embed_dim"], config["vision_cfg"], quick_gelu=config.get("quick_gelu", False)
            )
    except Exception as err:  # a tower open_clip or timm cannot build here (e.g. a missing timm model)
        return f"its vision tower cannot be built here ({reason(err, typed=True)})"
    return refusal(visual)


def _offline() -> bool:
    if os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes"):
        return True
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=3):
            return False
    except OSError:
        return True


def _sidecar_quick_gelu(path: Path) -> bool | None:
    sidecar = path.parent / "open_clip_config.json"
    if not sidecar.is_file():
        return None
    try:
        return bool(json.loads(sidecar.read_text())["model_cfg"].get("quick_gelu", False))
    except (ValueError, KeyError):
        return None


def _checkpoint_wants_quick_gelu(name: str, path: Path) -> tuple[bool, str | None]:
    """OpenAI weights were trained with QuickGELU; a path does not say so to open_clip. Decide and explain."""
    if name.endswith("-quickgelu"):
        return False, None
    sidecar = _sidecar_quick_gelu(path)
    if sidecar is not None:
        return sidecar, "QuickGELU set from open_clip_config.json beside the checkpoint" if sidecar else None
    if is_torchscript(path):
        return True, "OpenAI TorchScript checkpoint: using QuickGELU (pass --no-quick-gelu to override)"
    if "openai" in str(path).lower():
        return True, "checkpoint path names OpenAI weights: using QuickGELU (pass --no-quick-gelu to override)"
    return False, None


def _torchscript_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a TorchScript archive. `torch.jit.load` runs code the file holds: callers check trust."""
    scripted = torch.jit.load(str(path), map_location="cpu")
    return {key: value for key, value in scripted.state_dict().items()}


def _load_local(name: str, path: Path, quick_gelu: bool, trust_torchscript: bool = False) -> torch.nn.Module:
    check_checkpoint(path, trust_torchscript)
    try:
        if is_torchscript(path):
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu, device="cpu")
            state = _torchscript_state_dict(path)
            converted = build_model_from_openai_state_dict(state, quick_gelu=quick_gelu)
            model.load_state_dict(converted.state_dict())
        else:
            model = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=quick_gelu, device="cpu")
    except CliprankError:
        raise
    except (RuntimeError, AssertionError, KeyError) as err:
        if not any(word in str(err) for word in MISMATCH_WORDS):
            raise CliprankError(f"checkpoint {path} is corrupt or unreadable ({reason(err)}); re-download it") from err
        raise CliprankError(
            f"checkpoint {path} does not fit model '{name}' ({reason(err)}); pass the model name it was trained as"
        ) from err
    except Exception as err:  # safetensors, pickle and zip errors have no common base class
        raise CliprankError(
            f"checkpoint {path} is corrupt or unreadable ({reason(err, typed=True)}); re-download it"
        ) from err
    return model


def _load_tag(name: str, tag: str, quick_gelu: bool) -> torch.nn.Module:
    if tag not in open_clip.list_pretrained_tags_by_model(name):
        catalog.check_tag(name, tag)  # the one-line refusal, listing the known tags
    offline = _offline()
    previous = os.environ.get("HF_HUB_OFFLINE")
    if offline:
        os.environ["HF_HUB_OFFLINE"] = "1"  # fail in seconds from the cache instead of retrying downloads
    try:
        with _quiet():
            return open_clip.create_model(name, pretrained=tag, force_quick_gelu=quick_gelu, device="cpu")
    except Exception as err:
        if offline:
            raise CliprankError(
                f"weights {name}/{tag} are not in the local cache and the hub is unreachable (offline); download "
                "them on a connected machine (they land in ~/.cache/huggingface) or pass --pretrained PATH"
            ) from err
        raise CliprankError(f"could not download weights {name}/{tag}: {reason(err)}") from err
    finally:
        if previous is None:
            os.environ.pop("HF_HUB_OFFLINE", None)
        else:
            os.environ["HF_HUB_OFFLINE"] = previous


@contextlib.contextmanager
def _quiet():
    """open_clip logs and warns freely; cliprank reports what matters itself."""
    logger = logging.getLogger()
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stderr(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def build_preprocess(visual: torch.nn.Module) -> Callable:
    """open_clip's evaluation transform for this tower (its recorded mean/std/interpolation when known)."""
    config = dict(getattr(visual, "preprocess_cfg", None) or {})
    return open_clip.image_transform(
        config.get("size", visual.image_size),
        is_train=False,
        mean=config.get("mean"),
        std=config.get("std"),
        interpolation=config.get("interpolation"),
        resize_mode=config.get("resize_mode"),
    )


def load_model(
    name: str = embedded.MODEL_NAME,
    pretrained: str = embedded.TAG,
    device: str = "cpu",
    quick_gelu: bool | None = None,
    seed: int = 0,
    precision: str | None = None,
    trust_torchscript: bool = False,
) -> LoadedModel:
    """Load `name` with weights from `pretrained` and check the engine can reduce its vision tower.

    `quick_gelu=None` decides automatically (tags: open_clip's own record; paths: see
    `_checkpoint_wants_quick_gelu`); True/False force it. `precision` is one of open_clip's names
    (`cliprank.precision`; None: amp on a GPU, fp32 on a CPU). The fingerprint is taken from the
    float32 weights, so files made in one precision serve the same weights in another. A TorchScript
    checkpoint is refused unless `trust_torchscript` (loading it runs code stored in the file).
    """
    config = check_model_name(name)
    resolved = resolve_precision(precision, device)
    notes: list[str] = []
    if pretrained == embedded.TAG:
        catalog.check_pretrained(name, pretrained)  # embedded weights exist for one model only
        path = embedded.weights_path()
        with _quiet():
            model = _load_local(name, path, bool(quick_gelu))
        use_quick_gelu = bool(quick_gelu)
    elif pretrained == RANDOM_INIT:
        use_quick_gelu = bool(quick_gelu) or bool(config.get("quick_gelu", False))
        torch.manual_seed(seed)
        with _quiet():
            model = open_clip.create_model(name, pretrained=None, force_quick_gelu=use_quick_gelu, device="cpu")
    elif looks_like_path(pretrained):
        path = Path(pretrained).expanduser()
        if quick_gelu is None:
            use_quick_gelu, note = _checkpoint_wants_quick_gelu(name, path) if path.is_file() else (False, None)
            if note:
                notes.append(note)
        else:
            use_quick_gelu = quick_gelu
        with _quiet():
            model = _load_local(name, path, use_quick_gelu, trust_torchscript)
    else:
        tag_config = open_clip.get_pretrained_cfg(name, pretrained) or {}
        use_quick_gelu = tag_config.get("quick_gelu", False) if quick_gelu is None else quick_gelu
        model = _load_tag(name, pretrained, bool(use_quick_gelu) and not name.endswith("-quickgelu"))
        use_quick_gelu = use_quick_gelu or name.endswith("-quickgelu")

    arch = describe(model.visual)
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    preprocess = build_preprocess(model.visual)
    fingerprint = fingerprint_model(model, name)
    return LoadedModel(
        name=name,
        pretrained=pretrained,
        model=cast_weights(model, resolved),
        preprocess=preprocess,
        tokenizer=LazyTokenizer(name),
        arch=arch,
        fingerprint=fingerprint,
        quick_gelu=bool(use_quick_gelu) or bool(config.get("quick_gelu", False)),
        notes=tuple(notes),
        precision=resolved,
    )
