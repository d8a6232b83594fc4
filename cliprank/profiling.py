"""The `profile` pipeline: what each pruning setting costs — GMACs, schedule, parameters, speed, memory.

Pure functions that return data; `cliprank.commands.profile` renders it. For every method × budget
(plus the unpruned `none`, always the first row) one row records:

- GMACs three ways (`cliprank.cost.counting.CostReport`): analytic from the token schedule, counted by
  fvcore with attention handled, and torch's FlopCounterMode as a cross-check; flagged when analytic
  and counted differ by more than 1%. Input-adaptive methods are averaged over `images` images.
- the declared token schedule and the executed one from a Trace (equal for fixed-schedule methods,
  at most the declared bound for input-adaptive ones);
- parameters of the image tower and the method's own;
- throughput (median over repeats of one batch, after warm-up, every row timed round-robin so a slow
  spell on a shared machine hits all rows alike), latency at batch 1, and the peak memory one
  batch's forward adds to what is already resident.

Images are seeded random noise: costs and speed do not depend on content, except for input-adaptive
methods, whose counts then describe noise, not a dataset (the row says so).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from cliprank.cost.analytic import Schedule, unpruned_macs
from cliprank.cost.counting import CostReport, measure_cost
from cliprank.data.meta import batch_meta, slice_meta
from cliprank.engine.context import Trace
from cliprank.engine.forward import ReducedVisual, encode
from cliprank.errors import CliprankError
from cliprank.io import atomic_write_json, atomic_write_text
from cliprank.methods.base import Method
from cliprank.methods.budget import check_budget, solve
from cliprank.methods.registry import expand_all, method_class
from cliprank.methods.spec import MethodSpec, format_method_spec
from cliprank.models import embedded
from cliprank.models.arch import VisionArch
from cliprank.resources import ResourceFiles, load_resources

SCHEMA_VERSION = "cliprank.profile/1"
CONVENTION = "GMACs = 10⁹ multiply-adds, fvcore convention, image tower only"
IMAGE_NOTE = "images are seeded random noise; input-adaptive counts describe noise, not a dataset"

Progress = Callable[[str], None]


@dataclass(frozen=True)
class ProfileSettings:
    model: str = embedded.MODEL_NAME
    pretrained: str = embedded.TAG
    methods: tuple[MethodSpec, ...] = ()
    budgets: tuple[float | None, ...] = (0.7,)
    device: str = "cpu"
    batch_size: int = 32
    threads: int | None = None  # None: torch's default
    dataset: str | None = None  # real images (and their indices) instead of noise; golden needs them
    split: str = "test"
    dataset_root: Path | None = None
    files: ResourceFiles = field(default_factory=ResourceFiles)
    quick_gelu: bool | None = None
    repeats: int = 5
    warmup: int = 2
    images: int = 8  # images the executed schedule (and adaptive methods' GMACs) are averaged over
    seed: int = 0
    cross_check: bool = True  # also count with torch.utils.flop_counter


@dataclass(frozen=True)
class Timing:
    """Throughput of one batch size, and how it was timed (a number means little without it)."""

    images_per_second: float
    median_batch_seconds: float
    batch_size: int
    warmup: int
    repeats: int
    threads: int


@dataclass(frozen=True)
class Memory:
    peak_bytes: int | None
    measure: str  # what the number is, in words


@dataclass
class ProfileRow:
    method: str
    spec: str
    label: str
    params: dict[str, Any]
    knob: str | None
    budget: float | None
    adaptive: bool
    cost: CostReport
    declared: Schedule
    executed: list[tuple[float, float]]
    schedule_check: str
    tower_parameters: int
    method_parameters: int
    memory: Memory
    notes: list[str] = field(default_factory=list)
    throughput: Timing | None = None  # set by `time_rows`, which times all rows together
    latency_ms: float | None = None  # median at batch 1


@dataclass
class ProfileResult:
    settings: ProfileSettings
    environment: dict[str, Any]
    model: dict[str, Any]
    rows: list[ProfileRow]
    created: str


# ----- rows to run ------------------------------------------------------------------------------------


RowSpec = tuple[str, dict[str, Any], float | None]  # method, knobs, budget


def expand_rows(specs: Sequence[MethodSpec], budgets: Sequence[float | None]) -> list[RowSpec]:
    """(method, knobs, budget) per row: `none` first, then each spec at each budget.

    A spec that sets its method's knob itself (`tome(r=8)`), or a method without a knob, is one
    unbudgeted row: a budget would have nothing to solve. A budget of None keeps knobs as given.
    """
    for budget in budgets:
        if budget is not None:
            check_budget(budget)
    rows: list[RowSpec] = [("none", {}, None)]
    seen = {("none", None)}
    for name, knobs in specs:
        cls = method_class(name)
        fixed = cls.knob is None or knobs.get(cls.knob) is not None
        for budget in [None] if fixed else budgets:
            key = (format_method_spec(name, knobs), budget)
            if key not in seen:
                seen.add(key)
                rows.append((name, dict(knobs), budget))
    return rows


@dataclass
class Probe:
    """The images a profile runs on, with the per-image facts (dataset, indices, hashes) methods may read."""

    images: torch.Tensor
    meta: dict[str, Any] | None

    def head(self, count: int) -> Probe:
        return Probe(self.images[:count], slice_meta(self.meta, slice(0, count)))


def probe_images(loaded: Any, settings: ProfileSettings, count: int, offset: int) -> Probe:
    """`count` images: from `settings.dataset` when given (real content), else seeded noise."""
    if settings.dataset is None:
        return Probe(random_images(count, loaded.arch, loaded.device, settings.seed + offset), None)
    from cliprank.data import load_dataset, make_loader

    dataset = load_dataset(
        settings.dataset, split=settings.split, root=settings.dataset_root, transform=loaded.preprocess
    )
    images, _, indices = next(iter(make_loader(dataset, batch_size=min(count, len(dataset)))))
    images = images.to(loaded.device)
    return Probe(images, batch_meta(dataset.name, settings.split, images, indices, hashes=True))


def random_images(count: int, arch: VisionArch, device: torch.device | str, seed: int) -> torch.Tensor:
    """Seeded noise shaped like the tower's input."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 3, *arch.image_size, generator=generator).to(device)


