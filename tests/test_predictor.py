"""The ranking predictor: shapes, MACs, losses, learning a planted ranking, saved files, resume."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
import torch

from cliprank.cost.analytic import unpruned_macs
from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.budget import solve
from cliprank.models import describe
from cliprank.precision import FP32
from cliprank.predictor.io import LoadedPredictor, load_predictor, save_predictor
from cliprank.predictor.model import PredictorConfig, RankingPredictor
from cliprank.predictor.settings import TrainSettings
from cliprank.predictor.train import TrainingData, kl_loss, kl_target, margin_loss, train
from cliprank.search.greedy import ranking_to_scores


@pytest.mark.parametrize("tokens,width", [(65, 192), (197, 768), (50, 96), (257, 1024)])
def test_output_shape_follows_the_tower(tokens: int, width: int) -> None:
    module = RankingPredictor(PredictorConfig(tokens=tokens, width=width))
    assert module(torch.randn(3, tokens, width)).shape == (3, tokens - 1)
    with pytest.raises(ValueError):
        module(torch.randn(3, tokens + 1, width))


def test_macs_are_counted_and_small() -> None:
    import open_clip

    arch = describe(open_clip.create_model("ViT-B-16").visual)
    module = RankingPredictor(PredictorConfig.for_arch(arch))
    linear = sum(m.in_features * m.out_features for m in module.modules() if isinstance(m, torch.nn.Linear))
    per_token = {
        module.reduce: arch.tokens,
        module.channel_mlp[0]: arch.tokens,
        module.channel_mlp[2]: arch.tokens,
        module.token_mlp[0]: module.config.dim,
        module.token_mlp[2]: module.config.dim,
        module.head: arch.tokens - 1,
    }
    expected = sum(layer.in_features * layer.out_features * n for layer, n in per_token.items())
    assert module.macs() == expected and linear > 0
    assert module.macs() <= 0.01 * unpruned_macs(arch)


def test_graded_target_grades_every_removed_patch() -> None:
    ranking = torch.tensor([[3, 1, 0, 2]])
    target = kl_target(ranking, kept=2)
    logits = torch.zeros(4)
    logits[0], logits[2] = -5.0, -5.1
    assert torch.allclose(target[0], logits.softmax(0))


def authors_ranking_to_prob_distribution(ranking: list[int]) -> torch.Tensor:
    """CEWu/PatchRanking train_predictor.py L229-254, transcribed: the last 50 list entries get
    −5 − 0.1·(list index), all others 0, then a softmax."""
    scores = torch.zeros(len(ranking))
    for index, rank in enumerate(ranking):
        scores[rank] = -5 - index * 0.1 if index >= len(ranking) - 50 else 0
    return scores.softmax(dim=-1)


def test_authors_target_is_the_authors_distribution_on_196_patches() -> None:
    rankings = torch.stack([torch.randperm(196, generator=torch.Generator().manual_seed(s)) for s in range(3)])
    target = kl_target(rankings, kept=136, target="authors")
    for row, ranking in zip(target, rankings):
        assert torch.allclose(row, authors_ranking_to_prob_distribution(ranking.tolist()), atol=1e-7)
    # on other patch counts the same fraction of the list (50/196) is graded: 16 of 64
    small = kl_target(torch.arange(64).unsqueeze(0), kept=38, target="authors")[0]
    assert (small[:48] == small[0]).all() and (small[48:] < small[0]).all()


def test_pool_reduction_is_the_authors_parameter_free_head() -> None:
    """The `pool` head equals the authors' Predictor (train_predictor.py L372-406): AdaptiveAvgPool1d over
    channels, timm's MixerBlock(dim, 197), Linear on the patch tokens — built here with timm itself."""
    from timm.models.mlp_mixer import MixerBlock

    config = PredictorConfig(tokens=197, width=768, dim=64, token_hidden=32, channel_hidden=256, reduction="pool")
    ours = RankingPredictor(config)
    mixer = MixerBlock(64, 197)
    mixer.norm1, mixer.norm2 = torch.nn.LayerNorm(64), torch.nn.LayerNorm(64)  # our LayerNorm eps (1e-5)
    mixer.mlp_tokens.fc1, mixer.mlp_tokens.fc2 = ours.token_mlp[0], ours.token_mlp[2]
    mixer.mlp_channels.fc1, mixer.mlp_channels.fc2 = ours.channel_mlp[0], ours.channel_mlp[2]
    mixer.norm1.load_state_dict(ours.norm_tokens.state_dict())
    mixer.norm2.load_state_dict(ours.norm_channels.state_dict())
    tokens = torch.randn(2, 197, 768)
    theirs = ours.head(mixer(torch.nn.AdaptiveAvgPool1d(64)(tokens))[:, 1:]).squeeze(-1)
    assert torch.allclose(ours(tokens), theirs, atol=1e-5)
    assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in mixer.parameters()) + 65
    assert config.macs() < PredictorConfig(tokens=197, width=768).macs()  # no 768×64 projection


