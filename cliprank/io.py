"""Files cliprank writes and reads: atomic writes, outputs checked before any work, checked containers.

- Atomic writes: a reader (or a killed writer's rerun) never sees a half-written file. A kill between
  writing and renaming leaves a hidden temporary file named after its writer (host and process id);
  the next successful write into that folder removes such files once their writer is gone.
- `check_output_dir` / `check_output_file`: an unusable `--out` is found before any work, not after it.
- `load_tensors` and `header_json`: a cliprank safetensors file whose every failure is one line.

torch and safetensors are imported on use: the command line checks outputs before torch is loaded.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cliprank.errors import CliprankError

if TYPE_CHECKING:
    import torch


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_DEFAULT_MODE = 0o666 & ~_umask()
_HOST = re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname()) or "host"
# `.NAME.HOST~PID~XXXXXXXX.tmp`: whose it is, so a later run knows when its writer is gone
_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.(?P<host>[A-Za-z0-9_-]+)~(?P<pid>\d+)~[A-Za-z0-9_]+\.tmp$")
STALE_AFTER_S = 24 * 3600  # a temporary of another machine (shared storage) or of an older cliprank


def reason(err: BaseException, typed: bool = False) -> str:
    """An exception as a short reason for a one-line message: its first line (with its type if `typed`),
    or its type alone when it has no text — never empty brackets."""
    text = (str(err).strip().splitlines() or [""])[0]
    if isinstance(err, OSError) and err.strerror:
        text = err.strerror
    if not text:
        return type(err).__name__
    return f"{type(err).__name__}: {text[:120]}" if typed else text[:160]


def _writer_gone(host: str, pid: int) -> bool:
    if host != _HOST:
        return False  # another machine's process: only its age can tell
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # alive, owned by another user
        return False
    return False


def remove_stale_temporaries(folder: Path, name: str | None = None) -> list[Path]:
    """Delete the temporaries of atomic writes in `folder` whose writer died (or, on another machine,
    that are older than a day); with `name`, also that file's unnamed temporaries of older versions.

    Only files in the exact form this module creates are touched; a live writer's file never is.
    """
    removed = []
    now = time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not (entry.name.startswith(".") and entry.name.endswith(".tmp")) or not entry.is_file():
            continue
        match = _TEMPORARY.match(entry.name)
        try:
            old = now - entry.stat().st_mtime > STALE_AFTER_S
        except OSError:
            continue
        if match:
            stale = int(match["pid"]) != os.getpid() and (_writer_gone(match["host"], int(match["pid"])) or old)
        else:
            stale = name is not None and old and re.fullmatch(rf"\.{re.escape(name)}\.\w{{8}}\.tmp", entry.name)
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(entry.path)
                removed.append(Path(entry.path))
    return removed


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """A temporary path beside `path`; on success it replaces `path` in one step, on error it vanishes.

    For writers that insist on a file name (safetensors, matplotlib).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{_HOST}~{os.getpid()}~", suffix=".tmp")
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, _DEFAULT_MODE)  # mkstemp makes 0600 files; outputs get the usual umask-based mode
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    remove_stale_temporaries(path.parent, path.name)


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
    import torch  # loaded on first use: commands check paths before torch loads

    _atomic(path, lambda stream: torch.save(obj, stream))


# ----- outputs, checked before any work -----


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _check_writable_folder(folder: Path, option: str, what: Path) -> None:
    """`folder` exists as a folder or can be created, and files can be written in it."""
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise CliprankError(
            f"{option} {what} cannot be created: {existing} is a file, not a folder; choose another path"
        )
    try:
        handle, probe = tempfile.mkstemp(dir=existing, prefix=".cliprank-write-check.", suffix=".tmp")
    except OSError as err:
        raise CliprankError(
            f"{option} {what} cannot be written: {existing} is not writable ({reason(err)}); choose another path"
        ) from err
    os.close(handle)
    os.unlink(probe)


def check_output_dir(path: Path, option: str = "--out") -> None:
    """Refuse, in one line, an output folder that is a file or cannot be created or written."""
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise CliprankError(f"{option} {path} is a file, but a folder is needed here; pass a folder path")
    _check_writable_folder(path, option, path)


def checkpoint_path(out: Path) -> Path:
    """Where a training job that writes `out` keeps its resumable checkpoint."""
    return out.with_name(out.name + ".ckpt")


def check_output_file(path: Path, option: str = "--out") -> None:
    """Refuse, in one line, an output file that is a folder or whose folder cannot be created or written."""
    path = Path(path).expanduser()
    if path.is_dir():
        raise CliprankError(f"{option} {path} is a folder, but a file is needed here; pass a file path")
    if path.exists() and not os.access(path, os.W_OK):
        raise CliprankError(f"{option} {path} exists and is read-only; choose another path")
    _check_writable_folder(path.parent, option, path)


# ----- cliprank's safetensors containers -----


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], header: dict[str, str]) -> None:
    """Tensors plus a string header in one safetensors file, written atomically."""
    from safetensors.torch import save_file  # loaded on first use: commands check paths before torch loads

    with atomic_path(Path(path)) as tmp:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp), metadata=header)


def load_tensors(path: Path, file_format: str, what: str, fix: str) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Tensors and header of a cliprank safetensors file whose header says `format: file_format`.

    Nothing executable is unpickled. Every failure is one CliprankError naming the file, what is wrong
    with it and `fix` (how to get a good one).
    """
    from safetensors import SafetensorError, safe_open  # loaded on first use: commands check paths before torch loads
    from safetensors.torch import load_file

    path = Path(path)
    if path.is_dir():
        raise CliprankError(f"{what} {path} is a folder, not a file; {fix}")
    if not path.is_file():
        raise CliprankError(f"{what} not found: {path}; {fix}")
    try:
        with safe_open(str(path), framework="pt") as handle:
            header = handle.metadata() or {}
        tensors = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as err:
        raise CliprankError(f"{what} {path} is unreadable or corrupt ({reason(err)}); {fix}") from err
    if header.get("format") != file_format:
        raise CliprankError(f"{path} is not a cliprank {what} (format {header.get('format')!r}); {fix}")
    return tensors, header


def header_json(header: dict[str, str], key: str, kind: type, what: str, path: Path, fix: str) -> Any:
    """Header field `key` read as JSON of type `kind`; a missing or damaged field is one CliprankError."""
    text = header.get(key)
    problem = None
    if text is None:
        problem = f"its header lacks '{key}'"
    else:
        try:
            value = json.loads(text)
        except ValueError:
            problem = f"its header field '{key}' is not valid JSON"
        else:
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                problem = f"its header field '{key}' is not a JSON {_JSON_NAMES.get(kind, kind.__name__)}"
    if problem is not None:
        raise CliprankError(f"{what} {path} is damaged: {problem}; {fix}")
    return value


_JSON_NAMES = {dict: "object", list: "list", int: "integer", str: "string", float: "number"}
