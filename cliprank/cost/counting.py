"""MACs of the executed reduced tower, counted by tracing it — the check on every analytic number.

The analytic cost (`cliprank.cost.analytic`) is what a method declares; this module counts what the
code actually runs, two independent ways:

- fvcore's `FlopCountAnalysis` (the reported number; fvcore counts one multiply-add as one "flop",
  so its totals are MACs, the convention of ViT papers). fvcore has no handle for attention:
  `scaled_dot_product_attention` — and, on open_clip's own forward, nn.MultiheadAttention's fused
  fast path `_native_multi_head_attention` — would silently count zero (≈0.7 of ViT-B/16's 17.6
  GMACs, or all of its projections too). Handles for them are registered here, and an unhandled op
  that looks like a matmul or attention raises instead of vanishing.
- `torch.utils.flop_counter.FlopCounterMode` (2 flops per MAC, dispatcher level), halved to MACs,
  as a cross-check that shares no code with fvcore. It too lacks the CPU SDPA kernel and the MHA
  fast path, which get the same formulas here.

Tracing records one input's shapes. Fixed-schedule methods cost the same on every image, so one
image at batch 1 suffices; input-adaptive methods (ATS) are counted per image and averaged
(`mean_counted_macs`). Counting at batch 1 also keeps padding (used to batch images that keep
different numbers of tokens) out of the count.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import torch
import torch.nn as nn
from fvcore.nn import FlopCountAnalysis
from fvcore.nn.jit_handles import get_shape

from cliprank.cost.analytic import Schedule, per_image_macs, schedule_macs
from cliprank.data.meta import slice_meta
from cliprank.engine.context import Trace
from cliprank.engine.forward import ReducedVisual, encode
from cliprank.engine.plan import Plan
from cliprank.models.arch import VisionArch

TOLERANCE = 0.01  # analytic and counted MACs further apart than this are flagged

# Traced names of scaled-dot-product attention: the public op and the kernels it may dispatch to.
# All take (query, key, value, ...) laid out (batch..., heads, length, head_dim).
SDPA_OPS = (
    "aten::scaled_dot_product_attention",
    "aten::_scaled_dot_product_attention_math",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention",
    "aten::_scaled_dot_product_efficient_attention",
    "aten::_scaled_dot_product_cudnn_attention",
)
NATIVE_MHA_OP = "aten::_native_multi_head_attention"

# An unhandled op whose name matches this may hide real arithmetic: refuse to report a number.
_ARITHMETIC = re.compile(r"mm|matmul|attention|attn|linear|conv|einsum|dot|multi_head|bilinear|lstm|gru|rnn")


class UncountedOpsError(RuntimeError):
    """The traced graph holds matmul-like ops no handle counts; a total would silently be too low."""


class UntraceableError(RuntimeError):
    """torch.jit.trace, which fvcore relies on, could not trace the forward."""


# ----- the attention formulas, shared by both counters ----------------------------------------------


def sdpa_macs(query: Sequence[int], key: Sequence[int], value: Sequence[int]) -> int:
    """batch·heads·Lq·Lk·(d_qk + d_v): QKᵀ plus the attention-weighted sum of values.

    Batch and head dimensions are read from the query, so grouped-query attention (fewer key/value
    heads) is still counted per query head, as it is computed.
    """
    *batch_heads, length_q, dim_qk = query
    length_k, dim_v = key[-2], value[-1]
    return math.prod(batch_heads) * length_q * length_k * (dim_qk + dim_v)


def native_mha_macs(query: Sequence[int], key: Sequence[int], width: int) -> int:
    """nn.MultiheadAttention's fused fast path: in-projections, attention, out-projection.

    The fast path runs only for batch-first input (B, L, C): q from the queries, k and v from the
    keys (C² MACs per token each), QKᵀ and AV (Lq·Lk·C each), the out-projection (C² per query).
    """
    batch, length_q = query[0], query[1]
    length_k = key[1]
    projections = batch * (2 * length_q + 2 * length_k) * width * width
    return projections + 2 * batch * length_q * length_k * width


# ----- fvcore ----------------------------------------------------------------------------------------


def _sdpa_handle(inputs: list[Any], outputs: list[Any]) -> int:
    return sdpa_macs(get_shape(inputs[0]), get_shape(inputs[1]), get_shape(inputs[2]))


def _native_mha_handle(inputs: list[Any], outputs: list[Any]) -> int:
    width = get_shape(inputs[5])[1]  # qkv_weight: (3C, C)
    return native_mha_macs(get_shape(inputs[0]), get_shape(inputs[1]), width)


@dataclass(frozen=True)
class Count:
    """One fvcore count: the total MACs, per operator, and the ops it skipped as arithmetic-free."""

    macs: float
    by_operator: dict[str, float]
    skipped: dict[str, int]


@contextlib.contextmanager
def _quiet_tracing() -> Iterator[None]:
    """Tracing warns about constants and deprecated APIs; none of it changes the count."""
    logger = logging.getLogger("fvcore")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def fvcore_count(module: nn.Module, inputs: torch.Tensor) -> Count:
    """Count `module(inputs)` with fvcore plus cliprank's attention handles; raise on hidden arithmetic."""
    analysis = FlopCountAnalysis(module, (inputs,))
    for name in SDPA_OPS:
        analysis.set_op_handle(name, _sdpa_handle)
    analysis.set_op_handle(NATIVE_MHA_OP, _native_mha_handle)
    analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False).tracer_warnings("none")
    try:
        with _quiet_tracing(), torch.no_grad():
            total = float(analysis.total())
            skipped = dict(analysis.unsupported_ops())
    except RuntimeError as err:
        first_line = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise UntraceableError(f"fvcore could not trace the forward with torch.jit.trace: {first_line[:300]}") from err
    suspicious = sorted(name for name in skipped if _ARITHMETIC.search(name.split("::")[-1]))
    if suspicious:
        raise UncountedOpsError(
            f"fvcore has no handle for {', '.join(suspicious)}; the count would miss their MACs — "
            "register a handle in cliprank.cost.counting"
        )
    return Count(total, {k: float(v) for k, v in analysis.by_operator().items()}, skipped)


