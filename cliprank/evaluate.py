"""The `evaluate` pipeline: zero-shot accuracy of every method × budget on every dataset, at matched cost.

For each model, every (method, budget) is solved to a concrete setting once (`solve`), so its
schedule, knob and GMACs are the same on every dataset. For each dataset, images are loaded once and
every pending setting encodes each batch: data loading is paid once, however many methods run. The
unpruned model is always evaluated. A record is written only when complete, and a rerun into the same
output directory skips complete records, so a killed run loses at most the dataset in progress.

Cost columns: `gmacs` is the analytic MACs of the executed schedule (for input-adaptive methods the
mean over the evaluated images), `gmacs_counted` fvcore's count of the same forward. Throughput,
latency and memory do not depend on the dataset and are measured once per setting.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from cliprank.cost.analytic import per_image_macs, schedule_macs, unpruned_macs
from cliprank.data.meta import batch_meta, slice_meta
from cliprank.distributed import Distributed
from cliprank.engine.context import Trace
from cliprank.engine.forward import ReducedVisual, encode
from cliprank.errors import CliprankError
from cliprank.methods.base import Resources
from cliprank.methods.budget import BudgetTooLow, Solved, solve
from cliprank.methods.registry import expand_all, method_class
from cliprank.methods.spec import MethodSpec, format_method_spec
from cliprank.models.loading import LoadedModel
from cliprank.ranking_agreement import agreement
from cliprank.report.schema import Environment, RankingAgreement, Record, Throughput, record_key
from cliprank.report.store import ReportWriter
from cliprank.resources import ResourceFiles, load_resources
from cliprank.search.store import RankingLookup
from cliprank.zeroshot import logits, metrics, zero_shot_classifier

TASK = "zeroshot_classification"


@dataclass
class EvaluateSettings:
    models: list[tuple[str, str]]
    datasets: list[str]
    methods: list[MethodSpec]
    budgets: list[float | None]
    out: Path
    split: str = "test"
    limit: int | None = None
    dataset_root: Path | None = None
    download: bool = False
    batch_size: int = 64
    workers: int = 0
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    files: ResourceFiles = field(default_factory=ResourceFiles)
    measure_speed: bool = True
    count_flops: bool = True
    timing_repeats: int = 3
    quick_gelu: bool | None = None


@dataclass
class Setting:
    """One solved (method, budget) for one model: the row every dataset shares."""

    spec: str
    solved: Solved
    speed: dict[str, Any] | None = None
    gmacs_counted: float | None = None

    @property
    def method(self):
        return self.solved.method

    @property
    def key(self) -> str:
        """Identity within one model's run (the report key adds model and dataset)."""
        return f"{self.spec}@{self.solved.budget}"


def method_settings(
    model: LoadedModel,
    specs: Sequence[MethodSpec],
    budgets: Sequence[float | None],
    resources: Resources,
    skipped: list[str] | None = None,
) -> list[Setting]:
    """Every (method, budget) solved for this model; `none` first; knob-less methods once.

    A budget below a method's cheapest setting (pruning at block 3 cannot go under the cost of
    blocks 0–2) is left out of a multi-budget run and reported in `skipped`, rather than failing
    the whole matrix; when nothing else remains to run, the error is raised.
    """
    specs = list(specs)
    if not any(name == "none" for name, _ in specs):
        specs.insert(0, ("none", {}))
    settings: list[Setting] = []
    seen: set[tuple[str, float | None]] = set()
    for name, values in specs:
        cls = method_class(name)
        spec = format_method_spec(name, values)
        explicit = cls.knob is None or values.get(cls.knob) is not None
        for budget in [None] if explicit else budgets:
            if (spec, budget) in seen:
                continue
            seen.add((spec, budget))
            if budget is None and not explicit:
                raise CliprankError(
                    f"{name} needs --budget or an explicit {cls.knob}=... (e.g. {name}({cls.knob}=...))"
                )
            try:
                settings.append(Setting(spec=spec, solved=solve(name, model.arch, values, budget, resources)))
            except BudgetTooLow as err:
                if skipped is None:
                    raise
                skipped.append(str(err))
    if skipped and len(settings) == 1:
        raise BudgetTooLow(skipped[0])
    return settings


