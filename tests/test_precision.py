"""Precision: open_clip's names resolved in one place, weights cast as open_clip casts them, every method in
bf16, ranking scores that stay float32, and the precision recorded wherever numbers are stored."""

from __future__ import annotations

import inspect
import json
import math
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
import towers
from cli_runner import run_cli as run
from safetensors import safe_open

from cliprank.cli import _register_commands
from cliprank.commands import app
from cliprank.data import load_dataset, make_loader
from cliprank.data.meta import batch_meta
from cliprank.engine import Plan, TokenState, Trace, encode, pool, resume, run_blocks
from cliprank.engine.forward import embed
from cliprank.errors import CliprankError
from cliprank.methods.budget import solve, solve_rows
from cliprank.methods.registry import expand_all
from cliprank.methods.tome import bipartite_merge
from cliprank.models import embedded, load_model
from cliprank.precision import PRECISIONS, default_precision, resolve_precision
from cliprank.predictor.io import save_predictor
from cliprank.predictor.model import PredictorConfig, RankingPredictor
from cliprank.profiling import check_schedule, executed_schedule
from cliprank.report.compare import compare_reports
from cliprank.report.schema import load_report
from cliprank.resources import load_resources
from cliprank.search.greedy import CandidateEvaluator, SearchSettings, make_scorer
from cliprank.search.run import rankings_meta
from cliprank.search.units import make_units, unit_matrix
from cliprank.tokens.io import save_tokens
from cliprank.tokens.model import LearnedTokens, TokenConfig
from cliprank.tokens.pipeline import TokensJob, run_add_tokens
from cliprank.tokens.settings import TokenTrainSettings

LOW = ("amp_bf16", "bf16")  # autocast with float32 weights, and weights cast to bf16: what CPUs run


@pytest.fixture(scope="module")
def shipped():
    """The embedded model in each precision, with its shipped rankings, predictor and tokens."""
    loaded = {}

    def get(precision: str):
        if precision not in loaded:
            model = load_model(embedded.MODEL_NAME, embedded.TAG, precision=precision)
            loaded[precision] = (model, load_resources(model, [("all", {})]))
        return loaded[precision]

    return get


def digits(model, count: int = 6):
    """Real images (and their meta: golden looks its rankings up by index and hash)."""
    dataset = load_dataset("digits", "test", transform=model.preprocess, limit=count)
    images, _, indices = next(iter(make_loader(dataset, batch_size=count)))
    return images, batch_meta(dataset.name, "test", images, indices, hashes=True)


# ----- one registry ---------------------------------------------------------------------------------------


def test_names_are_open_clips_and_the_default_follows_the_device() -> None:
    assert {"fp32", "amp", "amp_bf16", "bf16", "fp16", "pure_bf16", "pure_fp16"} == set(PRECISIONS)
    assert (default_precision("cpu"), default_precision("cuda:1")) == ("fp32", "amp")
    assert resolve_precision(None, "cpu").name == "fp32"
    amp = PRECISIONS["amp"]
    assert (amp.weights_dtype, amp.autocast_dtype, amp.scales_gradients) == (torch.float32, torch.float16, True)
    bf16 = PRECISIONS["bf16"]
    assert (bf16.weights_dtype, bf16.autocast_dtype, bf16.cast_norms) == (torch.bfloat16, None, False)
    with pytest.raises(CliprankError, match="unknown precision 'half'; use one of fp32, amp"):
        resolve_precision("half", "cpu")


