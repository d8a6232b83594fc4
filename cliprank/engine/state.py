"""The token state a reduced forward carries from block to block.

Layout of `x` along the token axis: ``[prefix..., body..., extras]``.
- The prefix holds the tower's own protected tokens: the class token, and register tokens where a
  tower has them — `n_prefix` of them, 0 for towers without a class token (SigLIP). They are never
  removed.
- The body holds patch tokens, and tokens standing for several patches (merged by ToMe, fused by
  EViT). Reduction methods act on the body only.
- Extras are learnable tokens appended by `add-tokens`; they are protected like the prefix.

`size` counts how many original patches a token stands for (ToMe's weighted merges and proportional
attention use it); `pos` records where a token came from (0 = a prefix token, 1..P = patch index + 1,
FUSED or LEARNABLE otherwise) so rankings can be read back in original patch order and rotary
position embeddings follow the tokens that survive. `valid` marks real tokens when images in one
batch keep different numbers of tokens (input-adaptive methods); it is None for rectangular batches,
which is the fast path.

`sources` (B, N, P), tracked only when a forward is recorded for display (`track_sources`), says which
original patches each token stands for: row n of a patch token is one-hot, a merged or fused token's row
covers all its patches, prefix and learnable rows are empty. Selections carry it along by themselves; an
operation that combines tokens passes the combined rows to `rebuild_body`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import torch

FUSED = -1
LEARNABLE = -2


@dataclass
class TokenState:
    x: torch.Tensor  # (B, N, C)
    size: torch.Tensor  # (B, N) float
    pos: torch.Tensor  # (B, N) long
    valid: torch.Tensor | None = None  # (B, N) bool, or None when every token is real
    n_extra: int = 0
    n_prefix: int = 1
    meta: dict[str, Any] = field(default_factory=dict)  # batch facts ops may need (e.g. dataset indices)
    sources: torch.Tensor | None = None  # (B, N, P) patch membership, only while recording

    @classmethod
    def initial(
        cls,
        x: torch.Tensor,
        meta: dict[str, Any] | None = None,
        n_prefix: int = 1,
        patches: torch.Tensor | None = None,
    ) -> TokenState:
        """The state of `n_prefix` prefix tokens followed by patch tokens.

        `patches` (B, K) gives the patch index of each body token when they are a subset of the grid
        (e.g. the candidates of a search); by default the body is every patch in grid order.
        """
        batch, tokens, _ = x.shape
        if patches is None:
            patches = torch.arange(tokens - n_prefix, device=x.device).expand(batch, -1)
        head = torch.zeros(batch, n_prefix, dtype=torch.long, device=x.device)
        pos = torch.cat([head, patches.to(x.device).long() + 1], dim=1)
        size = torch.ones(batch, tokens, device=x.device, dtype=x.dtype)
        return cls(x=x, size=size, pos=pos, n_prefix=n_prefix, meta=dict(meta or {}))

    @property
    def batch(self) -> int:
        return self.x.shape[0]

    @property
    def tokens(self) -> int:
        return self.x.shape[1]

    @property
    def body_end(self) -> int:
        return self.tokens - self.n_extra

    @property
    def body_count(self) -> int:
        return self.body_end - self.n_prefix

    def counts(self) -> torch.Tensor:
        """Real tokens per image (B,), prefix and extras included."""
        if self.valid is None:
            return torch.full((self.batch,), self.tokens, device=self.x.device)
        return self.valid.sum(1)

    def body(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor[:, self.n_prefix : self.body_end]

    def with_x(self, x: torch.Tensor) -> TokenState:
        return replace(self, x=x)

    def track_sources(self, patches: int) -> TokenState:
        """This state with `sources` read from `pos`: each patch token stands for its own patch.

        Exact only while no token stands for several patches, i.e. before any merge or fusion.
        """
        pos = self.pos
        is_patch = (pos > 0).unsqueeze(-1)
        one_hot = torch.nn.functional.one_hot((pos - 1).clamp(min=0), patches).to(torch.float32)
        return replace(self, sources=one_hot * is_patch)

    def map_sources(self, combine: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor | None:
        """`combine` applied to the body's sources, or None when they are not tracked (the usual case)."""
        return None if self.sources is None else combine(self.body(self.sources))

    def rebuild_body(
        self,
        x: torch.Tensor,
        size: torch.Tensor,
        pos: torch.Tensor,
        valid: torch.Tensor | None = None,
        sources: torch.Tensor | None = None,
    ) -> TokenState:
        """A state whose body is replaced by the given tokens; prefix and extras are carried over.

        When sources are tracked, an operation that combines tokens must pass the new body's `sources`;
        without them they are read from `pos`, which only a selection of single patches allows.
        """
        prefix = slice(0, self.n_prefix)
        tail = slice(self.body_end, self.tokens)

        def join(head: torch.Tensor, middle: torch.Tensor, end: torch.Tensor) -> torch.Tensor:
            return torch.cat([head, middle, end], dim=1)

        new_valid = None
        if valid is not None or self.valid is not None:
            body_valid = valid if valid is not None else torch.ones_like(pos, dtype=torch.bool)
            head_valid = torch.ones(self.batch, self.n_prefix, dtype=torch.bool, device=pos.device)
            tail_valid = torch.ones(self.batch, self.n_extra, dtype=torch.bool, device=pos.device)
            new_valid = join(head_valid, body_valid, tail_valid)
        new_sources = None
        if self.sources is not None:
            if sources is None:
                sources = self._single_patch_sources(size, pos)
            new_sources = join(self.sources[:, prefix], sources, self.sources[:, tail])
        return replace(
            self,
            x=join(self.x[:, prefix], x, self.x[:, tail]),
            size=join(self.size[:, prefix], size, self.size[:, tail]),
            pos=join(self.pos[:, prefix], pos, self.pos[:, tail]),
            valid=new_valid,
            sources=new_sources,
        )

    def _single_patch_sources(self, size: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
        if bool(((pos <= 0) | (size != 1)).any()):
            raise ValueError("a body of merged or fused tokens was rebuilt without its sources; pass sources=")
        patches = self.sources.shape[-1]
        return torch.nn.functional.one_hot(pos - 1, patches).to(self.sources.dtype)

    def keep_body(self, index: torch.Tensor, valid: torch.Tensor | None = None) -> TokenState:
        """Keep the body tokens at `index` (B, K) — positions within the body — in that order."""
        body_x = self.body(self.x)
        gathered_x = body_x.gather(1, index.unsqueeze(-1).expand(-1, -1, body_x.shape[-1]))
        return self.rebuild_body(
            gathered_x,
            self.body(self.size).gather(1, index),
            self.body(self.pos).gather(1, index),
            valid,
            self.map_sources(lambda sources: sources.gather(1, index.unsqueeze(-1).expand(-1, -1, sources.shape[-1]))),
        )

    def append_extras(self, tokens: torch.Tensor) -> TokenState:
        """Append learnable tokens (n, C) to every image, after the existing extras."""
        n = tokens.shape[0]
        extra = tokens.to(self.x.dtype).unsqueeze(0).expand(self.batch, -1, -1)
        pos = torch.full((self.batch, n), LEARNABLE, dtype=self.pos.dtype, device=self.pos.device)
        valid = None
        if self.valid is not None:
            valid = torch.cat([self.valid, torch.ones_like(pos, dtype=torch.bool)], dim=1)
        sources = None
        if self.sources is not None:  # learnable tokens stand for no patch
            sources = torch.cat([self.sources, self.sources.new_zeros(self.batch, n, self.sources.shape[-1])], dim=1)
        return replace(
            self,
            x=torch.cat([self.x, extra], dim=1),
            size=torch.cat([self.size, torch.ones_like(pos, dtype=self.size.dtype)], dim=1),
            pos=torch.cat([self.pos, pos], dim=1),
            valid=valid,
            n_extra=self.n_extra + n,
            sources=sources,
        )

    def drop_extras(self) -> TokenState:
        if self.n_extra == 0:
            return self
        end = self.body_end
        return replace(
            self,
            x=self.x[:, :end],
            size=self.size[:, :end],
            pos=self.pos[:, :end],
            valid=None if self.valid is None else self.valid[:, :end],
            n_extra=0,
            sources=None if self.sources is None else self.sources[:, :end],
        )
