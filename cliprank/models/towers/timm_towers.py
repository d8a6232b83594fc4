"""timm towers inside open_clip's `TimmModel`: `VisionTransformer` (SigLIP, SigLIP2, ViT-gap, ...) and
`Eva` (EVA01, EVA02, PE-Core).

Reference code: timm 1.0 `models/vision_transformer.py` (`VisionTransformer.forward_features`,
`pool`, `forward_head`; `Block`), `models/eva.py` (`Eva`, `EvaBlock`, `EvaBlockPostNorm`,
`EvaAttention`), `layers/attention.py` (`Attention`, `AttentionRope`) and
`layers/attention_pool.py` (`AttentionPoolLatent`, the "MAP" head).

What differs from open_clip's ViT, and how the reduced forward keeps it faithful:
- No class token (SigLIP, PE-Core bigG): the state has no prefix; the MAP head pools over whatever
  tokens remain, each weighted by the patches it stands for (log-size logits bias, as proportional
  attention does in the blocks), padding masked out.
- Rotary position embeddings (EVA02, PE-Core): each surviving token is rotated by the position of the
  patch it came from, read from the state's tracked positions (`rotary_rows`).
- SwiGLU MLPs (EVA02), post-norm blocks (EVA02-E), attention-inner LayerNorm and layer scales run
  through the blocks' own modules.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from open_clip.timm_model import TimmModel
from timm.layers import Attention, AttentionPoolLatent, AttentionRope, Mlp, PatchEmbed, SwiGLU, apply_rot_embed_cat
from timm.layers.mlp import GluMlp
from timm.models.eva import Eva, EvaAttention, EvaBlock, EvaBlockPostNorm
from timm.models.vision_transformer import Block as VitBlock
from timm.models.vision_transformer import VisionTransformer

from cliprank.models.arch import VisionArch
from cliprank.models.towers.base import Block, PoolInput, Tower, rotary_rows

ATTENTIONS = {Attention: "timm.Attention", EvaAttention: "timm.EvaAttention", AttentionRope: "timm.AttentionRope"}
POST_NORM_BLOCKS = {VitBlock: False, EvaBlock: False, EvaBlockPostNorm: True}  # the blocks the adapters run
MLP_MATRICES = {Mlp: 2, SwiGLU: 3, GluMlp: 3}


def mlp_hidden(mlp: nn.Module) -> int:
    """Hidden width of one branch: a gated MLP computes two of them and multiplies."""
    if isinstance(mlp, SwiGLU):
        return mlp.fc1_g.out_features
    if isinstance(mlp, GluMlp):
        return mlp.fc1.out_features // 2
    return mlp.fc1.out_features


def _layer_scale(block: nn.Module, branch: int, out: torch.Tensor) -> torch.Tensor:
    """timm's `Block` scales a branch with an `ls1`/`ls2` module, `EvaBlock` with a `gamma_1`/`gamma_2` vector."""
    module = getattr(block, f"ls{branch}", None)
    if module is not None:
        return module(out)
    gamma = getattr(block, f"gamma_{branch}")
    return out if gamma is None else gamma * out


