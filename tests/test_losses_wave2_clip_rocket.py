"""clip-rocket's objectives: loop references, the spec's oracles, properties, devices, bf16 and bad input."""

import doctest

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax import losses, parallel
from contrastive_jax.losses import _clip_rocket
from tests import references as ref_core
from tests import references_wave2_clip_rocket as ref

# The shared oracle inputs: unit rows, B = 3, D = 2 (y is x rotated by +36.87°).
X = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
Y = np.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
W = np.array([[0.6, -0.8], [-0.8, 0.6], [1.0, 0.0]])


def raw(seed, *shape):
    return np.random.default_rng(seed).normal(size=shape)


def unit(seed, *shape):
    v = raw(seed, *shape)
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


# Jitted once per module: tests of the same shapes and settings share one compilation.
CL2L = jax.jit(losses.cl2l_loss, static_argnames=("label_smoothing", "reduction"))
CLIP = jax.jit(losses.clip_loss)
BARLIP = jax.jit(losses.barlip_loss)
SIAMLIP = jax.jit(losses.siamlip_loss)
SWALIP = jax.jit(losses.swalip_loss)
SINKHORN = jax.jit(losses.sinkhorn_knopp, static_argnames=("epsilon", "num_iters"))


def test_spec_oracles_for_the_library_and_the_loop_references():
    s = np.stack
    cases = [
        (CL2L(X, Y, s([W, X]), s([Y, W]), 10.0, 10.0), ref.cl2l(X, Y, [W, X], [Y, W], 10, 10, 0.1), 2.9167043),
        (CL2L(X, Y, s([W, X]), s([Y, W]), 10.0, 10.0, label_smoothing=0.0),
         ref.cl2l(X, Y, [W, X], [Y, W], 10, 10, 0.0), 2.6930006),
        (CL2L(X, Y, s([W, X]), s([Y, W]), 1 / 0.07, 10.0, reduction="sum"),
         ref.cl2l(X, Y, [W, X], [Y, W], 1 / 0.07, 10, 0.1, "sum"), 6.1371009),
        (CL2L(X, Y, None, None, 10.0, 10.0), ref.cl2l(X, Y, [], [], 10, 10, 0.1), 1.3111575),
        (BARLIP(X, Y), ref.barlip(X, Y), 0.018913889),
        (BARLIP(X, Y, v_image_local=W[None], v_text_local=s([X, Y])), ref.barlip(X, Y, [W], [X, Y]), 0.036561956),
        (SIAMLIP(X, W, X, Y), ref.siamlip(X, W, X, Y), 1.0),
        (SIAMLIP(X, W, X, Y, p_image_local=Y[None], p_text_local=X[None], v_image_local=Y[None], v_text_local=W[None]),
         ref.siamlip(X, W, X, Y, [Y], [X], [Y], [W]), 1.1),
        (SWALIP(s([X, W]), s([Y, X]), 10.0), ref.swalip([X, W], [Y, X], 10), 4.6874953),
        (SWALIP(s([X, X]), s([Y, Y]), 10.0), ref.swalip([X, X], [Y, Y], 10), 0.59617096),
    ]  # fmt: skip
    for got, loop, oracle in cases:
        np.testing.assert_allclose(loop, oracle, rtol=2e-7)
        np.testing.assert_allclose(got, oracle, rtol=1e-6)
    targets = [
        [0.99999931, 6.9e-07, 0.0],
        [0.79956274, 0.2000593, 0.00037797],
        [2.557e-05, 0.46792351, 0.53205092],
    ]
    np.testing.assert_allclose(ref.sinkhorn([X @ Y.T]), targets, atol=5e-9)
    np.testing.assert_allclose(SINKHORN(X @ Y.T), targets, atol=2e-7)


