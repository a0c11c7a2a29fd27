"""Fused Pallas (Triton) GPU kernels for the pairwise reductions: logits never reach HBM.

One "row-block" kernel family does everything, because the reductions are symmetric in the
roles of rows and columns:

* forward: a program owns `block_rows` rows of x and streams all of y through on-chip memory in
  blocks of `block_cols`, keeping an online (max, sum) per row → `row_lse`. The column LSE is
  the row LSE of the swapped problem (y against x), a second launch.
* backward: with `G_ij = dr_i·exp(L_ij − r_i) + dc_j·exp(L_ij − c_j)`, `dx = s·G y` is the
  row-block kernel's accumulation; `dy = s·Gᵀ x` is the same kernel on the swapped problem
  (G is unchanged when x↔y, r↔c, dr↔dc are swapped). `ds = Σ G∘S` comes from the first launch.
* sigmoid: the same pattern with `Σ softplus(L + b)` forward and `G = g·σ(L + b)` backward.

FLOPs for n = m = B: forward 4B²D (S computed once per launch), backward 8B²D (S recomputed in
each launch, plus G·y), i.e. 12B²D per step against the 6B²D of a dense loss that stores S —
the price of never materialising it. Shapes are padded to the block sizes (rows/columns
masked) and D to a power of two (zero feature columns are harmless; D = 768 costs 4/3); bf16 operands multiply in bf16 with float32
accumulation, float32 operands use the GPU's default (TF32) dot precision.

Tested on CPU in Pallas interpret mode (`interpret=True`); on a GPU `impl="auto"` picks it.

References:
  Dao et al., "FlashAttention", NeurIPS 2022 (online softmax in on-chip tiles); Cheng et al.,
  "Breaking the Memory Barrier: Near Infinite Batch Size Scaling for Contrastive Loss" (Inf-CL),
  2024 (tiled contrastive loss).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

_F32 = jnp.float32
BLOCK_ROWS, BLOCK_COLS = 128, 64
_SUPPORTED_DTYPES = (jnp.float32, jnp.bfloat16, jnp.float16)


def fused_supported(x: jax.Array, y: jax.Array) -> bool:
    """True on a CUDA GPU backend for float32/bfloat16/float16 operands with the Triton lowering."""
    try:
        import jax.experimental.pallas.triton  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    return jax.default_backend() == "gpu" and x.dtype in _SUPPORTED_DTYPES and y.dtype in _SUPPORTED_DTYPES


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _pad(a: jax.Array, rows: int, cols: int | None = None, value=0.0) -> jax.Array:
    widths = [(0, rows - a.shape[0])] + ([(0, cols - a.shape[1])] if cols is not None else [])
    return jnp.pad(a, widths, constant_values=value)


def _compiler_params(interpret: bool):
    if interpret:
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=4, num_stages=2)


def _tile(x_ref, y_ref, start, block_cols, scale):
    """Similarities `S = x yᵀ` (f32) of this program's rows and the column block at `start`."""
    y = y_ref[pl.ds(start, block_cols), :]
    sim = jax.lax.dot_general(x_ref[...], y, (((1,), (1,)), ((), ())), preferred_element_type=_F32)
    return sim, scale * sim, y


def _column_mask(start, block_cols, num_cols):
    return (start + jnp.arange(block_cols)) < num_cols


def _row_mask(x_ref, num_rows):
    """`bool[rows]`: which of this program's rows are real (read once, outside loops)."""
    rows = x_ref.shape[0]
    return (pl.program_id(0) * rows + jnp.arange(rows)) < num_rows


def _valid(row_ok, start, block_cols, num_cols):
    """`bool[rows, block_cols]`: true rows of this program × true columns of this block."""
    return row_ok[:, None] & _column_mask(start, block_cols, num_cols)[None, :]


# ----------------------------------------------------------------------------------------------
# Kernels. `num_cols` is the true column count (the rest is padding).


