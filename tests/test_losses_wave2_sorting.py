"""CACR and GroCo (with the odd-even differentiable sort): loop references, properties, devices, bad input."""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from contrastive_jax import losses, parallel
from contrastive_jax.losses import _sorting, _transport
from tests import references as ref_core
from tests import references_wave2_sorting as ref

# The spec's shared oracle inputs: unit rows, y = x rotated by +36.87°.
X = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
Y = np.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
W = np.array([[0.6, -0.8], [-0.8, 0.6], [1.0, 0.0]])


def stack(*views):
    return jnp.asarray(np.stack(views), jnp.float32)


def raw(seed, *shape):
    return np.asarray(jax.random.normal(jax.random.key(seed), shape), np.float64)


def test_oracle_values():
    # The float64 loops reproduce the spec's oracles ...
    np.testing.assert_allclose(ref.cacr_terms((X, Y)), [0.4, -0.96118583], rtol=1e-7)
    np.testing.assert_allclose(ref.cacr_terms((X, Y, W)), [1.76431332, -0.89406054], rtol=1e-7)
    np.testing.assert_allclose(ref.cacr_terms((X, Y), tau_plus=0.1)[1], -1.1124287, rtol=1e-7)
    anchor = lambda a, p, k: np.mean(
        [ref.groco_anchor(a[i], [p[i]], np.delete(a, i, 0), k, 1.0) for i in range(3)]
    )
    np.testing.assert_allclose([anchor(X, W, 2), anchor(W, X, 2), anchor(X, W, 1)],
                               [0.56520146, 0.36975057, 1.06737102], rtol=1e-7)  # fmt: skip
    groco_cases = [((X, W), 2, None, 0.46747602), ((X, Y), 2, None, 0.34894007), ((X, Y, W), 2, None, 0.45980678),
                   ((X, Y, W), 2, 2, 0.36729373), ((X, W), 1, None, 0.5 * (1.06737102 + anchor(W, X, 1)))]  # fmt: skip
    for views, k, num_pos, expected in groco_cases:
        np.testing.assert_allclose(ref.groco(views, topk=k, num_positive_views=num_pos), expected, rtol=1e-7)

    # ... and so does the library (jitted: one compilation for all of them).
    @jax.jit
    def library():
        xy, xyw = stack(X, Y), stack(X, Y, W)
        return {
            "cacr_xy": jnp.stack(losses.cacr_terms(xy)),
            "cacr_xyw": jnp.stack([*losses.cacr_terms(xyw), losses.cacr_loss(xyw)]),
            "debiased": jnp.stack([*losses.cacr_terms(xy, debiased_tau_plus=0.1),
                                   losses.cacr_loss(xy, debiased_tau_plus=0.1)]),
            "grad_x0": jax.grad(lambda x: losses.cacr_loss(jnp.concatenate([x[None], xyw[1:]])))(xyw[0])[0],
            "groco": jnp.stack([losses.groco_loss(stack(*v), topk_neg=k, num_positive_views=p)
                                for v, k, p, _ in groco_cases]),
        }  # fmt: skip

    got = library()
    np.testing.assert_allclose(got["cacr_xy"], [0.4, -0.96118583], rtol=1e-6)
    np.testing.assert_allclose(got["cacr_xyw"], [1.76431332, -0.89406054, 0.87025278], rtol=1e-6)
    np.testing.assert_allclose(got["debiased"], [0.4, -1.1124287, -0.7124287], rtol=1e-6)
    np.testing.assert_allclose(got["grad_x0"], [-0.12352891, 0.30598463], rtol=2e-5)
    np.testing.assert_allclose(got["groco"], [c[-1] for c in groco_cases], rtol=1e-6)


CACR_OPTIONS = {
    "defaults": {},
    "scales": {"alpha": 0.5, "beta": 2.0, "tau_pos": 3.0, "tau_neg": 0.5},
    "debiased": {"debiased_tau_plus": 0.1},
    "detached": {"detach_weights": True},
}