RANDOM = {  # name -> (library fn, float64 reference, random inputs, indices of inputs whose gradient is compared)
    "cl2l": (lambda *a: losses.cl2l_loss(*a, label_smoothing=0.2), lambda *a: ref.cl2l(*a, 0.2),
             (unit(0, 3, 2), unit(1, 3, 2), unit(2, 2, 3, 2), unit(3, 2, 3, 2), 3.0, 4.0), range(6)),
    "barlip": (lambda a, b, c, d: losses.barlip_loss(a, b, v_image_local=c, v_text_local=d, lambda_offdiag=0.2,
                                                     scale=0.5),
               lambda a, b, c, d: ref.barlip(a, b, c, d, 0.2, 0.5),
               (raw(0, 3, 2), raw(1, 3, 2), raw(2, 2, 3, 2), raw(3, 1, 3, 2)), range(4)),
    # The v's are stop-gradient targets: their gradient is exactly 0 (checked below), the p's match.
    "siamlip": (lambda *a: losses.siamlip_loss(*a[:4], p_image_local=a[4], p_text_local=a[5], v_image_local=a[6],
                                               v_text_local=a[7]),
                ref.siamlip, tuple(raw(k, 3, 2) for k in range(4)) + tuple(raw(k, 2, 3, 2) for k in range(4, 8)),
                (0, 1, 4, 5)),
    "swalip": (lambda a, b, s: losses.swalip_loss(a, b, s, epsilon=0.1, sinkhorn_iters=4),
               lambda a, b, s: ref.swalip(a, b, s, 0.1, 4), (unit(4, 2, 3, 2), unit(5, 2, 3, 2), 3.0), range(3)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(RANDOM))
def test_random_inputs_match_the_references_in_value_and_central_difference_gradient(name):
    fn, reference, inputs, compared = RANDOM[name]
    args = [jnp.asarray(a, jnp.float32) for a in inputs]
    value, grads = jax.jit(jax.value_and_grad(fn, tuple(range(len(args)))))(*args)
    np.testing.assert_allclose(value, reference(*inputs), rtol=1e-5)
    if name == "swalip":  # the Sinkhorn targets carry no gradient: hold them at their value
        targets = ref.swalip_targets(inputs[0], inputs[1], 0.1, 4)
        reference = lambda a, b, s: ref.swalip(a, b, s, 0.1, 4, targets=targets)
    for index in compared:
        numeric = ref_core.numeric_grad(reference, inputs, index)
        np.testing.assert_allclose(grads[index], numeric, rtol=2e-4, atol=2e-6)
    if name == "siamlip":
        for index in (2, 3, 6, 7):
            assert np.all(np.asarray(grads[index]) == 0.0)


def test_cl2l_reduces_to_clip_loss():
    clip = CLIP(X, Y, 10.0)
    np.testing.assert_allclose(CL2L(X, Y, None, None, 10.0, 3.0), clip, rtol=1e-6)
    empty = np.zeros((0, 3, 2))
    np.testing.assert_allclose(CL2L(X, Y, empty, empty, 10.0, 3.0), clip, rtol=1e-6)
    # Local views equal to the global ones at the same scale, without smoothing: every term is CLIP.
    same = np.stack([X, X]), np.stack([Y, Y])
    np.testing.assert_allclose(CL2L(X, Y, *same, 10.0, 10.0, label_smoothing=0.0), clip, rtol=1e-6)
    h_image, h_text = np.stack([W, X]), np.stack([Y, W])
    mean = CL2L(X, Y, h_image, h_text, 10.0, 3.0)
    np.testing.assert_allclose(CL2L(X, Y, h_image, h_text, 10.0, 3.0, reduction="sum"), 2 * mean, rtol=1e-6)


def test_barlip_is_zero_for_whitened_pairs_and_does_not_standardise():
    z = np.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # zᵀz / N = I
    assert float(BARLIP(z, z)) == pytest.approx(0.0, abs=1e-9)
    # 2z has C = 4I: κ Σ_d (1 − 4)² = 0.025 · 18 (a loss that standardised columns would give 0).
    assert float(BARLIP(2 * z, 2 * z)) == pytest.approx(0.45, rel=1e-6)


def test_siamlip_bounds_and_scale_invariance():
    p, q, v, u = (raw(k, 3, 2) for k in range(4))
    assert float(SIAMLIP(p, q, q, p)) == pytest.approx(0.0, abs=1e-6)
    assert float(SIAMLIP(p, q, -q, -p)) == pytest.approx(4.0, rel=1e-6)
    rescaled = [a * np.exp(raw(5 + k, 3, 1)) for k, a in enumerate((p, q, v, u))]
    np.testing.assert_allclose(SIAMLIP(*rescaled), SIAMLIP(p, q, v, u), rtol=1e-6)


def test_sinkhorn_matches_the_loop_rows_sum_to_one_no_gradient_finite_at_extremes():
    logits = raw(3, 3, 3)
    for iters, eps in ((1, 0.3), (4, 0.5)):
        np.testing.assert_allclose(SINKHORN(logits, epsilon=eps, num_iters=iters), ref.sinkhorn([logits], eps, iters),
                                   rtol=1e-5, atol=1e-7)  # fmt: skip
    np.testing.assert_allclose(SINKHORN(logits).sum(axis=1), 1.0, rtol=1e-6)
    grad = jax.jit(jax.grad(lambda g: jnp.sum(losses.sinkhorn_knopp(g) * jnp.arange(3.0))))(logits)
    assert np.all(np.asarray(grad) == 0.0)
    extreme = SINKHORN(1e3 * logits, epsilon=1e-4, num_iters=10)  # exp(G/ε) would overflow
    assert np.all(np.isfinite(extreme))
    np.testing.assert_allclose(extreme.sum(axis=1), 1.0, rtol=1e-6)
    # The reference's all_reduce over two shards of rows gives the single-worker targets.
    g = raw(4, 6, 6)
    np.testing.assert_allclose(ref.sinkhorn([g[:3], g[3:]]), ref.sinkhorn([g]), rtol=1e-12)


def test_swalip_of_identical_views_is_each_pair_against_its_own_targets():
    own = 0.0
    for cos in (X @ Y.T, Y @ X.T):
        log_p = 10.0 * cos - np.log(np.sum(np.exp(10.0 * cos), axis=1, keepdims=True))
        own += 0.5 * -np.mean(np.sum(np.asarray(SINKHORN(cos)) * log_p, axis=1))
    np.testing.assert_allclose(SWALIP(np.stack([X, X]), np.stack([Y, Y]), 10.0), own, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# Devices: one compiled function per entry checks 2, 4 and 8 devices (axes "x", ("x","y"),
# ("x","y","z") of a 2×2×2 mesh), each against the single-device loss, value and gradient.

AXES = (("x",), ("x", "y"), ("x", "y", "z"))
B_GLOBAL, N_VIEWS = 8, 2
_G = [unit(30 + k, B_GLOBAL, 3).astype(np.float32) for k in range(2)]
_L = [unit(40 + k, N_VIEWS, B_GLOBAL, 3).astype(np.float32) for k in range(4)]
_R = [raw(50 + k, B_GLOBAL, 3).astype(np.float32) for k in range(4)]
_RL = [raw(60 + k, N_VIEWS, B_GLOBAL, 3).astype(np.float32) for k in range(4)]
SCALE, LOCAL_SCALE = np.float32(6.0), np.float32(9.0)

# name -> (loss of (args, axis_name, **settings), args, batch dimension of each arg (None: replicated),
#          settings per run: runs 0, 1, 2 use 2, 4, 8 devices, a further run 8 devices again)
DISTRIBUTED = {
    "cl2l": (lambda a, **kw: losses.cl2l_loss(*a, **kw), (_G[0], _G[1], _L[0], _L[1], SCALE, LOCAL_SCALE),
             (0, 0, 1, 1, None, None), ({}, {}, {}, {"exchange": "ring"})),
    "barlip": (lambda a, **kw: losses.barlip_loss(a[0], a[1], v_image_local=a[2], v_text_local=a[3][:1], **kw),
               (_R[0], _R[1], _RL[0], _RL[1]), (0, 0, 1, 1), ({}, {}, {})),
    "siamlip": (lambda a, **kw: losses.siamlip_loss(*a[:4], p_image_local=a[4], p_text_local=a[5],
                                                    v_image_local=a[6], v_text_local=a[7], **kw),
                (*_R, *_RL), (0, 0, 0, 0, 1, 1, 1, 1), ({}, {}, {})),
    "swalip": (lambda a, **kw: losses.swalip_loss(*a, **kw), (_L[2], _L[3], LOCAL_SCALE), (1, 1, None),
               ({}, {}, {})),
}  # fmt: skip


def _spec(axes, dim):
    return P() if dim is None else P(*([None] * dim), axes)


@pytest.mark.parametrize("name", sorted(DISTRIBUTED))
def test_under_shard_map_on_2_4_8_devices_equals_single_device(name):
    fn, args, dims, settings = DISTRIBUTED[name]
    runs = [(AXES[min(i, 2)], kw) for i, kw in enumerate(settings)]
    mesh = parallel.data_mesh(("x", "y", "z"), shape=(2, 2, 2))

    def per_device(*copies):
        return tuple(fn(c, axis_name=axes, **kw) for c, (axes, kw) in zip(copies, runs))

    in_specs = tuple(tuple(_spec(axes, d) for d in dims) for axes, _ in runs)
    sharded = jax.shard_map(per_device, mesh=mesh, in_specs=in_specs, out_specs=(P(),) * len(runs))

    def total(*copies):
        values = sharded(*copies)
        return sum(values), values

    argnums = tuple(range(len(runs)))
    (_, values), grads = jax.jit(jax.value_and_grad(total, argnums, has_aux=True))(*([args] * len(runs)))
    expected, expected_grads = jax.jit(jax.value_and_grad(lambda a: fn(a)))(args)
    for value, grad in zip(values, grads):
        np.testing.assert_allclose(value, expected, rtol=1e-5)
        for g, e in zip(grad, expected_grads):
            np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-6)


def test_sinkhorn_under_shard_map_on_2_4_8_devices_equals_single_device():
    logits = raw(70, B_GLOBAL, 5).astype(np.float32)
    mesh = parallel.data_mesh(("x", "y", "z"), shape=(2, 2, 2))
    per_device = lambda *g: tuple(losses.sinkhorn_knopp(t, epsilon=0.2, axis_name=a) for t, a in zip(g, AXES))
    specs = tuple(P(a) for a in AXES)
    got = jax.jit(jax.shard_map(per_device, mesh=mesh, in_specs=specs, out_specs=specs))(*([logits] * 3))
    expected = SINKHORN(logits, epsilon=0.2)
    for targets in got:
        np.testing.assert_allclose(targets, expected, rtol=1e-5, atol=1e-7)


def test_bf16_inputs_give_float32_within_1e5_of_the_reference_on_rounded_inputs():
    bf = lambda a: jnp.asarray(a, jnp.bfloat16)
    rounded = lambda a: np.asarray(bf(a), np.float64)
    z_i, z_t, h_i, h_t = unit(0, 3, 2), unit(1, 3, 2), unit(2, 2, 3, 2), unit(3, 2, 3, 2)
    v_i, v_t = raw(4, 3, 2), raw(5, 3, 2)
    cases = [
        (CL2L(bf(z_i), bf(z_t), bf(h_i), bf(h_t), 8.0, 10.0),
         ref.cl2l(rounded(z_i), rounded(z_t), rounded(h_i), rounded(h_t), 8.0, 10.0, 0.1)),
        (BARLIP(bf(v_i), bf(v_t)), ref.barlip(rounded(v_i), rounded(v_t))),
        (SIAMLIP(bf(v_i), bf(v_t), bf(z_i), bf(z_t)),
         ref.siamlip(rounded(v_i), rounded(v_t), rounded(z_i), rounded(z_t))),
        (SWALIP(bf(h_i), bf(h_t), 10.0), ref.swalip(rounded(h_i), rounded(h_t), 10.0)),
    ]  # fmt: skip
    for got, expected in cases:
        assert got.dtype == jnp.float32
        np.testing.assert_allclose(got, expected, rtol=1e-5)
    logits = v_i @ v_t.T
    targets = SINKHORN(bf(logits), epsilon=0.5)
    assert targets.dtype == jnp.float32
    np.testing.assert_allclose(targets, ref.sinkhorn([rounded(logits)], 0.5), atol=1e-5)


def test_no_nan_for_tiny_temperatures_ties_and_zero_rows():
    tie = np.full((3, 2), np.sqrt(0.5), np.float32)  # every row identical
    other = unit(9, 3, 2).astype(np.float32)
    views = np.stack([tie, tie])
    checks = [
        lambda a, b: losses.cl2l_loss(a, b, jnp.stack([a, b]), jnp.stack([b, a]), 1e4, 1e4),
        lambda a, b: losses.swalip_loss(jnp.stack([a, b]), jnp.stack([b, a]), 1e4, epsilon=1e-4),
        lambda a, b: losses.barlip_loss(a, b, v_image_local=views, v_text_local=views),
        lambda a, b: losses.siamlip_loss(a, b, jnp.zeros_like(a), b),  # a zero target row normalises to 0
    ]
    everything = jax.jit(lambda a, b: [jax.value_and_grad(fn, (0, 1))(a, b) for fn in checks])
    for value, grads in everything(tie, other) + everything(tie, tie):
        assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)