def test_every_precision_runs_on_this_cpu_and_one_torch_cannot_run_is_refused(monkeypatch) -> None:
    for name in PRECISIONS:
        assert resolve_precision(name, "cpu").name == name
    real = F.scaled_dot_product_attention

    def no_half_kernels(query, *args, **kwargs):
        if query.dtype == torch.float16:
            raise RuntimeError("\"baddbmm_cpu\" not implemented for 'Half'\nmore detail")
        return real(query, *args, **kwargs)

    from cliprank import precision as module

    monkeypatch.setattr(F, "scaled_dot_product_attention", no_half_kernels)
    module._unsupported.cache_clear()
    try:
        with pytest.raises(CliprankError) as refused:
            resolve_precision("fp16", "cpu")
        message = str(refused.value)
        assert "\n" not in message and "fp16 cannot run on cpu" in message and "use fp32 or bf16" in message
        assert resolve_precision("bf16", "cpu").name == "bf16"
    finally:
        module._unsupported.cache_clear()


def test_every_command_that_runs_a_model_takes_precision() -> None:
    _register_commands()
    runs_a_model = [c for c in app.registered_commands if "pretrained" in inspect.signature(c.callback).parameters]
    assert len(runs_a_model) == 6  # evaluate, profile, search, train-predictor, add-tokens, show
    assert all("precision" in inspect.signature(c.callback).parameters for c in runs_a_model)


# ----- weights and the keep-everything forward ------------------------------------------------------------


@pytest.mark.parametrize("name", ["bf16", "fp16", "pure_bf16"])
def test_weights_are_cast_as_open_clip_casts_them_and_the_fingerprint_stays(shipped, name: str) -> None:
    model = load_model(embedded.MODEL_NAME, embedded.TAG, precision=name)
    theirs = open_clip.create_model(embedded.MODEL_NAME, pretrained=str(embedded.weights_path()), precision=name)
    ours = model.model.state_dict()
    assert ours.keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert ours[key].dtype == value.dtype and torch.equal(ours[key], value), key
    assert type(model.visual.ln_pre) is type(theirs.visual.ln_pre)
    assert model.fingerprint == shipped("fp32")[0].fingerprint  # files made in fp32 serve this model too


@pytest.mark.parametrize("name", LOW)
def test_keep_everything_agrees_with_encode_image_in_the_same_precision(shipped, name: str) -> None:
    model, _ = shipped(name)
    images, _ = digits(model)
    with torch.no_grad(), model.autocast():
        expected = model.model.encode_image(images.to(model.precision.weights_dtype))
        got = encode(model.visual, images, Plan.identity(model.arch.depth))
    assert got.dtype == expected.dtype == torch.bfloat16
    assert F.cosine_similarity(got.float(), expected.float()).min() >= 0.999


