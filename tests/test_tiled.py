"""Pairwise reductions: dense, blockwise and the Pallas kernel (interpret mode) against float64 NumPy."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import contrastive_jax as cj
from contrastive_jax import losses, tiled


def operands(seed, n=13, m=11, dim=6, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = cj.l2_normalize(jax.random.normal(keys[0], (n, dim))).astype(dtype)
    y = cj.l2_normalize(jax.random.normal(keys[1], (m, dim))).astype(dtype)
    return x, y, jax.random.normal(keys[2], (n,)), jax.random.normal(keys[3], (m,))


def numpy_lse(x, y, scale, d_row, d_col):
    """Value and gradients (x, y, scale) of Σ d_row·row_lse + Σ d_col·col_lse, float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    d_row, d_col = np.asarray(d_row, np.float64), np.asarray(d_col, np.float64)
    sim = x @ y.T
    logits = scale * sim
    r = np.log(np.exp(logits).sum(1))
    c = np.log(np.exp(logits).sum(0))
    g = d_row[:, None] * np.exp(logits - r[:, None]) + d_col[None, :] * np.exp(logits - c)
    return (r, c), np.sum(d_row * r) + np.sum(d_col * c), (scale * g @ y, scale * g.T @ x, np.sum(g * sim))


def numpy_lse_grad_logits(x, y, scale, d_row, d_col):
    logits = scale * x @ y.T
    r = np.log(np.exp(logits).sum(1, keepdims=True))
    c = np.log(np.exp(logits).sum(0, keepdims=True))
    return np.asarray(d_row)[:, None] * np.exp(logits - r) + np.asarray(d_col)[None, :] * np.exp(logits - c)


