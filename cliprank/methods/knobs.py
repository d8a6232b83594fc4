"""Method parameters: how each is declared, coerced and checked — without torch.

A method declares its parameters as `Param`s whose coercion and check are functions of this module,
so the same code judges a value twice: before torch loads, when the command line checks what was
typed (the tower is not known yet: `arch` is None and only tower-free rules apply), and when the
method is configured for a tower (every rule). `catalog.json` records each parameter's functions by
name (`NAMED`), which is how the command line finds them without importing the method classes.

A check returns an error text or None; it is not called for an unset value (None), which the budget
solver or the method's own default fills later.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cliprank.errors import CliprankError
from cliprank.io import reason

if TYPE_CHECKING:
    from cliprank.models.arch import VisionArch

Coerce = Callable[[Any], Any]
Check = Callable[[Any, "VisionArch | None"], "str | None"]
RValue = int | tuple[int, ...]

AUTO, CLS, RECEIVED = "auto", "cls", "received"  # token-importance scores of Top-K, EViT and ATS


# ----- coercions -----


def as_given(value: Any) -> Any:
    return value


def as_text(value: Any) -> str:
    return str(value)


def as_float(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("expected a number")
    return float(value)


def as_int(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError("expected an integer")
    return int(value)


def as_bool(value: Any) -> bool:
    """A switch given as a bool, 0/1, or text (true/false, yes/no, on/off) from the CLI or a recipe."""
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off"):
            return False
        raise ValueError("expected true or false")
    if isinstance(value, (bool, int)) and value in (0, 1):
        return bool(value)
    raise ValueError("expected true or false")


def int_tuple(value: Any) -> tuple[int, ...]:
    """Block indices: one integer, a list, or text such as "3,6,9" or "3/6/9"."""
    if isinstance(value, (int, float)):
        return (as_int(value),)
    if isinstance(value, str):
        value = [v for v in value.replace("/", " ").replace(",", " ").split() if v]
    return tuple(as_int(int(v) if isinstance(v, str) else v) for v in value)


def r_setting(value: Any) -> RValue:
    """ToMe's r: one integer for every block, or a per-block tuple (a list, or text such as "8,8,4" or "[8]")."""
    if isinstance(value, str):
        text = value.strip()
        listed = text.startswith("[") or any(sep in text for sep in ", /")
        return int_tuple(text.strip("[]")) if listed else as_int(int(text))
    if isinstance(value, (list, tuple)):
        return int_tuple(value)
    return as_int(value)


# ----- checks (arch None: before the tower is known, only its tower-free rules) -----


def no_check(value: Any, arch: VisionArch | None) -> str | None:
    return None


def fraction(value: Any, arch: VisionArch | None) -> str | None:
    return None if 0 < value <= 1 else "must be in (0, 1]"


def non_negative_int(value: Any, arch: VisionArch | None) -> str | None:
    return None if value >= 0 else "must be >= 0"


def block_index(value: Any, arch: VisionArch | None) -> str | None:
    if arch is None:
        return None if value >= 0 else "must be a block index (>= 0)"
    return None if 0 <= value < arch.depth else f"must be a block index in 0..{arch.depth - 1}"


def block_list(value: Any, arch: VisionArch | None) -> str | None:
    if not value:
        return "must list at least one block"
    bad = [b for b in value if b < 0 or (arch is not None and b >= arch.depth)]
    if bad:
        return f"has blocks outside 0..{arch.depth - 1}: {bad}" if arch else f"has negative blocks: {bad}"
    if list(value) != sorted(set(value)):
        return "must list distinct blocks in increasing order"
    return None


def tokens_per_stage(value: int, arch: VisionArch | None) -> str | None:
    """ATS's K: at least the class token and one sample."""
    return None if value >= 2 else "must be >= 2 (tokens kept per stage, class token included)"


def merges_per_block(value: RValue, arch: VisionArch | None) -> str | None:
    """ToMe's r: non-negative, and a per-block list no longer than the tower."""
    per_block = value if isinstance(value, tuple) else (value,)
    if any(v < 0 for v in per_block):
        return "must be >= 0 (tokens merged per block)"
    if arch is not None and isinstance(value, tuple) and len(value) > arch.depth:
        return f"lists {len(value)} blocks but the tower has {arch.depth}; give at most {arch.depth} values"
    return None


def inflection(value: float, arch: VisionArch | None) -> str | None:
    return None if -1 <= value <= 1 else "must be in [-1, 1] (0: constant r; 1: from 0 up to 2r; -1: from 2r down to 0)"


def importance_score(value: str, arch: VisionArch | None) -> str | None:
    if value not in (AUTO, CLS, RECEIVED):
        return f"must be one of {AUTO}, {CLS}, {RECEIVED}"
    if value == CLS and arch is not None and not arch.class_token:
        return "needs a class token, which this tower has none of; use score=received (the CLS-free score)"
    return None


NAMED: dict[str, Coerce | Check] = {
    function.__name__: function
    for function in (
        as_given, as_text, as_float, as_int, as_bool, int_tuple, r_setting,
        no_check, fraction, non_negative_int, block_index, block_list, tokens_per_stage, merges_per_block,
        inflection, importance_score,
    )
}  # fmt: skip


def name_of(function: Callable[..., Any]) -> str | None:
    """The name `catalog.json` records for a coercion or check (None: not one of this module's)."""
    name = getattr(function, "__name__", "")
    return name if NAMED.get(name) is function else None


@dataclass(frozen=True)
class Param:
    """A declared method parameter: how to coerce it, how to check it, what it means."""

    name: str
    default: Any
    help: str
    coerce: Coerce = as_given
    check: Check = no_check


def check_known(method: str, declared: list[str], given: dict[str, Any]) -> None:
    """One line naming the parameters `method` does not take, and those it does."""
    unknown = sorted(set(given) - set(declared))
    if unknown:
        valid = ", ".join(declared) or "none"
        raise CliprankError(f"{method}: unknown parameter(s) {', '.join(unknown)}; valid: {valid}")


def judge(method: str, param: Param, raw: Any, arch: VisionArch | None) -> Any:
    """`raw` coerced and checked, or one line naming the method, the parameter and what it must be."""
    try:
        value = param.coerce(raw) if raw is not None else None
    except (TypeError, ValueError) as err:
        raise CliprankError(f"{method}: {param.name}={raw!r} is invalid ({reason(err)}); {param.help}") from err
    problem = param.check(value, arch) if value is not None else None
    if problem:
        raise CliprankError(f"{method}: {param.name}={raw!r} {problem}")
    return value
