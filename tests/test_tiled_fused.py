"""The Pallas kernels against float64 NumPy references, through `tiled`'s public entry points.

`impl="pallas_interpret"` runs the kernels in Pallas's interpret mode on CPU. Set
`CONTRASTIVE_JAX_PALLAS_COMPILED=1` on a CUDA machine (`benchmarks/gpu_check.sh` does) to run the
same tests compiled through Triton (`impl="pallas"`) instead; without a GPU they are skipped then.

Tile sizes, feature padding and forward strips are read from the traced kernels (the shapes a
`pallas_call` is given and the products inside it), so the tests check what runs, not the module's
tuning constants.
"""

import dataclasses
import os
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import contrastive_jax as cj
from contrastive_jax import tiled
from tests.test_tiled import jaxpr_eqns, traced_eqns

COMPILED = os.environ.get("CONTRASTIVE_JAX_PALLAS_COMPILED") == "1"
if COMPILED and jax.default_backend() != "gpu":
    pytest.skip("CONTRASTIVE_JAX_PALLAS_COMPILED=1 needs a GPU backend", allow_module_level=True)
IMPL = "pallas" if COMPILED else "pallas_interpret"

# n, m: ragged against the kernels' 64-row tiles (3 row and 3 column blocks, the last ones
# partly masked). D = 72 in float32 is walked in feature chunks of 16 and padded to 80.
# `test_the_operands_below_reach_every_tile_path` checks that this stays so.
N, M, DIM = 150, 130, 72


