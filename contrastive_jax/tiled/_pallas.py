"""Pallas (Triton) GPU kernels for the pairwise reductions: logits never reach HBM.

Reached explicitly with `impl="pallas"` (`impl="auto"` does not pick it until it has been run
and measured on a GPU; `impl="pallas_interpret"` runs it in Pallas's interpret mode on any
backend, which is how the tests check it).

Design (8·n·m·D FLOPs per forward + backward, n×m logits, D features):

* LSE forward, one pass over the tiles (2·n·m·D): a program owns a strip of `strip_rows` rows
  and walks it in `block_rows` sub-blocks; for each sub-block it loops over the column blocks,
  computes the tile `S = x yᵀ` once, keeps the rows' online (max, sum) in registers and folds
  the tile's column (max, sum) into the strip's column partials in global memory (only this
  program touches them). XLA merges the `⌈n/strip_rows⌉` partials into the column LSE. The
  partials hold `8·m·⌈n/strip_rows⌉` bytes; by default at most 256 strips, i.e. 2 KiB per
  column (512 MiB at m = 262,144).
* Backward, one pass (6·n·m·D), FlashAttention-2 style: a program owns a block of
  `block_cols` columns and loops over all row blocks; it recomputes `S` once per tile, forms
  `G = ∂/∂L` there, accumulates `dy = s·Gᵀx` into its own rows of dy (no other program writes
  them) and adds `dx = s·G y` into dx with `atomic_add` (float32; the summation order, hence the
  last bits of dx, varies between runs). `ds = Σ G∘S` (and SigLIP's `db = Σ G`) come out per
  program and XLA sums them.
* Sigmoid: the forward is one pass producing per-row sums (2·n·m·D); the backward is the same
  column-block program with `G = −g·z·σ(−z·(L + b))`, the positive pairs `j = i + offset`
  taking label `z = +1` inside the tile, so their value and gradient stay exact.

Tiles come from D and the dtype (`choose_tiles`): block rows/cols of 64 and a feature chunk
`d_chunk` (a power of two, as Triton requires for every array a kernel loads or stores) such
that the operand tiles of all pipeline stages plus the float32 logit tile fit `SMEM_BUDGET`;
the feature axis is walked in chunks, so D is padded only to a multiple of the chunk, which is
chosen to waste at most `max(D // 8, 15)` columns (768 stays 768). Float32 operands multiply in full float32
(Triton "ieee") unless `precision="tf32"`; bf16 operands multiply in bf16 with float32
accumulation.

References:
  Dao, "FlashAttention-2: Faster Attention with Better Parallelism and Work Partitioning", 2023
  (one program per key block, atomic dQ); Cheng et al., "Breaking the Memory Barrier: Near
  Infinite Batch Size Scaling for Contrastive Loss" (Inf-CL), 2024.
"""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
from jax.experimental import pallas as pl

from contrastive_jax import _vma
from contrastive_jax.tiled._blockwise import dot_precision

_F32 = jnp.float32
SUPPORTED_DTYPES = (jnp.dtype(jnp.float32), jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16))
# Shared memory a program may use for its pipelined operand tiles plus one float32 logit tile:
# well under an H100's 228 KB per SM (and an A100's 164 KB), leaving room for Triton's own
# scratch (layout conversions, reductions) and for two programs per SM.
SMEM_BUDGET = 96 * 1024
MAX_STRIPS = 256


