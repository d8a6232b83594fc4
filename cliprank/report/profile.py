"""`profile.json` and `profile.md`: what each pruning setting costs, as data and as tables a person reads.

`profile.json` (schema `cliprank.profile/1`) holds the environment, the model, the settings, the
images the rows were measured on, and per row: GMACs three ways with the 1% flag, the declared and
executed schedules, parameters, throughput with how it was timed, the measured and ideal speed-up
over the unpruned first row, batch-1 latency, peak memory and the notes a reader needs.
`profile.md` renders the same content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cliprank.cost.analytic import Schedule
from cliprank.cost.counting import CostReport
from cliprank.io import atomic_write_json, atomic_write_text
from cliprank.report.schema import display_name, json_ready
from cliprank.speed import Memory, Timing

SCHEMA_VERSION = "cliprank.profile/1"
CONVENTION = "GMACs = 10⁹ multiply-adds, fvcore convention, image tower only"
PROFILE_JSON = "profile.json"
PROFILE_MD = "profile.md"
NOISE = "seeded random noise"


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
    precision: str = "fp32"  # the model's, as `cliprank.precision` names it
    notes: list[str] = field(default_factory=list)
    throughput: Timing | None = None  # timed with all rows together, after every row is counted
    latency_ms: float | None = None  # median at batch 1
    memory: Memory | None = None  # peak of one batch, measured with the row's speed

    @property
    def title(self) -> str:
        """The spec, and the method's label when it has one (e.g. "topk (CLS-free score)")."""
        return display_name(self.spec, self.label)


@dataclass
class ProfileResult:
    settings: dict[str, Any]  # the profile's settings, as JSON values
    images: dict[str, Any]  # what the rows ran on (see `describe_images`)
    environment: dict[str, Any]
    model: dict[str, Any]
    rows: list[ProfileRow]
    created: str


def describe_images(dataset: str | None, split: str, count: int) -> dict[str, Any]:
    """Where a profile's images came from, and what that means for input-adaptive rows."""
    if dataset is None:
        note = f"images are {NOISE}; input-adaptive counts describe noise, not a dataset"
        return {"source": NOISE, "count": count, "note": note}
    note = f"images are the first of {dataset} ({split}); input-adaptive counts describe those images"
    return {"source": f"{dataset} ({split})", "count": count, "note": note}


def speedups(rows: Sequence[ProfileRow]) -> list[tuple[float, float]]:
    """(measured, ideal) speed-up of each row over the first (unpruned) row: ideal = GMACs ratio."""
    base = rows[0]
    return [
        (row.throughput.images_per_second / base.throughput.images_per_second, base.cost.macs / row.cost.macs)
        for row in rows
    ]


def row_to_dict(row: ProfileRow, speedup: tuple[float, float], base_macs: float) -> dict[str, Any]:
    return {
        "method": row.method,
        "spec": row.spec,
        "label": row.label,
        "params": row.params,
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
        "precision": row.precision,
        "throughput": asdict(row.throughput),
        "speedup": {"measured": speedup[0], "ideal_from_gmacs": speedup[1], "ratio": speedup[0] / speedup[1]},
        "latency_ms_batch1": row.latency_ms,
        "memory": asdict(row.memory),
        "notes": row.notes,
    }


def to_json(result: ProfileResult) -> dict[str, Any]:
    base = result.rows[0].cost.macs
    rows = [row_to_dict(row, s, base) for row, s in zip(result.rows, speedups(result.rows), strict=True)]
    return json_ready(
        {
            "schema_version": SCHEMA_VERSION,
            "created": result.created,
            "convention": CONVENTION,
            "environment": result.environment,
            "model": result.model,
            "settings": result.settings,
            "images": result.images,
            "rows": rows,
        }
    )


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
    env, model, settings = data["environment"], data["model"], data["settings"]
    note = result.images["note"]
    lines = [
        f"# cliprank profile: {model['name']} ({model['pretrained']})",
        "",
        f"{CONVENTION}. Counted by fvcore with attention handled; analytic from the token schedule; "
        "flagged (⚠) when they differ by more than 1%.",
        "",
        f"Environment: cliprank {env['cliprank']}, torch {env['torch']}, open_clip {env['open_clip']}, "
        f"device {env['device']}{_hardware(env)}, precision {env['precision']}, {env['threads']} threads, "
        f"git {env['git_revision'] or 'unknown'}. "
        f"Throughput: batch {settings['batch_size']}, warm-up {settings['warmup']}, "
        f"median of {settings['repeats']}. {note[0].upper()}{note[1:]}.",
        "",
        "| method | budget | GMACs (counted) | analytic | Δ | fraction | tower params | method params "
        "| img/s | speed-up (ideal) | latency b=1 (ms) | peak memory |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row, record in zip(result.rows, data["rows"], strict=True):
        gm, sp = record["gmacs"], record["speedup"]
        flag = " ⚠" if gm["flagged"] else ""
        budget = "-" if row.budget is None else row.budget
        lines.append(
            f"| {row.title} | {budget} | {format_number(gm['counted'], '.3f')}{flag} "
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
            f"| {row.title} | {'-' if row.budget is None else row.budget} | {knobs} "
            f"| {compact_schedule([a for a, _ in row.executed])} | {compact_schedule([m for _, m in row.executed])} "
            f"| {row.schedule_check} |"
        )
    notes = [f"- {row.spec}: {note}" for row in result.rows for note in row.notes]
    memory = result.rows[0].memory.measure
    lines += ["", f"Peak memory: {memory}.", ""]
    if notes:
        lines += ["## Notes", "", *notes, ""]
    return "\n".join(lines)


def _hardware(env: dict[str, Any]) -> str:
    """' (GPU name, CUDA x, driver y)' or ' (CPU model)' from the environment, when known."""
    parts = [
        env.get("device_name"),
        *(f"{k} {env[v]}" for k, v in (("CUDA", "cuda"), ("driver", "driver")) if env.get(v)),
    ]
    known = [part for part in parts if part]
    return f" ({', '.join(known)})" if known else ""


def write_profile(result: ProfileResult, out_dir: Path | str) -> tuple[Path, Path]:
    """profile.json and profile.md in `out_dir`, each written atomically."""
    out = Path(out_dir)
    json_path, md_path = out / PROFILE_JSON, out / PROFILE_MD
    atomic_write_json(json_path, to_json(result))
    atomic_write_text(md_path, to_markdown(result))
    return json_path, md_path
