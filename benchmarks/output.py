"""The JSON every benchmark writes with `--out`: schema, environment and settings, then its own numbers."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from cliprank.io import atomic_write_json
from cliprank.report.schema import Environment
from cliprank.speed import device_facts


def write_result(
    path: Path,
    schema: str,
    args: argparse.Namespace,
    threads: int,
    body: dict[str, Any],
    precision: str = "fp32",
) -> None:
    """Write `body` under a common envelope, atomically; `args` are recorded as the settings (paths as text)."""
    environment = Environment.collect(
        device=args.device,
        precision=precision,
        threads=threads,
        seed=getattr(args, "seed", 0),
        hardware=device_facts(args.device),
    )
    settings = {key: str(value) if isinstance(value, Path) else value for key, value in vars(args).items()}
    payload = {"schema_version": schema, "environment": environment.to_dict(), "settings": settings, **body}
    atomic_write_json(path, payload)