def numpy_sigmoid(x, y, scale, bias, offset):
    """Value and gradients of Σ_ij softplus(−z_ij·L_ij), z = +1 at j = i + offset, float64."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    sim = x @ y.T
    rows, cols = np.indices(sim.shape)
    z = np.where(cols == rows + offset, 1.0, -1.0)
    margin = z * (scale * sim + bias)
    value = np.sum(np.logaddexp(0.0, -margin))
    g = -z / (1.0 + np.exp(margin))  # d softplus(−m)/dL = −z·σ(−m)
    return value, (scale * g @ y, scale * g.T @ x, np.sum(g * sim), np.sum(g))


LSE_PATHS = [("dense", None), ("blockwise", 1), ("blockwise", 4), ("blockwise", 13), ("blockwise", 64),
             ("pallas_interpret", None), ("pallas_interpret", 7)]  # fmt: skip


def lse_objective(impl, block_size, d_row, d_col, **kw):
    def objective(x, y, scale):
        row_lse, col_lse = tiled.pairwise_lse(x, y, scale, block_size=block_size, impl=impl, **kw)
        return jnp.sum(d_row * row_lse) + jnp.sum(d_col * col_lse)

    return objective


@pytest.mark.parametrize("impl,block_size", LSE_PATHS)  # blocks divide n=13 or not, larger than n
def test_pairwise_lse_matches_numpy(impl, block_size):
    x, y, d_row, d_col = operands(0)
    value, grads = jax.jit(jax.value_and_grad(lse_objective(impl, block_size, d_row, d_col), (0, 1, 2)))(
        x, y, 3.0
    )
    _, want_value, want_grads = numpy_lse(x, y, 3.0, d_row, d_col)
    np.testing.assert_allclose(value, want_value, rtol=1e-5)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("offset", [None, 0, 3, -2])
@pytest.mark.parametrize("impl,block_size", [("dense", None), ("blockwise", 3), ("pallas_interpret", None)])
def test_pairwise_softplus_matches_numpy(impl, block_size, offset):
    x, y, _, _ = operands(2)
    fn = lambda x, y, s, b: (
        0.7
        * tiled.pairwise_softplus_sum(x, y, s, b, positive_offset=offset, block_size=block_size, impl=impl)
    )
    value, grads = jax.value_and_grad(fn, (0, 1, 2, 3))(x, y, 4.0, -1.5)
    want_value, want_grads = numpy_sigmoid(x, y, 4.0, -1.5, y.shape[0] if offset is None else offset)
    np.testing.assert_allclose(value, 0.7 * want_value, rtol=1e-5)
    for got, want in zip(grads, want_grads):
        np.testing.assert_allclose(got, 0.7 * want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_clip_and_siglip_with_block_size_equal_dense(smoothing):
    x, y, _, _ = operands(3, n=10, m=10)
    for fn, extra in (
        (lambda *a, **k: losses.clip_loss(*a, label_smoothing=smoothing, **k), (6.0,)),
        (losses.siglip_loss, (6.0, -3.0)),
    ):
        argnums = tuple(range(2 + len(extra)))
        dense = jax.value_and_grad(fn, argnums)(x, y, *extra)
        for kw in (dict(block_size=3), dict(block_size=3, impl="pallas_interpret")):
            blocked = jax.value_and_grad(lambda *a: fn(*a, **kw), argnums)(x, y, *extra)
            for a, b in zip(jax.tree.leaves(blocked), jax.tree.leaves(dense)):
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("impl,block_size", [("dense", None), ("blockwise", 3), ("pallas_interpret", None)])
def test_siglip_confident_positive_pairs_keep_their_gradient(impl, block_size):
    # x = y = I: L_ii = s + b = z (confident positives), L_ij = b = −z (confident negatives).
    # loss = B·softplus(−z); d/ds = −σ(−z); d/db = (B − 2)·σ(−z). In float32 softplus(z) − z is 0
    # beyond z ≈ 17, which would drop the positives' share entirely.
    batch = 4
    eye = jnp.eye(batch)
    for z in (15.0, 20.0, 30.0):
        loss = lambda s, b: losses.siglip_loss(eye, eye, s, b, block_size=block_size, impl=impl)
        value, (d_scale, d_bias) = jax.value_and_grad(loss, (0, 1))(jnp.float32(2 * z), jnp.float32(-z))
        sigma = 1.0 / (1.0 + np.exp(np.float64(z)))
        np.testing.assert_allclose(value, batch * np.log1p(np.exp(-np.float64(z))), rtol=1e-5)
        np.testing.assert_allclose(d_scale, -sigma, rtol=1e-5)
        np.testing.assert_allclose(d_bias, (batch - 2) * sigma, rtol=1e-5)


def bf16_rounded(*arrays):
    return [np.asarray(a.astype(jnp.float32), np.float64) for a in arrays]


@pytest.mark.parametrize("impl,block_size", [("dense", None), ("blockwise", 16), ("pallas_interpret", None)])
def test_bf16_operands_give_float32_lse(impl, block_size):
    # The reference uses the bf16-rounded inputs in float64: what is left is float32 accumulation
    # error (~1e-7), far inside 1e-5. A log-sum-exp computed in bf16 is off by ~1e-3 (below).
    x, y, d_row, d_col = operands(4, n=64, m=48, dim=32, dtype=jnp.bfloat16)
    (row, col) = tiled.pairwise_lse(x, y, 10.0, block_size=block_size, impl=impl)
    assert row.dtype == col.dtype == jnp.float32
    (want_row, want_col), _, want_grads = numpy_lse(*bf16_rounded(x, y), 10.0, d_row, d_col)
    np.testing.assert_allclose(row, want_row, rtol=1e-5)
    np.testing.assert_allclose(col, want_col, rtol=1e-5)
    grads = jax.grad(lse_objective(impl, block_size, d_row, d_col), (0, 1))(x, y, 10.0)
    # The backward pass feeds G = ∂/∂L to the matrix unit in bf16 (as FlashAttention does with P)
    # and rounds dx, dy to bf16: each term of s·G y is off by at most 2⁻⁸ of its magnitude.
    xs, ys = bf16_rounded(x, y)
    abs_g = np.abs(numpy_lse_grad_logits(xs, ys, 10.0, d_row, d_col))
    bounds = (10.0 * abs_g @ np.abs(ys), 10.0 * abs_g.T @ np.abs(xs))
    for got, want, bound in zip(grads, want_grads, bounds):
        assert got.dtype == jnp.bfloat16
        err = np.abs(np.asarray(got, np.float64) - want)
        assert np.all(err <= 2**-8 * (bound + np.abs(want)) + 1e-6), np.max(err / (bound + np.abs(want)))
    value = tiled.pairwise_softplus_sum(x, y, 10.0, -3.0, positive_offset=0, block_size=block_size, impl=impl)
    np.testing.assert_allclose(value, numpy_sigmoid(*bf16_rounded(x, y), 10.0, -3.0, 0)[0], rtol=1e-5)


def test_bf16_log_sum_exp_would_fail_the_bf16_test():
    x, y, _, _ = operands(4, n=64, m=48, dim=32, dtype=jnp.bfloat16)
    bf16_row = jax.nn.logsumexp(10.0 * jnp.dot(x, y.T, preferred_element_type=jnp.bfloat16), axis=1)
    (want_row, _), _, _ = numpy_lse(*bf16_rounded(x, y), 10.0, np.zeros(64), np.zeros(48))
    rel = np.max(np.abs(np.asarray(bf16_row, np.float64) - want_row) / np.abs(want_row))
    assert rel > 1e-4, rel  # so test_bf16_operands_give_float32_lse (rtol 1e-5) would catch it


def jaxpr_eqns(jaxpr):
    """Every equation of `jaxpr` and of the jaxprs inside it (custom VJPs, loops, Pallas kernels)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for value in eqn.params.values():
            for sub in value if isinstance(value, (tuple, list)) else (value,):
                if hasattr(sub, "eqns"):
                    yield from jaxpr_eqns(sub)
                elif hasattr(sub, "jaxpr") and hasattr(sub.jaxpr, "eqns"):
                    yield from jaxpr_eqns(sub.jaxpr)