def _lse_kernel(scale_ref, x_ref, y_ref, out_ref, *, block_cols, num_rows, num_cols, padded_cols):
    del num_rows  # padded rows only produce outputs that are sliced off
    scale = scale_ref[0]
    rows = x_ref.shape[0]

    def body(j, carry):
        row_max, row_sum = carry
        start = j * block_cols
        _, logits, _ = _tile(x_ref, y_ref, start, block_cols, scale)
        logits = jnp.where(_column_mask(start, block_cols, num_cols)[None, :], logits, -jnp.inf)
        new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
        row_sum = row_sum * jnp.exp(row_max - new_max) + jnp.sum(jnp.exp(logits - new_max[:, None]), axis=1)
        return new_max, row_sum

    init = (jnp.full((rows,), -jnp.inf, _F32), jnp.zeros((rows,), _F32))
    row_max, row_sum = jax.lax.fori_loop(0, padded_cols // block_cols, body, init)
    out_ref[...] = row_max + jnp.log(row_sum)


def _lse_grad_kernel(scale_ref, x_ref, y_ref, r_ref, dr_ref, c_ref, dc_ref, dx_ref, ds_ref, *, block_cols,
                     num_rows, num_cols, padded_cols):  # fmt: skip
    scale = scale_ref[0]
    r, dr = r_ref[...], dr_ref[...]
    row_ok = _row_mask(x_ref, num_rows)

    def body(j, carry):
        dx, ds = carry
        start = j * block_cols
        sim, logits, y = _tile(x_ref, y_ref, start, block_cols, scale)
        c, dc = c_ref[pl.ds(start, block_cols)], dc_ref[pl.ds(start, block_cols)]
        grad = dr[:, None] * jnp.exp(logits - r[:, None]) + dc[None, :] * jnp.exp(logits - c[None, :])
        grad = jnp.where(_valid(row_ok, start, block_cols, num_cols), grad, 0.0)
        dx = dx + jnp.dot(grad.astype(y.dtype), y, preferred_element_type=_F32)
        return dx, ds + jnp.sum(grad * sim)

    init = (jnp.zeros(x_ref.shape, _F32), jnp.zeros((), _F32))
    dx, ds = jax.lax.fori_loop(0, padded_cols // block_cols, body, init)
    dx_ref[...] = scale * dx
    ds_ref[...] = jnp.full(ds_ref.shape, ds, _F32)


def _softplus_kernel(scale_ref, x_ref, y_ref, out_ref, *, block_cols, num_rows, num_cols, padded_cols):
    del num_rows  # padded rows only produce outputs that are sliced off
    scale, bias = scale_ref[0], scale_ref[1]

    def body(j, total):
        start = j * block_cols
        _, logits, _ = _tile(x_ref, y_ref, start, block_cols, scale)
        terms = jnp.where(
            _column_mask(start, block_cols, num_cols)[None, :], jax.nn.softplus(logits + bias), 0.0
        )
        return total + jnp.sum(terms, axis=1)

    out_ref[...] = jax.lax.fori_loop(0, padded_cols // block_cols, body, jnp.zeros((x_ref.shape[0],), _F32))


def _softplus_grad_kernel(
    scale_ref, x_ref, y_ref, dx_ref, stats_ref, *, block_cols, num_rows, num_cols, padded_cols
):
    scale, bias, cotangent = scale_ref[0], scale_ref[1], scale_ref[2]
    row_ok = _row_mask(x_ref, num_rows)

    def body(j, carry):
        dx, ds, db = carry
        start = j * block_cols
        sim, logits, y = _tile(x_ref, y_ref, start, block_cols, scale)
        grad = cotangent * jax.nn.sigmoid(logits + bias)
        grad = jnp.where(_valid(row_ok, start, block_cols, num_cols), grad, 0.0)
        dx = dx + jnp.dot(grad.astype(y.dtype), y, preferred_element_type=_F32)
        return dx, ds + jnp.sum(grad * sim), db + jnp.sum(grad)

    init = (jnp.zeros(x_ref.shape, _F32), jnp.zeros((), _F32), jnp.zeros((), _F32))
    dx, ds, db = jax.lax.fori_loop(0, padded_cols // block_cols, body, init)
    dx_ref[...] = scale * dx
    stats_ref[...] = jnp.where(jnp.arange(stats_ref.shape[-1]) == 0, ds, db)[None, :] * jnp.ones(
        stats_ref.shape
    )


# ----------------------------------------------------------------------------------------------
# Launchers: pad, launch over row blocks, unpad.


def _launch(
    kernel, scalars, x, y, row_vectors=(), col_vectors=(), *, outputs, block_rows, block_cols, interpret
):
    """Runs `kernel` with one program per `block_rows` rows of x; y (and column vectors) whole.

    `outputs` lists the per-row outputs: "vector" (`f32[n]`), "rows" (`f32[n, D]`) or "stats" (one
    `f32[2]` row per program, e.g. partial sums of ds/db).
    """
    n, m, dim = x.shape[0], y.shape[0], x.shape[1]
    # Triton tiles need power-of-two sizes: the feature axis is zero-padded to one (≥ 16).
    n_pad, m_pad, d_pad = (
        _round_up(n, block_rows),
        _round_up(m, block_cols),
        max(16, 1 << (dim - 1).bit_length()),
    )
    xp, yp = _pad(x, n_pad, d_pad), _pad(y, m_pad, d_pad)
    rows_in = [_pad(v, n_pad) for v in row_vectors]
    cols_in = [_pad(v, m_pad) for v in col_vectors]
    grid = (n_pad // block_rows,)
    row_block = lambda *shape: pl.BlockSpec((block_rows, *shape), lambda i: (i,) + (0,) * len(shape))
    whole = lambda *shape: pl.BlockSpec(shape, lambda i: (0,) * len(shape))
    in_specs = [whole(scalars.shape[0]), row_block(d_pad), whole(m_pad, d_pad)]
    in_specs += [row_block() for _ in rows_in] + [whole(m_pad) for _ in cols_in]
    shapes = {"vector": ((n_pad,), row_block()), "rows": ((n_pad, d_pad), row_block(d_pad)),
              "stats": ((grid[0], 2), pl.BlockSpec((1, 2), lambda i: (i, 0)))}  # fmt: skip
    out_shape = [jax.ShapeDtypeStruct(shapes[o][0], _F32) for o in outputs]
    out_specs = [shapes[o][1] for o in outputs]
    bound = functools.partial(kernel, block_cols=block_cols, num_rows=n, num_cols=m, padded_cols=m_pad)
    results = pl.pallas_call(bound, out_shape=out_shape, grid=grid, in_specs=in_specs, out_specs=out_specs,
                             interpret=interpret, compiler_params=_compiler_params(interpret))(
        scalars, xp, yp, *rows_in, *cols_in
    )  # fmt: skip
    trimmed = {
        "vector": lambda a: a[:n],
        "rows": lambda a: a[:n, :dim],
        "stats": lambda a: jnp.sum(a, axis=0),
    }
    return [trimmed[o](r) for o, r in zip(outputs, results)]


def lse_forward_fused(x, y, scale, *, block_rows=BLOCK_ROWS, block_cols=BLOCK_COLS, interpret=False):
    """`(row_lse f32[n], col_lse f32[m])` of `scale · x yᵀ` with two launches of the row kernel."""
    kw = dict(outputs=("vector",), block_rows=block_rows, block_cols=block_cols, interpret=interpret)
    scalars = jnp.reshape(scale, (1,)).astype(_F32)
    (row_lse,) = _launch(_lse_kernel, scalars, x, y, **kw)
    (col_lse,) = _launch(_lse_kernel, scalars, y, x, **kw)
    return row_lse, col_lse


def lse_backward_fused(x, y, scale, row_lse, col_lse, d_row, d_col, *, block_rows=BLOCK_ROWS,
                       block_cols=BLOCK_COLS, interpret=False):  # fmt: skip
    """`(dx, dy, dscale)`, float32, of `Σ d_row·row_lse + Σ d_col·col_lse`."""
    kw = dict(outputs=("rows", "stats"), block_rows=block_rows, block_cols=block_cols, interpret=interpret)
    scalars = jnp.reshape(scale, (1,)).astype(_F32)
    dx, stats = _launch(_lse_grad_kernel, scalars, x, y, (row_lse, d_row), (col_lse, d_col), **kw)
    dy, _ = _launch(_lse_grad_kernel, scalars, y, x, (col_lse, d_col), (row_lse, d_row), **kw)
    return dx, dy, stats[0]


def softplus_forward_fused(
    x, y, scale, bias, *, block_rows=BLOCK_ROWS, block_cols=BLOCK_COLS, interpret=False
):
    scalars = jnp.stack([scale, bias]).astype(_F32)
    (rows,) = _launch(_softplus_kernel, scalars, x, y, outputs=("vector",), block_rows=block_rows,
                      block_cols=block_cols, interpret=interpret)  # fmt: skip
    return jnp.sum(rows)


def softplus_backward_fused(x, y, scale, bias, cotangent, *, block_rows=BLOCK_ROWS, block_cols=BLOCK_COLS,
                            interpret=False):  # fmt: skip
    kw = dict(outputs=("rows", "stats"), block_rows=block_rows, block_cols=block_cols, interpret=interpret)
    scalars = jnp.stack([scale, bias, cotangent]).astype(_F32)
    dx, stats = _launch(_softplus_grad_kernel, scalars, x, y, **kw)
    dy, _ = _launch(_softplus_grad_kernel, scalars, y, x, **kw)
    return dx, dy, stats[0], stats[1]


# ----------------------------------------------------------------------------------------------
# custom_vjp wrappers with the tiled/ contract.


@functools.partial(jax.custom_vjp, nondiff_argnums=(3, 4, 5))
def _lse(x, y, scale, block_rows, block_cols, interpret):
    return lse_forward_fused(x, y, scale, block_rows=block_rows, block_cols=block_cols, interpret=interpret)


def _lse_fwd(x, y, scale, block_rows, block_cols, interpret):
    out = lse_forward_fused(x, y, scale, block_rows=block_rows, block_cols=block_cols, interpret=interpret)
    return out, (x, y, scale, *out)


def _lse_bwd(block_rows, block_cols, interpret, residuals, cotangents):
    x, y, scale, row_lse, col_lse = residuals
    dx, dy, dscale = lse_backward_fused(x, y, scale, row_lse, col_lse, *cotangents, block_rows=block_rows,
                                        block_cols=block_cols, interpret=interpret)  # fmt: skip
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype)


_lse.defvjp(_lse_fwd, _lse_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4, 5, 6))
def _softplus(x, y, scale, bias, block_rows, block_cols, interpret):
    return softplus_forward_fused(
        x, y, scale, bias, block_rows=block_rows, block_cols=block_cols, interpret=interpret
    )


def _softplus_fwd(x, y, scale, bias, block_rows, block_cols, interpret):
    out = softplus_forward_fused(
        x, y, scale, bias, block_rows=block_rows, block_cols=block_cols, interpret=interpret
    )
    return out, (x, y, scale, bias)


def _softplus_bwd(block_rows, block_cols, interpret, residuals, cotangent):
    x, y, scale, bias = residuals
    dx, dy, dscale, dbias = softplus_backward_fused(x, y, scale, bias, cotangent, block_rows=block_rows,
                                                    block_cols=block_cols, interpret=interpret)  # fmt: skip
    return dx.astype(x.dtype), dy.astype(y.dtype), dscale.astype(scale.dtype), dbias.astype(bias.dtype)


_softplus.defvjp(_softplus_fwd, _softplus_bwd)


def pairwise_lse_fused(x, y, scale, *, block_rows=BLOCK_ROWS, block_cols=BLOCK_COLS, interpret=False):
    """The fused-kernel `tiled.pairwise_lse`: same contract, differentiable."""
    return _lse(x, y, jnp.asarray(scale, _F32), block_rows, block_cols, interpret)


def pairwise_softplus_sum_fused(
    x, y, scale, bias, *, block_rows=BLOCK_ROWS, block_cols=BLOCK_COLS, interpret=False
):
    """The fused-kernel `tiled.pairwise_softplus_sum`: same contract, differentiable."""
    return _softplus(
        x, y, jnp.asarray(scale, _F32), jnp.asarray(bias, _F32), block_rows, block_cols, interpret
    )
