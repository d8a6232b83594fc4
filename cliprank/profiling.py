"""The `profile` pipeline: what each pruning setting costs — GMACs, schedule, parameters, speed, memory.

For every method × budget (plus the unpruned `none`, always the first row) one row records:

- GMACs three ways (`cliprank.cost.counting.CostReport`): analytic from the token schedule, counted by
  fvcore with attention handled, and torch's FlopCounterMode as a cross-check; flagged when analytic
  and counted differ by more than 1%. Input-adaptive methods are averaged over `images` images.
- the declared token schedule and the executed one from a Trace (equal for fixed-schedule methods,
  at most the declared bound for input-adaptive ones);
- parameters of the image tower and the method's own;
- throughput, latency at batch 1 and the peak memory of one batch (`cliprank.speed`, every row timed
  round-robin), in the model's precision, which every row records.

Images are seeded random noise unless a dataset is given: costs and speed do not depend on content,
except for input-adaptive methods (whose rows say what they were measured on) and methods that read
each image's search result (golden), which need real images.
"""

from __future__ import annotations

import importlib.metadata
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cliprank.cost.analytic import Schedule, unpruned_macs
from cliprank.cost.counting import CostReport, measure_cost
from cliprank.data import load_dataset, make_loader
from cliprank.data.meta import batch_meta
from cliprank.distributed import Distributed
from cliprank.engine.context import Trace
from cliprank.engine.forward import encode
from cliprank.errors import CliprankError
from cliprank.methods.base import Method
from cliprank.methods.budget import Row, solve_rows
from cliprank.methods.registry import expand_all, method_class
from cliprank.methods.spec import MethodSpec, format_method_spec
from cliprank.models.loading import LoadedModel
from cliprank.precision import FP32, Precision
from cliprank.report.profile import ProfileResult, ProfileRow, describe_images
from cliprank.report.schema import Environment, utc_now
from cliprank.resources import ResourceFiles, load_resources
from cliprank.speed import device_facts, measure_speeds, random_images, torch_threads


@dataclass(frozen=True)
class ProfileJob:
    methods: tuple[MethodSpec, ...] = ()
    budgets: tuple[float | None, ...] = (0.7,)
    batch_size: int = 32
    threads: int | None = None  # None: torch's default
    dataset: str | None = None  # real images (and their indices) instead of noise; golden needs them
    split: str = "test"
    dataset_root: Path | None = None
    files: ResourceFiles = field(default_factory=ResourceFiles)
    repeats: int = 5
    warmup: int = 2
    images: int = 8  # images the executed schedule (and adaptive methods' GMACs) are averaged over
    seed: int = 0
    cross_check: bool = True  # also count with torch.utils.flop_counter
    skip_unreadable: bool = False  # leave out image files of --dataset that cannot be decoded


@dataclass
class Probe:
    """The images a profile runs on, with the per-image facts (dataset, indices, hashes) methods may read."""

    images: torch.Tensor
    meta: dict[str, Any] | None


def run_profile(
    model: LoadedModel, job: ProfileJob, progress: Any = None, dist: Distributed | None = None
) -> ProfileResult:
    """Configure each row's method (solving budgets) and measure every row, in one process."""
    dist = dist or Distributed()
    if dist.enabled:
        raise CliprankError("profile measures one process; run it without torchrun")
    task = progress.add_task("profiling", total=None) if progress is not None else None

    def say(message: str) -> None:
        if progress is not None:
            progress.update(task, description=message)

    resources = load_resources(model, job.methods, job.files)
    specs = expand_all(job.methods, resources)
    readers = [name for name, _ in specs if "rankings" in method_class(name).requires]
    if job.dataset is None and readers:
        raise CliprankError(f"{', '.join(readers)}: pruning by each image's searched ranking needs --dataset NAME")
    rows = solve_rows(model.arch, specs, job.budgets, resources)
    dataset = None
    if job.dataset is not None:  # loaded once: with --skip-unreadable that decodes every file of the split
        dataset = load_dataset(
            job.dataset,
            split=job.split,
            root=job.dataset_root,
            transform=model.preprocess,
            skip_unreadable=job.skip_unreadable,
        )
    images = probe_images(model, job, dataset, job.images, offset=0)
    batch = probe_images(model, job, dataset, job.batch_size, offset=1)
    profiled = []
    with torch_threads(job.threads) as threads:
        for row in rows:
            say(f"counting {row.spec}" + ("" if row.budget is None else f" at budget {row.budget}"))
            profiled.append(profile_row(row, model, job, images))
        say(f"timing {len(rows)} rows round-robin ({job.warmup} warm-up, {job.repeats} timed)")
        plans = [row.method.plan() for row in rows]
        speeds = measure_speeds(
            model.visual, plans, batch.images, batch.meta, job.repeats, job.warmup, precision=model.precision
        )
    for row, speed in zip(profiled, speeds, strict=True):
        row.throughput, row.latency_ms, row.memory = speed.throughput, speed.latency_ms, speed.memory
    environment = Environment.collect(
        device=model.device.type,
        precision=model.precision.name,
        threads=threads,
        seed=job.seed,
        hardware=device_facts(model.device),
    )
    return ProfileResult(
        settings=settings_json(model, job),
        images=describe_images(job.dataset, job.split, job.images),
        environment=_environment(environment.to_dict()),
        model=_model_info(model),
        rows=profiled,
        created=utc_now(),
    )


