"""The versioned `report.json`: its records as dataclasses, validation, and NaN-safe load/save.

A record is a strict superset of CLIP_benchmark's result (`dataset`, `model`, `pretrained`, `task`,
`metrics`, `language`), so tools built for that harness read ours. What CLIP_benchmark leaves out — cost,
timings, versions, the method and its knob — is what makes a pruning number trustworthy, so it is here.

JSON has no NaN: non-finite numbers are written as `null`. On reading, a `null` metric (acc5 under five
classes) comes back as NaN, as CLIP_benchmark computes it; every other `null` comes back as `None`.
The file is validated as a whole before anything uses it, so a bad baseline fails loudly and early.
"""

from __future__ import annotations

import importlib.metadata
import json
import math
import platform
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cliprank.errors import CliprankError
from cliprank.io import atomic_write_text
from cliprank.report.bits import unpack_bits

SCHEMA_VERSION = "cliprank.report/2"
READABLE_VERSIONS = ("cliprank.report/1", SCHEMA_VERSION)  # /1 lacks per-image results: no paired tests
GMACS_CONVENTION = "fvcore (1 MAC = 1 FLOP), image tower"
REQUIRED_METRICS = ("acc1", "acc5", "mean_per_class_recall")


def record_key(model: str, pretrained: str, dataset: str, method_spec: str, budget: float | None) -> str:
    """The identity of a record: what `has()` skips on resume and what `compare` matches on."""
    return f"{model}/{pretrained}|{dataset}|{method_spec}|{'-' if budget is None else repr(float(budget))}"


def utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Throughput:
    """Images per second of the pruned image tower, and how it was timed (numbers mean little without it)."""

    images_per_second: float
    batch_size: int
    warmup: int
    repeats: int
    threads: int


@dataclass
class RankingAgreement:
    """How well a method's patch ranking agrees with the golden one on the evaluated images."""

    kendall_tau: float
    top_k_overlap: float
    k: int


def display_name(spec: str, label: str) -> str:
    """A method as a reader should see it, in every table and figure: `golden (oracle)`, `tome`,
    `topk (CLS-free score)` — the spec, with the method's label when the spec does not already say it."""
    return f"{spec} ({label})" if label and label not in spec else spec


@dataclass
class Record:
    """One (model, dataset, method, budget) result. `key` is derived, never set by hand."""

    dataset: str
    model: str
    pretrained: str
    method: str
    method_spec: str
    budget: float | None
    metrics: dict[str, float]
    params: dict[str, Any]
    schedule: dict[str, list[float]]
    gmacs: float
    gmacs_analytic: float
    gmacs_fraction: float
    image_tower_params: int
    images: int
    dataset_fingerprint: str
    model_fingerprint: str
    task: str = "zeroshot_classification"
    language: str = "en"
    method_label: str = ""
    gmacs_counted: float | None = None
    gmacs_convention: str = GMACS_CONVENTION
    throughput: Throughput | None = None
    latency_ms: float | None = None
    peak_memory_mb: float | None = None
    ranking_agreement: RankingAgreement | None = None
    # which images acc1 counted as right, in dataset order: base64 of their bits (bits.pack_bits)
    acc1_per_image: str | None = None
    acc1_ci95: list[float] | None = None  # Wilson score interval of acc1, as fractions
    precision: str | None = None  # `cliprank.precision` name the model ran in (reports before it: fp32)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def key(self) -> str:
        return record_key(self.model, self.pretrained, self.dataset, self.method_spec, self.budget)

    @property
    def acc1(self) -> float:
        return float(self.metrics["acc1"])

    def correct(self) -> list[bool] | None:
        """Per-image top-1 correctness in dataset order, or None for a record that did not store it."""
        return None if self.acc1_per_image is None else unpack_bits(self.acc1_per_image, self.images)

    @property
    def display_name(self) -> str:
        return display_name(self.method_spec, self.method_label)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"key": self.key}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if isinstance(value, (Throughput, RankingAgreement)):
                value = {f.name: getattr(value, f.name) for f in fields(value)}
            out[spec.name] = value
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Record:
        """Build from a dict that `validate_record` accepted; null metrics become NaN."""
        values = {f.name: data[f.name] for f in fields(cls) if f.name in data}
        values["metrics"] = {k: math.nan if v is None else float(v) for k, v in data["metrics"].items()}
        if data.get("throughput") is not None:
            values["throughput"] = Throughput(**data["throughput"])
        if data.get("ranking_agreement") is not None:
            values["ranking_agreement"] = RankingAgreement(**data["ranking_agreement"])
        values["extra"] = data.get("extra") or {}
        values["method_label"] = data.get("method_label") or ""
        return cls(**values)


