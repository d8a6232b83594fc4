"""`ReportWriter`: the evaluate command's output directory, written one complete record at a time.

Each completed record rewrites the whole `report.json` atomically, so a run killed at any moment leaves
the last complete file, and a rerun into the same directory skips what is already there (`has`).
Resuming under a different device, precision or seed would silently mix numbers that are not
comparable, so that is refused instead.

Two runs may write into one folder at once (other methods, other datasets): every write happens under
a lock on `.report.json.lock` and first takes in the records the other run wrote meanwhile, so
neither loses the other's. The lock is the operating system's (`filelock`): a killed run holds none.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from filelock import FileLock

from cliprank.errors import CliprankError
from cliprank.io import atomic_write_text
from cliprank.report.figures import patch_maps_file
from cliprank.report.markdown import render_markdown
from cliprank.report.schema import (
    Environment,
    Record,
    Report,
    json_ready,
    load_report,
    save_report,
    validate_record,
)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_PLOT = "accuracy_vs_gmacs.png"
REPORT_LOCK = ".report.json.lock"

# Settings that change the numbers themselves; a resumed run must match them.
_RESUME_MUST_MATCH = ("device", "precision", "seed")


class ReportWriter:
    """Owns `out_dir/report.json` for one run: resume, skip complete records, add, finalize."""

    def __init__(self, out_dir: Path, environment: Environment):
        self.out_dir = Path(out_dir)
        self.environment = environment
        if self.json_path.exists():
            self.report = load_report(self.json_path)
            self._check_resumable(self.report.environment)
            self.report.environment = environment
        else:
            self.report = Report(environment=environment)

    @property
    def json_path(self) -> Path:
        return self.out_dir / REPORT_JSON

    @property
    def markdown_path(self) -> Path:
        return self.out_dir / REPORT_MD

    @property
    def plot_path(self) -> Path:
        return self.out_dir / REPORT_PLOT

    @property
    def records(self) -> list[Record]:
        return list(self.report.records)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Hold the folder's report lock, with the records another run wrote meanwhile taken in."""
        self.out_dir.mkdir(parents=True, exist_ok=True)
        with FileLock(self.out_dir / REPORT_LOCK):
            self._take_in_others()
            yield

    def _take_in_others(self) -> None:
        if not self.json_path.exists():
            return
        stored = load_report(self.json_path)
        self._check_resumable(stored.environment)
        held = {record.key for record in self.report.records}
        self.report.records.extend(record for record in stored.records if record.key not in held)

    def refresh(self) -> None:
        """Take in the records another run into this folder completed since (so they are skipped here)."""
        with self._locked():
            pass

    def get(self, key: str) -> Record | None:
        """The complete record with this key (see `record_key`), if one is stored."""
        return next((record for record in self.report.records if record.key == key), None)

    def has(self, key: str, model_fingerprint: str, dataset_fingerprint: str) -> bool:
        """Whether a complete record for this key, these weights and these images is already stored.

        A record for the same key made from other weights or images is never reused: the run stops
        instead of mixing the two in one report.
        """
        record = self.get(key)
        if record is None:
            return False
        if (record.model_fingerprint, record.dataset_fingerprint) != (model_fingerprint, dataset_fingerprint):
            raise CliprankError(
                f"{self.json_path} holds {key} for other weights or images (model {record.model_fingerprint}, "
                f"dataset {record.dataset_fingerprint}); choose another --out or delete that report"
            )
        return True

    def add(self, record: Record) -> None:
        """Store a complete record (replacing one with the same key) and rewrite report.json atomically.

        The record is normalised through its JSON form first, so what is held in memory is exactly what a
        resumed run will load (NaN metrics, plain numbers, `Throughput` rather than a dict).
        """
        data = json_ready(record.to_dict())
        problems = validate_record(data)
        if problems:
            raise ValueError("incomplete record: " + "; ".join(problems))
        record = Record.from_dict(data)
        with self._locked():
            records = self.report.records
            for index, existing in enumerate(records):
                if existing.key == record.key:
                    records[index] = record
                    break
            else:
                records.append(record)
            self.report.environment = self.environment
            save_report(self.report, self.json_path)

    def finalize(self) -> list[Path]:
        """Write report.json, report.md and the accuracy-vs-GMACs plot; return the paths written."""
        from cliprank.report.plot import save_plot  # matplotlib is slow to import; only needed here

        with self._locked():
            self.report.environment = self.environment
            save_report(self.report, self.json_path)
            atomic_write_text(self.markdown_path, render_markdown(self.report, self.patch_maps()))
            written = [self.json_path, self.markdown_path]
            if self.report.records:
                save_plot(self.report, self.plot_path)
                written.append(self.plot_path)
        return written

    def patch_maps(self) -> dict[tuple[str, str, str], str]:
        """The patch maps drawn into this folder, by (model, pretrained, dataset) of the records."""
        triples = dict.fromkeys((r.model, r.pretrained, r.dataset) for r in self.report.records)
        files = {triple: patch_maps_file(*triple) for triple in triples}
        return {triple: name for triple, name in files.items() if (self.out_dir / name).is_file()}

    def _check_resumable(self, previous: Environment) -> None:
        changed = [
            f"{name} {getattr(previous, name)} → {getattr(self.environment, name)}"
            for name in _RESUME_MUST_MATCH
            if getattr(previous, name) != getattr(self.environment, name)
        ]
        if changed:
            raise CliprankError(
                f"{self.json_path} was produced with other settings ({', '.join(changed)}); "
                "rerun with the same settings to resume (or add to it), or choose another --out"
            )