@dataclasses.dataclass(frozen=True)
class Tiles:
    """Tile sizes of the kernels: `[block_rows, d_chunk]` of x against `[block_cols, d_chunk]` of y."""

    block_rows: int = 64
    block_cols: int = 64
    d_chunk: int = 64
    d_pad: int = 64
    stages: int = 2

    def smem_bytes(self, itemsize: int) -> int:
        """Shared memory of one program: pipelined operand chunks plus the f32 logit tile."""
        operands = self.stages * (self.block_rows + self.block_cols) * self.d_chunk * itemsize
        return operands + self.block_rows * self.block_cols * 4


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def choose_tiles(
    dim: int, dtype, budget: int = SMEM_BUDGET, block_rows: int = 64, block_cols: int = 64
) -> Tiles:
    """Tiles for feature size `dim` and operand `dtype` under a shared-memory `budget` (bytes).

    `d_chunk` is the largest power of two (16 … 256) whose tiles fit the budget and that pads D by
    at most `max(D // 8, 15)` (a chunk of 16 always qualifies); `d_pad` is D rounded up to it.
    With 64×64 tiles: `d_chunk` 64 for float32, 128 for bf16/fp16.
    """
    itemsize = jnp.dtype(dtype).itemsize
    chunk = 256
    while chunk > 16 and Tiles(block_rows, block_cols, chunk, chunk).smem_bytes(itemsize) > budget:
        chunk //= 2
    while chunk > 16 and _round_up(dim, chunk) - dim > max(dim // 8, 15):
        chunk //= 2
    return Tiles(block_rows, block_cols, chunk, _round_up(dim, chunk))


def pallas_supported(x: jax.Array, y: jax.Array) -> bool:
    """True on a CUDA GPU backend for float32/bfloat16/float16 operands with the Triton lowering."""
    try:
        import jax.experimental.pallas.triton  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    dtypes_ok = jnp.dtype(x.dtype) in SUPPORTED_DTYPES and jnp.dtype(y.dtype) in SUPPORTED_DTYPES
    return jax.default_backend() == "gpu" and dtypes_ok


def _compiler_params(tiles: Tiles, interpret: bool):
    if interpret:
        return None
    from jax.experimental.pallas import triton as pltriton

    return pltriton.CompilerParams(num_warps=4, num_stages=tiles.stages)


def _atomic_add(ref, idx, value):
    from jax.experimental.pallas import triton as pltriton

    pltriton.atomic_add(ref, idx, value)


# ----------------------------------------------------------------------------------------------
# In-kernel helpers. `x_ref`/`y_ref` are padded to `d_pad` features; `prec` is a lax precision.


def _similarity(x_ref, x0, y_ref, y0, tiles: Tiles, prec):
    """`f32[block_rows, block_cols]`: rows `x0…` of x against rows `y0…` of y, chunk by chunk."""

    def chunk(k, acc):
        cols = pl.ds(k * tiles.d_chunk, tiles.d_chunk)
        a = x_ref[pl.ds(x0, tiles.block_rows), cols]
        b = y_ref[pl.ds(y0, tiles.block_cols), cols]
        return acc + jax.lax.dot_general(
            a, b, (((1,), (1,)), ((), ())), precision=prec, preferred_element_type=_F32
        )

    init = jnp.zeros((tiles.block_rows, tiles.block_cols), _F32)
    return jax.lax.fori_loop(0, tiles.d_pad // tiles.d_chunk, chunk, init)


def _signs(row0, col0, tiles: Tiles, offset):
    """Label signs of a tile: −1 at the positive pairs `col = row + offset`, +1 elsewhere."""
    rows = row0 + jnp.arange(tiles.block_rows)
    cols = col0 + jnp.arange(tiles.block_cols)
    return jnp.where(cols[None, :] - rows[:, None] == offset, -1.0, 1.0).astype(_F32)


def _lse_forward_kernel(scal_ref, x_ref, y_ref, row_ref, cmax_ref, csum_ref, *, tiles, strip, n, m, prec):
    scale = scal_ref[0]
    bc = tiles.block_cols
    num_col_blocks = cmax_ref.shape[0] // bc
    strip_start = pl.program_id(0) * strip

    def clear(j, _):
        cmax_ref[pl.ds(j * bc, bc)] = jnp.full((bc,), -jnp.inf, _F32)
        csum_ref[pl.ds(j * bc, bc)] = jnp.zeros((bc,), _F32)

    jax.lax.fori_loop(0, num_col_blocks, clear, None)

    def row_block(r, _):
        r0 = r * tiles.block_rows
        row_ok = strip_start + r0 + jnp.arange(tiles.block_rows) < n

        def col_block(j, carry):
            row_max, row_sum = carry
            c0 = j * bc
            valid = row_ok[:, None] & (c0 + jnp.arange(bc) < m)[None, :]
            logits = jnp.where(valid, scale * _similarity(x_ref, r0, y_ref, c0, tiles, prec), -jnp.inf)
            new_max = jnp.maximum(row_max, jnp.max(logits, axis=1))
            shift = jnp.where(new_max > -jnp.inf, new_max, 0.0)
            row_sum = row_sum * jnp.exp(row_max - shift) + jnp.sum(jnp.exp(logits - shift[:, None]), axis=1)
            col_max = cmax_ref[pl.ds(c0, bc)]
            new_col_max = jnp.maximum(col_max, jnp.max(logits, axis=0))
            col_shift = jnp.where(new_col_max > -jnp.inf, new_col_max, 0.0)
            col_sum = csum_ref[pl.ds(c0, bc)] * jnp.exp(col_max - col_shift)
            csum_ref[pl.ds(c0, bc)] = col_sum + jnp.sum(jnp.exp(logits - col_shift[None, :]), axis=0)
            cmax_ref[pl.ds(c0, bc)] = new_col_max
            return new_max, row_sum

        init = (jnp.full((tiles.block_rows,), -jnp.inf, _F32), jnp.zeros((tiles.block_rows,), _F32))
        row_max, row_sum = jax.lax.fori_loop(0, num_col_blocks, col_block, init)
        row_ref[pl.ds(r0, tiles.block_rows)] = row_max + jnp.log(row_sum)

    jax.lax.fori_loop(0, strip // tiles.block_rows, row_block, None)


def _softplus_forward_kernel(scal_ref, off_ref, x_ref, y_ref, row_ref, *, tiles, n, m, prec):
    scale, bias, offset = scal_ref[0], scal_ref[1], off_ref[0]
    bc = tiles.block_cols
    r0 = pl.program_id(0) * tiles.block_rows
    row_ok = r0 + jnp.arange(tiles.block_rows) < n

    def col_block(j, total):
        c0 = j * bc
        valid = row_ok[:, None] & (c0 + jnp.arange(bc) < m)[None, :]
        signs = _signs(r0, c0, tiles, offset)
        logits = scale * _similarity(x_ref, 0, y_ref, c0, tiles, prec) + bias
        return total + jnp.sum(jnp.where(valid, jax.nn.softplus(signs * logits), 0.0), axis=1)

    init = jnp.zeros((tiles.block_rows,), _F32)
    row_ref[...] = jax.lax.fori_loop(0, y_ref.shape[0] // bc, col_block, init)


def _backward_kernel(scal_ref, off_ref, x_ref, y_ref, *refs, tiles, n, m, prec, grad_fn, num_vectors):
    """One program per column block: dy in its own rows, dx by atomic adds, (ds, db) per program."""
    vectors, (_, dx_ref, dy_ref, stats_ref) = refs[:num_vectors], refs[num_vectors:]
    scale = scal_ref[0]
    bc, br, dk = tiles.block_cols, tiles.block_rows, tiles.d_chunk
    num_chunks = tiles.d_pad // dk
    c0 = pl.program_id(0) * bc
    col_ok = c0 + jnp.arange(bc) < m
    dtype = x_ref.dtype

    def clear(k, _):
        dy_ref[:, pl.ds(k * dk, dk)] = jnp.zeros((bc, dk), _F32)

    jax.lax.fori_loop(0, num_chunks, clear, None)

    def row_block(r, stats):
        r0 = r * br
        sim = _similarity(x_ref, r0, y_ref, 0, tiles, prec)
        grad = grad_fn(sim, scal_ref, off_ref[0], vectors, r0, c0, tiles)
        grad = jnp.where((r0 + jnp.arange(br) < n)[:, None] & col_ok[None, :], grad, 0.0)
        grad_op = grad.astype(dtype)

        def chunk(k, _):
            cols = pl.ds(k * dk, dk)
            dx_part = jax.lax.dot_general(grad_op, y_ref[:, cols], (((1,), (0,)), ((), ())), precision=prec,
                                          preferred_element_type=_F32)  # fmt: skip
            _atomic_add(dx_ref, (pl.ds(r0, br), cols), scale * dx_part)
            dy_part = jax.lax.dot_general(grad_op, x_ref[pl.ds(r0, br), cols], (((0,), (0,)), ((), ())),
                                          precision=prec, preferred_element_type=_F32)  # fmt: skip
            dy_ref[:, cols] = dy_ref[:, cols] + scale * dy_part

        jax.lax.fori_loop(0, num_chunks, chunk, None)
        return stats[0] + jnp.sum(grad * sim), stats[1] + jnp.sum(grad)

    zero = jnp.zeros((), _F32)
    ds, db = jax.lax.fori_loop(0, x_ref.shape[0] // br, row_block, (zero, zero))
    stats_ref[...] = jnp.where(jnp.arange(2) == 0, ds, db)[None, :]


def _lse_grad(sim, scal_ref, offset, vectors, r0, c0, tiles):
    del offset
    row_lse_ref, d_row_ref, col_lse_ref, d_col_ref = vectors
    logits = scal_ref[0] * sim
    rows, cols = pl.ds(r0, tiles.block_rows), pl.ds(c0, tiles.block_cols)
    row_part = d_row_ref[rows][:, None] * jnp.exp(logits - row_lse_ref[rows][:, None])
    return row_part + d_col_ref[cols][None, :] * jnp.exp(logits - col_lse_ref[cols][None, :])


def _softplus_grad(sim, scal_ref, offset, vectors, r0, c0, tiles):
    del vectors
    scale, bias, cotangent = scal_ref[0], scal_ref[1], scal_ref[2]
    signs = _signs(r0, c0, tiles, offset)
    return cotangent * signs * jax.nn.sigmoid(signs * (scale * sim + bias))


# ----------------------------------------------------------------------------------------------
# Launchers: pad, launch, unpad.


def _prepare(x, y, tiles: Tiles, row_multiple: int):
    dtype = jnp.promote_types(x.dtype, y.dtype)
    n_pad, m_pad = _round_up(x.shape[0], row_multiple), _round_up(y.shape[0], tiles.block_cols)
    xp = jnp.pad(x.astype(dtype), ((0, n_pad - x.shape[0]), (0, tiles.d_pad - x.shape[1])))
    yp = jnp.pad(y.astype(dtype), ((0, m_pad - y.shape[0]), (0, tiles.d_pad - y.shape[1])))
    return xp, yp


def _scalars(*values):
    """`f32[4]` (a power-of-two length for Triton) holding the kernel's float scalars."""
    values = [jnp.asarray(v, _F32) for v in values]
    return jnp.stack(values + [jnp.zeros((), _F32)] * (4 - len(values)))


def _call(kernel, args, out_shapes, **kwargs):
    """`pallas_call` with all operands of one vma type (inside shard_map) and outputs of that type."""
    args = _vma.match_varying(*args)
    manual = jax.typeof(args[0]).manual_axis_type
    outs = [jax.ShapeDtypeStruct(shape, _F32, manual_axis_type=manual) for shape in out_shapes]
    return pl.pallas_call(kernel, out_shape=outs, **kwargs)(*args)


def _whole(shape):
    return pl.BlockSpec(shape, lambda *_: (0,) * len(shape))


def strip_rows_for(n: int, tiles: Tiles, strip_rows: int | None) -> int:
    """Rows per forward program: `strip_rows` rounded to whole row blocks, or ≤ MAX_STRIPS strips."""
    blocks = -(-n // tiles.block_rows)
    per_strip = -(-blocks // MAX_STRIPS) if strip_rows is None else -(-strip_rows // tiles.block_rows)
    return tiles.block_rows * max(1, min(per_strip, blocks))


def lse_forward(x, y, scale, *, tiles: Tiles, strip_rows=None, precision="float32", interpret=False):
    """`(row_lse f32[n], col_lse f32[m])` of `scale · x yᵀ` in one pass over the tiles."""
    n, m = x.shape[0], y.shape[0]
    strip = strip_rows_for(n, tiles, strip_rows)
    xp, yp = _prepare(x, y, tiles, strip)
    num_strips, m_pad = xp.shape[0] // strip, yp.shape[0]
    kernel = functools.partial(_lse_forward_kernel, tiles=tiles, strip=strip, n=n, m=m,
                               prec=dot_precision(xp.dtype, precision))  # fmt: skip
    partial_spec = pl.BlockSpec((m_pad,), lambda s: (s,))
    row_lse, col_max, col_sum = _call(
        kernel,
        (_scalars(scale), xp, yp),
        [(xp.shape[0],), (num_strips * m_pad,), (num_strips * m_pad,)],
        grid=(num_strips,),
        in_specs=[_whole((4,)), pl.BlockSpec((strip, tiles.d_pad), lambda s: (s, 0)), _whole(yp.shape)],
        out_specs=[pl.BlockSpec((strip,), lambda s: (s,)), partial_spec, partial_spec],
        interpret=interpret,
        compiler_params=_compiler_params(tiles, interpret),
    )
    col_max, col_sum = col_max.reshape(num_strips, m_pad)[:, :m], col_sum.reshape(num_strips, m_pad)[:, :m]
    top = jnp.max(col_max, axis=0)
    col_lse = top + jnp.log(jnp.sum(col_sum * jnp.exp(col_max - top), axis=0))
    return row_lse[:n], col_lse


def softplus_forward(x, y, scale, bias, offset, *, tiles: Tiles, precision="float32", interpret=False):
    """`Σ_ij softplus(z_ij · (scale · x_i·y_j + bias))` (z = +1 at `j = i + offset`), one pass."""
    n, m = x.shape[0], y.shape[0]
    xp, yp = _prepare(x, y, tiles, tiles.block_rows)
    kernel = functools.partial(_softplus_forward_kernel, tiles=tiles, n=n, m=m,
                               prec=dot_precision(xp.dtype, precision))  # fmt: skip
    (rows,) = _call(
        kernel,
        (_scalars(scale, bias), jnp.reshape(offset, (1,)).astype(jnp.int32), xp, yp),
        [(xp.shape[0],)],
        grid=(xp.shape[0] // tiles.block_rows,),
        in_specs=[
            _whole((4,)),
            _whole((1,)),
            pl.BlockSpec((tiles.block_rows, tiles.d_pad), lambda i: (i, 0)),
            _whole(yp.shape),
        ],  # fmt: skip
        out_specs=[pl.BlockSpec((tiles.block_rows,), lambda i: (i,))],
        interpret=interpret,
        compiler_params=_compiler_params(tiles, interpret),
    )
    return jnp.sum(rows)


def _backward(grad_fn, scalars, offset, x, y, row_vectors, col_vectors, *, tiles, precision, interpret):
    """Runs `_backward_kernel`: `(dx f32[n, D], dy f32[m, D], stats f32[2])`."""
    n, m, dim = x.shape[0], y.shape[0], x.shape[1]
    xp, yp = _prepare(x, y, tiles, tiles.block_rows)
    n_pad, m_pad = xp.shape[0], yp.shape[0]
    rows_in = [jnp.pad(v.astype(_F32), (0, n_pad - n)) for v in row_vectors]
    cols_in = [jnp.pad(v.astype(_F32), (0, m_pad - m)) for v in col_vectors]
    vectors = rows_in + cols_in
    num_programs = m_pad // tiles.block_cols
    kernel = functools.partial(_backward_kernel, tiles=tiles, n=n, m=m, prec=dot_precision(xp.dtype, precision),
                               grad_fn=grad_fn, num_vectors=len(vectors))  # fmt: skip
    col_block = pl.BlockSpec((tiles.block_cols, tiles.d_pad), lambda j: (j, 0))
    in_specs = [_whole((4,)), _whole((1,)), _whole(xp.shape), col_block]
    in_specs += [_whole(v.shape) for v in vectors] + [_whole(xp.shape)]
    offset = jnp.reshape(offset, (1,)).astype(jnp.int32)
    dx, dy, stats = _call(
        kernel,
        (scalars, offset, xp, yp, *vectors, jnp.zeros(xp.shape, _F32)),
        [xp.shape, yp.shape, (num_programs, 2)],
        grid=(num_programs,),
        in_specs=in_specs,
        out_specs=[_whole(xp.shape), col_block, pl.BlockSpec((1, 2), lambda j: (j, 0))],
        # dx starts from zeros and every program adds into it.
        input_output_aliases={4 + len(vectors): 0},
        interpret=interpret,
        compiler_params=_compiler_params(tiles, interpret),
    )
    return dx[:n, :dim], dy[:m, :dim], jnp.sum(stats, axis=0)


def lse_backward(x, y, scale, row_lse, col_lse, d_row, d_col, *, tiles: Tiles, precision="float32",
                 interpret=False):  # fmt: skip
    """`(dx, dy, dscale)`, float32, of `Σ d_row·row_lse + Σ d_col·col_lse`, in one pass."""
    dx, dy, stats = _backward(_lse_grad, _scalars(scale), 0, x, y, (row_lse, d_row), (col_lse, d_col),
                              tiles=tiles, precision=precision, interpret=interpret)  # fmt: skip
    return dx, dy, stats[0]


def softplus_backward(x, y, scale, bias, offset, cotangent, *, tiles: Tiles, precision="float32",
                      interpret=False):  # fmt: skip
    """`(dx, dy, dscale, dbias)`, float32, of `cotangent · Σ softplus(z · (L + b))`, in one pass."""
    dx, dy, stats = _backward(_softplus_grad, _scalars(scale, bias, cotangent), offset, x, y, (), (),
                              tiles=tiles, precision=precision, interpret=interpret)  # fmt: skip
    return dx, dy, stats[0], stats[1]