@pytest.mark.parametrize("family", ["vit-map", "eva02"])
@pytest.mark.parametrize("name", LOW)
def test_timm_towers_keep_everything_in_bf16_too(family: str, name: str) -> None:
    towers.register()
    model = load_model(towers.model_name(family), "none", precision=name)
    towers.perturbed(model.model)
    images = torch.randn(3, 3, *model.arch.image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad(), model.autocast():
        expected = model.model.encode_image(images.to(model.precision.weights_dtype))
        got = encode(model.visual, images, Plan.identity(model.arch.depth))
    assert F.cosine_similarity(got.float(), expected.float()).min() >= 0.999


# ----- every method in bf16 -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", LOW)
def test_every_method_runs_within_its_declared_schedule_in_bf16(shipped, name: str) -> None:
    model, resources = shipped(name)
    images, meta = digits(model)
    rows = solve_rows(model.arch, expand_all([("all", {})], resources), [0.6], resources)
    assert {"topk", "evit", "tome", "ats", "golden", "predictor", "predictor+tokens"} <= {r.spec for r in rows}
    for row in rows:
        executed = executed_schedule(row.method, model.visual, images, dict(meta), model.precision)
        check = check_schedule(row.method.schedule(), executed, row.method.adaptive)
        assert check in ("matches", "within bound"), (row.spec, check)


@pytest.mark.parametrize("family", ["vit-map", "eva02"])
def test_timm_towers_run_every_training_free_method_in_bf16_weights(family: str) -> None:
    towers.register()
    model = load_model(towers.model_name(family), "none", precision="bf16")
    images = torch.randn(2, 3, *model.arch.image_size, generator=torch.Generator().manual_seed(1))
    for name in ("random", "topk", "evit", "tome", "ats"):
        method = solve(name, model.arch, {}, 0.6).method
        executed = executed_schedule(method, model.visual, images, None, model.precision)
        assert check_schedule(method.schedule(), executed, method.adaptive) in ("matches", "within bound"), name


# ----- scores that decide what is kept stay float32 --------------------------------------------------------


@pytest.mark.parametrize("name", LOW)
def test_ranking_scores_are_float32_and_do_not_tie_in_bf16(shipped, name: str) -> None:
    """A bf16 score of 64 patches ties (8 bits of mantissa); the recorded rankings must not."""
    model, resources = shipped(name)
    images, meta = digits(model)
    for spec in ("topk", "evit", "ats", "predictor"):
        method = solve(spec, model.arch, {}, 0.7, resources).method
        trace = Trace()
        with torch.no_grad(), model.autocast():
            encode(model.visual, images, method.plan(), dict(meta), trace)
        scores = trace.patch_scores
        assert scores.dtype == torch.float32, spec
        for row in scores:
            finite = row[row.isfinite()]
            assert len(finite.unique()) == len(finite), f"{spec}: tied scores"
        if spec == "topk":  # the check has teeth: the same scores rounded to bf16 do tie
            rounded = scores[0][scores[0].isfinite()].bfloat16()
            assert len(rounded.unique()) < len(rounded)


def test_tome_matches_in_float32_under_autocast() -> None:
    """Near-equal edges (1e-4 apart) merge in the order float64 gives, not in bf16's tie order."""
    generator = torch.Generator().manual_seed(0)
    base = torch.randn(1, 1, 16, generator=generator)
    metric = base + 1e-2 * torch.randn(1, 33, 16, generator=generator)  # every token close to every other
    state = TokenState.initial(torch.randn(1, 34, 8, generator=generator).bfloat16())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        merged = bipartite_merge(state, metric, r=8)
    reference = bipartite_merge(TokenState.initial(state.x.double()), metric.double(), r=8)
    assert torch.equal(merged.pos, reference.pos)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # in bf16 the similarities do tie
        unit = metric / metric.norm(dim=-1, keepdim=True)
        low = (unit[:, 1::2] @ unit[:, 0::2].transpose(1, 2)).max(-1).values
    assert low.dtype == torch.bfloat16 and len(low.unique()) < low.numel()


def test_golden_search_scores_candidates_from_float32_embeddings_under_autocast(shipped) -> None:
    """The first step's candidates (every one-patch removal) are compared through a float32 head."""
    model, _ = shipped("amp_bf16")
    images, _ = digits(model, count=1)
    settings = SearchSettings(unit=1)
    removed = unit_matrix(make_units(model.arch.grid, settings.unit), model.arch.patches)
    image = torch.zeros(len(removed), dtype=torch.long)
    identity = Plan.identity(model.arch.depth)
    with torch.no_grad(), model.autocast():
        entering = run_blocks(model.visual, embed(model.visual, images), identity, stop=settings.block)
        full = run_blocks(model.visual, entering, identity, start=settings.block)
        score = make_scorer("similarity", pool(model.visual, full, float32=True), None, None)
        evaluator = CandidateEvaluator(model.visual, entering.x, settings.block, 32768)
        searched = evaluator.embeddings(image, ~removed)
        patches = (~removed).nonzero()[:, 1].view(len(removed), -1)
        tokens = torch.cat([entering.x[:, :1].expand(len(removed), -1, -1), entering.x[0, patches + 1]], dim=1)
        after = run_blocks(model.visual, resume(model.visual, tokens, patches=patches), identity, start=settings.block)
        exact, in_bf16 = pool(model.visual, after, float32=True), pool(model.visual, after)
    assert exact.dtype == torch.float32 and in_bf16.dtype == torch.bfloat16
    scores = score(searched, image)
    assert torch.equal(scores, score(exact.double(), image)) and len(scores.unique()) == len(removed)
    # the check has teeth: a bf16 head's rounding reorders candidates whose removal costs almost the same
    assert not torch.equal(scores.argsort(), score(in_bf16.double(), image).argsort())


@pytest.mark.parametrize("name", ["amp", "bf16"])
def test_tokens_train_through_a_low_precision_model(name: str, tmp_path: Path) -> None:
    """float16 autocast trains with a gradient scaler (the GPU default); bf16 weights without one."""
    model = load_model("cliprank-tiny", "none", precision=name)
    settings = TokenTrainSettings(epochs=3, batch_size=8, lr=5e-2)
    job = TokensJob("random", {"keep": 0.5}, None, ["faces"], tmp_path / "t.safetensors", limit=24, settings=settings)
    _, info = run_add_tokens(model, job)
    losses = [entry["loss"] for entry in info["history"]]
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0]