def traced_eqns(fn, *args):
    return list(jaxpr_eqns(jax.make_jaxpr(fn)(*args).jaxpr))


def implementation(fn, *args):
    """Which implementation a traced reduction ran, read from its jaxpr (forward and, under grad,
    backward): a Pallas kernel, a custom VJP over a `scan` of row blocks, or neither (dense)."""
    names = {eqn.primitive.name for eqn in traced_eqns(fn, *args)}
    if "pallas_call" in names:
        return "pallas"
    if "scan" in names:
        return "blockwise"
    return "dense"


def test_implementation_reader_tells_the_three_apart():
    x, y, d_row, d_col = operands(5)
    for impl, block_size in (("dense", None), ("blockwise", 4), ("pallas_interpret", 4)):
        grad = jax.grad(lse_objective(impl, block_size, d_row, d_col), (0, 1, 2))
        assert implementation(grad, x, y, 2.0) == impl.removesuffix("_interpret")


@pytest.fixture
def gpu_backend(monkeypatch):
    """The default backend reported as "gpu", where `impl="pallas"` is accepted (for tracing only)."""
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert tiled.pallas_available(*operands(5)[:2])  # what the kernel's availability depends on


def test_auto_is_dense_or_blockwise_even_where_pallas_could_run(gpu_backend):
    x, y, d_row, d_col = operands(5)
    for block_size, want in ((None, "dense"), (4, "blockwise")):
        step = jax.grad(lse_objective("auto", block_size, d_row, d_col), (0, 1, 2))
        assert implementation(step, x, y, 2.0) == want
        sigmoid = lambda x, y: tiled.pairwise_softplus_sum(x, y, 2.0, -1.0, block_size=block_size)
        assert implementation(jax.grad(sigmoid, (0, 1)), x, y) == want
        clip = lambda x, y: losses.clip_loss(x[:6], y[:6], 2.0, block_size=block_size)  # its default impl
        assert implementation(jax.grad(clip, (0, 1)), x, y) == want
    assert implementation(jax.grad(lse_objective("pallas", 4, d_row, d_col)), x, y, 2.0) == "pallas"


def test_resolve_tiling_is_the_choice_the_entry_points_make(gpu_backend):
    x, y, _, _ = operands(5)
    assert tiled.resolve_tiling("auto", None, "float32", x, y) == tiled.Tiling("dense")
    assert tiled.resolve_tiling("auto", 4, "tf32", x, y) == tiled.Tiling("blockwise", 4, "tf32")
    assert tiled.resolve_tiling("pallas", 4, "float32", x, y) == tiled.Tiling("pallas", 4)
    assert tiled.resolve_tiling("pallas_interpret", None, "float32", x, y) == tiled.Tiling(
        "pallas", interpret=True
    )


@pytest.mark.parametrize("impl,block_size", [("dense", None), ("blockwise", 4), ("pallas_interpret", 5)])
def test_tiling_raw_passes_match_the_differentiable_entry_points(impl, block_size):
    # The contract `parallel`'s ring builds its custom VJP on: forward and backward passes that
    # give the values and gradients of `pairwise_lse` / `pairwise_softplus_sum`.
    x, y, d_row, d_col = operands(7)
    tiling = tiled.resolve_tiling(impl, block_size, "float32", x, y)
    row_lse, col_lse = tiling.lse_forward(x, y, 3.0)
    (want_row, want_col), _, want_grads = numpy_lse(x, y, 3.0, d_row, d_col)
    np.testing.assert_allclose(row_lse, want_row, rtol=1e-5)
    np.testing.assert_allclose(col_lse, want_col, rtol=1e-5)
    for got, want in zip(tiling.lse_backward(x, y, 3.0, row_lse, col_lse, d_row, d_col), want_grads):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    offset = jnp.int32(2)
    want_value, want_grads = numpy_sigmoid(x, y, 3.0, -1.0, 2)
    np.testing.assert_allclose(tiling.softplus_forward(x, y, 3.0, -1.0, offset), want_value, rtol=1e-5)
    for got, want in zip(tiling.softplus_backward(x, y, 3.0, -1.0, offset, 0.5), want_grads):
        np.testing.assert_allclose(got, 0.5 * want, rtol=1e-5, atol=1e-6)


