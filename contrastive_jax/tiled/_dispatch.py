"""The dispatch contract of the pairwise reductions: `(impl, block_size, precision)` → `Tiling`.

`resolve_tiling` validates the options at trace time and returns a `Tiling`: a hashable record
of the choice (so it can be a static argument of a custom VJP) that runs the four raw passes of
the chosen implementation on any operands, through `_ADAPTERS`, a table of small adapters with a
common signature. Both callers go through it — `tiled.pairwise_lse` / `pairwise_softplus_sum`
(one device, or local rows against gathered columns) and `parallel`'s ring (the block visiting a
device) — so an implementation is added or changed in one place:

* `Tiling.lse_forward` / `lse_backward` / `softplus_forward` / `softplus_backward`: raw passes
  (no autodiff), which the ring composes into its own custom VJP;
* `lse(t, x, y, scale)` / `softplus(t, x, y, scale, bias, offset)` below: differentiable, for
  `tiled`'s entry points.

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

try:  # Pallas ships with jax but not with every jaxlib build: the kernel is optional.
    from contrastive_jax.tiled import _pallas
except ImportError:  # pragma: no cover - Pallas missing from this jaxlib
    _pallas = None

Array = jax.Array
IMPLS = ("auto", "dense", "blockwise", "pallas", "pallas_interpret")
PRECISIONS = _blockwise.PRECISIONS
# Old names are refused with the new one rather than aliased: `auto` no longer picks the kernel,
# and a silent alias would hide that (CHANGELOG.md).
_RENAMED = {"xla": "blockwise", "fused": "pallas"}


@dataclasses.dataclass(frozen=True)
class Tiling:
    """How a pairwise reduction is computed: what `resolve_tiling` chose for the operands.

    Attributes:
      impl: "dense", "blockwise" or "pallas" (never "auto": that is resolved).
      block_size: rows per block ("blockwise") or per forward program ("pallas"); `None` for
        "dense", or for "pallas" to let the kernel pick its strips.
      precision: "float32" (full float32 products for float32 operands) or "tf32".
      interpret: run the Pallas kernel in Pallas's interpret mode (any backend; slow).

    The four methods are the raw passes (no autodiff) over the logits `L = scale · x yᵀ` of
    `x: f[n, D]` against `y: f[m, D]`; results are float32 whatever the operand dtype. A caller
    that needs gradients composes them in its own custom VJP (as `parallel`'s ring does) or calls
    `tiled.pairwise_lse` / `pairwise_softplus_sum`, which do.
    """

    impl: str
    block_size: int | None = None
    precision: str = "float32"
    interpret: bool = False

    def lse_forward(self, x: Array, y: Array, scale: Array) -> tuple[Array, Array]:
        """`(row_lse f32[n], col_lse f32[m])`: `log Σ_j exp(L_ij)` and `log Σ_i exp(L_ij)`."""
        return _ADAPTERS[self.impl].lse_forward(self, x, y, scale)

    def lse_backward(
        self, x: Array, y: Array, scale: Array, row_lse: Array, col_lse: Array, d_row: Array, d_col: Array
    ) -> tuple[Array, Array, Array]:
        """`(dx, dy, dscale)` of `Σ_i d_row_i·row_lse_i + Σ_j d_col_j·col_lse_j`, given both LSEs."""
        return _ADAPTERS[self.impl].lse_backward(self, x, y, scale, row_lse, col_lse, d_row, d_col)

    def softplus_forward(self, x: Array, y: Array, scale: Array, bias: Array, offset: Array) -> Array:
        """`Σ_ij softplus(−z_ij·(L_ij + bias))`, `z_ij = +1` at `j = i + offset` else −1 (a scalar)."""
        return _ADAPTERS[self.impl].softplus_forward(self, x, y, scale, bias, offset)

    def softplus_backward(
        self, x: Array, y: Array, scale: Array, bias: Array, offset: Array, cotangent: Array
    ) -> tuple[Array, Array, Array, Array]:
        """`(dx, dy, dscale, dbias)` of `cotangent · softplus_forward(x, y, scale, bias, offset)`."""
        return _ADAPTERS[self.impl].softplus_backward(self, x, y, scale, bias, offset, cotangent)


def pallas_available(x: jax.Array, y: jax.Array) -> bool:
    """Whether the Pallas kernel can run compiled for these operands on the default backend."""
    return _pallas is not None and bool(_pallas.pallas_supported(x, y))


def resolve_tiling(impl: str, block_size: int | None, precision: str, x: jax.Array, y: jax.Array) -> Tiling:
    """Checks the options of a pairwise reduction of `x` against `y` and picks its implementation.

    Args:
      impl: one of `IMPLS`; "auto" is "dense" without `block_size` and "blockwise" with it.
      block_size: `None` or a positive int (see `pairwise_lse`).
      precision: one of `PRECISIONS`.
      x, y: the operands (only their dtypes and the backend matter, for "pallas").

    Returns:
      The `Tiling` (at trace time; nothing is computed).

    Raises:
      ValueError: an unknown or renamed `impl` or `precision`, a bad `block_size`,
        "blockwise" without `block_size`, or "pallas" where the kernel cannot run.

    Examples:
      >>> import jax.numpy as jnp
      >>> x = jnp.ones((4, 2))
      >>> resolve_tiling("auto", 2, "float32", x, x)
      Tiling(impl='blockwise', block_size=2, precision='float32', interpret=False)
    """
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
    dtype = jnp.promote_types(x.dtype, y.dtype)
    return dict(tiles=_pallas.choose_tiles(x.shape[1], dtype), precision=t.precision, interpret=t.interpret)


def _pallas_lse_forward(t, x, y, scale):
    return _pallas.lse_forward(x, y, scale, strip_rows=t.block_size, **_pallas_kwargs(t, x, y))


def _pallas_lse_backward(t, x, y, scale, row_lse, col_lse, d_row, d_col):
    return _pallas.lse_backward(x, y, scale, row_lse, col_lse, d_row, d_col, **_pallas_kwargs(t, x, y))


def _pallas_softplus_forward(t, x, y, scale, bias, offset):
    return _pallas.softplus_forward(x, y, scale, bias, offset, **_pallas_kwargs(t, x, y))


def _pallas_softplus_backward(t, x, y, scale, bias, offset, cotangent):
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


# ----------------------------------------------------------------------------------------------
# Differentiable entry points.


def lse(t: Tiling, x, y, scale):
    """`Tiling.lse_forward`, differentiable w.r.t. `x`, `y` and `scale`."""
    if _ADAPTERS[t.impl].autodiff:
        return t.lse_forward(x, y, scale)
    return _lse_vjp(x, y, scale, t)


def softplus(t: Tiling, x, y, scale, bias, offset):
    """`Tiling.softplus_forward`, differentiable w.r.t. `x`, `y`, `scale` and `bias`."""
    if _ADAPTERS[t.impl].autodiff:
        return t.softplus_forward(x, y, scale, bias, offset)
    return _softplus_vjp(x, y, scale, bias, offset, t)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _lse_vjp(x, y, scale, t):
    return t.lse_forward(x, y, scale)


def _lse_vjp_fwd(x, y, scale, t):
    row_lse, col_lse = t.lse_forward(x, y, scale)
    return (row_lse, col_lse), (x, y, scale, row_lse, col_lse)


def _lse_vjp_bwd(t, residuals, cotangents):
    x, y, scale, row_lse, col_lse = residuals
    dx, dy, dscale = t.lse_backward(x, y, scale, row_lse, col_lse, *cotangents)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype)


_lse_vjp.defvjp(_lse_vjp_fwd, _lse_vjp_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5,))
def _softplus_vjp(x, y, scale, bias, offset, t):
    return t.softplus_forward(x, y, scale, bias, offset)


def _softplus_vjp_fwd(x, y, scale, bias, offset, t):
    return t.softplus_forward(x, y, scale, bias, offset), (x, y, scale, bias, offset)


def _softplus_vjp_bwd(t, residuals, cotangent):
    x, y, scale, bias, offset = residuals
    dx, dy, dscale, dbias = t.softplus_backward(x, y, scale, bias, offset, cotangent)
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype), None


_softplus_vjp.defvjp(_softplus_vjp_fwd, _softplus_vjp_bwd)