def measure_speeds(model: LoadedModel, rows: list[Setting], images: torch.Tensor, meta: dict, repeats: int) -> None:
    """Throughput at the evaluation batch size and latency at batch 1, all rows timed round-robin.

    Round-robin timing keeps the ratios between rows fair on a busy machine; memory is one batch's
    peak tensor allocation. Measured on real images once per model (they do not depend on the dataset).
    """
    from cliprank.profiling import interleaved_medians, measure_peak_memory, measure_throughputs

    modules = [ReducedVisual(model.visual, row.method.plan(), meta) for row in rows]
    singles = [ReducedVisual(model.visual, row.method.plan(), slice_meta(meta, slice(0, 1))) for row in rows]
    timings = measure_throughputs(modules, images, repeats=repeats, warmup=1)
    latencies = interleaved_medians(singles, images[:1], repeats=max(3, repeats), warmup=1)
    for row, module, timing, latency in zip(rows, modules, timings, latencies):
        memory = measure_peak_memory(module, images)
        row.speed = {
            "throughput": Throughput(
                images_per_second=timing.images_per_second,
                batch_size=timing.batch_size,
                warmup=timing.warmup,
                repeats=timing.repeats,
                threads=timing.threads,
            ),
            "latency_ms": latency * 1000,
            "peak_memory_mb": None if memory.peak_bytes is None else memory.peak_bytes / 2**20,
        }


@dataclass
class Accumulator:
    """Per-setting results over a dataset's batches."""

    logits: list[torch.Tensor] = field(default_factory=list)
    macs: list[torch.Tensor] = field(default_factory=list)
    attention: list[list[torch.Tensor]] = field(default_factory=list)
    mlp: list[list[torch.Tensor]] = field(default_factory=list)
    patch_scores: list[torch.Tensor] = field(default_factory=list)
    indices: list[torch.Tensor] = field(default_factory=list)

    def add(self, part: dict[str, Any]) -> None:
        """Append one batch's results (see `encode_batch`), in dataset order."""
        self.logits.append(part["logits"])
        self.attention.append(list(part["attention"]))
        self.mlp.append(list(part["mlp"]))
        self.macs.append(part["macs"])
        if part.get("patch_scores") is not None:
            self.patch_scores.append(part["patch_scores"])
            self.indices.append(part["indices"])


def _schedule_means(parts: list[list[torch.Tensor]]) -> list[float]:
    if not parts:
        return []
    per_block = zip(*parts)
    return [round(float(torch.cat(blocks).float().mean()), 3) for blocks in per_block]


def row_classifier(model: LoadedModel, dataset: Any, setting: Setting, default: torch.Tensor) -> torch.Tensor:
    """The zero-shot classifier the row's method scores with (learned text context replaces the shared one)."""
    return setting.method.text_classifier(model, dataset.classnames, default)


def encode_batch(
    model: LoadedModel,
    images: torch.Tensor,
    meta: dict[str, Any],
    setting: Setting,
    plan: Any,
    classifier: torch.Tensor,
    indices: Any,
) -> dict[str, Any]:
    """One batch under one setting: logits, per-image MACs, executed schedule, patch scores (on the CPU).

    A plain dict of tensors, so a distributed rank can save it as a part and rank 0 can merge it
    exactly as a single process accumulates it.
    """
    trace = Trace()
    embeddings = encode(model.visual, images, plan, dict(meta), trace)
    part: dict[str, Any] = {
        "logits": logits(embeddings, classifier).cpu(),
        "attention": [t.cpu() for t in trace.attention_tokens],
        "mlp": [t.cpu() for t in trace.mlp_tokens],
        "macs": per_image_macs(
            model.arch, trace.attention_tokens, trace.mlp_tokens, setting.method.schedule().overhead
        ).cpu(),
    }
    if trace.patch_scores is not None:
        part["patch_scores"] = trace.patch_scores.cpu()
        part["indices"] = torch.as_tensor(indices)
    return part


def needs_image_hashes(settings: list[Setting], golden: RankingLookup | None) -> bool:
    return golden is not None or any("rankings" in s.method.requires for s in settings)


def evaluate_dataset(
    model: LoadedModel,
    dataset: Any,
    split: str,
    settings: list[Setting],
    classifier: torch.Tensor,
    batch_size: int,
    workers: int,
    golden: RankingLookup | None,
    on_batch: Callable[[int], None] | None = None,
) -> tuple[dict[str, Accumulator], torch.Tensor]:
    """Encode every batch of `dataset` under every setting; collect logits, costs and rankings."""
    from cliprank.data import make_loader

    needs_hashes = needs_image_hashes(settings, golden)
    results = {s.key: Accumulator() for s in settings}
    classifiers = {s.key: row_classifier(model, dataset, s, classifier) for s in settings}
    labels: list[torch.Tensor] = []
    plans = {id(s): s.method.plan() for s in settings}
    with torch.inference_mode():
        for images, batch_labels, indices in make_loader(dataset, batch_size=batch_size, workers=workers):
            images = images.to(model.device)
            meta = batch_meta(dataset.name, split, images, indices, needs_hashes)
            labels.append(batch_labels)
            for setting in settings:
                results[setting.key].add(
                    encode_batch(model, images, meta, setting, plans[id(setting)], classifiers[setting.key], indices)
                )
            if on_batch:
                on_batch(len(batch_labels))
    return results, torch.cat(labels)