# ----- measurements ------------------------------------------------------------------------------------


def check_device(device: str) -> None:
    """Refuse a device torch cannot use here, in one line."""
    kind = device.split(":")[0]
    if kind not in ("cpu", "cuda"):
        raise CliprankError(f"device '{device}' is not supported; use cpu or cuda")
    if kind == "cuda" and not torch.cuda.is_available():
        raise CliprankError("--device cuda was asked for but torch sees no CUDA GPU here; use --device cpu")


@contextlib.contextmanager
def torch_threads(threads: int | None) -> Iterator[int]:
    """Run with `threads` intra-op threads (None: unchanged), restoring the previous setting after."""
    previous = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        yield torch.get_num_threads()
    finally:
        torch.set_num_threads(previous)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_forward(module: nn.Module, images: torch.Tensor) -> float:
    """Seconds of one forward, synchronised so a GPU's queued work is included."""
    _synchronize(images.device)
    start = time.perf_counter()
    with torch.inference_mode():
        module(images)
    _synchronize(images.device)
    return time.perf_counter() - start


def interleaved_medians(modules: Sequence[nn.Module], images: torch.Tensor, repeats: int, warmup: int) -> list[float]:
    """Median seconds of one forward of each module, timed round-robin after `warmup` rounds.

    Round-robin rather than one module after another: on a shared or thermally throttling machine a
    slow spell then hits every module alike, so their ratios (the speed-ups) stay fair. The median
    shrugs off single hiccups.
    """
    for _ in range(warmup):
        for module in modules:
            time_forward(module, images)
    times: list[list[float]] = [[] for _ in modules]
    for _ in range(repeats):
        for index, module in enumerate(modules):
            times[index].append(time_forward(module, images))
    return [statistics.median(seconds) for seconds in times]


def measure_throughputs(modules: Sequence[nn.Module], images: torch.Tensor, repeats: int, warmup: int) -> list[Timing]:
    """Images per second of each module at the batch size of `images`, timed round-robin."""
    batch, threads = images.shape[0], torch.get_num_threads()
    return [
        Timing(batch / seconds, seconds, batch, warmup, repeats, threads)
        for seconds in interleaved_medians(modules, images, repeats, warmup)
    ]


def measure_peak_memory(module: nn.Module, images: torch.Tensor) -> Memory:
    """Peak memory one forward adds on top of what is resident (weights and inputs excluded).

    CUDA: `torch.cuda.max_memory_allocated` minus the allocation before the forward. CPU: torch's
    profiler records every tensor allocation and free; the peak of their running sum is the most
    tensor memory the forward held at once (allocator caching and fragmentation not included).
    """
    device = images.device
    if device.type == "cuda":
        _synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        with torch.inference_mode():
            module(images)
        _synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        return Memory(int(peak), "CUDA max_memory_allocated during one batch, minus the allocation before it")
    peak = _profiled_cpu_peak(module, images)
    what = "peak tensor bytes allocated during one batch (torch profiler allocation events; CPU)"
    return Memory(peak, what if peak is not None else "unavailable: the profiler gave no memory events")


