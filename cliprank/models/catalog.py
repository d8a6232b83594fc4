"""Which models exist, which cliprank can reduce and with what weights — read without importing open_clip.

`cliprank models` and the checks of `--model` / `--pretrained` answer before torch is loaded, from the
same files open_clip reads: the JSON configs in its package's `model_configs` folder (found with
`importlib.util.find_spec`, which does not import the package; registered under their file names when
they have `embed_dim`, `vision_cfg` and `text_cfg`, as open_clip does), the embedded model's config,
and the table of pretrained tags in its `pretrained.py`, read as source.

Support is judged from the config (`refusal`): the tower family (open_clip's ViT, or timm's by model
name) and the features an adapter cannot run. The authoritative check builds the tower on the meta
device when a model is loaded (`loading.vision_refusal`); a test keeps both in agreement for every
config open_clip ships. A timm family this module does not know is listed as undecided, never guessed.
"""

from __future__ import annotations

import ast
import difflib
import functools
import importlib.util
import json
import os
import re
import sys
import zipfile
from pathlib import Path
from typing import Any

from cliprank.errors import CliprankError
from cliprank.models import embedded

RANDOM_INIT = "none"
CHECKPOINT_SUFFIXES = (".pt", ".pth", ".bin", ".safetensors")
REMOTE_PREFIXES = ("hf-hub:", "local-dir:")  # configs open_clip fetches or reads at load time

# Towers without patch tokens a transformer attends over globally, by class name (open_clip or timm)
NOT_TOKEN_TOWERS = {
    "ModifiedResNet": "convolutional (ResNet): no patch tokens to prune",
    "ConvNeXt": "convolutional (ConvNeXt): no patch tokens to prune",
    "FastVit": "convolutional/hybrid (FastViT): no global patch tokens to prune",
    "SwinTransformer": "windowed attention (Swin): dropping tokens breaks its fixed windows",
    "VisionTransformerRelPos": "relative position bias tied to a fixed grid (not supported)",
}
COCA = "CoCa: its captioning decoder reads every image token"
HYBRID_STEM = "hybrid: convolutional stem (HybridEmbed)"

UNKNOWN_FAMILY = "of a family cliprank does not know; loading it tells whether it works"
# timm model names by family, first match wins: the refusal, or "" for the families an adapter runs
TIMM_FAMILIES: tuple[tuple[str, str], ...] = (
    (r"^convnext", NOT_TOKEN_TOWERS["ConvNeXt"]),
    (r"^fastvit", NOT_TOKEN_TOWERS["FastVit"]),
    (r"^swin", NOT_TOKEN_TOWERS["SwinTransformer"]),
    (r"^vit_relpos", NOT_TOKEN_TOWERS["VisionTransformerRelPos"]),
    (r"^vitamin|_mci_", HYBRID_STEM),
    (r"^(eva|vit_pe_core)", ""),  # timm Eva: EVA01/EVA02, PE-Core
    (r"^vit_", ""),  # timm VisionTransformer: SigLIP, SigLIP2, ViT-gap, CLIP-style
)


def open_clip_folder() -> Path:
    spec = importlib.util.find_spec("open_clip")  # a top-level name: found without being imported
    if spec is None or not spec.submodule_search_locations:
        raise CliprankError("open_clip is not installed; install cliprank's dependencies (`pip install cliprank`)")
    return Path(list(spec.submodule_search_locations)[0])


def _natural_key(name: str) -> list[Any]:
    """open_clip's order of model names."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name.lower())]


@functools.cache
def configs() -> dict[str, dict[str, Any]]:
    """Every model config open_clip registers, and the embedded model's, by name in open_clip's order."""
    found: dict[str, dict[str, Any]] = {}
    for path in [*sorted((open_clip_folder() / "model_configs").glob("*.json")), embedded.CONFIG]:
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # open_clip would fail on it too; the model simply is not listed
        if isinstance(config, dict) and all(key in config for key in ("embed_dim", "vision_cfg", "text_cfg")):
            found[path.stem] = config
    return dict(sorted(found.items(), key=lambda item: _natural_key(item[0])))


def refusal(config: dict[str, Any]) -> str | None:
    """Why cliprank cannot reduce the vision tower `config` describes (None: it can)."""
    if config.get("multimodal_cfg"):
        return COCA
    vision = config["vision_cfg"]
    timm_name = vision.get("timm_model_name")
    if timm_name:
        for pattern, reason in TIMM_FAMILIES:
            if re.search(pattern, timm_name):
                return reason or None
        return f"timm model {timm_name} is {UNKNOWN_FAMILY}"
    if isinstance(vision.get("layers"), (list, tuple)):
        return NOT_TOKEN_TOWERS["ModifiedResNet"]
    if vision.get("attentional_pool"):
        return "attentional pooling (CoCa)"
    if vision.get("pool_type", "tok") not in ("tok", "avg"):
        return f"pool type '{vision['pool_type']}' (supported: tok, avg)"
    if vision.get("scaled_cosine_attn"):
        return "scaled-cosine attention (not supported)"
    return None


# ----- pretrained tags, read from open_clip's pretrained.py -----


def _tags_of(node: ast.expr, tables: dict[str, dict[str, bool]]) -> dict[str, bool]:
    """{tag: quick_gelu} of one model's entry: `dict(tag=_pcfg(...), ...)`, a dict literal, or a name of one."""
    if isinstance(node, ast.Name):
        return tables[node.id]
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "dict":
        pairs = [(keyword.arg, keyword.value) for keyword in node.keywords]
    elif isinstance(node, ast.Dict):
        pairs = [(ast.literal_eval(key), value) for key, value in zip(node.keys, node.values)]
    else:
        raise ValueError(f"unexpected entry at line {node.lineno}")
    return {tag: _quick_gelu(value) for tag, value in pairs}


