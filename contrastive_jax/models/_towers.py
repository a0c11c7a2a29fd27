"""The two towers: a Vision Transformer (with FLIP's patch dropout) and a causal text transformer."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax import _checks
from contrastive_jax.models._layers import AttentionalPooler, Transformer

Array = jax.Array
POOLS = ("cls", "gap", "map")
TEXT_POOLS = ("last", "argmax", "eos", "final")


def check_patch_dropout(rate) -> float:
    """`rate` as a float if it is a valid patch-dropout rate, `0 ≤ rate < 1`.

    Raises:
      ValueError: `rate` outside `[0, 1)` (or NaN), naming `patch_dropout`.
    """
    if isinstance(rate, bool) or not isinstance(rate, int | float):
        raise ValueError(f"patch_dropout must be a number in [0, 1), got {rate!r}")
    return float(_checks.in_unit_interval("patch_dropout", float(rate), closed_high=False))


def num_kept_patches(num_patches: int, rate: float) -> int:
    """How many of `num_patches` patch tokens patch dropout at `rate` keeps.

    `max(1, ⌊num_patches · (1 − rate)⌋)`, computed in Python floats exactly as open_clip's
    `PatchDropout` does (`int(num_tokens * (1 - prob))`): 196 patches at rate 0.5 keep 98.

    Examples:
      >>> num_kept_patches(196, 0.5), num_kept_patches(196, 0.75), num_kept_patches(4, 0.9)
      (98, 49, 1)
    """
    return max(1, int(num_patches * (1 - check_patch_dropout(rate))))


def drop_patches(tokens: Array, key: Array, rate: float, *, num_prefix_tokens: int = 1) -> Array:
    """FLIP's patch dropout: a random subset of each image's patch tokens, prefix tokens kept.

    For every image independently, `k = num_kept_patches(N, rate)` of its `N` patch tokens are
    chosen uniformly at random without replacement (the `k` largest of `N` i.i.d. uniform
    scores); the first `num_prefix_tokens` tokens (the class token) are always kept, first.
    The kept patches come in the order of their scores, not their positions: apply it after
    the position embeddings are added, as FLIP and open_clip do, so order no longer matters.

    Args:
      tokens: `f[B, P + N, D]`: `P = num_prefix_tokens` prefix tokens, then `N` patch tokens.
      key: a PRNG key; the same key drops the same patches.
      rate: the fraction to drop, `0 ≤ rate < 1`.
      num_prefix_tokens: tokens at the front that are never dropped (default 1: the class token).

    Returns:
      `f[B, P + k, D]`.

    Raises:
      ValueError: `rate` outside `[0, 1)`, or `tokens` not `[B, P + N, D]` with `N ≥ 1`.

    Examples:
      >>> x = jnp.arange(2 * 5 * 1.0).reshape(2, 5, 1)
      >>> drop_patches(x, jax.random.key(0), 0.5).shape
      (2, 3, 1)

    References:
      Li et al., "Scaling Language-Image Pre-training via Masking" (FLIP), CVPR 2023, §3;
      open_clip's `PatchDropout` (open_clip/transformer.py), which places it after the position
      embeddings and before the pre-transformer LayerNorm.
    """
    if tokens.ndim != 3 or tokens.shape[1] <= num_prefix_tokens:
        raise ValueError(f"tokens must be [B, {num_prefix_tokens} + N, D] with N >= 1, got {tokens.shape}")
    prefix, patches = tokens[:, :num_prefix_tokens], tokens[:, num_prefix_tokens:]
    keep = num_kept_patches(patches.shape[1], rate)
    scores = jax.random.uniform(key, patches.shape[:2])
    _, index = jax.lax.top_k(scores, keep)
    kept = jnp.take_along_axis(patches, index[..., None], axis=1)
    return jnp.concatenate([prefix, kept], axis=1)


class VisionTransformer(nnx.Module):
    """ViT image encoder: patches → transformer → pooled embedding (and optionally the tokens).

    `images: f[B, H, W, 3]` (normalised pixels) → `f32[B, embed_dim]`. Layout as CLIP's ViT: a
    bias-free patch convolution, class token, learned position embeddings, LayerNorm before and
    after the transformer, and a bias-free projection.

    Options for converted PyTorch models (defaults are the layout above): `patch_bias` (SigLIP's
    patch convolution has a bias), `pre_norm=False` (no LayerNorm before the transformer, as
    SigLIP), `map_style` ("coca" or "siglip", see `AttentionalPooler`) for `pool="map"`, and
    `act`, `mlp_dim`, `norm_eps`, `attention` for every block (see `Block`). `pool="cls"`
    prepends a class token; the other pools have none. `remat=True` rematerialises every block
    (`Transformer`).

    `patch_dropout` (FLIP, default 0.0: off) is applied only when the call gets a
    `patch_dropout_key`: `drop_patches` after the position embeddings, before the pre-transformer
    LayerNorm, the class token kept. Without a key (evaluation) every patch is used.

    `project=False` returns the pooled features before the projection (`f32[B, width]`), which
    clip-rocket's heads read (`models.CL2L`).

    References:
      Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021; Radford et al. 2021 (CLIP).
    """

    def __init__(
        self,
        *,
        image_size: int,
        patch_size: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        embed_dim: int | None = None,
        pool: str = "cls",
        dtype=jnp.float32,
        rngs: nnx.Rngs,
        act: str = "gelu_tanh",
        mlp_dim: int | None = None,
        norm_eps: float = 1e-6,
        patch_bias: bool = False,
        pre_norm: bool = True,
        map_style: str = "coca",
        remat: bool = False,
        attention: str = "xla",
        patch_dropout: float = 0.0,
    ):
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        _checks.one_of("pool", pool, POOLS)
        self.image_size, self.pool, self.dtype = image_size, pool, dtype
        self.patch_dropout = check_patch_dropout(patch_dropout)
        num_tokens = (image_size // patch_size) ** 2 + (pool == "cls")
        self.patch_embed = nnx.Conv(
            3,
            width,
            (patch_size, patch_size),
            strides=patch_size,
            padding="VALID",
            use_bias=patch_bias,
            dtype=dtype,
            rngs=rngs,
        )
        self.cls_token = (
            nnx.Param(jax.random.normal(rngs.params(), (width,)) * width**-0.5) if pool == "cls" else None
        )
        self.pos_embed = nnx.Param(jax.random.normal(rngs.params(), (num_tokens, width)) * width**-0.5)
        block_options = dict(act=act, mlp_dim=mlp_dim, norm_eps=norm_eps, attention=attention)
        self.norm_pre = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs) if pre_norm else None
        self.transformer = Transformer(
            width, depth, num_heads, mlp_ratio, dtype=dtype, rngs=rngs, remat=remat, **block_options
        )
        self.norm_post = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
        self.pooler = (
            AttentionalPooler(
                width, width, 1, num_heads, dtype=dtype, rngs=rngs, style=map_style, **block_options
            )
            if pool == "map"
            else None
        )
        self.proj = (
            nnx.Linear(width, embed_dim, use_bias=False, dtype=dtype, rngs=rngs) if embed_dim else None
        )

    def __call__(
        self,
        images: Array,
        *,
        return_tokens: bool = False,
        patch_dropout_key: Array | None = None,
        project: bool = True,
    ):
        images = _checks.float_array("images", images, rank=4, rank_hint="[B, H, W, 3]")
        if images.shape[1:] != (self.image_size, self.image_size, 3):
            raise ValueError(
                f"images must be [B, {self.image_size}, {self.image_size}, 3], got {images.shape}"
            )
        x = self.patch_embed(images.astype(self.dtype))
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        if self.cls_token is not None:
            cls = jnp.broadcast_to(self.cls_token.value.astype(x.dtype), (x.shape[0], 1, x.shape[-1]))
            x = jnp.concatenate([cls, x], axis=1)
        x = x + self.pos_embed.value.astype(x.dtype)
        if patch_dropout_key is not None and self.patch_dropout > 0:
            x = drop_patches(
                x, patch_dropout_key, self.patch_dropout, num_prefix_tokens=int(self.pool == "cls")
            )
        if self.norm_pre is not None:
            x = self.norm_pre(x)
        tokens = self.norm_post(self.transformer(x))
        if self.pool == "cls":
            pooled = tokens[:, 0]
        elif self.pool == "gap":
            pooled = jnp.mean(tokens, axis=1)
        else:
            pooled = self.pooler(tokens)[:, 0]
        if project and self.proj is not None:
            pooled = self.proj(pooled)
        pooled = pooled.astype(jnp.float32)
        return (pooled, tokens) if return_tokens else pooled


def last_token_index(tokens: Array, pad_id: int) -> Array:
    """Index of the last non-pad token of each row (0 for an all-pad row): `int32[B]`.

    The position, not a count: a vocabulary whose pad id is also a real token (CLIP's BPE pads
    with 0, which is "!") may hold pad-valued tokens inside the text.
    """
    real = tokens != pad_id
    last = tokens.shape[-1] - 1 - jnp.argmax(real[..., ::-1], axis=-1)
    return jnp.where(jnp.any(real, axis=-1), last, 0).astype(jnp.int32)


def pooled_index(tokens: Array, pool: str, pad_id: int, eos_id: int) -> Array:
    """Position each text row is pooled at: `int32[B]`.

    "last": the last non-pad token (`last_token_index`); "argmax": the largest id, i.e. the
    end-of-text token of CLIP's BPE (open_clip, OpenAI CLIP); "eos": the first `eos_id`
    (transformers' CLIP); "final": position T−1 whatever it holds (SigLIP).
    """
    if pool == "last":
        return last_token_index(tokens, pad_id)
    if pool == "argmax":
        return jnp.argmax(tokens, axis=-1).astype(jnp.int32)
    if pool == "eos":
        return jnp.argmax(tokens == eos_id, axis=-1).astype(jnp.int32)
    return jnp.full(tokens.shape[:1], tokens.shape[1] - 1, jnp.int32)


class TextTransformer(nnx.Module):
    """Causal text transformer; the embedding is read at the last non-pad token.

    `tokens: int[B, T]` (T ≤ context_length, padding with `pad_id` at the end) → `f32[B, embed_dim]`.
    Causal attention lets the last real token see the whole text and no padding after it, so
    trailing padding never changes the embedding.

    Options for converted PyTorch models (defaults are the layout above): `pool` (see
    `pooled_index`: "argmax" for open_clip, "eos" with `eos_id` for transformers' CLIP, "final"
    for SigLIP), `causal=False` (SigLIP's text attention is bidirectional), `proj_bias`
    (SigLIP's text head has a bias), and `act`, `mlp_dim`, `norm_eps`, `attention` (see
    `Block`); `remat` rematerialises every block (`Transformer`).

    With `cls_token=True` (CoCa's unimodal decoder), a learned token is appended after position
    T−1; it attends to every non-pad token and its output is the embedding. `return_tokens`
    then also returns the normalised outputs at the T text positions. `project=False` returns the
    pooled features before the projection (`f32[B, width]`).
    """

    def __init__(
        self,
        *,
        vocab_size: int,
        context_length: int,
        width: int,
        depth: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        embed_dim: int | None = None,
        pad_id: int = 0,
        cls_token: bool = False,
        dtype=jnp.float32,
        rngs: nnx.Rngs,
        act: str = "gelu_tanh",
        mlp_dim: int | None = None,
        norm_eps: float = 1e-6,
        causal: bool = True,
        pool: str = "last",
        eos_id: int = 0,
        proj_bias: bool = False,
        remat: bool = False,
        attention: str = "xla",
    ):
        _checks.one_of("pool", pool, TEXT_POOLS)
        if cls_token and (pool != "last" or not causal):
            raise ValueError("cls_token=True needs pool='last' and causal=True")
        self.context_length, self.pad_id, self.dtype = context_length, pad_id, dtype
        self.causal, self.pool, self.eos_id = causal, pool, eos_id
        self.vocab_size = vocab_size
        self.token_embed = nnx.Embed(vocab_size, width, dtype=dtype, rngs=rngs)
        self.pos_embed = nnx.Param(
            jax.random.normal(rngs.params(), (context_length + cls_token, width)) * 0.01
        )
        self.cls = nnx.Param(jax.random.normal(rngs.params(), (width,)) * 0.02) if cls_token else None
        self.transformer = Transformer(
            width,
            depth,
            num_heads,
            mlp_ratio,
            dtype=dtype,
            rngs=rngs,
            act=act,
            mlp_dim=mlp_dim,
            norm_eps=norm_eps,
            remat=remat,
            attention=attention,
        )
        self.norm_final = nnx.LayerNorm(width, epsilon=norm_eps, dtype=dtype, rngs=rngs)
        self.proj = (
            nnx.Linear(width, embed_dim, use_bias=proj_bias, dtype=dtype, rngs=rngs) if embed_dim else None
        )

    def check_tokens(self, tokens) -> Array:
        tokens = _checks.int_array("tokens", tokens, rank=2, rank_hint="[B, T]")
        if tokens.shape[1] > self.context_length:
            raise ValueError(f"tokens have length {tokens.shape[1]} > context_length {self.context_length}")
        return tokens

    def __call__(self, tokens: Array, *, return_tokens: bool = False, project: bool = True):
        tokens = self.check_tokens(tokens)
        batch, length = tokens.shape
        x = self.token_embed(tokens) + self.pos_embed.value[:length].astype(self.dtype)
        if self.cls is None:
            mask = None
        else:
            # The CLS token always takes the last position embedding, whatever the padded length,
            # and attends to the text but not to padding; every position keeps itself so that no
            # attention row is empty.
            cls = (self.cls.value + self.pos_embed.value[self.context_length]).astype(x.dtype)
            x = jnp.concatenate([x, jnp.broadcast_to(cls, (batch, 1, x.shape[-1]))], axis=1)
            length += 1
            key_is_text = jnp.concatenate([tokens != self.pad_id, jnp.ones((batch, 1), bool)], axis=1)
            causal = jnp.tril(jnp.ones((length, length), bool))
            mask = ((causal[None] & key_is_text[:, None, :]) | jnp.eye(length, dtype=bool))[:, None]
        causal = self.causal and self.cls is None  # the CLS mask above holds its own causality
        out = self.norm_final(self.transformer(x, mask=mask, causal=causal))
        if self.cls is None:
            index = pooled_index(tokens, self.pool, self.pad_id, self.eos_id)
            pooled = jnp.take_along_axis(out, index[:, None, None], axis=1)[:, 0]
            token_out = out
        else:
            pooled, token_out = out[:, -1], out[:, :-1]
        if project and self.proj is not None:
            pooled = self.proj(pooled)
        pooled = pooled.astype(jnp.float32)
        return (pooled, token_out) if return_tokens else pooled