def _profiled_cpu_peak(module: nn.Module, images: torch.Tensor) -> int | None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as recorded, torch.inference_mode():
        module(images)
    try:
        events = [e for e in recorded.profiler.kineto_results.events() if e.name() == "[memory]"]
    except AttributeError:  # the profiler's result layout is not a stable API
        return None
    if not events:
        return None
    current = peak = 0
    for event in sorted(events, key=lambda e: e.start_ns()):
        current += event.nbytes()
        peak = max(peak, current)
    return peak


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
    method: Method, visual: nn.Module, images: torch.Tensor, meta: dict[str, Any] | None = None
) -> list[tuple[float, float]]:
    """Mean tokens per image entering each block's attention and MLP, as the engine ran them."""
    trace = Trace()
    with torch.inference_mode():
        encode(visual, images, method.plan(), meta, trace=trace)
    return trace.schedule()


def check_schedule(declared: Schedule, executed: list[tuple[float, float]], adaptive: bool) -> str:
    """'matches' / 'differs' for fixed schedules; 'within bound' / 'exceeds bound' for adaptive ones."""
    pairs = list(zip(declared.attention, declared.mlp, strict=True))
    if not adaptive:
        return "matches" if executed == pairs else "differs"
    within = all(a <= da + 1e-6 and m <= dm + 1e-6 for (a, m), (da, dm) in zip(executed, pairs, strict=True))
    return "within bound" if within else "exceeds bound"


# ----- one row, all rows --------------------------------------------------------------------------------


def profile_method(
    method: Method,
    visual: nn.Module,
    settings: ProfileSettings,
    spec: str,
    budget: float | None,
    images: Probe,
    batch: Probe,
) -> ProfileRow:
    """Everything about one configured method except its timings (those are taken for all rows at once)."""
    cost = measure_cost(method, visual, images.images, cross_check=settings.cross_check, meta=images.meta)
    declared, executed = method.schedule(), executed_schedule(method, visual, images.images, images.meta)
    check = check_schedule(declared, executed, method.adaptive)
    return ProfileRow(
        method=method.name,
        spec=spec,
        label=method.label,
        params=method.describe(),
        knob=method.knob,
        budget=budget,
        adaptive=method.adaptive,
        cost=cost,
        declared=declared,
        executed=executed,
        schedule_check=check,
        tower_parameters=count_parameters(visual),
        method_parameters=method_parameters(method),
        memory=measure_peak_memory(ReducedVisual(visual, method.plan(), batch.meta).eval(), batch.images),
        notes=row_notes(method, cost, check, settings.images, real=settings.dataset is not None),
    )


def row_notes(method: Method, cost: CostReport, check: str, images: int, real: bool = False) -> list[str]:
    """What a reader must know to trust (or distrust) a row."""
    notes = []
    if method.adaptive:
        source = "real images" if real else IMAGE_NOTE
        notes.append(f"input-adaptive: GMACs and schedule are means over {images} images; {source}")
    if cost.problem:
        notes.append(f"not counted, GMACs are analytic: {cost.problem}")
    elif cost.flagged:
        notes.append(f"analytic and counted GMACs differ by {cost.disagreement:.1%}")
    if check in ("differs", "exceeds bound"):
        notes.append(f"executed schedule {check} the declared one")
    return notes


def time_rows(
    methods: Sequence[Method], visual: nn.Module, settings: ProfileSettings, batch: Probe
) -> list[tuple[Timing, float]]:
    """(throughput at the batch size, median latency in ms at batch 1) of each method, timed round-robin."""
    modules = [ReducedVisual(visual, method.plan(), batch.meta).eval() for method in methods]
    singles = [ReducedVisual(visual, method.plan(), batch.head(1).meta).eval() for method in methods]
    throughputs = measure_throughputs(modules, batch.images, settings.repeats, settings.warmup)
    latencies = interleaved_medians(singles, batch.images[:1], settings.repeats, settings.warmup)
    return [(timing, 1000 * seconds) for timing, seconds in zip(throughputs, latencies, strict=True)]


