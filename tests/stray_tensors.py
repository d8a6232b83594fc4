"""Catch tensors a forward creates on the wrong device or in the wrong dtype, on a machine without a GPU.

A CUDA-only bug is a tensor made with `torch.zeros(n)` where `torch.zeros(n, device=x.device)` was meant:
on a CPU both are the same tensor. Inside `creation_audit()` they are not:

- the default device is `meta`, so a tensor created without `device=` is a meta tensor;
- the default dtype is float64, so a float tensor created without `dtype=` (or an integer tensor scaled by
  a Python float) is float64, which no forward in float32 or lower precision makes on purpose;
- a dispatch mode records every operation whose output is a meta or float64 tensor, with the line of
  cliprank's code that asked for it.

The audited forward's own tensors (weights, images) are made outside, on the CPU. A stray tensor then
either shows up in the record or makes the next operation fail on mixing devices; `creation_audit`
reports the recorded strays either way.
"""

from __future__ import annotations

import contextlib
import traceback
from collections.abc import Iterator

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _Strays(TorchDispatchMode):
    def __init__(self, float64: bool) -> None:
        super().__init__()
        self.float64 = float64
        self.found: list[str] = []

    def stray(self, tensor: torch.Tensor) -> bool:
        return tensor.device.type == "meta" or (tensor.dtype == torch.float64 and not self.float64)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor) and self.stray(tensor):
                self.found.append(f"{func} made a {tensor.device.type} {tensor.dtype} tensor at {_caller()}")
        return out


def _caller() -> str:
    """The innermost frame in cliprank's own code (or the innermost frame at all)."""
    frames = traceback.extract_stack()[:-3]
    ours = [frame for frame in frames if "/cliprank/" in frame.filename and "/tests/" not in frame.filename]
    frame = (ours or frames)[-1]
    return f"{frame.filename.split('/cliprank/')[-1]}:{frame.lineno} ({frame.line})"


@contextlib.contextmanager
def creation_audit(float64: bool = False) -> Iterator[list[str]]:
    """Yield the list of stray creations; an error raised inside is reported with the strays that caused it.

    `float64=True` audits devices only, for code that computes in float64 on purpose (the search's scores).
    """
    previous = torch.get_default_dtype()
    strays = _Strays(float64)
    torch.set_default_dtype(torch.float64)
    try:
        with torch.device("meta"), strays:
            yield strays.found
    except Exception as err:
        if strays.found:
            raise AssertionError("tensors created off the input's device or dtype: " + "; ".join(strays.found)) from err
        raise
    finally:
        torch.set_default_dtype(previous)
