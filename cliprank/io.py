"""Atomic file writes: a reader (or a killed writer's rerun) never sees a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from cliprank.errors import CliprankError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DEFAULT_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`; on success it replaces `path` in one step, on error it vanishes.

    For writers that insist on a file name (safetensors, matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, _DEFAULT_MODE)  # mkstemp makes 0600 files; outputs get the usual umask-based mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _atomic(path: Path, write) -> None:
    with atomic_path(path) as tmp, open(tmp, "wb") as stream:
        write(stream)
        stream.flush()
        os.fsync(stream.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    _atomic(path, lambda stream: stream.write(data))


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: Path, payload: Any) -> None:
    atomic_write_text(path, json.dumps(payload, indent=2, sort_keys=False, allow_nan=True) + "\n")


def atomic_save_torch(obj: Any, path: Path) -> None:
    _atomic(path, lambda stream: torch.save(obj, stream))


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """Tensors plus a string header in one safetensors file, written atomically."""
    with atomic_path(Path(path)) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)


def load_tensors(path: Path, file_format: str, what: str, fix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header of a cliprank safetensors file whose header says `format: file_format`.

    Nothing executable is unpickled. Every failure is one CliprankError naming the file, what is wrong
    with it and `fix` (how to get a good one).
    """
    path = Path(path)
    if not path.is_file():
        raise CliprankError(f"{what} not found: {path}; {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CliprankError(f"{what} {path} is unreadable or corrupt ({err}); {fix}") from err
    if header.get("format") != file_format:
        raise CliprankError(f"{path} is not a cliprank {what} (format {header.get('format')!r}); {fix}")
    return tensors, header
