"""timm towers — SigLIP/SigLIP2, EVA01/EVA02, PE-Core, ViT-gap — run by the engine as open_clip runs them.

Small random-weight members of each family (`towers.py`); full-size configs are built on the meta
device where only shapes matter (the GMACs of open_clip's published table).
"""

from __future__ import annotations

import json
from dataclasses import asdict

import open_clip
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import towers
from open_clip.model import _build_vision_tower
from typer.testing import CliRunner

from cliprank.cli import _register_commands
from cliprank.commands import app
from cliprank.cost.analytic import per_image_macs, schedule_macs, unpruned_macs
from cliprank.cost.counting import count_macs, count_macs_torch
from cliprank.data.meta import image_hashes
from cliprank.engine import RECEIVED_ATTENTION, Plan, TokenState, Trace, encode
from cliprank.engine.attention import attend, attention_bias
from cliprank.engine.forward import pool
from cliprank.errors import CliprankError
from cliprank.methods import Resources
from cliprank.methods.attention_score import CLS_FREE_LABEL
from cliprank.methods.budget import solve
from cliprank.models import describe, load_model
from cliprank.predictor.io import LoadedPredictor
from cliprank.predictor.model import PredictorConfig, RankingPredictor
from cliprank.profiling import check_schedule, executed_schedule
from cliprank.search.greedy import SearchSettings, search_batch
from cliprank.search.store import RankingIndex, Rankings, RankingsMeta, RankingStore

towers.register()

# family -> (adapter kind, prefix tokens, class token, pool, rotary, MLP weight matrices, projection)
FEATURES = {
    "vit-map": ("timm-vit", 0, False, "map", False, 2, False),
    "eva02": ("timm-eva", 1, True, "tok", True, 3, True),
    "eva02-postnorm": ("timm-eva", 1, True, "tok", False, 2, True),
    "eva01": ("timm-eva", 1, True, "tok", False, 2, True),
    "pe-core": ("timm-eva", 1, True, "map", True, 2, True),
    "pe-core-no-cls": ("timm-eva", 0, False, "map", True, 2, True),
    "vit-gap": ("timm-vit", 0, False, "avg", False, 2, True),
}
ROTARY = [family for family, features in FEATURES.items() if features[4]]
METHODS = ["none", "random", "topk", "evit", "ats", "tome", "predictor"]


@pytest.fixture(scope="module")
def models():
    loaded = {}

    def get(family: str):
        if family not in loaded:
            model = load_model(towers.model_name(family), "none")
            towers.perturbed(model.model)
            loaded[family] = model
        return loaded[family]

    return get