def build_record(
    model: LoadedModel,
    dataset: Any,
    setting: Setting,
    acc: Accumulator,
    labels: torch.Tensor,
    golden: RankingLookup | None,
    extra: dict[str, Any],
) -> Record:
    method = setting.method
    scores = torch.cat(acc.logits)
    macs = float(torch.cat(acc.macs).mean())
    ranking = None
    if golden is not None and acc.patch_scores and not method.oracle:  # an oracle is not judged by its own search
        indices = torch.cat(acc.indices)
        golden_scores = golden.patch_scores(indices, None)
        kept = golden.rankings.kept
        tau, overlap = agreement(torch.cat(acc.patch_scores), golden_scores, kept)
        ranking = RankingAgreement(kendall_tau=tau, top_k_overlap=overlap, k=kept)
    speed = setting.speed or {}
    return Record(
        dataset=dataset.name,
        model=model.name,
        pretrained=model.pretrained,
        method=method.name,
        method_spec=setting.spec,
        budget=setting.solved.budget,
        metrics=metrics(scores, labels),
        params=_jsonable(method.describe()),
        schedule={"attention": _schedule_means(acc.attention), "mlp": _schedule_means(acc.mlp)},
        gmacs=macs / 1e9,
        gmacs_analytic=schedule_macs(model.arch, method.schedule()) / 1e9,
        gmacs_fraction=macs / unpruned_macs(model.arch),
        gmacs_counted=setting.gmacs_counted,
        image_tower_params=sum(p.numel() for p in model.visual.parameters()),
        images=len(scores),
        dataset_fingerprint=dataset.fingerprint,
        model_fingerprint=model.fingerprint,
        task=TASK,
        method_label=method.label,
        throughput=speed.get("throughput"),
        latency_ms=speed.get("latency_ms"),
        peak_memory_mb=speed.get("peak_memory_mb"),
        ranking_agreement=ranking,
        extra=extra,
    )


