"""Transformer building blocks shared by the towers (pre-LayerNorm, as in CLIP and ViT)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array


def _attention(num_heads: int, width: int, dtype, rngs: nnx.Rngs, kv_width: int | None = None):
    return nnx.MultiHeadAttention(
        num_heads=num_heads,
        in_features=width,
        in_kv_features=kv_width,
        qkv_features=width,
        out_features=width,
        dtype=dtype,
        deterministic=True,
        decode=False,
        keep_rngs=False,
        rngs=rngs,
    )


class MLP(nnx.Module):
    """`Linear → GELU → Linear`, hidden width `mlp_ratio · width`."""

    def __init__(self, width: int, mlp_ratio: float, *, dtype, rngs: nnx.Rngs):
        hidden = int(width * mlp_ratio)
        self.fc1 = nnx.Linear(width, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


class Block(nnx.Module):
    """Pre-LN transformer block: `x + Attn(LN(x))`, then `x + MLP(LN(x))`.

    With `cross_width`, a cross-attention sub-layer to a second sequence sits between the two
    (the multimodal decoder of CoCa).
    """

    def __init__(
        self,
        width: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        dtype,
        rngs: nnx.Rngs,
        cross_width: int | None = None,
    ):
        self.norm1 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.attn = _attention(num_heads, width, dtype, rngs)
        if cross_width is not None:
            self.norm_cross = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
            self.cross_attn = _attention(num_heads, width, dtype, rngs, kv_width=cross_width)
        else:
            self.cross_attn = None
        self.norm2 = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)
        self.mlp = MLP(width, mlp_ratio, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array, *, mask: Array | None = None, context: Array | None = None) -> Array:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, mask=mask)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context)
        return x + self.mlp(self.norm2(x))


class Transformer(nnx.Module):
    """A stack of `depth` blocks sharing one mask (and one cross-attention context)."""

    def __init__(
        self,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float,
        *,
        dtype,
        rngs: nnx.Rngs,
        cross_width: int | None = None,
    ):
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.blocks = nnx.List(
            [
                Block(width, num_heads, mlp_ratio, dtype=dtype, rngs=rngs, cross_width=cross_width)
                for _ in range(depth)
            ]
        )

    def __call__(self, x: Array, *, mask: Array | None = None, context: Array | None = None) -> Array:
        for block in self.blocks:
            x = block(x, mask=mask, context=context)
        return x


class AttentionalPooler(nnx.Module):
    """`num_queries` learned queries cross-attend to a token sequence, then LayerNorm.

    CoCa's task-specific attentional pooling: one query gives the contrastive image embedding,
    the others the image tokens the captioning decoder attends to (Yu et al. 2022, §3.2).
    """

    def __init__(
        self, width: int, context_width: int, num_queries: int, num_heads: int, *, dtype, rngs: nnx.Rngs
    ):
        self.queries = nnx.Param(jax.random.normal(rngs.params(), (num_queries, width)) * 0.02)
        self.norm_context = nnx.LayerNorm(context_width, dtype=dtype, rngs=rngs)
        self.attn = _attention(num_heads, width, dtype, rngs, kv_width=context_width)
        self.norm = nnx.LayerNorm(width, dtype=dtype, rngs=rngs)

    def __call__(self, tokens: Array) -> Array:
        context = self.norm_context(tokens)
        queries = jnp.broadcast_to(self.queries.value, (tokens.shape[0], *self.queries.value.shape))
        return self.norm(self.attn(queries.astype(context.dtype), context, context))
