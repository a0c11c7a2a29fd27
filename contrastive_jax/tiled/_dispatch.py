"""The one place that maps `(impl, block_size)` to an implementation of the pairwise reductions.

`resolve` validates the options at trace time and returns a `Tiling` (hashable, so it can be a
static argument of a custom VJP); `_ADAPTERS` maps each implementation to four small adapters
with a common signature. `tiled/_api.py` (single device / all-gather) and `parallel/_ring.py`
(the block visiting a device) both go through here:

* `lse(t, x, y, scale)` / `softplus(t, x, y, scale, bias, offset)`: differentiable;
* `lse_forward` / `lse_backward` / `softplus_forward` / `softplus_backward`: raw passes
  (no autodiff) for the ring's own custom VJP.

Implementations: "dense" (the whole matrix; plain autodiff), "blockwise" (`lax.scan` over row
blocks, custom VJP), "pallas" (the Triton kernels of `_pallas.py`, custom VJP; GPU only, or
anywhere in Pallas's interpret mode). `impl="auto"` is dense without `block_size` and
blockwise with it, on every backend: the Pallas kernel is chosen only explicitly until it has
been run and measured on a GPU.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp

from contrastive_jax import _checks
from contrastive_jax.tiled import _blockwise

IMPLS = ("auto", "dense", "blockwise", "pallas", "pallas_interpret")
PRECISIONS = _blockwise.PRECISIONS
_RENAMED = {"xla": "blockwise", "fused": "pallas"}


@dataclasses.dataclass(frozen=True)
class Tiling:
    """A resolved choice: implementation, rows per block (or strip) and float32 dot precision."""

    impl: str
    block_size: int | None = None
    precision: str = "float32"
    interpret: bool = False


def pallas_available(x: jax.Array, y: jax.Array) -> bool:
    """Whether the Pallas kernel can run compiled for these operands on the default backend."""
    try:
        from contrastive_jax.tiled import _pallas
    except ImportError:  # pragma: no cover - Pallas missing from this jaxlib
        return False
    return bool(_pallas.pallas_supported(x, y))


def resolve(impl: str, block_size: int | None, precision: str, x: jax.Array, y: jax.Array) -> Tiling:
    """Checks the options and picks the implementation (trace time; raises ValueError)."""
    if impl in _RENAMED:
        raise ValueError(f"impl={impl!r} was renamed: use impl={_RENAMED[impl]!r}")
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if block_size is not None:
        block_size = _checks.positive_int("block_size", block_size)
    if impl == "auto":
        impl = "dense" if block_size is None else "blockwise"
    if impl == "blockwise" and block_size is None:
        raise ValueError("impl='blockwise' needs block_size (rows per block)")
    if impl == "pallas" and not pallas_available(x, y):
        raise ValueError(
            "impl='pallas' needs a CUDA GPU backend and float32/bfloat16/float16 operands (default backend: "
            f"{jax.default_backend()}); use impl='blockwise' (or 'auto'), or impl='pallas_interpret' to run "
            "the kernel in Pallas's slow interpret mode"
        )
    if impl == "pallas_interpret":
        return Tiling("pallas", block_size, precision, interpret=True)
    return Tiling(impl, block_size, precision)


# ----------------------------------------------------------------------------------------------
# Adapters: `(tiling, operands...) -> result`, one per implementation and pass.


def _rows(t: Tiling, x) -> int:
    return min(t.block_size, x.shape[0])


def _pallas_kwargs(t: Tiling, x, y):
    from contrastive_jax.tiled import _pallas

    dtype = jnp.promote_types(x.dtype, y.dtype)
    return dict(tiles=_pallas.choose_tiles(x.shape[1], dtype), precision=t.precision, interpret=t.interpret)


def _pallas_lse_forward(t, x, y, scale):
    from contrastive_jax.tiled import _pallas

    return _pallas.lse_forward(x, y, scale, strip_rows=t.block_size, **_pallas_kwargs(t, x, y))


def _pallas_lse_backward(t, x, y, scale, row_lse, col_lse, d_row, d_col):
    from contrastive_jax.tiled import _pallas

    return _pallas.lse_backward(x, y, scale, row_lse, col_lse, d_row, d_col, **_pallas_kwargs(t, x, y))


def _pallas_softplus_forward(t, x, y, scale, bias, offset):
    from contrastive_jax.tiled import _pallas

    return _pallas.softplus_forward(x, y, scale, bias, offset, **_pallas_kwargs(t, x, y))


def _pallas_softplus_backward(t, x, y, scale, bias, offset, cotangent):
    from contrastive_jax.tiled import _pallas

    return _pallas.softplus_backward(x, y, scale, bias, offset, cotangent, **_pallas_kwargs(t, x, y))


@dataclasses.dataclass(frozen=True)
class _Adapter:
    lse_forward: Callable
    lse_backward: Callable
    softplus_forward: Callable
    softplus_backward: Callable
    autodiff: bool = False  # differentiate the forward directly instead of the custom VJP


_ADAPTERS = {
    "dense": _Adapter(
        lse_forward=lambda t, x, y, s: _blockwise.lse_forward_dense(x, y, s, t.precision),
        lse_backward=lambda t, x, y, s, *rest: _blockwise.lse_backward_dense(x, y, s, *rest, t.precision),
        softplus_forward=lambda t, x, y, s, b, o: _blockwise.softplus_forward_dense(
            x, y, s, b, o, t.precision
        ),
        softplus_backward=lambda t, x, y, s, b, o, g: _blockwise.softplus_backward_dense(
            x, y, s, b, o, g, t.precision
        ),
        autodiff=True,
    ),
    "blockwise": _Adapter(
        lse_forward=lambda t, x, y, s: _blockwise.lse_forward(x, y, s, _rows(t, x), t.precision),
        lse_backward=lambda t, x, y, s, *rest: _blockwise.lse_backward(
            x, y, s, *rest, _rows(t, x), t.precision
        ),
        softplus_forward=lambda t, x, y, s, b, o: _blockwise.softplus_forward(
            x, y, s, b, o, _rows(t, x), t.precision
        ),
        softplus_backward=lambda t, x, y, s, b, o, g: _blockwise.softplus_backward(
            x, y, s, b, o, g, _rows(t, x), t.precision
        ),
    ),
    "pallas": _Adapter(
        lse_forward=_pallas_lse_forward,
        lse_backward=_pallas_lse_backward,
        softplus_forward=_pallas_softplus_forward,
        softplus_backward=_pallas_softplus_backward,
    ),
}


def lse_forward(t: Tiling, x, y, scale):
    """`(row_lse f32[n], col_lse f32[m])` of `scale · x yᵀ`, no autodiff."""
    return _ADAPTERS[t.impl].lse_forward(t, x, y, scale)


def lse_backward(t: Tiling, x, y, scale, row_lse, col_lse, d_row, d_col):
    """`(dx, dy, dscale)` (float32) of `Σ d_row·row_lse + Σ d_col·col_lse`."""
    return _ADAPTERS[t.impl].lse_backward(t, x, y, scale, row_lse, col_lse, d_row, d_col)


def softplus_forward(t: Tiling, x, y, scale, bias, offset):
    """`Σ_ij softplus(−z_ij · (scale · x_i·y_j + bias))`, z = +1 at `j = i + offset` else −1; no autodiff."""
    return _ADAPTERS[t.impl].softplus_forward(t, x, y, scale, bias, offset)


def softplus_backward(t: Tiling, x, y, scale, bias, offset, cotangent):
    """`(dx, dy, dscale, dbias)` (float32) of `cotangent · softplus_forward(...)`."""
    return _ADAPTERS[t.impl].softplus_backward(t, x, y, scale, bias, offset, cotangent)


# ----------------------------------------------------------------------------------------------
# Differentiable entry points.


def lse(t: Tiling, x, y, scale):
    if _ADAPTERS[t.impl].autodiff:
        return lse_forward(t, x, y, scale)
    return _lse_vjp(x, y, scale, t)


def softplus(t: Tiling, x, y, scale, bias, offset):
    if _ADAPTERS[t.impl].autodiff:
        return softplus_forward(t, x, y, scale, bias, offset)
    return _softplus_vjp(x, y, scale, bias, offset, t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lse_vjp(x, y, scale, t):
    return lse_forward(t, x, y, scale)


def _lse_vjp_fwd(x, y, scale, t):
    row_lse, col_lse = lse_forward(t, x, y, scale)
    return (row_lse, col_lse), (x, y, scale, row_lse, col_lse)


def _lse_vjp_bwd(t, residuals, cotangents):
    x, y, scale, row_lse, col_lse = residuals
    dx, dy, dscale = lse_backward(t, x, y, scale, row_lse, col_lse, *cotangents)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype)


_lse_vjp.defvjp(_lse_vjp_fwd, _lse_vjp_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _softplus_vjp(x, y, scale, bias, offset, t):
    return softplus_forward(t, x, y, scale, bias, offset)


def _softplus_vjp_fwd(x, y, scale, bias, offset, t):
    return softplus_forward(t, x, y, scale, bias, offset), (x, y, scale, bias, offset)


def _softplus_vjp_bwd(t, residuals, cotangent):
    x, y, scale, bias, offset = residuals
    dx, dy, dscale, dbias = softplus_backward(t, x, y, scale, bias, offset, cotangent)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype), None


_softplus_vjp.defvjp(_softplus_vjp_fwd, _softplus_vjp_bwd)