def images(model, count: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(count, 3, *model.arch.image_size, generator=torch.Generator().manual_seed(seed))


def describe_full_size(name: str):
    """A full-size config's shape facts, from its tower built on the meta device (no memory)."""
    config = open_clip.get_model_config(name)
    with torch.device("meta"):
        return describe(_build_vision_tower(config["embed_dim"], config["vision_cfg"]))


# ----- the unpruned forward and its cost -----------------------------------------------------------------


@pytest.mark.parametrize("family", list(towers.FAMILIES))
def test_keep_everything_equals_open_clips_encode_image(models, family: str) -> None:
    model = models(family)
    batch = images(model)
    with torch.no_grad():
        expected = model.model.encode_image(batch)
        got = encode(model.visual, batch, Plan.identity(model.arch.depth))
    assert expected.abs().max() > 0.1  # a real signal, not a near-zero head
    assert torch.allclose(got, expected, atol=1e-5, rtol=0), (got - expected).abs().max()


@pytest.mark.parametrize("family", list(FEATURES))
def test_the_adapter_reads_each_familys_features(models, family: str) -> None:
    arch = models(family).arch
    read = (arch.kind, arch.prefix_tokens, arch.class_token, arch.pool, arch.rotary, arch.mlp_matrices, arch.projection)
    assert read == FEATURES[family]
    assert arch.tokens == 64 + arch.prefix_tokens and arch.image_size == (32, 32)


@pytest.mark.parametrize("family", list(FEATURES))
def test_counted_macs_are_the_analytic_formula(models, family: str) -> None:
    """torch's FlopCounterMode (sharing no code with the formula) counts exactly the formula's MACs."""
    model = models(family)
    identity = Plan.identity(model.arch.depth)
    analytic = unpruned_macs(model.arch)
    assert count_macs_torch(model.visual, identity, images(model, 1)) == pytest.approx(analytic, rel=1e-9)
    assert count_macs_torch(model.visual, None, images(model, 1)) == pytest.approx(analytic, rel=1e-9)
    counted = count_macs(model.visual, identity, model.arch.image_size)
    assert counted == pytest.approx(count_macs(model.visual, None, model.arch.image_size), rel=1e-9)
    assert analytic < counted < 1.05 * analytic  # fvcore also counts LayerNorms, which the convention ignores


# open_clip's docs/model_profile.csv (github.com/mlfoundations/open_clip), image_gflops: 2 FLOPs per MAC.
OPEN_CLIP_IMAGE_GFLOPS = {
    "ViT-B-16-SigLIP": 35.42,
    "ViT-B-16-SigLIP-256": 46.82,
    "ViT-B-16-SigLIP-384": 112.13,
    "ViT-B-16-SigLIP-512": 216.24,
    "ViT-L-16-SigLIP-384": 383.85,
    "ViT-SO400M-14-SigLIP": 220.35,
    "ViT-SO400M-14-SigLIP-384": 670.35,
    "nllb-clip-large-siglip": 670.35,
    "EVA02-B-16": 35.13,
    "EVA02-L-14": 162.0,
    "EVA02-L-14-336": 381.86,
    "EVA01-g-14": 534.06,
    "EVA02-E-14": 2264.33,
    "vit_medium_patch16_gap_256": 21.14,
}


@pytest.mark.parametrize("name", list(OPEN_CLIP_IMAGE_GFLOPS))
def test_unpruned_gmacs_match_open_clips_profile_table(name: str) -> None:
    arch = describe_full_size(name)
    assert unpruned_macs(arch) / 1e9 == pytest.approx(OPEN_CLIP_IMAGE_GFLOPS[name] / 2, rel=0.015)


def test_full_size_towers_read_their_real_shapes() -> None:
    """SigLIP-384 at patch 14 takes 384 px but sees a 27x27 grid; PE-Core bigG has no class token."""
    shapes = {
        name: describe_full_size(name) for name in ("ViT-SO400M-14-SigLIP-384", "PE-Core-bigG-14-448", "EVA02-L-14")
    }
    assert shapes["ViT-SO400M-14-SigLIP-384"].grid == (27, 27)
    assert shapes["ViT-SO400M-14-SigLIP-384"].image_size == (384, 384)
    assert not shapes["PE-Core-bigG-14-448"].class_token and shapes["PE-Core-bigG-14-448"].pool == "map"
    assert shapes["EVA02-L-14"].mlp_matrices == 3 and shapes["EVA02-L-14"].rotary


# ----- methods ---------------------------------------------------------------------------------------------


def predictor_resources(arch) -> Resources:
    torch.manual_seed(0)
    module = RankingPredictor(PredictorConfig.for_arch(arch)).eval()
    return Resources(predictor=LoadedPredictor(module, 3, "random", [], {}))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("family", ["vit-map", "eva02", "pe-core", "pe-core-no-cls", "vit-gap"])
def test_each_methods_declared_schedule_is_the_executed_one(models, family: str, method: str) -> None:
    model = models(family)
    resources = predictor_resources(model.arch) if method == "predictor" else None
    solved = solve(method, model.arch, {}, None if method == "none" else 0.7, resources)
    batch = images(model, 4)
    executed = executed_schedule(solved.method, model.visual, batch)
    expected = "within bound" if solved.method.adaptive else "matches"
    assert check_schedule(solved.method.schedule(), executed, solved.method.adaptive) == expected
    assert solved.fraction <= 0.7 + 1e-9 or method == "none"
    counted = count_macs_torch(model.visual, solved.method.plan(), batch[:1])
    if not solved.method.adaptive:
        assert counted == pytest.approx(solved.macs, rel=0.005)  # the method's by-products are declared too


def test_the_cls_free_score_is_resolved_recorded_and_labelled(models) -> None:
    siglip, eva = models("vit-map").arch, models("eva02").arch
    for name, knob in (("topk", {"keep": 0.5}), ("evit", {"keep": 0.7}), ("ats", {"K": 20})):
        without_cls = solve(name, siglip, knob, None).method
        assert without_cls.describe()["score"] == "received" and without_cls.label == CLS_FREE_LABEL
        with_cls = solve(name, eva, knob, None).method
        assert with_cls.describe()["score"] == "cls" and with_cls.label == ""
        chosen = solve(name, eva, {**knob, "score": "received"}, None).method
        assert chosen.label == CLS_FREE_LABEL and RECEIVED_ATTENTION in chosen.plan().layers[chosen.blocks[0]].needs
        with pytest.raises(CliprankError, match="needs a class token.*score=received"):
            solve(name, siglip, {**knob, "score": "cls"}, None)


def test_received_attention_is_the_mean_attention_each_real_token_receives() -> None:
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=generator) for _ in range(3))
    valid = torch.tensor([[True] * 5, [True, True, True, False, False]])
    bias = attention_bias(torch.tensor([[1.0, 2, 1, 1, 3], [1, 1, 2, 1, 1]]), valid, torch.float32)
    out, products = attend(q, k, v, bias, frozenset({RECEIVED_ATTENTION}), valid)
    weights = torch.einsum("bhqd,bhkd->bhqk", q, k).div(2.0).add(bias).softmax(-1)
    expected = torch.stack([weights[b, :, valid[b]].mean(dim=(0, 1)) for b in range(2)])
    assert torch.allclose(products[RECEIVED_ATTENTION], expected, atol=1e-6)
    assert torch.allclose(products[RECEIVED_ATTENTION].sum(-1), torch.ones(2))
    assert (products[RECEIVED_ATTENTION][1, 3:] == 0).all()  # padding receives nothing
    fused, _ = attend(q, k, v, bias)
    assert torch.allclose(out[0], fused[0], atol=1e-6)  # the explicit path computes the same attention
    assert torch.allclose(out[1, :, :3], fused[1, :, :3], atol=1e-6)