def _jsonable(values: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if isinstance(value, tuple):
            value = list(value)
        if isinstance(value, float) and not math.isfinite(value):
            value = None
        out[key] = value
    return out


def settings_key(model: LoadedModel, dataset_name: str, setting: Setting) -> str:
    return record_key(model.name, model.pretrained, dataset_name, setting.spec, setting.solved.budget)


def environment(settings: EvaluateSettings) -> Environment:
    return Environment.collect(
        device=settings.device, precision="fp32", threads=torch.get_num_threads(), seed=settings.seed
    )


def ensure_writer(settings: EvaluateSettings) -> ReportWriter:
    return ReportWriter(settings.out, environment(settings))


def probe_batch(model: LoadedModel, dataset: Any, split: str, size: int, hashes: bool):
    """The first `size` images of the dataset, with their meta: what timing and FLOP counting run on."""
    from cliprank.data import make_loader

    images, _, indices = next(iter(make_loader(dataset, batch_size=size, workers=0)))
    images = images.to(model.device)
    return images, batch_meta(dataset.name, split, images, indices, hashes)


def count_setting(model: LoadedModel, setting: Setting, images: torch.Tensor, meta: dict[str, Any]) -> float:
    """fvcore MACs per image: one traced image for fixed schedules, the mean over a few if adaptive."""
    from cliprank.cost.counting import count_macs, mean_counted_macs

    plan = setting.method.plan()
    if setting.method.adaptive:
        few = min(8, images.shape[0])
        return mean_counted_macs(model.visual, plan, images[:few], slice_meta(meta, slice(0, few)))
    return count_macs(model.visual, plan, model.arch.image_size, slice_meta(meta, slice(0, 1)))


def run_evaluation(
    settings: EvaluateSettings,
    progress: Any = None,
    dist: Distributed | None = None,
    log: Callable[[str], None] = print,
) -> ReportWriter:
    """Evaluate everything `settings` asks for into `settings.out`; returns the finished writer.

    Under torchrun (`dist` enabled) every rank encodes its share of each dataset's batches into part
    files (`evaluate_parts`), and rank 0 alone merges them, measures speed and writes the report; the
    writer the other ranks return is not updated. Part files left by a killed run are reused by the
    rerun, whatever its number of processes.
    """
    from cliprank.data import load_dataset
    from cliprank.evaluate_parts import BatchParts, evaluate_dataset_sharded
    from cliprank.models.loading import load_model

    dist = dist or Distributed()
    writer = ensure_writer(settings)
    for name, pretrained in settings.models:
        model = load_model(
            name, pretrained, device=dist.device if dist.enabled else settings.device, quick_gelu=settings.quick_gelu
        )
        resources = load_resources(model, settings.methods, settings.files)
        skipped: list[str] = []
        rows = method_settings(model, expand_all(settings.methods, resources), settings.budgets, resources, skipped)
        for line in skipped:
            log(f"skipped: {line}")
        for dataset_name in settings.datasets:
            with dist.main_first():  # one rank builds or downloads the data, the others read it
                dataset = load_dataset(
                    dataset_name,
                    split=settings.split,
                    root=settings.dataset_root,
                    transform=model.preprocess,
                    limit=settings.limit,
                    download=settings.download,
                )
            pending = [
                row
                for row in rows
                if not writer.has(settings_key(model, dataset.name, row), model.fingerprint, dataset.fingerprint)
            ]
            pending_keys = dist.broadcast_object([row.key for row in pending])  # rank 0's report decides
            pending = [row for row in rows if row.key in pending_keys]
            if not pending:
                continue
            golden = resources.rankings.get(dataset.name, settings.split) if resources.rankings else None
            if any("rankings" in row.method.requires for row in pending):
                golden = resources.rankings.require(dataset.name, settings.split)
            with dist.main_first():  # the classifier cache is filled once
                classifier = zero_shot_classifier(model, dataset.classnames, dataset.templates)
            parts = BatchParts(settings.out, model, dataset, settings.split, settings.batch_size)
            if not (dist.enabled or parts.exists()):
                results, labels = encode_in_memory(settings, model, dataset, pending, classifier, golden, progress)
                write_records(settings, writer, model, dataset, pending, results, labels, golden, resources)
                continue
            merged = evaluate_dataset_sharded(
                model,
                dataset,
                settings.split,
                pending,
                classifier,
                parts,
                dist,
                settings.workers,
                golden,
                progress if dist.is_main else None,
            )
            if merged is not None:  # rank 0: the others wait at the barrier below while it writes the records
                write_records(settings, writer, model, dataset, pending, *merged, golden, resources)
                parts.remove()
            dist.barrier()
    if dist.is_main:
        writer.finalize()
    return writer


def encode_in_memory(
    settings: EvaluateSettings,
    model: LoadedModel,
    dataset: Any,
    pending: list[Setting],
    classifier: torch.Tensor,
    golden: RankingLookup | None,
    progress: Any,
) -> tuple[dict[str, Accumulator], torch.Tensor]:
    """One process: every batch of the dataset under every pending setting, held in memory."""
    advance = None
    if progress is not None:
        task = progress.add_task(f"{model.name} · {dataset.name} · {len(pending)} settings", total=len(dataset))
        advance = lambda n: progress.advance(task, n)  # noqa: E731
    return evaluate_dataset(
        model,
        dataset,
        settings.split,
        pending,
        classifier,
        settings.batch_size,
        settings.workers,
        golden,
        on_batch=advance,
    )


def write_records(
    settings: EvaluateSettings,
    writer: ReportWriter,
    model: LoadedModel,
    dataset: Any,
    pending: list[Setting],
    results: dict[str, Accumulator],
    labels: torch.Tensor,
    golden: RankingLookup | None,
    resources: Resources,
) -> None:
    """Measure what does not depend on the data (speed, counted GMACs) and write each complete record."""
    images, meta = probe_batch(model, dataset, settings.split, settings.batch_size, golden is not None)
    unmeasured = [row for row in pending if row.speed is None]
    if settings.measure_speed and unmeasured:
        measure_speeds(model, unmeasured, images, meta, settings.timing_repeats)
    for row in pending:
        counted = row.gmacs_counted
        if settings.count_flops and (counted is None or row.method.adaptive):
            counted = count_setting(model, row, images, meta) / 1e9
            row.gmacs_counted = None if row.method.adaptive else counted
        record = build_record(model, dataset, row, results[row.key], labels, golden, row_extra(row, resources))
        record.gmacs_counted = counted
        writer.add(record)


def row_extra(row: Setting, resources: Resources) -> dict[str, Any]:
    """Provenance a reader needs beside the numbers (what a predictor or tokens were trained on)."""
    extra: dict[str, Any] = {"declared_gmacs": row.solved.macs / 1e9}
    if "predictor" in row.method.requires and resources.predictor is not None:
        extra["predictor_trained_on"] = resources.predictor.trained_on
    if row.method.adaptive:
        extra["note"] = "input-adaptive: gmacs and schedule are means over the evaluated images"
    return extra