def _quick_gelu(node: ast.expr) -> bool:
    keywords = node.keywords if isinstance(node, ast.Call) else []
    return any(k.arg == "quick_gelu" and isinstance(k.value, ast.Constant) and k.value.value for k in keywords)


@functools.cache
def pretrained_tags() -> dict[str, list[str]]:
    """open_clip's pretrained tags by model (its `_PRETRAINED`), with the `-quickgelu` variants it derives."""
    tree = ast.parse((open_clip_folder() / "pretrained.py").read_text(encoding="utf-8"))
    tables: dict[str, dict[str, bool]] = {}
    table: dict[str, dict[str, bool]] | None = None
    for node in tree.body:
        if not (isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name)):
            continue
        name, value = node.targets[0].id, node.value
        if name == "_PRETRAINED":
            if not isinstance(value, ast.Dict):
                raise ValueError("_PRETRAINED is not a dict literal")
            table = {ast.literal_eval(key): _tags_of(entry, tables) for key, entry in zip(value.keys, value.values)}
        elif isinstance(value, (ast.Call, ast.Dict)):
            try:
                tables[name] = _tags_of(value, tables)
            except (ValueError, KeyError):
                continue  # a module-level value that is not a table of tags
    if table is None:
        raise ValueError("no _PRETRAINED table")
    tags = {model: list(entries) for model, entries in table.items()}
    for model, entries in table.items():  # as open_clip does after defining the table
        quick = [tag for tag, wants in entries.items() if wants]
        if quick:
            tags[f"{model}-quickgelu"] = quick
    return tags


def tags(name: str) -> list[str]:
    """The pretrained tags of model `name` (read from open_clip's source; imported when that fails)."""
    try:
        return pretrained_tags().get(name, [])
    except (OSError, SyntaxError, ValueError, KeyError):  # another open_clip layout: ask open_clip itself
        import open_clip  # only when open_clip's files are laid out otherwise than expected

        return open_clip.list_pretrained_tags_by_model(name)


# ----- checks of --model and --pretrained, before anything is loaded -----


def check_model(name: str) -> None:
    """Refuse an unknown model name, or a model whose config already says its tower cannot be reduced,
    in one line (names with open_clip's hf-hub:/local-dir: prefixes pass).

    Once open_clip is imported, configs may have been registered at run time (`add_model_config`), which
    only its own registry knows: the load checks those.
    """
    if name.startswith(REMOTE_PREFIXES):
        return
    if name in configs():
        reason = refusal(configs()[name])
        if reason and not reason.endswith(UNKNOWN_FAMILY):  # an unknown timm family: building it tells
            raise CliprankError(unsupported(name, reason))
        return
    if "open_clip" in sys.modules:
        return
    raise CliprankError(unknown_model(name, list(configs())))


def unknown_model(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=3)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    return f"unknown model '{name}'; {hint}run `cliprank models` to list the supported ones"


def unsupported(name: str, reason: str) -> str:
    return f"model '{name}' is not supported: {reason}; run `cliprank models` for the supported ones"


def looks_like_path(value: str) -> bool:
    return value.endswith(CHECKPOINT_SUFFIXES) or os.sep in value or Path(value).exists()


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive (OpenAI's original checkpoints): a zip holding code, not just tensors."""
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as archive:
            return any(name.endswith("constants.pkl") or "/code/" in name for name in archive.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


TORCHSCRIPT_REFUSED = (
    "checkpoint {path} is a TorchScript archive (the format of OpenAI's original CLIP files): loading it runs "
    "code stored in the file, which weights_only=True cannot check; pass --trust-torchscript if you trust its "
    "source, or load OpenAI's weights by tag (--pretrained openai) or from a state-dict checkpoint"
)


def check_checkpoint(path: Path, trust_torchscript: bool) -> None:
    """A local checkpoint must be an existing file, and TorchScript only when its source is trusted."""
    if path.is_dir():
        raise CliprankError(
            f"--pretrained {path} is a folder; pass the checkpoint file in it (.pt/.pth/.bin/.safetensors)"
        )
    if not path.is_file():
        raise CliprankError(f"checkpoint not found: {path}; pass an existing .pt/.bin/.safetensors file")
    if not trust_torchscript and is_torchscript(path):
        raise CliprankError(TORCHSCRIPT_REFUSED.format(path=path))


def check_tag(name: str, tag: str) -> None:
    known = tags(name)
    if tag not in known:
        listed = ", ".join(known) if known else "none"
        raise CliprankError(
            f"'{tag}' is neither a pretrained tag of {name} (known: {listed}) nor an existing checkpoint file; "
            "pass a tag, a checkpoint path, 'embedded' or 'none'"
        )


def check_pretrained(name: str, pretrained: str, trust_torchscript: bool = False) -> None:
    """Refuse, before loading, weights that cannot be loaded for `name` (each reason in one line)."""
    if pretrained == embedded.TAG:
        if name != embedded.MODEL_NAME:
            raise CliprankError(f"'embedded' weights exist only for {embedded.MODEL_NAME}; pass a tag or a checkpoint")
    elif pretrained != RANDOM_INIT and looks_like_path(pretrained):
        check_checkpoint(Path(pretrained).expanduser(), trust_torchscript)
    elif pretrained != RANDOM_INIT and not name.startswith(REMOTE_PREFIXES) and name in configs():
        check_tag(name, pretrained)