# ----- what a reduced state means on these towers -------------------------------------------------------


class KeepPatches(nn.Module):
    """timm's patch-dropout hook with chosen patches: prefix tokens stay, patches `keep` (B, K) in that order."""

    def __init__(self, keep: torch.Tensor, prefix: int, with_indices: bool):
        super().__init__()
        self.keep, self.prefix, self.with_indices = keep, prefix, with_indices

    def forward(self, x: torch.Tensor):
        index = self.keep.unsqueeze(-1).expand(-1, -1, x.shape[-1])
        kept = torch.cat([x[:, : self.prefix], x[:, self.prefix :].gather(1, index)], dim=1)
        return (kept, self.keep) if self.with_indices else kept


@pytest.mark.parametrize("family", [*ROTARY, "vit-map"])
def test_surviving_tokens_keep_their_position_embeddings_and_pooling(models, family: str) -> None:
    """timm's own patch-dropout path gathers each kept patch's rotary embedding (`apply_keep_indices_nlc`)
    and pools over the kept tokens; pruning the same patches, shuffled, before block 0 must agree."""
    model = models(family)
    trunk, batch = model.visual.trunk, images(model, 2)
    keep = torch.stack([torch.randperm(64, generator=torch.Generator().manual_seed(s))[:40] for s in (1, 2)])
    is_eva = model.arch.kind == "timm-eva"
    trunk.patch_drop = KeepPatches(keep, model.arch.prefix_tokens, with_indices=is_eva)
    try:
        with torch.no_grad():
            expected = model.visual(batch)
    finally:
        trunk.patch_drop = None if is_eva else nn.Identity()
    prune = Plan.build(model.arch.depth, before={0: [lambda state, context: state.keep_body(keep)]})
    with torch.no_grad():
        got = encode(model.visual, batch, prune)
        unpruned = encode(model.visual, batch, Plan.identity(model.arch.depth))
    assert torch.allclose(got, expected, atol=1e-5), (got - expected).abs().max()
    assert not torch.allclose(got, unpruned, atol=1e-3)  # the pruning mattered


