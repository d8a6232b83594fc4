"""Numeric precision, by open_clip's names, resolved in one place into a weights dtype and an autocast dtype.

CLIP users evaluate in mixed precision: open_clip's `--precision amp` and CLIP_benchmark's `--amp` run
the forward under `torch.autocast` with float32 weights; `bf16`/`fp16` cast the weights instead (open_clip
keeps LayerNorms in float32 then), and `pure_bf16`/`pure_fp16` cast every parameter. cliprank runs the
same names the same way (`cliprank.models.cast` casts the weights, `Precision.autocast_context` wraps
each forward), defaulting to `amp` on a GPU and `fp32` on a CPU, where fp32 is what CPUs run fastest and
what cliprank's committed results were measured in.

Scores that decide what a method keeps are computed in float32 whatever the precision (operands
upcast, `autocast_off` around them): a bf16 score has 8 bits of mantissa, so nearby tokens tie and
the choice among them falls to the kernel's tie rule, which differs between devices.

Importing this module does not import torch (the command line lists the names in `--help`).
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import TYPE_CHECKING

from cliprank.errors import CliprankError

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class Precision:
    """One precision: the dtype the tower's weights are cast to, and the dtype autocast runs matmuls in."""

    name: str
    weights: str  # torch dtype name of the cast weights ("float32": not cast)
    autocast: str | None  # torch dtype name autocast runs in, None: no autocast
    cast_norms: bool  # LayerNorms and embeddings are cast too (pure_*); else they stay float32, as open_clip does

    @property
    def weights_dtype(self) -> torch.dtype:
        import torch  # torch loads on first use, not on import (see the module docstring)

        return getattr(torch, self.weights)

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        import torch  # torch loads on first use, not on import (see the module docstring)

        return None if self.autocast is None else getattr(torch, self.autocast)

    @property
    def compute(self) -> str:
        """The dtype matmuls run in: autocast's, else the weights'."""
        return self.autocast or self.weights

    @property
    def scales_gradients(self) -> bool:
        """float16 gradients underflow: training through the model needs a gradient scaler."""
        return self.compute == "float16"

    def autocast_context(self, device: torch.device | str) -> contextlib.AbstractContextManager:
        """The context every forward of a model in this precision runs in (nothing for cast or fp32 weights)."""
        if self.autocast is None:
            return contextlib.nullcontext()
        import torch  # torch loads on first use, not on import (see the module docstring)

        return torch.autocast(device_type=torch.device(device).type, dtype=self.autocast_dtype)


PRECISIONS: dict[str, Precision] = {
    p.name: p
    for p in (
        Precision("fp32", "float32", None, False),
        Precision("amp", "float32", "float16", False),  # open_clip's and CLIP_benchmark's default on a GPU
        Precision("amp_bf16", "float32", "bfloat16", False),
        Precision("bf16", "bfloat16", None, False),
        Precision("fp16", "float16", None, False),
        Precision("pure_bf16", "bfloat16", None, True),
        Precision("pure_fp16", "float16", None, True),
    )
}
FP32 = PRECISIONS["fp32"]
DEFAULTS = {"cpu": "fp32", "cuda": "amp"}  # by device type


def default_precision(device: torch.device | str) -> str:
    return DEFAULTS.get(str(device).split(":")[0], "fp32")


def resolve_precision(name: str | None, device: torch.device | str) -> Precision:
    """The precision `name` (None: the device's default), checked to run on `device`; one clear line if not."""
    name = default_precision(device) if name is None else name
    precision = PRECISIONS.get(name)
    if precision is None:
        raise CliprankError(f"unknown precision '{name}'; use one of {', '.join(PRECISIONS)}")
    problem = _unsupported(precision.name, str(device))
    if problem:
        raise CliprankError(
            f"precision {precision.name} cannot run on {device} here ({problem}); use {_fallback(device)}"
        )
    return precision


def _fallback(device: torch.device | str) -> str:
    return "fp32 or bf16" if str(device).startswith("cpu") else "amp or fp32"


@functools.cache
def _unsupported(name: str, device: str) -> str | None:
    """Why this torch cannot run the engine's operations in `name` on `device`, or None when it can.

    A GPU without native bfloat16 (before compute capability 8.0) emulates it slowly or not at all; on a
    CPU, float16 kernels exist only in recent torch builds. So the operations a reduced forward uses are
    tried once on a few numbers.
    """
    import torch  # torch loads on first use, not on import (see the module docstring)
    import torch.nn.functional as F

    precision = PRECISIONS[name]
    if precision.compute == "float32":
        return None
    if device.startswith("cuda") and precision.compute == "bfloat16" and not _native_cuda_bf16():
        return "this GPU has no native bfloat16"
    dtype = getattr(torch, precision.weights)
    try:
        with precision.autocast_context(device):
            x = torch.ones(1, 2, 3, 8, device=device, dtype=dtype)
            weight = torch.ones(8, 8, device=device, dtype=dtype)
            image = torch.ones(1, 3, 4, 4, device=device, dtype=dtype)
            F.conv2d(image, torch.ones(8, 3, 2, 2, device=device, dtype=dtype), stride=2)
            y = F.layer_norm(F.linear(x, weight), (8,))
            mask = torch.zeros(1, 1, 1, 3, device=device, dtype=y.dtype)
            F.scaled_dot_product_attention(y, y, y, attn_mask=mask).softmax(dim=-1)
    except (RuntimeError, NotImplementedError) as err:
        return f"torch {torch.__version__}: {str(err).splitlines()[0][:100]}"
    return None


def _native_cuda_bf16() -> bool:
    import torch  # torch loads on first use, not on import (see the module docstring)

    try:
        return torch.cuda.is_bf16_supported(including_emulation=False)
    except TypeError:  # torch < 2.4 counts no emulation
        return torch.cuda.is_bf16_supported()


def autocast_off(like: torch.Tensor) -> contextlib.AbstractContextManager:
    """Autocast off, on `like`'s device, for scores computed inside from operands upcast to float32.

    Under autocast a matmul of float32 operands would run in bf16/fp16 again; outside it this is nothing.
    """
    import torch  # torch loads on first use, not on import (see the module docstring)

    device = like.device.type
    if not _autocast_enabled(device):
        return contextlib.nullcontext()
    return torch.autocast(device_type=device, enabled=False)


def _autocast_enabled(device_type: str) -> bool:
    import torch  # torch loads on first use, not on import (see the module docstring)

    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: one switch per device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()