# ----- recorded wherever numbers are stored ----------------------------------------------------------------

EVALUATE = "evaluate --dataset digits --limit 12 --method topk --budget 0.7 --no-flops --patch-maps 0".split()


@pytest.fixture(scope="module")
def bf16_report(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bf16") / "run"
    assert run([*EVALUATE, "--no-speed", "--precision", "bf16", "--out", str(out)]) == 0
    return out


def test_every_record_and_the_environment_say_bf16(bf16_report: Path) -> None:
    report = load_report(bf16_report / "report.json")
    assert report.environment.precision == "bf16"
    assert report.records and {record.precision for record in report.records} == {"bf16"}
    assert "bf16" in (bf16_report / "report.md").read_text()


def test_resume_and_compare_refuse_another_precision(bf16_report: Path, tmp_path: Path, capsys) -> None:
    assert run([*EVALUATE, "--no-speed", "--precision", "fp32", "--out", str(bf16_report)]) == 2
    assert "precision bf16 → fp32" in capsys.readouterr().err
    fp32 = tmp_path / "fp32"
    assert run([*EVALUATE, "--no-speed", "--out", str(fp32)]) == 0
    capsys.readouterr()
    assert run(["compare", str(fp32 / "report.json"), str(bf16_report / "report.json")]) == 2
    err = capsys.readouterr().err
    assert "BASE was measured in fp32 and NEW in bf16" in err and "Traceback" not in err


def test_reports_without_record_precision_or_hardware_still_load_and_compare(tmp_path: Path) -> None:
    """Reports written before this field (all fp32) read as the environment's precision."""
    out = tmp_path / "fp32"
    assert run([*EVALUATE, "--no-speed", "--out", str(out)]) == 0
    data = json.loads((out / "report.json").read_text())
    for name in ("device_name", "cuda", "driver"):
        del data["environment"][name]
    for record in data["records"]:
        del record["precision"]
    old = tmp_path / "old.json"
    old.write_text(json.dumps(data))
    report = load_report(old)
    assert report.environment.device_name is None and report.records[0].precision is None
    assert compare_reports(report, load_report(out / "report.json")).exit_code == 0


def test_rankings_predictor_and_tokens_record_their_precision(shipped, tmp_path: Path) -> None:
    model, _ = shipped("bf16")
    dataset = load_dataset("digits", "test", transform=model.preprocess, limit=4)
    assert rankings_meta(model, dataset, SearchSettings(), 4).precision == "bf16"
    predictor = RankingPredictor(PredictorConfig.for_arch(model.arch))
    save_predictor(tmp_path / "p.safetensors", predictor, model, 3, ["digits"], {})
    config = TokenConfig(count=2, block=3, width=model.arch.width, text_width=8, depth=model.arch.depth)
    save_tokens(tmp_path / "t.tokens.safetensors", LearnedTokens(config), model, {"method": "topk", "values": {}}, {})
    for name in ("p.safetensors", "t.tokens.safetensors"):
        with safe_open(str(tmp_path / name), "pt") as stored:
            assert stored.metadata()["precision"] == "bf16", name