@pytest.mark.parametrize("family", ["vit-map", "pe-core"])
def test_the_attention_pool_weighs_a_token_as_the_patches_it_stands_for(models, family: str) -> None:
    model = models(family)
    prefix = model.arch.prefix_tokens
    x = torch.randn(1, prefix + 3, model.arch.width, generator=torch.Generator().manual_seed(0))
    merged = TokenState.initial(x, n_prefix=prefix)
    merged.size = torch.tensor([[1.0] * prefix + [2.0, 1.0, 1.0]])
    body = prefix  # the first body token stands for two patches...
    duplicated = TokenState.initial(torch.cat([x[:, : body + 1], x[:, body:]], dim=1), n_prefix=prefix)
    padded = TokenState.initial(torch.cat([x, torch.randn(1, 1, model.arch.width)], dim=1), n_prefix=prefix)
    padded.valid = torch.tensor([[True] * (prefix + 3) + [False]])
    plain = TokenState.initial(x, n_prefix=prefix)
    with torch.no_grad():
        assert torch.allclose(pool(model.visual, merged), pool(model.visual, duplicated), atol=1e-5)  # ...as two
        assert torch.allclose(pool(model.visual, padded), pool(model.visual, plain), atol=1e-6)  # padding: none


def test_states_without_a_prefix_reduce_the_whole_sequence() -> None:
    x = torch.arange(12.0).view(1, 4, 3)
    state = TokenState.initial(x, n_prefix=0).append_extras(torch.ones(1, 3))
    assert state.body_count == 4 and state.pos.tolist() == [[1, 2, 3, 4, -2]]
    kept = state.keep_body(torch.tensor([[3, 0]]))
    assert kept.pos.tolist() == [[4, 1, -2]] and torch.equal(kept.x[0, :2], x[0, [3, 0]])


# ----- search, golden, predictor, tokens, profile ---------------------------------------------------------


@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_search_and_golden_pruning_work_without_a_class_token(models, tmp_path, direction: str) -> None:
    """Golden pruning at the searched keep count reproduces the search's final similarity (forward starts
    from an empty set on a tower with no prefix token: that one point has no embedding)."""
    model, batch = models("vit-map"), images(models("vit-map"), 2)
    settings = SearchSettings(direction=direction)
    result, _ = search_batch(model.visual, model.arch, batch, settings)
    assert torch.equal(result.ranking.sort(dim=1).values, torch.arange(64).expand(2, -1))
    assert result.trajectory[:, 0].isnan().all() == (direction == "forward")
    meta = RankingsMeta(
        model=model.name,
        pretrained="none",
        model_fingerprint=model.fingerprint,
        dataset="toy",
        split="test",
        dataset_fingerprint="abc",
        images=2,
        patches=64,
        grid=(8, 8),
        settings=asdict(settings),
        chunk_size=2,
    )
    store = RankingStore(tmp_path / "toy.rankings", meta)
    hashes = image_hashes(batch)
    store.write_chunk(0, torch.arange(2), hashes, result)
    path = store.merge(1)
    kept = Rankings.load(path).kept
    resources = Resources(rankings=RankingIndex([path], model.fingerprint))
    method = solve("golden", model.arch, {"keep": kept / 64}, None, resources).method
    trace = Trace()
    with torch.no_grad():
        meta_batch = {"dataset": "toy", "split": "test", "index": torch.arange(2), "image_hash": hashes}
        pruned = encode(model.visual, batch, method.plan(), meta_batch, trace=trace)
        full = encode(model.visual, batch, Plan.identity(model.arch.depth))
    final = torch.stack([row[~row.isnan()][-1] for row in result.trajectory])
    assert torch.allclose(F.cosine_similarity(pruned, full).double(), final, atol=1e-5)
    assert trace.schedule() == list(zip(method.schedule().attention, method.schedule().mlp))


def test_the_predictor_scores_every_patch_when_there_is_no_class_token(models) -> None:
    arch = models("vit-map").arch
    config = PredictorConfig.for_arch(arch)
    assert (config.tokens, config.prefix) == (64, 0)
    scores = RankingPredictor(config)(torch.randn(2, 64, arch.width))
    assert scores.shape == (2, 64)
    assert config.macs() == RankingPredictor(config).macs()