def run_profile(settings: ProfileSettings, progress: Progress | None = None) -> ProfileResult:
    """Load the model, configure each row's method (solving budgets), and measure every row."""
    from cliprank.models.loading import load_model
    from cliprank.report.schema import Environment, utc_now

    say = progress or (lambda message: None)
    check_device(settings.device)
    say(f"loading {settings.model} ({settings.pretrained})")
    loaded = load_model(
        settings.model, settings.pretrained, device=settings.device, seed=settings.seed, quick_gelu=settings.quick_gelu
    )
    resources = load_resources(loaded, settings.methods, settings.files)
    rows_to_run = expand_rows(expand_all(settings.methods, resources), settings.budgets)
    specs = [(name, knobs) for name, knobs, _ in rows_to_run]
    if settings.dataset is None and any("rankings" in method_class(name).requires for name, _ in specs):
        raise CliprankError("golden prunes with each image's searched ranking: pass --dataset NAME (and --rankings)")
    configured = [
        (solve(name, loaded.arch, knobs, budget, resources), name, knobs) for name, knobs, budget in rows_to_run
    ]
    images = probe_images(loaded, settings, settings.images, offset=0)
    batch = probe_images(loaded, settings, settings.batch_size, offset=1)
    rows = []
    with torch_threads(settings.threads) as threads:
        for solved, name, knobs in configured:
            spec = format_method_spec(name, knobs)
            say(f"counting {spec}" + ("" if solved.budget is None else f" at budget {solved.budget}"))
            rows.append(profile_method(solved.method, loaded.visual, settings, spec, solved.budget, images, batch))
        say(f"timing {len(rows)} rows round-robin ({settings.warmup} warm-up, {settings.repeats} timed)")
        timings = time_rows([solved.method for solved, _, _ in configured], loaded.visual, settings, batch)
    for row, (throughput, latency_ms) in zip(rows, timings, strict=True):
        row.throughput, row.latency_ms = throughput, latency_ms
    environment = Environment.collect(device=settings.device, precision="fp32", threads=threads, seed=settings.seed)
    return ProfileResult(settings, _environment(environment.to_dict()), _model_info(loaded), rows, utc_now())


def _environment(base: dict[str, Any]) -> dict[str, Any]:
    import importlib.metadata

    try:
        fvcore = importlib.metadata.version("fvcore")
    except importlib.metadata.PackageNotFoundError:
        fvcore = None
    device_name = torch.cuda.get_device_name() if base["device"].startswith("cuda") else None
    return {**base, "fvcore": fvcore, "device_name": device_name}


def _model_info(loaded: Any) -> dict[str, Any]:
    return {
        "name": loaded.name,
        "pretrained": loaded.pretrained,
        "fingerprint": loaded.fingerprint,
        "image_size": list(loaded.arch.image_size),
        "arch": asdict(loaded.arch),
        "unpruned_gmacs_analytic": unpruned_macs(loaded.arch) / 1e9,
    }


# ----- serialisation -------------------------------------------------------------------------------------


def speedups(rows: Sequence[ProfileRow]) -> list[tuple[float, float]]:
    """(measured, ideal) speed-up of each row over the first (unpruned) row: ideal = GMACs ratio."""
    base = rows[0]
    return [
        (row.throughput.images_per_second / base.throughput.images_per_second, base.cost.macs / row.cost.macs)
        for row in rows
    ]