def test_pallas_is_refused_with_a_clear_error_on_cpu():
    if jax.default_backend() == "gpu":
        pytest.skip("the Pallas kernel can run here")
    x, y, _, _ = operands(5)
    assert not tiled.pallas_available(x, y)
    with pytest.raises(ValueError, match="CUDA GPU.*pallas_interpret"):
        tiled.pairwise_lse(x, y, 1.0, block_size=4, impl="pallas")
    with pytest.raises(ValueError, match="CUDA GPU"):
        losses.clip_loss(x[:6], y[:6], 1.0, impl="pallas")
    with pytest.raises(ValueError, match="CUDA GPU"):
        losses.siglip_loss(x[:6], y[:6], 1.0, 0.0, block_size=2, impl="pallas")


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(impl="fused"), "renamed: use impl='pallas'"),
        (dict(impl="xla"), "renamed: use impl='blockwise'"),
        (dict(impl="triton"), "impl must be one of"),
        (dict(impl="blockwise"), "needs block_size"),
        (dict(block_size=0), "positive integer"),
        (dict(precision="bf16"), "precision must be one of"),
    ],
)
def test_bad_options_raise(kwargs, match):
    x, y, _, _ = operands(5)
    with pytest.raises(ValueError, match=match):
        tiled.pairwise_lse(x, y, 1.0, **kwargs)


def test_bad_operands_raise():
    x, y, _, _ = operands(5)
    with pytest.raises(ValueError, match="same feature size"):
        tiled.pairwise_lse(x, y[:, :3], 1.0)
    with pytest.raises(ValueError, match="positive_offset"):
        tiled.pairwise_softplus_sum(x, y, 1.0, 0.0, positive_offset=1.5)


def dot_precisions(fn, *args):
    """Precisions of every dot_general in the jaxpr of `fn`, Pallas kernel bodies included."""
    return [eqn.params["precision"] for eqn in traced_eqns(fn, *args) if eqn.primitive.name == "dot_general"]


@pytest.mark.parametrize("impl,block_size", [("dense", None), ("blockwise", 4), ("pallas_interpret", None)])
def test_float32_multiplies_in_full_float32_unless_tf32_is_asked(impl, block_size):
    x, y, d_row, d_col = operands(6)
    highest = (jax.lax.Precision.HIGHEST, jax.lax.Precision.HIGHEST)
    default = jax.lax.Precision.DEFAULT
    for precision, want in (("float32", highest), ("tf32", None)):
        step = jax.grad(lse_objective(impl, block_size, d_row, d_col, precision=precision), (0, 1))
        found = dot_precisions(step, x, y, 2.0)
        assert len(found) >= 3  # forward S, and S, dx, dy in the backward pass
        if want is None:
            assert all(p in (None, default, (default, default)) for p in found), found
        else:
            assert all(p == want for p in found), found


def compiled_temp_bytes(fn, *args):
    return jax.jit(fn).lower(*args).compile().memory_analysis().temp_size_in_bytes


def test_tiled_clip_temporary_memory_is_linear_in_batch():
    batch, dim, block = 16384, 64, 256
    x = jax.ShapeDtypeStruct((batch, dim), jnp.float32)
    scale = jax.ShapeDtypeStruct((), jnp.float32)
    step = lambda bs: jax.value_and_grad(lambda x, y, s: losses.clip_loss(x, y, s, block_size=bs), (0, 1, 2))
    tiled_bytes = compiled_temp_bytes(step(block), x, x, scale)
    # A handful of [block, B] float32 buffers plus [B, D] accumulators; nothing of size B².
    linear_bound = 8 * 4 * batch * (block + dim)
    assert tiled_bytes < linear_bound, (tiled_bytes, linear_bound)
    assert tiled_bytes < batch * batch * 4 / 16
    dense_bytes = compiled_temp_bytes(step(None), x, x, scale)
    assert dense_bytes > batch * batch * 4  # the dense loss does hold the B×B logits