def test_learned_tokens_are_pooled_by_an_attention_pool_and_costed(models) -> None:
    from cliprank.tokens.io import LoadedTokens, TokensSet
    from cliprank.tokens.model import LearnedTokens, TokenConfig

    model = models("vit-map")
    base = solve("random", model.arch, {"keep": 0.5}, None).method
    tokens = LearnedTokens(TokenConfig(count=2, block=3, width=model.arch.width, depth=model.arch.depth))
    setup = {"method": "random", "values": dict(base.values)}
    resources = Resources(tokens=TokensSet([LoadedTokens(tokens, setup, {}, None)]))
    method = solve("random+tokens", model.arch, {"keep": 0.5}, None, resources).method
    trace = Trace()
    with torch.no_grad():
        with_tokens = encode(model.visual, images(model), method.plan(), trace=trace)
        without = encode(model.visual, images(model), base.plan())
    assert trace.schedule() == list(zip(method.schedule().attention, method.schedule().mlp))
    assert trace.schedule()[-1] == (32.0 + 2, 32.0 + 2)
    assert not torch.allclose(with_tokens, without)
    counts = [torch.tensor([n]) for n in method.schedule().attention]
    macs = float(per_image_macs(model.arch, counts, counts, method.schedule().overhead)[0])
    assert macs == pytest.approx(schedule_macs(model.arch, method.schedule()))


def test_profile_runs_every_attention_method_on_a_siglip_tower(tmp_path) -> None:
    _register_commands()
    out = tmp_path / "profile"
    args = ["profile", "--model", towers.model_name("vit-map"), "--pretrained", "none", "--images", "2"]
    args += ["--method", "random,topk,evit,ats,tome", "--budget", "0.7", "--batch-size", "2", "--repeats", "1"]
    result = CliRunner().invoke(app, [*args, "--warmup", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "profile.json").read_text())["rows"]
    assert [row["spec"] for row in rows] == ["none", "random", "topk", "evit", "ats", "tome"]
    for row in rows:
        assert row["schedule"]["check"] in ("matches", "within bound")
        assert row["gmacs"]["torch_cross_check"] == pytest.approx(row["gmacs"]["analytic"], rel=0.005)
    labels = {row["spec"]: row["label"] for row in rows}
    cls_free = {"topk", "evit", "ats"}
    assert labels == {spec: CLS_FREE_LABEL if spec in cls_free else "" for spec in labels}
    assert CLS_FREE_LABEL in (out / "profile.md").read_text()


def test_search_command_runs_on_a_siglip_tower(tmp_path) -> None:
    _register_commands()
    rankings = tmp_path / "faces.rankings"
    args = ["search", "--model", towers.model_name("vit-map"), "--pretrained", "none", "--dataset", "faces"]
    result = CliRunner().invoke(app, [*args, "--split", "test", "--limit", "3", "--out", str(rankings)])
    assert result.exit_code == 0, result.output
    stored = Rankings.load(rankings)
    assert stored.ranking.shape == (3, 64) and stored.meta.model == towers.model_name("vit-map")


