"""The reduced vision forward: a plan of per-block operations applied to a token state."""

from cliprank.engine.context import LayerContext, Stage, Trace
from cliprank.engine.forward import ReducedVisual, embed, encode, pool, resume, run_blocks
from cliprank.engine.plan import CLS_ATTENTION, KEYS, RECEIVED_ATTENTION, VALUE_NORMS, LayerPlan, Op, Plan
from cliprank.engine.state import FUSED, LEARNABLE, TokenState

__all__ = [
    "CLS_ATTENTION",
    "FUSED",
    "KEYS",
    "LEARNABLE",
    "RECEIVED_ATTENTION",
    "VALUE_NORMS",
    "LayerContext",
    "LayerPlan",
    "Op",
    "Plan",
    "ReducedVisual",
    "Stage",
    "TokenState",
    "Trace",
    "embed",
    "encode",
    "pool",
    "resume",
    "run_blocks",
]