def _probe_images(visual: nn.Module, image_size: int | Sequence[int]) -> torch.Tensor:
    """One seeded random image on the tower's device: shapes are all a fixed-schedule count needs."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    parameter = next(visual.parameters())
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(1, 3, height, width, generator=generator)
    return images.to(device=parameter.device, dtype=parameter.dtype)


def count_macs(
    visual: nn.Module, plan: Plan | None, image_size: int | Sequence[int], meta: dict[str, Any] | None = None
) -> float:
    """fvcore MACs per image of the tower reduced by `plan` (None: open_clip's own, unreduced forward)."""
    module = visual if plan is None else ReducedVisual(visual, plan, meta)
    return fvcore_count(module, _probe_images(visual, image_size)).macs


def mean_counted_macs(visual: nn.Module, plan: Plan, images: torch.Tensor, meta: dict[str, Any] | None = None) -> float:
    """fvcore MACs averaged over `images`, each traced alone (for input-adaptive methods).

    `meta` values that are per-image sequences (e.g. dataset indices) are sliced along with the image.
    """
    totals = []
    for index in range(images.shape[0]):
        module = ReducedVisual(visual, plan, slice_meta(meta, slice(index, index + 1)))
        totals.append(fvcore_count(module, images[index : index + 1]).macs)
    return sum(totals) / len(totals)


# ----- torch.utils.flop_counter (cross-check) ------------------------------------------------------------


def _torch_sdpa(query, key, value, *args, out_shape=None, **kwargs) -> int:
    return 2 * sdpa_macs(query, key, value)


def _torch_native_mha(query, key, value, embed_dim, *args, out_shape=None, **kwargs) -> int:
    return 2 * native_mha_macs(query, key, int(embed_dim))


def _torch_custom_mapping() -> dict[Any, Any]:
    """Kernels torch's counter lacks (CPU flash SDPA, the MHA fast path), with the formulas above."""
    aten = torch.ops.aten
    mapping: dict[Any, Any] = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu",):
        if hasattr(aten, name):
            mapping[getattr(aten, name)] = _torch_sdpa
    if hasattr(aten, "_native_multi_head_attention"):
        mapping[aten._native_multi_head_attention] = _torch_native_mha
    return mapping


def count_macs_torch(
    visual: nn.Module, plan: Plan | None, images: torch.Tensor, meta: dict[str, Any] | None = None
) -> float:
    """MACs per image by `torch.utils.flop_counter` (which counts 2 flops per MAC) on a real forward."""
    from torch.utils.flop_counter import FlopCounterMode  # 0.2 s to import; only the cross-check needs it

    module = visual if plan is None else ReducedVisual(visual, plan, meta)
    counter = FlopCounterMode(display=False, custom_mapping=_torch_custom_mapping())
    with counter, torch.inference_mode():
        module(images)
    return counter.get_total_flops() / 2 / images.shape[0]


# ----- the report ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CostReport:
    """The MACs per image of one reduced tower, by every route cliprank has to them.

    `analytic`: from the token schedule (the declared one; for input-adaptive methods the mean of
    per-image executed schedules). `declared`: the declared schedule's MACs (an upper bound for
    input-adaptive methods). `counted`: fvcore, None when it could not count (`problem` says why).
    `torch`: the FlopCounterMode cross-check. A report is `flagged` when the analytic number is not
    confirmed by the count: it differs by more than the tolerance, or there is no count.
    """

    analytic: float
    counted: float | None
    declared: float
    torch: float | None = None
    images: int = 1
    problem: str | None = None
    tolerance: float = TOLERANCE

    @property
    def macs(self) -> float:
        """The number to report: the count, or the analytic value when there is none (then flagged)."""
        return self.analytic if self.counted is None else self.counted

    @property
    def disagreement(self) -> float | None:
        """Relative gap between counted and analytic MACs."""
        return None if self.counted is None else abs(self.counted - self.analytic) / self.analytic

    @property
    def flagged(self) -> bool:
        return self.disagreement is None or self.disagreement > self.tolerance

    @property
    def cross_check_disagreement(self) -> float | None:
        """Relative gap between the two counters (None when either is missing)."""
        if self.torch is None or self.counted is None:
            return None
        return abs(self.torch - self.counted) / self.counted

    def as_dict(self) -> dict[str, Any]:
        """GMACs (10⁹ MACs) for reports."""

        def giga(value: float | None) -> float | None:
            return None if value is None else value / 1e9

        return {
            "counted": giga(self.counted),
            "analytic": giga(self.analytic),
            "declared": giga(self.declared),
            "torch_cross_check": giga(self.torch),
            "disagreement": self.disagreement,
            "cross_check_disagreement": self.cross_check_disagreement,
            "flagged": self.flagged,
            "images_averaged": self.images,
            "problem": self.problem,
        }


class Configured(Protocol):
    """What a cost is measured for: a configured method (`cliprank.methods`), seen from below."""

    arch: VisionArch
    adaptive: bool

    def schedule(self) -> Schedule: ...

    def plan(self) -> Plan: ...


def measure_cost(
    method: Configured,
    visual: nn.Module,
    images: torch.Tensor,
    cross_check: bool = True,
    meta: dict[str, Any] | None = None,
) -> CostReport:
    """A method's CostReport on `images`: one traced image for fixed schedules, all of them if adaptive.

    For an input-adaptive method the analytic side is the mean of per-image MACs from the executed
    token counts (`per_image_macs`), so it is compared like for like with the per-image counts.
    A forward fvcore cannot count is recorded in the report (`problem`), not raised, so one
    untraceable method does not sink a whole profile.
    """
    schedule, plan, arch = method.schedule(), method.plan(), method.arch
    declared = schedule_macs(arch, schedule)
    count = images.shape[0] if method.adaptive else 1
    sample = images[:count]
    meta = slice_meta(meta, slice(0, count))
    analytic = declared
    if method.adaptive:
        trace = Trace()
        with torch.inference_mode():
            encode(visual, sample, plan, meta, trace=trace)
        analytic = float(per_image_macs(arch, trace.attention_tokens, trace.mlp_tokens, schedule.overhead).mean())
    counted, problem = None, None
    try:
        counted = mean_counted_macs(visual, plan, sample, meta)
    except (UncountedOpsError, UntraceableError) as err:
        problem = str(err)
    torch_macs = None
    if cross_check:
        torch_macs = sum(
            count_macs_torch(visual, plan, sample[i : i + 1], slice_meta(meta, slice(i, i + 1)))
            for i in range(len(sample))
        ) / len(sample)
    return CostReport(analytic, counted, declared, torch_macs, images=len(sample), problem=problem)