class TimmBlock(Block):
    """timm's `Block`, `EvaBlock` (pre-norm) and `EvaBlockPostNorm` (norm after each branch)."""

    def __init__(self, block: nn.Module, post_norm: bool):
        self.block = block
        self.attn = block.attn
        self.heads = block.attn.num_heads
        self.post_norm = post_norm

    def qkv(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        attn = self.attn
        x = x if self.post_norm else self.block.norm1(x)
        batch, tokens, _ = x.shape
        fused = getattr(attn, "qkv", None)
        if fused is not None:
            bias = fused.bias
            if bias is None and getattr(attn, "q_bias", None) is not None:  # EvaAttention: no key bias
                bias = torch.cat((attn.q_bias, attn.k_bias, attn.v_bias))
            qkv = F.linear(x, fused.weight, bias).reshape(batch, tokens, 3, self.heads, -1)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        else:
            q, k, v = (
                proj(x).reshape(batch, tokens, self.heads, -1).transpose(1, 2)
                for proj in (attn.q_proj, attn.k_proj, attn.v_proj)
            )
        return attn.q_norm(q), attn.k_norm(k), v

    def rotate(self, t: torch.Tensor, rotary: torch.Tensor) -> torch.Tensor:
        return apply_rot_embed_cat(t, rotary, half=getattr(self.attn, "rotate_half", False)).type_as(t)

    def attention_update(self, out: torch.Tensor) -> torch.Tensor:
        batch, heads, tokens, head_dim = out.shape
        out = self.attn.proj(self.attn.norm(out.transpose(1, 2).reshape(batch, tokens, heads * head_dim)))
        return self.block.norm1(out) if self.post_norm else _layer_scale(self.block, 1, out)

    def mlp_update(self, x: torch.Tensor) -> torch.Tensor:
        if self.post_norm:
            return self.block.norm2(self.block.mlp(x))
        return _layer_scale(self.block, 2, self.block.mlp(self.block.norm2(x)))


class TimmTower(Tower):
    """What timm's ViT and Eva share: patch embedding, blocks, and the head (norm, pool, fc_norm, head)."""

    head = ("trunk.norm", "trunk.attn_pool", "trunk.fc_norm", "trunk.head", "head")

    @property
    def trunk(self) -> nn.Module:
        return self.visual.trunk

    @abstractmethod
    def pool_includes_prefix(self) -> bool:
        """Whether the attention pool reads the prefix tokens."""

    def unsupported(self) -> str | None:
        trunk = self.trunk
        if type(trunk.patch_embed) is not PatchEmbed:
            return f"hybrid: convolutional stem ({type(trunk.patch_embed).__name__})"
        if getattr(trunk, "dynamic_img_size", False):
            return "position embeddings resized per input (dynamic_img_size)"
        first = trunk.blocks[0]
        if type(first) not in POST_NORM_BLOCKS:
            return f"timm {type(first).__name__} blocks (supported: Block, EvaBlock, EvaBlockPostNorm)"
        if type(first.attn) not in ATTENTIONS:
            return f"timm {type(first.attn).__name__} attention (not supported)"
        if getattr(first.attn, "gate", None) is not None or getattr(first.attn, "num_kv_groups", 1) != 1:
            return "gated or grouped-query attention (not supported)"
        if first.attn.num_heads * first.attn.head_dim != trunk.embed_dim:
            return "attention width differs from token width (not in the cost formula)"
        if type(first.mlp) not in MLP_MATRICES:
            return f"timm {type(first.mlp).__name__} MLP (not in the cost formula)"
        if trunk.attn_pool is None and trunk.global_pool not in ("token", "avg"):
            return f"pooling '{trunk.global_pool}' (supported: token, avg, map)"
        if trunk.attn_pool is not None and not self._plain_attention_pool(trunk.attn_pool):
            return "attention-pool head with several latents or a position embedding (not supported)"
        if any(not isinstance(layer, (nn.Linear, nn.Dropout, nn.Identity)) for layer in self.visual.head):
            return "non-linear projection head (not in the cost formula)"
        return None

    @staticmethod
    def _plain_attention_pool(pool: nn.Module) -> bool:
        return (
            isinstance(pool, AttentionPoolLatent)
            and pool.latent_len == 1
            and pool.pos_embed is None
            and pool.pool == "token"
            and pool.mlp is not None
        )

    def _projection(self) -> nn.Linear | None:
        for layer in (self.trunk.head, *self.visual.head):
            if isinstance(layer, nn.Linear):
                return layer
        return None

    def read_arch(self) -> VisionArch:
        trunk = self.trunk
        first = trunk.blocks[0]
        projection = self._projection()
        pool = trunk.attn_pool
        return VisionArch(
            width=trunk.embed_dim,
            depth=len(trunk.blocks),
            heads=first.attn.num_heads,
            mlp_width=mlp_hidden(first.mlp),
            grid=tuple(trunk.patch_embed.grid_size),
            patch_size=tuple(trunk.patch_embed.patch_size),
            output_dim=projection.out_features if projection is not None else trunk.embed_dim,
            pool="map" if pool is not None else ("tok" if trunk.global_pool == "token" else "avg"),
            attention=ATTENTIONS[type(first.attn)],
            layout="batch-first",
            kind=self.kind,
            prefix_tokens=trunk.num_prefix_tokens,
            class_token=trunk.cls_token is not None,
            mlp_matrices=MLP_MATRICES[type(first.mlp)],
            rotary=getattr(trunk, "rope", None) is not None,
            projection=projection is not None,
            pool_heads=pool.num_heads if pool is not None else 0,
            pool_mlp_width=pool.mlp.fc1.out_features if pool is not None else 0,
            pool_prefix=self.pool_includes_prefix(),
            input_size=tuple(trunk.patch_embed.img_size),
            activation=type(first.mlp.act).__name__,
        )

    def blocks(self) -> Sequence[Block]:
        return [TimmBlock(block, POST_NORM_BLOCKS[type(block)]) for block in self.trunk.blocks]

    def embed(self, images: torch.Tensor) -> torch.Tensor:
        trunk = self.trunk
        x = trunk.patch_embed(images.to(trunk.patch_embed.proj.weight.dtype))
        x = trunk._pos_embed(x)
        if isinstance(x, tuple):  # Eva returns the rotary table beside the tokens; the engine builds its own
            x = x[0]
        return trunk.norm_pre(x)

    def pool(self, tokens: PoolInput) -> torch.Tensor:
        """timm's forward_head on the surviving tokens, then open_clip's projection head."""
        trunk = self.trunk
        x = trunk.norm(tokens.x)
        if trunk.attn_pool is not None:
            start = 0 if self.pool_includes_prefix() else tokens.n_prefix
            pooled = trunk.attn_pool(x[:, start:], attn_mask=tokens.bias[..., start:])
        elif trunk.global_pool == "token":
            pooled = x[:, 0]
        else:
            pooled = tokens.patch_mean(x, include_prefix=getattr(trunk, "pool_include_prefix", False))
        pooled = trunk.head(trunk.head_drop(trunk.fc_norm(pooled)))
        return self.visual.head(pooled)


class TimmViT(TimmTower):
    """timm `VisionTransformer`: SigLIP / SigLIP2 (no class token, MAP head), ViT-gap, CLIP-style ViTs."""

    kind = "timm-vit"

    @classmethod
    def claims(cls, visual: nn.Module) -> bool:
        return isinstance(visual, TimmModel) and type(visual.trunk) is VisionTransformer

    def pool_includes_prefix(self) -> bool:
        return bool(self.trunk.pool_include_prefix)


class TimmEva(TimmTower):
    """timm `Eva`: EVA01/EVA02-CLIP (class token; RoPE and SwiGLU in EVA02) and PE-Core (RoPE, MAP head).

    Eva's attention pool reads every token, prefix included.
    """

    kind = "timm-eva"

    @classmethod
    def claims(cls, visual: nn.Module) -> bool:
        return isinstance(visual, TimmModel) and type(visual.trunk) is Eva

    def pool_includes_prefix(self) -> bool:
        return True

    def unsupported(self) -> str | None:
        trunk = self.trunk
        if getattr(trunk, "rope_mixed", False):
            return "per-block rotary embeddings (mixed RoPE, not supported)"
        rope = getattr(trunk, "rope", None)
        if rope is not None and getattr(rope, "pos_embed", None) is None:
            return "rotary embeddings without a fixed per-patch table (not supported)"
        return super().unsupported()

    def rotary(self, pos: torch.Tensor) -> torch.Tensor | None:
        rope = self.trunk.rope
        if rope is None:
            return None
        return rotary_rows(rope.get_embed(), pos)