def test_cacr_matches_loop_values_and_gradients():
    # Raw (not unit) rows: the loss uses the squared distances as they are, like the authors' code.
    views = raw(0, 3, 4, 3)
    got = jax.jit(lambda v: {name: (jax.value_and_grad(lambda v, o=o: losses.cacr_loss(v, **o))(v),
                                    losses.cacr_terms(v, **o)) for name, o in CACR_OPTIONS.items()}
                  )(jnp.asarray(views, jnp.float32))  # fmt: skip
    for name, options in CACR_OPTIONS.items():
        kw = dict(options)
        frozen = views if kw.pop("detach_weights", False) else None  # detached: weights held at their value
        kw["tau_plus"] = kw.pop("debiased_tau_plus", None)
        (value, grad), terms = got[name]
        np.testing.assert_allclose(value, ref.cacr(views, **kw), rtol=1e-5)
        np.testing.assert_allclose(terms, ref.cacr_terms(views, **kw), rtol=1e-5)
        numeric = ref_core.numeric_grad(lambda v, kw=kw, f=frozen: ref.cacr(v, frozen=f, **kw), (views,), 0)
        np.testing.assert_allclose(grad, numeric, rtol=2e-4, atol=2e-6)
    # The weights carry gradient unless detached (the values agree).
    assert np.max(np.abs(got["defaults"][0][1] - got["detached"][0][1])) > 1e-3


def test_cacr_properties():
    many = jnp.asarray(raw(1, 4, 5, 3), jnp.float32)
    temperatures = (0.0, 1.0, 8.0)

    @jax.jit
    def library():
        xy = stack(X, Y)
        tied = jax.value_and_grad(lambda v: losses.cacr_loss(v, tau_pos=1e4, tau_neg=1e4))(
            jnp.ones((3, 4, 2))
        )
        return {
            "uniform": jnp.stack(losses.cacr_terms(xy, tau_pos=7.0, tau_neg=0.0)),
            "sharp": losses.cacr_terms(xy, tau_neg=500.0)[1],
            "sweep": jnp.array([losses.cacr_terms(many, tau_pos=t, tau_neg=t) for t in temperatures]),
            "tied": tied,
        }

    got = library()
    # V = 2: one positive, L_CA = mean ‖x_i − y_i‖² whatever τ⁺; τ⁻ = 0: uniform weights over the negatives.
    uniform = -np.mean([np.sum((X[i] - Y[j]) ** 2) for i in range(3) for j in range(3) if i != j])
    np.testing.assert_allclose(got["uniform"], [np.mean(np.sum((X - Y) ** 2, 1)), uniform], rtol=1e-6)
    # τ⁻ → ∞: the nearest negative only.
    nearest = -np.mean([min(np.sum((X[i] - Y[j]) ** 2) for j in range(3) if j != i) for i in range(3)])
    np.testing.assert_allclose(nearest, -0.693333, atol=1e-6)
    np.testing.assert_allclose(got["sharp"], nearest, atol=1e-6)
    # Far positives and near negatives weigh more: both terms grow with their temperature; L_CR ≤ 0.
    assert np.all(np.diff(got["sweep"], axis=0) > 0) and np.all(got["sweep"][:, 1] <= 0)
    # Ties and sharp weights stay finite.
    value, grad = got["tied"]
    assert value == 0.0 and np.all(np.isfinite(grad))