def operands(seed, n=N, m=M, dim=DIM, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = cj.l2_normalize(jax.random.normal(keys[0], (n, dim))).astype(dtype)
    y = cj.l2_normalize(jax.random.normal(keys[1], (m, dim))).astype(dtype)
    return x, y, jax.random.normal(keys[2], (n,)), jax.random.normal(keys[3], (m,))


def f64(*arrays):
    return [np.asarray(jnp.asarray(a, jnp.float32), np.float64) for a in arrays]


def numpy_lse(x, y, scale, d_row, d_col):
    """Row/column LSE and the gradients of Σ d_row·row_lse + Σ d_col·col_lse, float64."""
    x, y, d_row, d_col = f64(x, y, d_row, d_col)
    sim = x @ y.T
    logits = scale * sim
    r, c = np.log(np.exp(logits).sum(1)), np.log(np.exp(logits).sum(0))
    g = d_row[:, None] * np.exp(logits - r[:, None]) + d_col[None, :] * np.exp(logits - c)
    return r, c, (scale * g @ y, scale * g.T @ x, np.sum(g * sim))


def numpy_sigmoid(x, y, scale, bias, offset, cotangent):
    x, y = f64(x, y)
    sim = x @ y.T
    rows, cols = np.indices(sim.shape)
    z = np.where(cols == rows + offset, 1.0, -1.0)
    margin = z * (scale * sim + bias)
    g = -cotangent * z / (1.0 + np.exp(margin))
    return np.sum(np.logaddexp(0.0, -margin)), (scale * g @ y, scale * g.T @ x, np.sum(g * sim), np.sum(g))


# ----------------------------------------------------------------------------------------------
# Reading a kernel launch from the jaxpr.


@dataclasses.dataclass(frozen=True)
class Launch:
    """One `pallas_call` as traced: its operand and result shapes, and the products in its body."""

    inputs: tuple[tuple[int, ...], ...]
    outputs: tuple[tuple[int, ...], ...]
    dots: tuple[tuple[tuple[int, ...], tuple[int, ...]], ...]
    num_stages: int | None  # the software-pipelining depth it is compiled with (None: interpreted)

    @property
    def tiles(self) -> tuple[int, int, int]:
        """`(block_rows, block_cols, d_chunk)` from the first product, `S = x_tile · y_tileᵀ`."""
        (block_rows, d_chunk), (block_cols, _) = self.dots[0]
        return block_rows, block_cols, d_chunk


def _num_stages(params) -> int | None:
    compiler = params.get("compiler_params")
    for value in compiler.values() if isinstance(compiler, dict) else (compiler,):
        if getattr(value, "num_stages", None) is not None:
            return value.num_stages
    return None


def launches(fn, *args) -> list[Launch]:
    """Every Pallas kernel launch in the jaxpr of `fn(*args)`, in program order."""
    found = []
    for eqn in traced_eqns(fn, *args):
        if eqn.primitive.name != "pallas_call":
            continue
        body = [e for sub in eqn.params.values() if hasattr(sub, "eqns") for e in jaxpr_eqns(sub)]
        dots = tuple(
            tuple(tuple(v.aval.shape) for v in e.invars) for e in body if e.primitive.name == "dot_general"
        )
        found.append(
            Launch(
                inputs=tuple(tuple(v.aval.shape) for v in eqn.invars),
                outputs=tuple(tuple(v.aval.shape) for v in eqn.outvars),
                dots=dots,
                num_stages=_num_stages(eqn.params),
            )
        )
    return found


def lse_forward_launch(n, m, dim, dtype=jnp.float32, block_size=None, impl=IMPL) -> Launch:
    """The forward kernel of `pairwise_lse` on `[n, dim]` × `[m, dim]` operands (traced, not run)."""
    x, y = jax.ShapeDtypeStruct((n, dim), dtype), jax.ShapeDtypeStruct((m, dim), dtype)
    fn = lambda x, y: tiled.pairwise_lse(x, y, 1.0, block_size=block_size, impl=impl)
    (launch,) = launches(fn, x, y)
    return launch


def strips(launch: Launch, m_pad: int) -> tuple[int, int]:
    """`(programs, rows per program)` of the LSE forward, from its outputs.

    It returns the row LSEs of its padded rows and, per program, column partials (max and sum)
    of the `m_pad` padded columns.
    """
    (rows,), (partial_max,), (partial_sum,) = launch.outputs
    assert partial_max == partial_sum and partial_max % m_pad == 0
    programs = partial_max // m_pad
    return programs, rows // programs


@pytest.fixture
def gpu_backend(monkeypatch):
    """The default backend reported as "gpu", where `impl="pallas"` is accepted (tracing and lowering)."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    x = jnp.ones((2, 2))
    assert tiled.pallas_available(x, x)  # what the kernel's availability depends on


# ----------------------------------------------------------------------------------------------
# Values and gradients.


def test_the_operands_below_reach_every_tile_path():
    launch = lse_forward_launch(N, M, DIM)
    block_rows, block_cols, d_chunk = launch.tiles
    (_, (n_pad, d_pad), (m_pad, _)) = launch.inputs
    assert n_pad > 2 * block_rows and N % block_rows  # several row blocks, the last one ragged
    assert m_pad > 2 * block_cols and M % block_cols  # several column blocks, the last one ragged
    assert d_pad > DIM and d_pad // d_chunk > 1  # padded features, walked in several chunks


@pytest.mark.parametrize("block_size,num_strips", [(None, 3), (64, 3), (100, 2), (1000, 1)])
def test_lse_forward_one_pass_matches_numpy(block_size, num_strips):
    x, y, _, _ = operands(0)
    row, col = tiled.pairwise_lse(x, y, 4.0, block_size=block_size, impl=IMPL)
    want_row, want_col, _ = numpy_lse(x, y, 4.0, np.zeros(N), np.zeros(M))
    np.testing.assert_allclose(row, want_row, rtol=1e-6)
    np.testing.assert_allclose(col, want_col, rtol=1e-6)
    # `block_size` is the rows per forward program, rounded up to whole 64-row blocks.
    launch = lse_forward_launch(N, M, DIM, block_size=block_size)
    assert strips(launch, m_pad=192)[0] == num_strips


def test_strips_bound_the_column_partials():
    # Column partials cost 8·m bytes per program; by default at most 256 programs, 2 KiB per column.
    m = 128
    launch = lse_forward_launch(262_144, m, 512)
    programs, rows = strips(launch, m_pad=m)
    assert programs * rows >= 262_144
    partial_bytes = 4 * sum(np.prod(shape) for shape in launch.outputs[1:])
    assert partial_bytes <= 2048 * m  # 256 programs at most
    assert strips(lse_forward_launch(100, m, 512), m_pad=m) == (2, 64)  # few rows: one block each
    assert strips(lse_forward_launch(10_000, m, 512, block_size=1000), m_pad=m)[1] == 1024  # whole blocks


def test_lse_backward_one_pass_matches_numpy_with_random_cotangents():
    x, y, d_row, d_col = operands(1)
    _, _, want = numpy_lse(x, y, 4.0, d_row, d_col)

    def objective(x, y, scale):
        row_lse, col_lse = tiled.pairwise_lse(x, y, scale, impl=IMPL)
        return jnp.sum(d_row * row_lse) + jnp.sum(d_col * col_lse)

    got = jax.grad(objective, (0, 1, 2))(x, y, 4.0)
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("offset", [0, 67, -3, M])  # inside a tile, across tiles, none (M)
def test_sigmoid_forward_and_backward_match_numpy(offset):
    x, y, _, _ = operands(2)
    fn = lambda x, y, s, b: 0.5 * tiled.pairwise_softplus_sum(x, y, s, b, positive_offset=offset, impl=IMPL)
    value, grads = jax.value_and_grad(fn, (0, 1, 2, 3))(x, y, 5.0, -2.0)
    want_value, want_grads = numpy_sigmoid(x, y, 5.0, -2.0, offset, 0.5)
    np.testing.assert_allclose(value, 0.5 * want_value, rtol=1e-6)
    for a, b in zip(grads, want_grads):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_bf16_operands_accumulate_in_float32():
    x, y, d_row, d_col = operands(3, dtype=jnp.bfloat16)
    row, col = tiled.pairwise_lse(x, y, 10.0, impl=IMPL)
    want_row, want_col, _ = numpy_lse(x, y, 10.0, d_row, d_col)  # on the bf16-rounded inputs
    assert row.dtype == col.dtype == jnp.float32
    np.testing.assert_allclose(row, want_row, rtol=1e-5)
    np.testing.assert_allclose(col, want_col, rtol=1e-5)


# ----------------------------------------------------------------------------------------------
# Tiles: what the kernels are launched with for a feature size and dtype.


def shared_memory_bytes(launch: Launch, itemsize: int) -> int:
    """A program's shared memory: its pipelined operand chunks plus the float32 logit tile."""
    block_rows, block_cols, d_chunk = launch.tiles
    return launch.num_stages * (block_rows + block_cols) * d_chunk * itemsize + block_rows * block_cols * 4


def compiled_lse_forward_launch(dim, dtype):
    """The forward launch as compiled for a GPU (with its pipelining depth), traced on any backend."""
    return lse_forward_launch(64, 64, dim, dtype, impl="pallas")


@pytest.mark.parametrize("dim", [64, 256, 512, 768, 1024, 1280])
@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_tiles_fit_the_shared_memory_budget_and_pad_little(dim, dtype, gpu_backend):
    launch = compiled_lse_forward_launch(dim, dtype)
    (_, (_, d_pad), _) = launch.inputs
    _, _, d_chunk = launch.tiles
    # 96 KiB (module docstring of tiled/_pallas.py): well under an H100's 228 KB per SM, leaving
    # room for Triton's own scratch and a second program.
    assert launch.num_stages >= 2 and shared_memory_bytes(launch, jnp.dtype(dtype).itemsize) <= 96 * 1024
    for side in launch.tiles:  # Triton: powers of two, ≥ 16
        assert side >= 16 and side & (side - 1) == 0
    assert d_pad % d_chunk == 0 and d_pad >= dim
    assert d_pad == dim  # multiples of 64 are never padded (768 stays 768, not 1024)
    assert d_chunk >= 64  # and not walked in needlessly thin chunks


@pytest.mark.parametrize("dim,dtype", [(20, jnp.float32), (100, jnp.float32), (800, jnp.bfloat16)])
def test_odd_feature_sizes_pad_at_most_an_eighth(dim, dtype, gpu_backend):
    launch = compiled_lse_forward_launch(dim, dtype)
    (_, (_, d_pad), _) = launch.inputs
    assert d_pad - dim <= max(dim // 8, 15)
    assert shared_memory_bytes(launch, jnp.dtype(dtype).itemsize) <= 96 * 1024


# ----------------------------------------------------------------------------------------------
# Lowering for CUDA (works without a GPU on the jax versions that allow it).


def lower_for_cuda(step, *specs):
    pytest.importorskip("jax.experimental.pallas.triton")
    try:
        return jax.jit(step).trace(*specs).lower(lowering_platforms=("cuda",))
    except RuntimeError as err:  # newer jax needs a CUDA device to lower Triton kernels
        if "GPU" not in str(err) and "CUDA" not in str(err):
            raise
        pytest.skip(f"this jax cannot lower for CUDA without a GPU: {err}")


def triton_ir(lowered) -> list[str]:
    """The Triton IR (text) of every Pallas kernel of a program lowered for CUDA.

    Each kernel is a `__gpu$xla.gpu.triton` custom call whose backend config carries the kernel
    as MLIR bytecode in the Triton dialect; it is read back with jaxlib's MLIR bindings.
    """
    ir = pytest.importorskip("jaxlib.mlir.ir")
    triton = pytest.importorskip("jaxlib.triton.dialect")
    configs = []

    def visit(op):
        op = getattr(op, "operation", op)
        if op.name == "stablehlo.custom_call":
            target = ir.StringAttr(op.attributes["call_target_name"]).value
            if target == "__gpu$xla.gpu.triton":
                configs.append(ir.DictAttr(op.attributes["mhlo.backend_config"]))
        for region in op.regions:
            for block in region:
                for inner in block:
                    visit(inner)

    visit(lowered.compiler_ir("stablehlo").operation)
    texts = []
    for config in configs:
        context = ir.Context()
        triton.register_dialect(context)
        with context:
            texts.append(str(ir.Module.parse(ir.StringAttr(config["ir"]).value_bytes)))
    return texts


def test_not_supported_on_cpu_and_lowers_for_cuda(request):
    if jax.default_backend() != "gpu":
        assert not tiled.pallas_available(jnp.ones((2, 2)), jnp.ones((2, 2)))
    request.getfixturevalue("gpu_backend")  # from here on, trace as for a GPU
    spec = jax.ShapeDtypeStruct((256, 64), jnp.bfloat16)

    def step(x, y, s):  # all four kernels: both reductions, forward and backward
        lse = lambda x, y, s: sum(map(jnp.sum, tiled.pairwise_lse(x, y, s, impl="pallas")))
        sigmoid = lambda x, y, s: tiled.pairwise_softplus_sum(x, y, s, s, positive_offset=0, impl="pallas")
        return jax.grad(lse, (0, 1, 2))(x, y, s), jax.grad(sigmoid, (0, 1, 2))(x, y, s)

    lowered = lower_for_cuda(step, spec, spec, jax.ShapeDtypeStruct((), jnp.float32))
    assert lowered.as_text().count("__gpu$xla.gpu.triton") == 4  # each kernel a Triton custom call
    launched = re.findall(r"num_stages = (\d+)", lowered.as_text())
    assert len(launched) == 4 and all(int(stages) >= 2 for stages in launched)  # software-pipelined


@pytest.mark.parametrize("precision", ["float32", "tf32"])
def test_triton_dots_are_ieee_float32_unless_tf32_is_asked(precision, gpu_backend):
    # Triton omits `inputPrecision` when it is its default, IEEE (full float32).
    spec = jax.ShapeDtypeStruct((128, 768), jnp.float32)

    def step(x, y, s):
        def lse(x, y, s):
            row, col = tiled.pairwise_lse(x, y, s, impl="pallas", precision=precision)
            return jnp.sum(row) + jnp.sum(col)

        sigmoid = tiled.pairwise_softplus_sum(
            x, y, s, s, positive_offset=0, impl="pallas", precision=precision
        )
        return jax.grad(lse, (0, 1))(x, y, s), sigmoid

    kernels = triton_ir(lower_for_cuda(step, spec, spec, jax.ShapeDtypeStruct((), jnp.float32)))
    dots = [line for text in kernels for line in text.splitlines() if "tt.dot " in line]
    assert len(kernels) == 3 and len(dots) >= 4, dots  # forward S; backward S, dx and dy; sigmoid S
    assert all(("inputPrecision = tf32" in line) == (precision == "tf32") for line in dots), dots
