"""A loaded model's weights in a precision, cast exactly as open_clip casts them for the same name.

open_clip builds a `bf16`/`fp16` model with `LayerNormFp32` (normalise in float32, return the input's
dtype) and then casts the weights of its linear, convolution and attention layers and the projections
(`convert_weights_to_lp`); a model with a timm tower is cast whole, its `LayerNormFp32`s then restored to
float32. `pure_*` casts everything. cliprank loads every model in float32 first — so its fingerprint, which
ties rankings, predictors and tokens to the weights, is the same in every precision — then casts here:
its open_clip `LayerNorm`s become `LayerNormFp32` (the same parameters; the class only changes where the
arithmetic happens) and the rest follows open_clip.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from open_clip.model import convert_weights_to_lp
from open_clip.timm_model import TimmModel
from open_clip.transformer import LayerNorm, LayerNormFp32

from cliprank.precision import Precision


def cast_weights(model: nn.Module, precision: Precision) -> nn.Module:
    """`model` (float32) with its weights in `precision`, in place; fp32 and autocast precisions change nothing."""
    dtype = precision.weights_dtype
    if dtype == torch.float32:
        return model
    if precision.cast_norms:
        return model.to(dtype)
    for module in model.modules():
        if type(module) is LayerNorm:
            module.__class__ = LayerNormFp32  # what open_clip builds for a low-precision model
    if isinstance(getattr(model, "visual", None), TimmModel):
        model.to(dtype)
        for module in model.modules():
            if isinstance(module, LayerNormFp32):
                module.float()
    else:
        convert_weights_to_lp(model, dtype=dtype)
    return model