def test_bad_inputs_raise_clear_errors():
    g, l2, l3 = X.astype(np.float32), np.stack([X, Y]).astype(np.float32), np.stack([X, Y, W])
    cases = [
        (lambda: losses.cl2l_loss(g, g, l2, None, 1.0, 1.0), ValueError, "both image_local and text_local"),
        (lambda: losses.cl2l_loss(g, g, g, g, 1.0, 1.0), ValueError, "rank 3"),
        (lambda: losses.cl2l_loss(g, g, l2, l2[:1], 1.0, 1.0), ValueError, "same number of views"),
        (lambda: losses.cl2l_loss(g, g, l2[:, :2], l2[:, :2], 1.0, 1.0), ValueError, "B, D"),
        (lambda: losses.cl2l_loss(g, g, np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), 1.0, 1.0), ValueError, "B, D"),
        (lambda: losses.cl2l_loss(g, g, l2, l2, 1.0, 1.0, label_smoothing=1.0), ValueError, "label_smoothing"),
        (lambda: losses.cl2l_loss(g, g, l2, l2, 1.0, 1.0, reduction="avg"), ValueError, "reduction"),
        (lambda: losses.cl2l_loss(g, g, l2, l2, 1.0, np.ones(2)), ValueError, "local_logit_scale"),
        (lambda: losses.cl2l_loss(g, g[:2], l2, l2, 1.0, 1.0), ValueError, "same shape"),
        (lambda: losses.cl2l_loss(g, g, l2.astype(np.int32), l2, 1.0, 1.0), TypeError, "image_local"),
        (lambda: losses.barlip_loss(g, g[:, :1]), ValueError, "same shape"),
        (lambda: losses.barlip_loss(l2, l2), ValueError, "rank 2"),
        (lambda: losses.barlip_loss(g, g, v_text_local=l2), ValueError, "v_image_local"),
        (lambda: losses.barlip_loss(g, g, v_image_local=l2, v_text_local=l2[:, 1:]), ValueError, "B, D"),
        (lambda: losses.barlip_loss(g, g, v_image_local=g, v_text_local=g), ValueError, "rank 3"),
        (lambda: losses.barlip_loss(g, g, scale=0.0), ValueError, "scale"),
        (lambda: losses.barlip_loss(g, g, lambda_offdiag=-1.0), ValueError, "lambda_offdiag"),
        (lambda: losses.barlip_loss(g.astype(np.int32), g), TypeError, "v_image"),
        (lambda: losses.siamlip_loss(g, g, g, g[:, :1]), ValueError, "p_image and v_text"),
        (lambda: losses.siamlip_loss(g, g[:2], g[:2], g), ValueError, "same B rows"),
        (lambda: losses.siamlip_loss(l2, l2, l2, l2), ValueError, "rank 2"),
        (lambda: losses.siamlip_loss(g, g, g.astype(np.int32), g), TypeError, "v_image"),
        (lambda: losses.siamlip_loss(g, g, g, g, p_image_local=l2, v_text_local=l2[:, :2], p_text_local=l2,
                                     v_image_local=l2), ValueError, "B, D"),
        (lambda: losses.siamlip_loss(g, g, g, g, p_image_local=l2, p_text_local=l2, v_image_local=l2),
         ValueError, "missing v_text_local"),
        (lambda: losses.siamlip_loss(g, g, g, g, p_image_local=l2, v_text_local=l2, p_text_local=l2[:1],
                                     v_image_local=l2[:1]), ValueError, "same number of views"),
        (lambda: losses.sinkhorn_knopp(np.zeros(3)), ValueError, "rank 2"),
        (lambda: losses.sinkhorn_knopp(g, epsilon=0.0), ValueError, "epsilon"),
        (lambda: losses.sinkhorn_knopp(g, num_iters=0), ValueError, "num_iters"),
        (lambda: losses.sinkhorn_knopp(g, num_iters=1.5), ValueError, "num_iters"),
        (lambda: losses.sinkhorn_knopp(np.zeros((2, 2), np.int32)), TypeError, "logits"),
        (lambda: losses.swalip_loss(l3, l3, 1.0), ValueError, "exactly 2"),
        (lambda: losses.swalip_loss(l2, l2[:, :2], 1.0), ValueError, "same shape"),
        (lambda: losses.swalip_loss(g, g, 1.0), ValueError, "rank 3"),
        (lambda: losses.swalip_loss(l2, l2, 1.0, epsilon=-1.0), ValueError, "epsilon"),
        (lambda: losses.swalip_loss(l2, l2, 1.0, sinkhorn_iters=0), ValueError, "sinkhorn_iters"),
        (lambda: losses.swalip_loss(l2[:, :0], l2[:, :0], 1.0), ValueError, "at least one sample"),
        (lambda: losses.swalip_loss(l2, l2, np.ones(3)), ValueError, "local_logit_scale"),
        (lambda: losses.swalip_loss(l2.astype(np.int32), l2, 1.0), TypeError, "image_local"),
    ]  # fmt: skip
    for call, error, match in cases:
        with pytest.raises(error, match=match):
            call()
    mesh = parallel.data_mesh("data", devices=jax.devices()[:2])
    l4 = unit(1, 2, 4, 2).astype(np.float32)
    with pytest.raises(ValueError, match="ring"):
        jax.shard_map(lambda a, b: losses.swalip_loss(a, b, 1.0, axis_name="data", exchange="ring"), mesh=mesh,
                      in_specs=(P(None, "data"), P(None, "data")), out_specs=P())(l4, l4)  # fmt: skip


def test_docstring_examples_run():
    assert doctest.testmod(_clip_rocket).failed == 0