def jsonable(value: Any) -> Any:
    """Method knobs as JSON values: tuples become lists, anything exotic its text."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def row_to_dict(row: ProfileRow, speedup: tuple[float, float], base_macs: float) -> dict[str, Any]:
    return {
        "method": row.method,
        "spec": row.spec,
        "label": row.label,
        "params": jsonable(row.params),
        "knob": row.knob,
        "budget": row.budget,
        "adaptive": row.adaptive,
        "gmacs": row.cost.as_dict(),
        "gmacs_fraction": row.cost.macs / base_macs,
        "schedule": {
            "declared": row.declared.as_lists(),
            "executed": {
                "attention": [round(a, 3) for a, _ in row.executed],
                "mlp": [round(m, 3) for _, m in row.executed],
            },
            "check": row.schedule_check,
        },
        "parameters": {"image_tower": row.tower_parameters, "method": row.method_parameters},
        "throughput": asdict(row.throughput),
        "speedup": {"measured": speedup[0], "ideal_from_gmacs": speedup[1], "ratio": speedup[0] / speedup[1]},
        "latency_ms_batch1": row.latency_ms,
        "memory": asdict(row.memory),
        "notes": row.notes,
    }


def to_json(result: ProfileResult) -> dict[str, Any]:
    settings = asdict(result.settings)
    settings["methods"] = [format_method_spec(name, knobs) for name, knobs in result.settings.methods]
    base = result.rows[0].cost.macs
    return {
        "schema_version": SCHEMA_VERSION,
        "created": result.created,
        "convention": CONVENTION,
        "environment": result.environment,
        "model": result.model,
        "settings": settings,
        "images": {"source": "seeded random noise", "count": result.settings.images, "note": IMAGE_NOTE},
        "rows": [row_to_dict(row, s, base) for row, s in zip(result.rows, speedups(result.rows), strict=True)],
    }


def compact_schedule(counts: Sequence[float]) -> str:
    """Run-length form of per-block token counts: `197×3 119×9`."""
    runs: list[list[Any]] = []
    for count in counts:
        if runs and runs[-1][0] == count:
            runs[-1][1] += 1
        else:
            runs.append([count, 1])
    text = (f"{c:g}" if float(c).is_integer() else f"{c:.1f}" for c, _ in runs)
    return " ".join(f"{t}×{n}" if n > 1 else t for t, (_, n) in zip(text, runs, strict=True))


def format_number(value: float | None, spec: str) -> str:
    """A number for a table, or a dash when it is missing."""
    return "—" if value is None else format(value, spec)


def format_bytes(value: int | None) -> str:
    return "-" if value is None else f"{value / 2**20:.1f} MiB"


def to_markdown(result: ProfileResult) -> str:
    """The same content as profile.json, as tables a person reads in a PR."""
    data = to_json(result)
    env, model = data["environment"], data["model"]
    lines = [
        f"# cliprank profile: {model['name']} ({model['pretrained']})",
        "",
        f"{CONVENTION}. Counted by fvcore with attention handled; analytic from the token schedule; "
        "flagged (⚠) when they differ by more than 1%.",
        "",
        f"Environment: cliprank {env['cliprank']}, torch {env['torch']}, open_clip {env['open_clip']}, "
        f"device {env['device']}, {env['threads']} threads, git {env['git_revision'] or 'unknown'}. "
        f"Throughput: batch {result.settings.batch_size}, warm-up {result.settings.warmup}, "
        f"median of {result.settings.repeats}. {IMAGE_NOTE.capitalize()}.",
        "",
        "| method | budget | GMACs (counted) | analytic | Δ | fraction | tower params | method params "
        "| img/s | speed-up (ideal) | latency b=1 (ms) | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, record in zip(result.rows, data["rows"], strict=True):
        gm, sp = record["gmacs"], record["speedup"]
        flag = " ⚠" if gm["flagged"] else ""
        lines.append(
            f"| {row.spec} | {'-' if row.budget is None else row.budget} | {format_number(gm['counted'], '.3f')}{flag} "
            f"| {gm['analytic']:.3f} | {format_number(gm['disagreement'], '.2%')} | {record['gmacs_fraction']:.3f} "
            f"| {row.tower_parameters:,} | {row.method_parameters:,} | {row.throughput.images_per_second:.1f} "
            f"| {sp['measured']:.2f}× ({sp['ideal_from_gmacs']:.2f}×) | {row.latency_ms:.1f} "
            f"| {format_bytes(row.memory.peak_bytes)} |"
        )
    lines += ["", "## Token schedules (tokens entering each block: attention / MLP)", ""]
    lines += ["| method | budget | knobs | executed attention | executed MLP | check |", "|---|---|---|---|---|---|"]
    for row in result.rows:
        knobs = ", ".join(f"{k}={v}" for k, v in row.params.items()) or "-"
        lines.append(
            f"| {row.spec} | {'-' if row.budget is None else row.budget} | {knobs} "
            f"| {compact_schedule([a for a, _ in row.executed])} | {compact_schedule([m for _, m in row.executed])} "
            f"| {row.schedule_check} |"
        )
    notes = [f"- {row.spec}: {note}" for row in result.rows for note in row.notes]
    memory = result.rows[0].memory.measure
    lines += ["", f"Peak memory: {memory}.", ""]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def write_outputs(result: ProfileResult, out_dir: Path | str) -> tuple[Path, Path]:
    """profile.json and profile.md in `out_dir`, each written atomically."""
    out = Path(out_dir)
    json_path, md_path = out / "profile.json", out / "profile.md"
    atomic_write_json(json_path, to_json(result))
    atomic_write_text(md_path, to_markdown(result))
    return json_path, md_path
