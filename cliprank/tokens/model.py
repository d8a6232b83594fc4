"""Learnable visual tokens (and optional learnable text context) for a frozen CLIP.

Patch Ranking (Wu, Lin, Hu, Morgado, WACV 2025) recovers the accuracy lost to pruning with a few
learnable tokens trained while CLIP stays frozen. Their placement follows visual prompt tuning
(Jia et al., "Visual Prompt Tuning", ECCV 2022): `shallow` appends N tokens once, at a chosen block
(default: the pruning block, after the kept patches); `deep` gives every block from there on its own
fresh N tokens, replacing the previous block's. Optional text context follows CoOp (Zhou et al.,
"Learning to Prompt for Vision-Language Models", IJCV 2022): M learned vectors take the place of the
first M word embeddings of the prompt "X X … X {class}.".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from cliprank.engine.context import LayerContext
from cliprank.engine.plan import Plan
from cliprank.engine.state import TokenState
from cliprank.errors import CliprankError


@dataclass(frozen=True)
class TokenConfig:
    count: int = 4
    block: int = 3  # first block that sees the tokens (0 = at the input)
    placement: str = "shallow"
    text_context: int = 0  # CoOp context vectors (0 = none)
    width: int = 0
    text_width: int = 0
    depth: int = 0

    def to_dict(self) -> dict[str, int | str]:
        return asdict(self)


class LearnedTokens(nn.Module):
    def __init__(self, config: TokenConfig, init_std: float = 0.02, seed: int = 0):
        super().__init__()
        self.config = config
        generator = torch.Generator().manual_seed(seed)
        sets = config.depth - config.block if config.placement == "deep" else 1
        self.visual = nn.Parameter(torch.randn(sets, config.count, config.width, generator=generator) * init_std)
        self.context = (
            nn.Parameter(torch.randn(config.text_context, config.text_width, generator=generator) * init_std)
            if config.text_context
            else None
        )

    @torch.no_grad()
    def start_from(self, patch_tokens: torch.Tensor, spread: float = 0.02, seed: int = 0) -> None:
        """Start every visual token at the mean patch token entering its block, plus a little noise.

        Blocks normalise each token before attending, so a token's scale does not matter, only its
        direction: a small random token reads as an arbitrary patch and shifts the class token from the
        start. The mean patch is a neutral start; the noise (relative to the patches' spread) lets the
        tokens differ. `patch_tokens` is (N, C), sampled from the training images.
        """
        generator = torch.Generator().manual_seed(seed)
        mean, std = patch_tokens.float().mean(0), patch_tokens.float().std(0)
        noise = torch.randn(self.visual.shape, generator=generator) * std * spread
        self.visual.copy_((mean + noise).to(self.visual.dtype))

    def plan(self) -> Plan:
        """Operations that put the tokens into the forward (to run after a pruning plan)."""
        config = self.config

        def insert(tokens: torch.Tensor):
            def op(state: TokenState, context: LayerContext) -> TokenState:
                return state.drop_extras().append_extras(tokens)

            return op

        if config.count == 0:
            return Plan.identity(config.depth)
        if config.placement == "shallow":
            return Plan.build(config.depth, before={config.block: [insert(self.visual[0])]})
        return Plan.build(
            config.depth, before={config.block + i: [insert(self.visual[i])] for i in range(self.visual.shape[0])}
        )

    def text_classifier(self, model, classnames: list[str]) -> torch.Tensor:
        """(D, K) classifier from the prompts "X … X {class}." read through the learned context."""
        prompts = [" ".join(["X"] * self.config.text_context) + f" {name}." for name in classnames]
        with self.text_context(model.model), model.autocast():
            text = model.model.encode_text(model.tokenizer(prompts).to(model.device))
        return F.normalize(text.float(), dim=-1).t()

    @contextlib.contextmanager
    def text_context(self, model: nn.Module) -> Iterator[None]:
        """Within the block, the text tower reads learned vectors in place of the prompt's first words."""
        if self.context is None:
            yield
            return
        context = self.context

        def replace(module: nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            output = output.clone()
            output[:, 1 : 1 + context.shape[0]] = context.to(output.dtype)
            return output

        embedding = getattr(model, "token_embedding", None)
        if embedding is None:
            raise CliprankError(
                "learned text context (CoOp) is implemented for CLIP's own text tower only, not this model's "
                "separate one (SigLIP, EVA, PE); train visual tokens only (text context 0)"
            )
        handle = embedding.register_forward_hook(replace)
        try:
            yield
        finally:
            handle.remove()
