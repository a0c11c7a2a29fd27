"""Transformer building blocks shared by the towers (pre-LayerNorm, as in CLIP and ViT).

Every attention layer (self-attention, CoCa's cross-attention, the attentional pooler) computes
`softmax(q·kᵀ/√d + mask)·v` through `jax.nn.dot_product_attention`, by one of the
implementations in `ATTENTION` (the model config's `attention`):

* "xla" (the default, the models' attention since they were written): Flax's
  `nnx.dot_product_attention`, which calls `jax.nn.dot_product_attention` with
  `implementation=None`; jax (0.10, 0.11) runs XLA's softmax(QKᵀ)V for that on every backend.
* "cudnn": `jax.nn.dot_product_attention(..., implementation="cudnn")`, cuDNN's fused (flash)
  attention kernel on NVIDIA GPUs. It needs bfloat16 compute (`dtype`). A causal mask reaches
  the kernel as `is_causal=True` (its own causal mask type, no mask tensor); any other mask
  (CoCa's text padding) as the mask jax turns into an additive bias. Without cuDNN (CPU) the
  call raises jax's `RuntimeError`.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

Array = jax.Array

# The MLP non-linearity, by the names PyTorch sources use. "gelu_tanh" (the default, today's
# models) is the tanh approximation (transformers' "gelu_pytorch_tanh", big_vision's default);
# "gelu" is the exact erf form (torch.nn.GELU, LAION's open_clip models); "quick_gelu" is
# x·σ(1.702x), the activation OpenAI's CLIP weights were trained with (Radford et al. 2021).
ACTIVATIONS = {
    "gelu_tanh": functools.partial(jax.nn.gelu, approximate=True),
    "gelu": functools.partial(jax.nn.gelu, approximate=False),
    "quick_gelu": lambda x: x * jax.nn.sigmoid(1.702 * x),
}


def _cudnn_attention(query, key, value, bias=None, mask=None, *, is_causal=False, **unused):
    """`nnx.MultiHeadAttention`'s `attention_fn` for cuDNN: `query: [B, T, N, H]`, `key, value:
    [B, S, N, H]`, a boolean `mask` broadcastable to `[B, N, T, S]`. The other arguments Flax
    passes (dropout, which these layers never use, precision, sowing) are not read."""
    del unused
    return jax.nn.dot_product_attention(
        query, key, value, bias, mask, is_causal=is_causal, implementation="cudnn"
    )


# The attention implementations a model config's `attention` names (see the module docstring).
ATTENTION = {"xla": nnx.dot_product_attention, "cudnn": _cudnn_attention}
# Those that take a causal mask as `is_causal=True` (the kernel's own) rather than as a mask.
_NATIVE_CAUSAL = frozenset({"cudnn"})


def check_attention(attention: str, dtype) -> str:
    """`attention` if it names an `ATTENTION` entry usable at compute `dtype`.

    Raises:
      ValueError: unknown name, or "cudnn" with a compute dtype other than bfloat16 (cuDNN's
        flash attention takes fp16/bf16 operands only).
    """
    if attention not in ATTENTION:
        raise ValueError(f"attention must be one of {tuple(ATTENTION)}, got {attention!r}")
    if attention == "cudnn" and jnp.dtype(dtype) != jnp.bfloat16:
        raise ValueError(
            f"attention='cudnn' needs bfloat16 compute (model dtype 'bfloat16'), got {jnp.dtype(dtype).name}"
        )
    return attention


def causal_mask(length: int) -> Array:
    """`bool[1, 1, T, T]`, true where the key position is at or before the query's."""
    return jnp.tril(jnp.ones((length, length), bool))[None, None]


def _attention(
    num_heads: int, width: int, dtype, rngs: nnx.Rngs, kv_width: int | None = None, attention: str = "xla"
):
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
        attention_fn=ATTENTION[check_attention(attention, dtype)],
        rngs=rngs,
    )


class MLP(nnx.Module):
    """`Linear → act → Linear`, hidden width `mlp_dim` (default `int(mlp_ratio · width)`).

    `act` names an entry of `ACTIVATIONS` ("gelu_tanh", "gelu", "quick_gelu").
    """

    def __init__(
        self,
        width: int,
        mlp_ratio: float,
        *,
        dtype,
        rngs: nnx.Rngs,
        act: str = "gelu_tanh",
        mlp_dim: int | None = None,
    ):
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}; choose one of {sorted(ACTIVATIONS)}")
        hidden = mlp_dim or int(width * mlp_ratio)
        self.act = act
        self.fc1 = nnx.Linear(width, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: Array) -> Array:
        return self.fc2(ACTIVATIONS[self.act](self.fc1(x)))


class Block(nnx.Module):
    """Pre-LN transformer block: `x + Attn(LN(x))`, then `x + MLP(LN(x))`.

    With `cross_width`, a cross-attention sub-layer to a second sequence sits between the two
    (the multimodal decoder of CoCa). `act`, `mlp_dim` (see `MLP`) and the LayerNorm epsilon
    `norm_eps` let converted PyTorch models keep their own (open_clip and CLIP use 1e-5).
    `attention` names the implementation of both attentions (`ATTENTION`); `is_causal=True` in
    the call applies the kernel's own causal mask to the self-attention (see `Transformer`).
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
        act: str = "gelu_tanh",
        mlp_dim: int | None = None,
        norm_eps: float = 1e-6,
        attention: str = "xla",
    ):
        self.norm1 = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
        self.attn = _attention(num_heads, width, dtype, rngs, attention=attention)
        if cross_width is not None:
            self.norm_cross = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
            self.cross_attn = _attention(
                num_heads, width, dtype, rngs, kv_width=cross_width, attention=attention
            )
        else:
            self.cross_attn = None
        self.norm2 = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
        self.mlp = MLP(width, mlp_ratio, dtype=dtype, rngs=rngs, act=act, mlp_dim=mlp_dim)

    def __call__(
        self, x: Array, *, mask: Array | None = None, context: Array | None = None, is_causal: bool = False
    ) -> Array:
        h = self.norm1(x)
        x = x + self.attn(h, h, h, mask=mask, is_causal=is_causal)
        if self.cross_attn is not None:
            x = x + self.cross_attn(self.norm_cross(x), context, context)
        return x + self.mlp(self.norm2(x))


def _run_block(block, x, mask, context):
    return block(x, mask=mask, context=context)


def _run_block_causal(block, x, mask, context):
    return block(x, mask=mask, context=context, is_causal=True)


class Transformer(nnx.Module):
    """A stack of `depth` blocks sharing one mask (and one cross-attention context).

    `block_options` (`act`, `mlp_dim`, `norm_eps`, `attention`) go to every `Block`. With
    `remat=True` each block is rematerialised (`nnx.remat`): the backward pass recomputes a
    block's activations from its input instead of keeping them, so training holds one activation
    per block boundary instead of every intermediate (about a third more forward compute).

    The call's `causal=True` masks attention to later positions: as the mask `causal_mask(T)`
    for "xla" attention, as the kernel's `is_causal` for "cudnn"; it takes no `mask` beside it.
    """

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
        remat: bool = False,
        **block_options,
    ):
        self.remat = bool(remat)
        self.attention = block_options.get("attention", "xla")
        if width % num_heads:
            raise ValueError(f"width {width} must be divisible by num_heads {num_heads}")
        self.blocks = nnx.List(
            [
                Block(
                    width,
                    num_heads,
                    mlp_ratio,
                    dtype=dtype,
                    rngs=rngs,
                    cross_width=cross_width,
                    **block_options,
                )
                for _ in range(depth)
            ]
        )

    def __call__(
        self, x: Array, *, mask: Array | None = None, context: Array | None = None, causal: bool = False
    ) -> Array:
        run = _run_block
        if causal:
            if mask is not None:
                raise ValueError("give a mask or causal=True, not both")
            if self.attention in _NATIVE_CAUSAL:
                run = _run_block_causal
            else:
                mask = causal_mask(x.shape[1])
        run = nnx.remat(run) if self.remat else run
        for block in self.blocks:
            x = run(block, x, mask, context)
        return x


class AttentionalPooler(nnx.Module):
    """`num_queries` learned queries cross-attend to a token sequence, then LayerNorm.

    CoCa's task-specific attentional pooling: one query gives the contrastive image embedding,
    the others the image tokens the captioning decoder attends to (Yu et al. 2022, §3.2):
    `h = Attn(q, LN(x))`, output `LN(h)`.

    With `style="siglip"` it is instead the MAP head of big_vision and SigLIP (Zhai et al. 2023):
    no LayerNorm on the tokens, and a residual MLP after the attention, `h + MLP(LN(h))`
    (`act`, `mlp_dim`, `norm_eps`, `attention` as in `Block`).
    """

    def __init__(
        self,
        width: int,
        context_width: int,
        num_queries: int,
        num_heads: int,
        *,
        dtype,
        rngs: nnx.Rngs,
        style: str = "coca",
        act: str = "gelu_tanh",
        mlp_dim: int | None = None,
        norm_eps: float = 1e-6,
        attention: str = "xla",
    ):
        if style not in ("coca", "siglip"):
            raise ValueError(f"unknown pooler style {style!r}; choose 'coca' or 'siglip'")
        self.queries = nnx.Param(jax.random.normal(rngs.params(), (num_queries, width)) * 0.02)
        self.norm_context = (
            nnx.LayerNorm(context_width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
            if style == "coca"
            else None
        )
        self.attn = _attention(num_heads, width, dtype, rngs, kv_width=context_width, attention=attention)
        self.norm = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
        self.mlp = (
            MLP(width, 4.0, dtype=dtype, rngs=rngs, act=act, mlp_dim=mlp_dim) if style == "siglip" else None
        )

    def __call__(self, tokens: Array) -> Array:
        context = tokens if self.norm_context is None else self.norm_context(tokens)
        queries = jnp.broadcast_to(self.queries.value, (tokens.shape[0], *self.queries.value.shape))
        pooled = self.attn(queries.astype(context.dtype), context, context)
        if self.mlp is None:
            return self.norm(pooled)
        return pooled + self.mlp(self.norm(pooled))
