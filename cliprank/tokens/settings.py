"""How learned visual tokens are trained: settings and token setups, judged without torch.

Torch-free, so `cliprank add-tokens` refuses `--lr 0` or `--placement wide` at once; what depends on
the tower (a block beyond its depth) is judged again once the model is loaded.
"""

from __future__ import annotations

from dataclasses import dataclass

from cliprank.errors import CliprankError

OBJECTIVES = ("distill", "fewshot")
PLACEMENTS = ("shallow", "deep")  # tokens added once at the block, or fresh ones at every later block


@dataclass(frozen=True)
class TokenTrainSettings:
    objective: str = "distill"
    shots: int = 16
    epochs: int = 8
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.0
    seed: int = 0

    def validate(self) -> None:
        checks = {
            "objective": (self.objective in OBJECTIVES, f"must be one of {', '.join(OBJECTIVES)}"),
            "shots": (self.shots >= 1, "must be >= 1"),
            "epochs": (self.epochs >= 1, "must be >= 1"),
            "batch_size": (self.batch_size >= 1, "must be >= 1"),
            "lr": (self.lr > 0, "must be > 0"),
        }
        for name, (ok, problem) in checks.items():
            if not ok:
                raise CliprankError(f"add-tokens: {name}={getattr(self, name)!r} {problem}")


def check_token_config(
    count: int, block: int | None, placement: str, text_context: int, depth: int | None, objective: str
) -> None:
    """One line for the first bad token setup; `depth` None (no tower yet): only what holds for every tower."""
    if count < 0:
        raise CliprankError(f"add-tokens: count={count} must be >= 0")
    if count == 0 and text_context == 0:
        raise CliprankError("add-tokens: count=0 and no text context leave nothing to train; give count >= 1")
    if block is not None and not 0 <= block < (depth if depth is not None else block + 1):
        raise CliprankError(f"add-tokens: block={block} must be " + (f"in 0..{depth - 1}" if depth else ">= 0"))
    if placement not in PLACEMENTS:
        raise CliprankError(f"add-tokens: placement={placement!r} must be one of {', '.join(PLACEMENTS)}")
    if text_context < 0:
        raise CliprankError(f"add-tokens: text-context={text_context} must be >= 0")
    if text_context and objective != "fewshot":
        raise CliprankError("add-tokens: text context only learns from labels; use --objective fewshot with it")