def test_presets_name_the_two_configurations() -> None:
    from cliprank.predictor.settings import preset_settings
    from cliprank.predictor.train import SCHEDULES

    authors = preset_settings("authors", epochs=3)
    assert (authors.target, authors.reduction, authors.schedule, authors.epochs) == (
        "authors",
        "pool",
        "cosine-epochs",
        3,
    )
    assert preset_settings("cliprank") == TrainSettings()
    assert preset_settings("authors", target="graded").target == "graded"
    assert not SCHEDULES["cosine-epochs"].per_step and SCHEDULES["cosine-steps"].per_step
    with pytest.raises(CliprankError, match="unknown preset"):
        preset_settings("paper")
    with pytest.raises(CliprankError, match="target='best' must be one of"):
        preset_settings("cliprank", target="best").validate()


def test_authors_schedule_anneals_per_epoch_to_1e4(tmp_path, monkeypatch) -> None:
    data, val = planted_problem(n=64), planted_problem(n=32, seed=1)
    settings = TrainSettings(epochs=3, batch_size=16, dim=8, channel_hidden=16, schedule="cosine-epochs", lr=1e-3)
    rates = []

    class Watch:
        def add_task(self, *args, **kwargs):
            return 0

        def update(self, *args, **kwargs):
            rates.append(optimizers[0].param_groups[0]["lr"])

    optimizers = []
    original = torch.optim.Adam

    def capture(*args, **kwargs):
        optimizers.append(original(*args, **kwargs))
        return optimizers[-1]

    monkeypatch.setattr(torch.optim, "Adam", capture)
    train(_Model(17, 8), data, val, settings, tmp_path / "ckpt", progress=Watch())
    # CosineAnnealingLR(T_max=3, eta_min=1e-4) after epochs 1, 2, 3
    expected = [1e-4 + (1e-3 - 1e-4) * (1 + math.cos(math.pi * e / 3)) / 2 for e in (1, 2, 3)]
    assert rates == pytest.approx(expected)


def planted_problem(n: int = 256, tokens: int = 17, width: int = 8, seed: int = 0) -> TrainingData:
    """Patch importance is one fixed linear function of each token's features (seed picks the images only)."""
    direction = torch.randn(width, generator=torch.Generator().manual_seed(1234))
    x = torch.randn(n, tokens, width, generator=torch.Generator().manual_seed(seed))
    importance = x[:, 1:] @ direction
    return TrainingData(x.half(), importance.argsort(dim=1, descending=True), kept=10)


class _Model:
    """The bits of LoadedModel that training reads."""

    def __init__(self, tokens: int, width: int):
        from types import SimpleNamespace

        self.arch = SimpleNamespace(tokens=tokens, width=width, prefix_tokens=1)
        self.fingerprint = "planted"
        self.device = torch.device("cpu")
        self.precision = FP32


@pytest.mark.parametrize("loss", ["kl", "margin"])
def test_training_recovers_a_planted_ranking(loss: str, tmp_path) -> None:
    data, val = planted_problem(), planted_problem(n=64, seed=1)
    settings = TrainSettings(loss=loss, epochs=12, batch_size=32, lr=3e-3, dim=16, channel_hidden=32)
    module, history = train(_Model(17, 8), data, val, settings, tmp_path / "ckpt")
    first, best = history["history"][0], history["best"]
    assert history["history"][-1]["loss"] < first["loss"]
    assert best["top_k_overlap"] > 0.8 and best["kendall_tau"] > 0.6


def test_losses_fall_on_a_separable_problem() -> None:
    data = planted_problem(n=64)
    torch.manual_seed(0)
    module = RankingPredictor(PredictorConfig(tokens=17, width=8, dim=16, channel_hidden=32))
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss = kl_loss(module(data.tokens.float()), data.ranking, data.kept)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    scores = module(data.tokens.float())
    generator = torch.Generator().manual_seed(0)
    assert margin_loss(scores, data.ranking, 1.0, 64, generator).item() >= 0