def test_models_command_lists_timm_towers_and_says_why_others_are_refused() -> None:
    _register_commands()
    result = CliRunner().invoke(app, ["models"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    supported, refused = result.output.split("not supported", 1)
    rows = lambda table: {line.split("│")[1].strip() for line in table.splitlines() if line.count("│") > 2}  # noqa: E731
    assert {"ViT-B-16-SigLIP", "EVA02-B-16", "PE-Core-B-16", "cliprank-tiny"} <= rows(supported)
    assert "RN50" in rows(refused) and "ResNet" in refused and "RN50" not in rows(supported)


def test_the_siglip_paper_recipe_prunes_forty_percent_and_holds_every_method_to_that_cost() -> None:
    """recipes/paper-siglip-b16: ViT-B-16-SigLIP, the seven paper datasets, 118 of 196 patches kept."""
    import typer

    from cliprank.commands.recipes import load_recipe, resolve_recipe

    _register_commands()
    evaluate = typer.main.get_command(app).commands["evaluate"]
    recipe = load_recipe(resolve_recipe("paper-siglip-b16"), evaluate)
    assert recipe["model"] == "ViT-B-16-SigLIP" and recipe["pretrained"] in open_clip.list_pretrained_tags_by_model(
        "ViT-B-16-SigLIP"
    )
    assert recipe["dataset"].split(",") == [
        "caltech101",
        "pets",
        "flowers",
        "food101",
        "fgvc_aircraft",
        "dtd",
        "ucf101",
    ]
    arch = describe_full_size("ViT-B-16-SigLIP")
    budget = float(recipe["budget"])
    resources = predictor_resources(arch)
    assert solve("predictor", arch, {}, budget, resources).method.kept == round(0.6 * 196)
    for spec in recipe["method"].split(","):
        solved = solve(spec, arch, {}, None if spec == "none" else budget, resources)
        assert solved.fraction <= budget + 1e-9 or spec == "none"
        assert solved.method.label == (CLS_FREE_LABEL if spec in ("evit", "topk") else "")


def test_evaluate_labels_cls_free_rows_in_every_report(tmp_path) -> None:
    from cli_runner import run_cli

    from cliprank.report.schema import load_report

    out = tmp_path / "run"
    args = ["evaluate", "--model", towers.model_name("vit-map"), "--pretrained", "none", "--dataset", "faces"]
    args += ["--method", "none,topk,evit,tome", "--budget", "0.7", "--limit", "6", "--no-speed", "--out", str(out)]
    assert run_cli(args) == 0
    records = {record.method: record for record in load_report(out / "report.json").records}
    assert {name: records[name].method_label for name in records} == {
        "none": "",
        "topk": CLS_FREE_LABEL,
        "evit": CLS_FREE_LABEL,
        "tome": "",
    }
    assert records["topk"].params["score"] == "received"
    assert all(records[name].gmacs_fraction <= 0.7 + 1e-9 for name in ("topk", "evit", "tome"))
    assert "topk (CLS-free score)" in (out / "report.md").read_text()


def official_matching_without_class_token(metric: torch.Tensor, r: int):
    """facebookresearch/ToMe af95e4b, tome/merge.py `bipartite_soft_matching` with class_token=False:
    protected = 0, so r = min(r, t // 2) and no row of the scores is masked; a, b = ::2, 1::2."""
    r = min(r, metric.shape[1] // 2)
    metric = metric / metric.norm(dim=-1, keepdim=True)
    a, b = metric[..., ::2, :], metric[..., 1::2, :]
    node_max, node_idx = (a @ b.transpose(-1, -2)).max(dim=-1)
    edge_idx = node_max.argsort(dim=-1, descending=True)[..., None]
    unm_idx, src_idx = edge_idx[..., r:, :].sort(dim=1)[0], edge_idx[..., :r, :]
    dst_idx = node_idx[..., None].gather(dim=-2, index=src_idx)

    def merge(x: torch.Tensor) -> torch.Tensor:
        src, dst = x[..., ::2, :], x[..., 1::2, :]
        n, t1, c = src.shape
        unm = src.gather(dim=-2, index=unm_idx.expand(n, t1 - r, c))
        src = src.gather(dim=-2, index=src_idx.expand(n, r, c))
        return torch.cat([unm, dst.scatter_reduce(-2, dst_idx.expand(n, r, c), src, reduce="sum")], dim=1)

    return merge


@pytest.mark.parametrize("tokens", [9, 10])
def test_tome_without_a_class_token_splits_the_sequence_as_the_official_code(tokens: int) -> None:
    from cliprank.methods.tome import bipartite_merge

    generator = torch.Generator().manual_seed(tokens)
    x, keys = torch.randn(2, tokens, 6, generator=generator), torch.randn(2, tokens, 4, generator=generator)
    size = torch.rand(2, tokens, 1, generator=generator) + 0.5
    merge = official_matching_without_class_token(keys, 3)
    expected = merge(x * size) / merge(size)
    state = TokenState.initial(x, n_prefix=0)
    state.size = size[..., 0]
    merged = bipartite_merge(state, keys, 3)
    assert torch.allclose(merged.x, expected, atol=1e-6)
    assert torch.allclose(merged.size, merge(size)[..., 0])


def test_patch_map_panels_name_the_cls_free_score():
    from cliprank.visualize.capture import Row

    model = load_model(towers.model_name("vit-map"), "none")
    from cliprank.methods import method_class

    topk = method_class("topk")(model.arch, keep=0.5)
    assert Row.of("topk", topk, torch.zeros(1)).name == "topk (CLS-free score)"
    assert Row.of("tome", method_class("tome")(model.arch, r=4), torch.zeros(1)).name == "tome"