def probe_images(model: LoadedModel, job: ProfileJob, dataset: Any, count: int, offset: int) -> Probe:
    """`count` images: the first of `dataset` when given (real content), else seeded noise."""
    if dataset is None:
        return Probe(random_images(count, model.arch, model.device, job.seed + offset), None)
    images, _, indices = next(iter(make_loader(dataset, batch_size=min(count, len(dataset)))))
    images = images.to(model.device)
    return Probe(images, batch_meta(dataset.name, job.split, images, indices, hashes=True))


def profile_row(row: Row, model: LoadedModel, job: ProfileJob, images: Probe) -> ProfileRow:
    """Everything about one row except its speed (all rows are timed together, round-robin)."""
    method, visual = row.method, model.visual
    cost = measure_cost(method, visual, images.images, cross_check=job.cross_check, meta=images.meta)
    declared = method.schedule()
    executed = executed_schedule(method, visual, images.images, images.meta, model.precision)
    check = check_schedule(declared, executed, method.adaptive)
    return ProfileRow(
        method=method.name,
        spec=row.spec,
        label=method.label,
        params=method.describe(),
        knob=method.knob,
        budget=row.budget,
        adaptive=method.adaptive,
        cost=cost,
        declared=declared,
        executed=executed,
        schedule_check=check,
        tower_parameters=count_parameters(visual),
        method_parameters=method_parameters(method),
        precision=model.precision.name,
        notes=row_notes(method, cost, check, describe_images(job.dataset, job.split, job.images)),
    )


def count_parameters(module: nn.Module) -> int:
    return sum(parameter.numel() for parameter in module.parameters())


def method_parameters(method: Method) -> int:
    """Parameters the method adds to the tower: a trained predictor, learned tokens, tensors in its plan."""
    candidates = [method.resources.predictor, method.resources.tokens, *method.plan().extras.values()]
    seen: dict[int, int] = {}
    for item in candidates:
        tensors = item.parameters() if isinstance(item, nn.Module) else [item] if torch.is_tensor(item) else []
        for tensor in tensors:
            seen[id(tensor)] = tensor.numel()
    return sum(seen.values())


def executed_schedule(
    method: Method,
    visual: nn.Module,
    images: torch.Tensor,
    meta: dict[str, Any] | None = None,
    precision: Precision = FP32,
) -> list[tuple[float, float]]:
    """Mean tokens per image entering each block's attention and MLP, as the engine ran them in `precision`."""
    trace = Trace()
    with torch.inference_mode(), precision.autocast_context(images.device):
        encode(visual, images, method.plan(), meta, trace=trace)
    return trace.schedule()


def check_schedule(declared: Schedule, executed: list[tuple[float, float]], adaptive: bool) -> str:
    """'matches' / 'differs' for fixed schedules; 'within bound' / 'exceeds bound' for adaptive ones."""
    pairs = list(zip(declared.attention, declared.mlp, strict=True))
    if not adaptive:
        return "matches" if executed == pairs else "differs"
    within = all(a <= da + 1e-6 and m <= dm + 1e-6 for (a, m), (da, dm) in zip(executed, pairs, strict=True))
    return "within bound" if within else "exceeds bound"


def row_notes(method: Method, cost: CostReport, check: str, images: dict[str, Any]) -> list[str]:
    """What a reader must know to trust (or distrust) a row."""
    notes = []
    if method.adaptive:
        notes.append(f"input-adaptive: GMACs and schedule are means over {images['count']} images; {images['note']}")
    if cost.problem:
        notes.append(f"not counted, GMACs are analytic: {cost.problem}")
    elif cost.flagged:
        notes.append(f"analytic and counted GMACs differ by {cost.disagreement:.1%}")
    if check in ("differs", "exceeds bound"):
        notes.append(f"executed schedule {check} the declared one")
    return notes


def settings_json(model: LoadedModel, job: ProfileJob) -> dict[str, Any]:
    """The profile's settings as profile.json records them: the model's, the job's and the files given."""
    settings = asdict(job)
    files = settings.pop("files")
    settings = {
        "model": model.name,
        "pretrained": model.pretrained,
        "device": model.device.type,
        "precision": model.precision.name,
        "quick_gelu": model.quick_gelu,
        **settings,
        **files,
        "methods": [format_method_spec(name, knobs) for name, knobs in job.methods],
    }
    return {key: _text(value) for key, value in settings.items()}


def _text(value: Any) -> Any:
    """Paths as text, alone or in a sequence (JSON has no paths)."""
    if isinstance(value, (list, tuple)):
        return [_text(item) for item in value]
    return str(value) if isinstance(value, Path) else value


def _environment(base: dict[str, Any]) -> dict[str, Any]:
    try:
        fvcore = importlib.metadata.version("fvcore")
    except importlib.metadata.PackageNotFoundError:
        fvcore = None
    return {**base, "fvcore": fvcore}


def _model_info(model: LoadedModel) -> dict[str, Any]:
    return {
        "name": model.name,
        "pretrained": model.pretrained,
        "fingerprint": model.fingerprint,
        "image_size": list(model.arch.image_size),
        "arch": asdict(model.arch),
        "unpruned_gmacs_analytic": unpruned_macs(model.arch) / 1e9,
    }
