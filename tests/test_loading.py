"""Loading models from every source, and failing in one clear line when a source is unusable."""

from __future__ import annotations

import time

import open_clip
import pytest
import torch

from cliprank.errors import CliprankError
from cliprank.models import load_model
from cliprank.models.loading import check_model_name


def test_unknown_model_names_close_matches() -> None:
    with pytest.raises(CliprankError, match="unknown model 'ViT-B-61'.*did you mean"):
        load_model("ViT-B-61", "none")


REFUSED = {
    "RN50": "ResNet",
    "convnext_base": "ConvNeXt",
    "MobileCLIP-S1": "FastViT",
    "ViTamin-S": "convolutional stem",
    "swin_base_patch4_window7_224": "windowed attention",
    "vit_relpos_medium_patch16_cls_224": "relative position bias",
    "coca_ViT-B-32": "CoCa",
}


@pytest.mark.parametrize("name", list(REFUSED))
def test_towers_without_tokens_to_prune_are_refused_in_one_line_with_the_reason(name: str) -> None:
    if open_clip.get_model_config(name) is None:
        pytest.fail(f"open_clip no longer ships {name}; pick another model of that family for this test")
    with pytest.raises(CliprankError, match=f"model '{name}' is not supported: .*{REFUSED[name]}") as error:
        check_model_name(name)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize(
    "name", ["ViT-B-16", "ViT-B-16-SigLIP", "ViT-SO400M-14-SigLIP2-378", "EVA02-L-14", "PE-Core-B-16"]
)
def test_vit_towers_of_open_clip_and_timm_are_accepted(name: str) -> None:
    assert check_model_name(name)["vision_cfg"]


def test_random_init_is_seeded(tiny) -> None:
    again = load_model("cliprank-tiny", "none")
    assert again.fingerprint == tiny.fingerprint
    assert load_model("cliprank-tiny", "none", seed=1).fingerprint != tiny.fingerprint


def test_local_checkpoints_load_and_mismatches_are_explained(tiny, tmp_path) -> None:
    path = tmp_path / "tiny.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = load_model("cliprank-tiny", str(path))
    assert loaded.fingerprint == tiny.fingerprint
    with pytest.raises(CliprankError, match="does not fit model 'ViT-B-32'"):
        load_model("ViT-B-32", str(path))
    with pytest.raises(CliprankError, match="checkpoint not found"):
        load_model("cliprank-tiny", str(tmp_path / "missing.pt"))
    corrupt = tmp_path / "corrupt.safetensors"
    corrupt.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(CliprankError, match="corrupt or unreadable"):
        load_model("cliprank-tiny", str(corrupt))


def test_openai_checkpoint_path_gets_quick_gelu(tiny, tmp_path) -> None:
    folder = tmp_path / "openai-weights"
    folder.mkdir()
    path = folder / "model.pt"
    torch.save(tiny.model.state_dict(), path)
    loaded = load_model("cliprank-tiny", str(path))
    assert loaded.quick_gelu and any("QuickGELU" in note for note in loaded.notes)
    assert type(loaded.visual.transformer.resblocks[0].mlp.gelu).__name__ == "QuickGELU"
    assert loaded.fingerprint != tiny.fingerprint  # activation is part of the identity
    plain = load_model("cliprank-tiny", str(path), quick_gelu=False)
    assert not plain.quick_gelu


def test_unavailable_tag_offline_fails_fast(monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(CliprankError, match="not in the local cache"):
        load_model("ViT-B-32", "openai")
    assert time.perf_counter() - start < 20  # seconds, not open_clip's retry loop


def test_unknown_tag_lists_the_known_ones() -> None:
    with pytest.raises(CliprankError, match="neither a pretrained tag"):
        load_model("ViT-B-32", "not-a-tag")


def test_truncated_torch_checkpoint_is_corrupt(tiny, tmp_path) -> None:
    path = tmp_path / "cut.pt"
    torch.save(tiny.model.state_dict(), path)
    path.write_bytes(path.read_bytes()[:5000])
    with pytest.raises(CliprankError, match="corrupt or unreadable"):
        load_model("cliprank-tiny", str(path))


class StateHolder(torch.nn.Module):
    """A module that only holds tensors, scripted into a TorchScript archive like OpenAI's CLIP files."""

    def forward(self) -> int:
        return 0


def torchscript_archive(state: dict[str, torch.Tensor], path) -> None:
    root = StateHolder()
    for key, value in state.items():
        *modules, leaf = key.split(".")
        holder = root
        for name in modules:
            if not hasattr(holder, name):
                holder.add_module(name, StateHolder())
            holder = getattr(holder, name)
        holder.register_buffer(leaf, value.clone())
    torch.jit.script(root).save(str(path))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, OpenAI's files are not going away
def test_torchscript_checkpoints_load_only_when_trusted(tiny, tmp_path) -> None:
    path = tmp_path / "ViT-tiny.pt"
    torchscript_archive(tiny.model.state_dict(), path)
    with pytest.raises(CliprankError, match="TorchScript archive .* runs code stored in the file.*--trust-torchscript"):
        load_model("cliprank-tiny", str(path))
    loaded = load_model("cliprank-tiny", str(path), trust_torchscript=True)
    assert loaded.quick_gelu and any("TorchScript" in note for note in loaded.notes)
    for mine, theirs in zip(loaded.visual.parameters(), tiny.visual.parameters(), strict=True):
        assert torch.allclose(mine, theirs, atol=1e-3)  # OpenAI's converter keeps their fp16 precision