class KillAfter:
    """A progress display that kills training (KeyboardInterrupt) once `epochs` epochs are reported."""

    def __init__(self, epochs: int):
        self.epochs, self.seen = epochs, 0

    def add_task(self, *args, **kwargs) -> int:
        return 0

    def update(self, *args, **kwargs) -> None:
        self.seen += 1
        if self.seen == self.epochs:
            raise KeyboardInterrupt


def test_training_resumes_after_a_kill(tmp_path) -> None:
    data, val = planted_problem(n=64), planted_problem(n=32, seed=1)
    settings = TrainSettings(epochs=4, batch_size=16, dim=8, channel_hidden=16)
    whole, _ = train(_Model(17, 8), data, val, settings, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        train(_Model(17, 8), data, val, settings, tmp_path / "b", progress=KillAfter(2))
    with pytest.raises(CliprankError, match="another training run"):
        train(_Model(17, 8), data, val, replace(settings, lr=0.5), tmp_path / "b")
    resumed, history = train(_Model(17, 8), data, val, settings, tmp_path / "b")
    assert [h["epoch"] for h in history["history"]] == [1, 2, 3, 4]
    for a, b in zip(whole.state_dict().values(), resumed.state_dict().values()):
        assert torch.equal(a, b)


def test_saved_predictor_is_tied_to_its_model(tiny, tmp_path) -> None:
    module = RankingPredictor(PredictorConfig.for_arch(tiny.arch))
    path = tmp_path / "p.safetensors"
    save_predictor(path, module, tiny, block=3, trained_on=["digits"], info={"note": "test"})
    loaded = load_predictor(path, tiny)
    assert loaded.trained_on == ["digits"] and loaded.block == 3
    other = type(tiny)(**{**tiny.__dict__, "fingerprint": "other"})
    with pytest.raises(CliprankError, match="was trained for"):
        load_predictor(path, other)
    (tmp_path / "bad.safetensors").write_bytes(b"\x00" * 64)
    with pytest.raises(CliprankError, match="unreadable or corrupt"):
        load_predictor(tmp_path / "bad.safetensors", tiny)
    with pytest.raises(CliprankError, match="not found"):
        load_predictor(tmp_path / "missing.safetensors", tiny)


def test_predictor_method_prunes_by_its_scores_and_pays_for_them(tiny, tiny_images) -> None:
    module = RankingPredictor(PredictorConfig.for_arch(tiny.arch)).eval()
    predictor = LoadedPredictor(module, 3, tiny.fingerprint, ["digits"], {})
    resources = Resources(predictor=predictor)
    solved = solve("predictor", tiny.arch, {"keep": 0.5}, None, resources)
    prune_at = solve("random", tiny.arch, {"keep": 0.5}, None).macs
    assert solved.macs == pytest.approx(prune_at + module.macs())
    from cliprank.engine import Trace, encode

    trace = Trace()
    with torch.no_grad():
        encode(tiny.visual, tiny_images, solved.method.plan(), trace=trace)
    assert trace.schedule()[3] == (33.0, 33.0)
    from cliprank.engine.forward import embed, run_blocks
    from cliprank.engine.plan import Plan

    with torch.no_grad():
        entering = run_blocks(tiny.visual, embed(tiny.visual, tiny_images), Plan.identity(6), stop=3)
        expected = module(entering.x)
    assert torch.allclose(trace.patch_scores, expected)
    assert torch.equal(ranking_to_scores(expected.argsort(1, descending=True)).argsort(1), expected.argsort(1))


def test_the_settings_name_exactly_what_training_implements() -> None:
    """The command line judges --target, --schedule and --reduction from these names before torch loads."""
    from cliprank.predictor import settings
    from cliprank.predictor.model import PredictorConfig, RankingPredictor
    from cliprank.predictor.train import SCHEDULES, TARGETS

    assert tuple(TARGETS) == settings.TARGET_NAMES and tuple(SCHEDULES) == settings.SCHEDULE_NAMES
    for reduction in settings.REDUCTIONS:  # each builds a head
        RankingPredictor(
            PredictorConfig(tokens=5, width=8, dim=4, token_hidden=4, channel_hidden=4, reduction=reduction)
        )
