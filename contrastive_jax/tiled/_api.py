"""One entry point per pairwise reduction; `block_size` and `impl` pick the implementation
(`_dispatch.resolve_tiling`)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, _vma
from contrastive_jax.tiled import _dispatch

IMPLS = _dispatch.IMPLS
PRECISIONS = _dispatch.PRECISIONS
pallas_available = _dispatch.pallas_available


def _check_operands(x, y, scale):
    x = _checks.float_array("x", x, rank=2, rank_hint="[n, D]")
    y = _checks.float_array("y", y, rank=2, rank_hint="[m, D]")
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same feature size D, got shapes {x.shape} and {y.shape}")
    return x, y, _checks.scalar("scale", scale)


def pairwise_lse(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    *,
    block_size: int | None = None,
    impl: str = "auto",
    precision: str = "float32",
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
      impl: "auto" (default) is "dense" without `block_size` and "blockwise" (the XLA loop above)
        with it, on every backend. "pallas" is the fused Triton kernel (CUDA GPUs only, not
        picked automatically until measured there; `block_size` is then the rows per forward
        program, which bounds its column partials to `8·m·⌈n/block_size⌉` bytes);
        "pallas_interpret" runs that kernel in Pallas's interpret mode on any backend (slow;
        for tests). "pallas" raises ValueError where it cannot run.
      precision: float32 operands multiply in full float32 ("float32", the default) or, when
        asked, in TF32 ("tf32": faster on NVIDIA tensor cores, ~1e-3 relative error in `L`).
        bf16/fp16 operands always multiply in their own dtype with float32 accumulation.

    Returns:
      `(row_lse: f32[n], col_lse: f32[m])`, differentiable w.r.t. `x`, `y` and `scale`.

    Examples:
      >>> import jax.numpy as jnp
      >>> r, c = pairwise_lse(jnp.eye(2), jnp.eye(2), 0.0, block_size=1)
      >>> [round(float(v), 4) for v in r]
      [0.6931, 0.6931]
    """
    x, y, scale = _check_operands(x, y, scale)
    tiling = _dispatch.resolve_tiling(impl, block_size, precision, x, y)
    x, y, scale = _vma.match_varying(x, y, scale)
    return _dispatch.lse(tiling, x, y, scale)


def pairwise_softplus_sum(
    x: jax.Array,
    y: jax.Array,
    scale: jax.Array,
    bias: jax.Array,
    *,
    positive_offset: int | jax.Array | None = None,
    block_size: int | None = None,
    impl: str = "auto",
    precision: str = "float32",
) -> jax.Array:
    """SigLIP's reduction `Σ_ij softplus(−z_ij · (scale · x_i·y_j + bias))`, in float32.

    `z_ij = +1` for the positive pairs `j = i + positive_offset` and `−1` elsewhere, so a
    negative pair contributes `softplus(L_ij) = −log σ(−L_ij)` and a positive one
    `softplus(−L_ij) = −log σ(L_ij)`, each with its exact gradient (a confident positive pair at
    `L = 30` still gets `−σ(−30) ≈ −9.4e-14`). `positive_offset=None` makes every pair negative.

    Args:
      x: `f[n, D]`; y: `f[m, D]`; scale, bias: float scalars.
      positive_offset: `None`, or an int (a traced int32 scalar is fine): the column of row `i`'s
        positive is `i + positive_offset` (0 on one device; `device_index · b` for local rows
        against gathered columns).
      block_size, impl, precision: as in `pairwise_lse`.

    Returns:
      A float32 scalar, differentiable w.r.t. `x`, `y`, `scale` and `bias`.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0]])
      >>> round(float(pairwise_softplus_sum(x, x, 10.0, -10.0, positive_offset=0)), 4)
      0.6931
    """
    x, y, scale = _check_operands(x, y, scale)
    bias = _checks.scalar("bias", bias)
    tiling = _dispatch.resolve_tiling(impl, block_size, precision, x, y)
    if positive_offset is None:
        positive_offset = y.shape[0]  # column i + m never exists: no positives
    offset = jnp.asarray(positive_offset)
    if offset.shape != () or not jnp.issubdtype(offset.dtype, jnp.integer):
        raise ValueError(f"positive_offset must be None or an integer scalar, got {positive_offset!r}")
    x, y, scale, bias, offset = _vma.match_varying(x, y, scale, bias, offset.astype(jnp.int32))
    return _dispatch.softplus(tiling, x, y, scale, bias, offset)