def test_diffsort_odd_even():
    batch = raw(2, 2, 3, 5)
    mix = raw(3, 6, 5)
    shuffled = np.array([[0.3, -1.0, 2.0, 0.5], [2.0, 1.0, 0.0, -1.0]])  # reversed: every layer swaps
    weighted = lambda u: jnp.dot(soft_sort(u)[0], mix[0]) + jnp.sum(soft_sort(u)[1] * mix[1:])
    soft_sort = lambda u: losses.diffsort_odd_even(u, steepness=2.5)
    hard_sort = lambda u: losses.diffsort_odd_even(u, steepness=1e9)[1]

    @jax.jit
    def library():
        return {
            "oracle": losses.diffsort_odd_even(jnp.array([0.2, 0.9, 0.5]), steepness=1.0),
            "batch": soft_sort(jnp.asarray(batch, jnp.float32)),
            "grad": jax.grad(weighted)(jnp.asarray(batch[0, 0], jnp.float32)),
            "hard": hard_sort(jnp.asarray(shuffled, jnp.float32)),
            "tail": losses.diffsort_odd_even(jnp.array([1.0, 0.0]), steepness=1e8)[1],
        }

    got = library()
    expected = [[0.44433334, 0.38497037, 0.17069629], [0.30601786, 0.30611708, 0.38786506],
                [0.2496488, 0.30891255, 0.44143865]]  # fmt: skip
    np.testing.assert_allclose(ref.diffsort_odd_even([0.2, 0.9, 0.5], 1.0)[1], expected, rtol=1e-7)
    values, perm = got["oracle"]
    np.testing.assert_allclose(perm, expected, rtol=1e-6)
    np.testing.assert_allclose(values, np.array([0.2, 0.9, 0.5]) @ np.array(expected), rtol=1e-6)  # u @ P
    # Any leading shape, float32; doubly stochastic; equal to the comparator-by-comparator loop.
    values, perm = got["batch"]
    assert (
        values.shape == (2, 3, 5) and perm.shape == (2, 3, 5, 5) and values.dtype == perm.dtype == jnp.float32
    )
    for index in np.ndindex(2, 3):
        loop_values, loop_perm = ref.diffsort_odd_even(batch[index], 2.5)
        np.testing.assert_allclose(values[index], loop_values, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(perm[index], loop_perm, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np.sum(perm, -1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(np.sum(perm, -2), 1.0, rtol=1e-6)
    # Gradient through both outputs, against central differences of the loop.
    loop = lambda u: float(np.dot(ref.diffsort_odd_even(u, 2.5)[0], mix[0])
                           + np.sum(np.array(ref.diffsort_odd_even(u, 2.5)[1]) * mix[1:]))  # fmt: skip
    np.testing.assert_allclose(
        got["grad"], ref_core.numeric_grad(loop, (batch[0, 0],), 0), rtol=1e-4, atol=1e-5
    )
    # β → ∞: the hard ascending permutation (n = 4); far apart, a weight is ~1/(πβ·gap), not 0.
    for vector, perm in zip(shuffled, got["hard"]):
        np.testing.assert_allclose(perm, np.eye(4)[np.argsort(np.argsort(vector))], atol=1e-6)
    np.testing.assert_allclose(got["tail"][0, 0], 1 / (np.pi * 1e8), rtol=1e-4)


def test_groco_matches_loop_values_and_gradients():
    # The authors' cosine normalises inside: compare loss(l2_normalize(raw)) and differentiate w.r.t. raw.
    # stop_grad=False on 4 views whose first 3 are positives (the 4th a multi-crop small crop: an anchor only).
    views = {True: raw(4, 3, 5, 3), False: raw(5, 4, 5, 3)}
    num_pos = {True: None, False: 3}
    fn = lambda v, s: losses.groco_loss(cj.l2_normalize(v), topk_neg=2, steepness=3.0, stop_grad=s,
                                        num_positive_views=num_pos[s])  # fmt: skip
    got = jax.jit(lambda a, b: [jax.value_and_grad(fn)(a, True), jax.value_and_grad(fn)(b, False)])(
        jnp.asarray(views[True], jnp.float32), jnp.asarray(views[False], jnp.float32)
    )
    for stop_grad, (value, grad) in zip((True, False), got):
        point = views[stop_grad]
        reference = lambda v, s=stop_grad, p=point: ref.groco(v, topk=2, steepness=3.0, num_positive_views=num_pos[s],
                                                              frozen=p if s else None)  # fmt: skip
        np.testing.assert_allclose(value, reference(point), rtol=1e-5)
        np.testing.assert_allclose(grad, ref_core.numeric_grad(reference, (point,), 0), rtol=1e-3, atol=1e-5)


def test_groco_properties():
    near = np.array([[1.0, 0.0], [0.8, 0.6], [0.6, 0.8]])
    tied = np.ones((2, 4, 3)) / np.sqrt(3.0)
    beta = 2.0

    @jax.jit
    def library():
        sharp = lambda v, k: losses.groco_loss(v, topk_neg=k, steepness=1e6, stop_grad=False)
        return {
            "k1": losses.groco_loss(stack(X, Y), topk_neg=1, steepness=beta),
            "ordered": losses.groco_loss(stack(near, near), topk_neg=2, steepness=1e9),
            "inverted": jnp.stack(
                [losses.groco_loss(stack(near, -near), topk_neg=k, steepness=1e9) for k in (1, 2)]
            ),
            "ties_k1": sharp(jnp.asarray(tied, jnp.float32), 1),
            "ties_k3": jax.value_and_grad(sharp)(jnp.asarray(tied, jnp.float32), 3),
        }

    got = library()
    # k = 1 and one positive: ℓ_i = −log(½ + arctan(β(s_pos − s_hardest_neg))/π), exactly.
    pos = np.sum(X * Y, 1)
    expected = [np.mean([-np.log(0.5 + np.arctan(beta * (pos[i] - max(a[i] @ a[j] for j in range(3) if j != i)))
                                / np.pi) for i in range(3)]) for a in (X, Y)]  # fmt: skip
    np.testing.assert_allclose(got["k1"], np.mean(expected), rtol=1e-6)
    # β = 1e9: positives above the negatives give ≈ 0; inverted, the Cauchy tail ~log(πβ·gap) stays
    # exact in float32 (no 1 − q cancellation, the floor of −100 is not reached): the float64 loop's value.
    assert float(got["ordered"]) < 1e-6
    inverted = [ref.groco([near, -near], topk=k, steepness=1e9) for k in (1, 2)]
    np.testing.assert_allclose(got["inverted"], inverted, rtol=1e-5)
    assert 22 < inverted[0] < 23
    # Ties everywhere (identical rows) with sharp swaps: finite values and gradients; with k = 1 and one
    # positive every α is ½, half the mass on each side: log 2.
    np.testing.assert_allclose(got["ties_k1"], np.log(2), rtol=1e-6)
    value, grad = got["ties_k3"]
    np.testing.assert_allclose(value, ref.groco(tied, topk=3, steepness=1e6), rtol=1e-6)
    assert np.all(np.isfinite(grad))


def _wave2_losses(views, **kw):
    # GroCo's value does not depend on stop_grad; without it every gathered row carries gradient.
    return jnp.stack([
        *losses.cacr_terms(views, tau_pos=2.0, debiased_tau_plus=0.1, **kw),
        losses.groco_loss(views, topk_neg=5, steepness=2.0, stop_grad=False, **kw),
    ])  # fmt: skip


SHARDED_VIEWS = cj.l2_normalize(jax.random.normal(jax.random.key(5), (3, 8, 4)))


@functools.cache
def _single_device():
    return jax.jit(lambda v: (_wave2_losses(v), jax.jacrev(_wave2_losses)(v)))(SHARDED_VIEWS)


@pytest.mark.parametrize("devices", [2, 4, 8])
def test_shard_map_equals_single_device(devices):
    mesh = parallel.data_mesh("data", devices=jax.devices()[:devices])
    sharded = jax.shard_map(functools.partial(_wave2_losses, axis_name="data"), mesh=mesh,
                            in_specs=P(None, "data"), out_specs=P())  # fmt: skip
    got_values, got_grads = jax.jit(lambda v: (sharded(v), jax.jacrev(sharded)(v)))(SHARDED_VIEWS)
    expected_values, expected_grads = _single_device()
    np.testing.assert_allclose(got_values, expected_values, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(got_grads, expected_grads, rtol=1e-4, atol=1e-6)


def test_bf16_inputs_give_float32_close_to_the_loop_on_rounded_inputs():
    views16 = jnp.asarray(raw(6, 3, 4, 3), jnp.bfloat16)
    unit16 = cj.l2_normalize(jnp.asarray(raw(7, 3, 4, 3), jnp.float32)).astype(jnp.bfloat16)
    cacr, groco, (values, perm) = jax.jit(lambda v, u: (
        losses.cacr_loss(v), losses.groco_loss(u, topk_neg=2), losses.diffsort_odd_even(v[0, 0], steepness=1.0)
    ))(views16, unit16)  # fmt: skip
    assert cacr.dtype == groco.dtype == values.dtype == perm.dtype == jnp.float32
    rounded = np.asarray(views16.astype(jnp.float32), np.float64)
    np.testing.assert_allclose(cacr, ref.cacr(rounded), rtol=1e-5, atol=1e-5)
    unit = np.asarray(unit16.astype(jnp.float32), np.float64)
    np.testing.assert_allclose(groco, ref.groco(unit, topk=2, similarity=ref.dot), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(perm, ref.diffsort_odd_even(rounded[0, 0], 1.0)[1], rtol=1e-5, atol=1e-6)


def test_bad_inputs():
    views = stack(X, Y)
    bad_views = [(views[0], ValueError), (views[:1], ValueError), (views.astype(jnp.int32), TypeError)]
    for bad, error in bad_views:
        with pytest.raises(error, match="views"):
            losses.cacr_loss(bad)
        with pytest.raises(error, match="views"):
            losses.groco_loss(bad, topk_neg=1)
    with pytest.raises(ValueError, match="cacr_loss needs at least 2 samples"):
        losses.cacr_terms(views[:, :1])
    for name, value in (("alpha", 0.0), ("beta", -1.0), ("tau_pos", -0.1), ("tau_neg", -0.1),
                        ("debiased_tau_plus", 1.0), ("debiased_tau_plus", -0.1)):  # fmt: skip
        with pytest.raises(ValueError, match=name):
            losses.cacr_loss(views, **{name: value})
    groco_bad = [{"topk_neg": 0}, {"topk_neg": 3}, {"topk_neg": 2.0}, {"num_positive_views": 1},
                 {"num_positive_views": 3}, {"steepness": 0.0}, {"steepness": float("inf")},
                 {"steepness": float("nan")}]  # fmt: skip
    for kw in groco_bad:
        with pytest.raises(ValueError, match=next(iter(kw))):
            losses.groco_loss(views, **{"topk_neg": 2, **kw})
    with pytest.raises(TypeError, match="steepness"):
        losses.groco_loss(views, topk_neg=1, steepness=jnp.float32(1.0))
    for u, error in (
        (jnp.float32(1.0), ValueError),
        (jnp.zeros((2, 0)), ValueError),
        (jnp.arange(3), TypeError),
    ):
        with pytest.raises(error, match="^u must"):
            losses.diffsort_odd_even(u, steepness=1.0)
    with pytest.raises(ValueError, match="steepness"):
        losses.diffsort_odd_even(jnp.zeros(3), steepness=-1.0)
    # Under shard_map the global batch counts (2 rows on each of 2 devices: k ≤ 3), and the ring is refused.
    mesh = parallel.data_mesh("data", devices=jax.devices()[:2])
    four = jnp.concatenate([views, views[:, :1]], axis=1)
    shard = lambda fn: jax.shard_map(fn, mesh=mesh, in_specs=P(None, "data"), out_specs=P())
    with pytest.raises(ValueError, match=r"topk_neg must be an integer in \[1, 3\]"):
        shard(lambda v: losses.groco_loss(v, topk_neg=4, axis_name="data"))(four)
    for fn in (losses.cacr_loss, functools.partial(losses.groco_loss, topk_neg=1)):
        with pytest.raises(ValueError, match="ring"):
            shard(lambda v, fn=fn: fn(v, axis_name="data", exchange="ring"))(four)


def test_docstring_examples_run():
    for module in (_transport, _sorting):
        assert doctest.testmod(module).failed == 0
