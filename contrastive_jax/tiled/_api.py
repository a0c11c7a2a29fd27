"""One entry point per pairwise reduction; `block_size` and `impl` pick the implementation."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, _vma
from contrastive_jax.tiled import _blockwise

IMPLS = ("auto", "xla", "fused")


def fused_available(x: jax.Array, y: jax.Array) -> bool:
    """Whether the fused Pallas kernel can run for these operands on the default backend."""
    try:
        from contrastive_jax.tiled import _fused
    except ImportError:  # pragma: no cover - Pallas missing from this jaxlib
        return False
    return bool(_fused.fused_supported(x, y))


def _check_operands(x, y, scale, block_size, impl):
    x = _checks.float_array("x", x, rank=2, rank_hint="[n, D]")
    y = _checks.float_array("y", y, rank=2, rank_hint="[m, D]")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature size D, got shapes {x.shape} and {y.shape}")
    scale = _checks.scalar("scale", scale)
    if block_size is not None:
        _checks.positive_int("block_size", block_size)
    _checks.one_of("impl", impl, IMPLS)
    return x, y, scale


def _use_fused(impl: str, x, y) -> bool:
    if impl == "fused":
        if not fused_available(x, y):
            raise ValueError(
                "impl='fused' needs a GPU backend and supported operands; use impl='auto' to fall back "
                "to the blockwise XLA path"
            )
        return True
    return impl == "auto" and fused_available(x, y)


def pairwise_lse(
    x: jax.Array, y: jax.Array, scale: jax.Array, *, block_size: int | None = None, impl: str = "auto"
) -> tuple[jax.Array, jax.Array]:
    """Row and column log-sum-exp of the logits `L = scale · x yᵀ`.

    `row_lse_i = log Σ_j exp(L_ij)`, `col_lse_j = log Σ_i exp(L_ij)`, in float32 whatever the
    operand dtype (bf16 operands are multiplied in bf16 with float32 accumulation).

    Args:
      x: `f[n, D]` rows (e.g. image embeddings).
      y: `f[m, D]` columns (e.g. text embeddings).
      scale: float scalar multiplying the similarities (CLIP's `logit_scale`).
      block_size: `None` materialises `L` (O(n·m) memory, plain autodiff). An integer
        processes `block_size` rows at a time with a custom VJP that recomputes each block in
        the backward pass: O(block_size·m + (n + m)·D) memory, same values and gradients.
        `n` need not be a multiple of `block_size` (the ragged tail is masked).
      impl: with `block_size`, "auto" uses the fused Pallas kernel where it can run (GPU) and
        the blockwise XLA loop elsewhere; "xla" or "fused" force one.

    Returns:
      `(row_lse: f32[n], col_lse: f32[m])`, differentiable w.r.t. `x`, `y` and `scale`.

    Examples:
      >>> import jax.numpy as jnp
      >>> r, c = pairwise_lse(jnp.eye(2), jnp.eye(2), 0.0, block_size=1)
      >>> [round(float(v), 4) for v in r]
      [0.6931, 0.6931]
    """
    x, y, scale = _check_operands(x, y, scale, block_size, impl)
    x, y, scale = _vma.match_varying(x, y, scale)
    if block_size is None:
        logits = scale * _blockwise.similarity(x, y)
        return jax.nn.logsumexp(logits, axis=1), jax.nn.logsumexp(logits, axis=0)
    if _use_fused(impl, x, y):
        from contrastive_jax.tiled import _fused

        return _fused.pairwise_lse_fused(x, y, scale)
    return _blockwise._lse_blockwise(x, y, scale, min(block_size, x.shape[0]))


def pairwise_softplus_sum(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    block_size: int | None = None,
    impl: str = "auto",
) -> jax.Array:
    """`Σ_ij softplus(scale · x_i·y_j + bias)` over all pairs, in float32.

    SigLIP's loss is this sum minus the positive logits (`softplus(−l) = softplus(l) − l`),
    so the whole loss needs only one reduction over the matrix.

    Args:
      x: `f[n, D]`; y: `f[m, D]`; scale, bias: float scalars.
      block_size, impl: as in `pairwise_lse`.

    Returns:
      A float32 scalar, differentiable w.r.t. `x`, `y`, `scale` and `bias`.
    """
    x, y, scale = _check_operands(x, y, scale, block_size, impl)
    bias = _checks.scalar("bias", bias)
    x, y, scale, bias = _vma.match_varying(x, y, scale, bias)
    if block_size is None:
        return jnp.sum(jax.nn.softplus(scale * _blockwise.similarity(x, y) + bias))
    if _use_fused(impl, x, y):
        from contrastive_jax.tiled import _fused

        return _fused.pairwise_softplus_sum_fused(x, y, scale, bias)
    return _blockwise._softplus_blockwise(x, y, scale, bias, min(block_size, x.shape[0]))