@dataclass
class Environment:
    """Where the numbers were produced. Throughput and fp16 accuracy depend on all of it.

    The hardware fields are optional (reports written before them lack them): `device_name` is the GPU's
    name on a GPU, the CPU's model otherwise; `cuda` the CUDA runtime torch was built with and `driver`
    the NVIDIA driver, on a GPU.
    """

    cliprank: str | None
    torch: str | None
    open_clip: str | None
    python: str
    platform: str
    device: str
    precision: str
    threads: int
    seed: int | None
    git_revision: str | None
    device_name: str | None = None
    cuda: str | None = None
    driver: str | None = None

    @classmethod
    def collect(
        cls,
        *,
        device: str,
        precision: str,
        threads: int,
        seed: int | None,
        hardware: dict[str, str | None] | None = None,
    ) -> Environment:
        """The current process's environment; versions come from package metadata (no heavy imports).

        `hardware`: the optional hardware fields, as `cliprank.speed.device_facts` reads them.
        """
        return cls(
            cliprank=_version("cliprank"),
            torch=_version("torch"),
            open_clip=_version("open_clip_torch"),
            python=platform.python_version(),
            platform=platform.platform(),
            device=device,
            precision=precision,
            threads=threads,
            seed=seed,
            git_revision=git_revision(),
            **(hardware or {}),
        )

    def to_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Report:
    environment: Environment
    records: list[Record] = field(default_factory=list)
    created: str = field(default_factory=utc_now)
    schema_version: str = SCHEMA_VERSION

    def by_key(self) -> dict[str, Record]:
        return {record.key: record for record in self.records}

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema_version": SCHEMA_VERSION,  # what is written is always the current schema
            "created": self.created,
            "environment": self.environment.to_dict(),
            "records": [record.to_dict() for record in self.records],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Report:
        return cls(
            environment=Environment(**data["environment"]),
            records=[Record.from_dict(r) for r in data["records"]],
            created=data["created"],
            schema_version=data["schema_version"],
        )


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def git_revision() -> str | None:
    """The short commit of the cliprank checkout, `+dirty` when tracked files changed; None outside git."""
    here = Path(__file__).resolve().parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], cwd=here, capture_output=True, text=True, timeout=5, check=True)
        return done.stdout.strip()

    try:
        revision = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{revision}+dirty" if dirty else revision


# --- validation ---------------------------------------------------------------------------------------

Check = Callable[[Any], "str | None"]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _string(value: Any) -> str | None:
    return None if isinstance(value, str) else "must be a string"


def _integer(value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else "must be an integer ≥ 0"


def _finite(value: Any) -> str | None:
    return None if _is_number(value) and math.isfinite(value) else "must be a finite number"


def _mapping(value: Any) -> str | None:
    return None if isinstance(value, dict) else "must be an object"


def _nullable(check: Check) -> Check:
    return lambda value: None if value is None else check(value)


def _metrics(value: Any) -> str | None:
    if not isinstance(value, dict):
        return "must be an object"
    missing = [name for name in REQUIRED_METRICS if name not in value]
    if missing:
        return f"lacks {', '.join(missing)}"
    if _finite(value["acc1"]):
        return "acc1 must be a finite number"
    bad = [k for k, v in value.items() if not (v is None or _is_number(v))]
    return f"{', '.join(bad)} must be numbers or null" if bad else None


def _schedule(value: Any) -> str | None:
    if not isinstance(value, dict) or set(value) != {"attention", "mlp"}:
        return "must be an object with exactly 'attention' and 'mlp'"
    for name, counts in value.items():
        if not isinstance(counts, list) or not all(_is_number(n) for n in counts):
            return f"{name} must be a list of token counts"
    return None if len(value["attention"]) == len(value["mlp"]) else "attention and mlp differ in length"


def _interval(value: Any) -> str | None:
    if not isinstance(value, list) or len(value) != 2 or any(_finite(v) for v in value):
        return "must be a list of two finite numbers"
    return None if 0 <= value[0] <= value[1] <= 1 else "must be [low, high] within [0, 1]"


def _shaped(cls: type) -> Check:
    """A check for an object holding exactly the fields of `cls`, each a finite number."""
    names = [f.name for f in fields(cls)]

    def check(value: Any) -> str | None:
        if not isinstance(value, dict) or set(value) != set(names):
            return f"must be an object with exactly {', '.join(names)}"
        bad = [name for name in names if _finite(value[name])]
        return f"{', '.join(bad)} must be finite numbers" if bad else None

    return check


# name -> (check, required). Optional fields may be absent; absent means null (or "" / {}).
RECORD_FIELDS: dict[str, tuple[Check, bool]] = {
    "key": (_string, True),
    "dataset": (_string, True),
    "model": (_string, True),
    "pretrained": (_string, True),
    "task": (_string, True),
    "language": (_string, True),
    "metrics": (_metrics, True),
    "method": (_string, True),
    "method_spec": (_string, True),
    "method_label": (_string, False),
    "params": (_mapping, True),
    "budget": (_nullable(_finite), True),
    "schedule": (_schedule, True),
    "gmacs": (_finite, True),
    "gmacs_analytic": (_finite, True),
    "gmacs_counted": (_nullable(_finite), False),
    "gmacs_fraction": (_finite, True),
    "gmacs_convention": (_string, True),
    "image_tower_params": (_integer, True),
    "throughput": (_nullable(_shaped(Throughput)), False),
    "latency_ms": (_nullable(_finite), False),
    "peak_memory_mb": (_nullable(_finite), False),
    "images": (_integer, True),
    "dataset_fingerprint": (_string, True),
    "model_fingerprint": (_string, True),
    "ranking_agreement": (_nullable(_shaped(RankingAgreement)), False),
    "acc1_per_image": (_nullable(_string), False),
    "acc1_ci95": (_nullable(_interval), False),
    "precision": (_nullable(_string), False),
    "extra": (_mapping, False),
}

ENVIRONMENT_FIELDS: dict[str, tuple[Check, bool]] = {
    "cliprank": (_nullable(_string), True),
    "torch": (_nullable(_string), True),
    "open_clip": (_nullable(_string), True),
    "python": (_string, True),
    "platform": (_string, True),
    "device": (_string, True),
    "precision": (_string, True),
    "threads": (_integer, True),
    "seed": (_nullable(_integer), True),
    "git_revision": (_nullable(_string), True),
    "device_name": (_nullable(_string), False),
    "cuda": (_nullable(_string), False),
    "driver": (_nullable(_string), False),
}


def _check_fields(obj: dict[str, Any], spec: dict[str, tuple[Check, bool]], where: str) -> list[str]:
    problems = [f"{where}: unknown field '{name}'" for name in obj if name not in spec]
    for name, (check, required) in spec.items():
        if name not in obj:
            if required:
                problems.append(f"{where}: missing '{name}'")
            continue
        error = check(obj[name])
        if error:
            problems.append(f"{where}: '{name}' {error}")
    return problems


def validate_record(obj: Any, where: str = "record") -> list[str]:
    """Problems with one raw record (empty when valid), each naming the record and the field."""
    if not isinstance(obj, dict):
        return [f"{where}: must be an object"]
    problems = _check_fields(obj, RECORD_FIELDS, where)
    identity = ("model", "pretrained", "dataset", "method_spec", "budget")
    if not problems:
        expected = record_key(*(obj[name] for name in identity))
        if obj["key"] != expected:
            problems.append(f"{where}: key '{obj['key']}' does not match its fields ('{expected}')")
    if not problems and obj.get("acc1_per_image") is not None:
        problems += _per_image_problems(obj, where)
    return problems


def _per_image_problems(obj: dict[str, Any], where: str) -> list[str]:
    """The per-image bits must decode to exactly `images` results whose share is acc1."""
    try:
        bits = unpack_bits(obj["acc1_per_image"], obj["images"])
    except ValueError as err:
        return [f"{where}: 'acc1_per_image' {err}"]
    if obj["images"] and abs(sum(bits) / obj["images"] - obj["metrics"]["acc1"]) > 1e-6:
        return [f"{where}: 'acc1_per_image' counts {sum(bits)} right of {obj['images']}, not acc1"]
    return []


def validate_report(obj: Any) -> list[str]:
    """Every problem with a raw report (empty when valid). A foreign schema is one problem, reported alone."""
    if not isinstance(obj, dict):
        return ["the top level must be an object"]
    version = obj.get("schema_version")
    if version not in READABLE_VERSIONS:
        found = "no schema_version" if version is None else f"schema_version '{version}'"
        return [f"{found}; expected '{SCHEMA_VERSION}' (is this a cliprank report?)"]
    problems = [f"unknown top-level field '{name}'" for name in obj if name not in Report.__dataclass_fields__]
    if not isinstance(obj.get("created"), str):
        problems.append("'created' must be a timestamp string")
    environment = obj.get("environment")
    if not isinstance(environment, dict):
        problems.append("'environment' must be an object")
    else:
        problems += _check_fields(environment, ENVIRONMENT_FIELDS, "environment")
    records = obj.get("records")
    if not isinstance(records, list):
        return [*problems, "'records' must be a list"]
    seen: set[str] = set()
    for index, record in enumerate(records):
        label = f"records[{index}]"
        if isinstance(record, dict) and isinstance(record.get("key"), str):
            label += f" ({record['key']})"
            if record["key"] in seen:
                problems.append(f"{label}: duplicate key")
            seen.add(record["key"])
        problems += validate_record(record, label)
    return problems


# --- files --------------------------------------------------------------------------------------------


def json_ready(value: Any) -> Any:
    """Plain JSON values: non-finite floats become None; numpy/torch scalars and arrays become Python ones."""
    if hasattr(value, "tolist") and not isinstance(value, (list, tuple, dict, str)):
        value = value.tolist()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def dumps_report(report: Report) -> str:
    """The report as strict JSON text. Raises ValueError on an invalid report (a bug, not user input)."""
    payload = json_ready(report.to_dict())
    problems = validate_report(payload)
    if problems:
        raise ValueError("refusing to write an invalid report: " + "; ".join(problems[:5]))
    return json.dumps(payload, indent=2, allow_nan=False) + "\n"


def save_report(report: Report, path: Path) -> None:
    """Write atomically: readers and resumed runs see the previous complete file or the new one."""
    atomic_write_text(Path(path), dumps_report(report))


def load_report(path: Path) -> Report:
    """Read and validate a report; any problem is a CliprankError naming the file."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        reason = err.strerror if isinstance(err, OSError) and err.strerror else str(err)
        raise CliprankError(f"cannot read report {path}: {reason}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise CliprankError(f"report {path} is not valid JSON ({err.msg} at line {err.lineno})") from err
    problems = validate_report(data)
    if problems:
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        raise CliprankError(f"report {path} is unusable: {'; '.join(problems[:3])}{more}")
    return Report.from_dict(data)
