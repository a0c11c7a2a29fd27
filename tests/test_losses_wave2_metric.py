"""SBCL, EBV, TCM and UNPG: loop references, the spec's oracles, properties, devices, bf16 and bad input."""

import doctest
import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from contrastive_jax import losses, parallel
from contrastive_jax.losses import _long_tail, _metric, _prototypes
from tests import references as ref_core
from tests import references_wave2_metric as ref

# The shared oracle inputs: unit rows, y = x rotated by +36.87°.
X = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
Y = np.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
TRIANGLE = np.array([[math.cos(2 * math.pi * c / 3), math.sin(2 * math.pi * c / 3)] for c in range(3)])
# UNPG: six unit samples on an arc, three identities, and CosFace logits (m = 0.35) against class
# weights at angles 2.7, 2.3 and 3.0 (our own head; the spec's head logits were not given).
ANGLES = np.array([2.82, 2.6, 2.14, 3.07, 2.96, 2.39])
ARC = np.stack([np.cos(ANGLES), np.sin(ANGLES)], 1)
ARC_LABELS = np.array([0, 0, 1, 1, 2, 2])
HEAD_WEIGHTS = np.stack([np.cos([2.7, 2.3, 3.0]), np.sin([2.7, 2.3, 3.0])], 1)


def cosface(z, labels, weights, margin=0.35):
    return np.asarray(z) @ np.asarray(weights).T - margin * np.eye(len(weights))[labels]


def unit(seed, *shape):
    return np.asarray(cj.l2_normalize(jax.random.normal(jax.random.key(seed), shape)), np.float64)


f32 = lambda a: jnp.asarray(a, jnp.float32)
i32 = lambda a: jnp.asarray(a, jnp.int32)

# Jitted once per shape and hyperparameter setting (eager op-by-op dispatch would compile every op).
SBCL = jax.jit(losses.sbcl_loss, static_argnames=("temperature", "base_temperature", "gamma"))
EBV = jax.jit(losses.ebv_loss, static_argnames=("temperature", "label_smoothing"))
EBV_J = jax.jit(losses.ebv_basis_objective, static_argnames=("threshold",))
TCM = jax.jit(
    losses.tcm_regularizer, static_argnames=("margin_pos", "margin_neg", "lambda_pos", "lambda_neg")
)
UNPG = jax.jit(losses.unpg_loss, static_argnames=("scale", "whisker"))

# Random inputs: several subclasses per class, class ids and subclass ids both used.
SB_LABELS, SB_SUB, SB_TAU = [0, 0, 0, 1, 1, 2], [0, 0, 1, 2, 2, 3], [0.08, 0.12, 0.1]


def test_sbcl_matches_the_loop_and_the_spec_oracles():
    sbcl = lambda a, b, labels, sub, tau, **kw: float(
        SBCL(f32(a), f32(b), i32(labels), i32(sub), f32(tau), **kw)
    )
    assert sbcl(X, Y, [0, 0, 1], [0, 1, 2], [0.1, 0.1]) == pytest.approx(2.8400442, rel=1e-6)
    assert sbcl(X, Y, [0, 0, 1], [0, 1, 2], [0.08, 0.12]) == pytest.approx(2.9425011, rel=1e-6)
    assert ref.sbcl(X, Y, [0, 0, 1], [0, 1, 2], [0.08, 0.12]) == pytest.approx(2.9425011, rel=1e-7)
    a, b = unit(0, 6, 4), unit(1, 6, 4)
    np.testing.assert_allclose(
        sbcl(a, b, SB_LABELS, SB_SUB, SB_TAU, gamma=0.5),
        ref.sbcl(a, b, SB_LABELS, SB_SUB, SB_TAU, gamma=0.5),
        rtol=1e-5,
    )


def test_sbcl_reduces_to_supcon_and_to_nt_xent():
    @jax.jit
    def both_sides(a, b, labels):
        distinct = jnp.arange(6)
        return (
            # γ = 0 with the subclasses equal to the classes: SupCon on the two views (τ 0.1, τ_base 0.07).
            losses.sbcl_loss(a, b, labels, labels, jnp.full(3, 0.1), gamma=0.0),
            losses.supcon_loss(jnp.stack([a, b], 1), labels, temperature=0.1, base_temperature=0.07),
            # Every sample its own class and subclass, τ_c = τ: both terms are NT-Xent.
            losses.sbcl_loss(a, b, distinct, distinct, jnp.full(6, 0.1)),
            (0.1 / 0.07 + 0.25) * losses.nt_xent_loss(a, b, temperature=0.1),
        )

    sbcl_sub, supcon, sbcl_distinct, nt_xent = both_sides(
        f32(unit(2, 6, 4)), f32(unit(3, 6, 4)), i32([0, 1, 0, 2, 1, 0])
    )
    np.testing.assert_allclose(sbcl_sub, supcon, rtol=1e-6)
    np.testing.assert_allclose(sbcl_distinct, nt_xent, rtol=1e-6)


def test_sbcl_class_temperatures_match_the_loop():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), [9, 2, 5, 1, 7])
    features = rng.normal(size=(24, 3)) * (1 + labels[:, None])  # spreads differ by class
    clusters = [3, 1, 2, 1, 4]
    got = losses.sbcl_class_temperatures(features, labels, clusters, temperature=0.2)
    np.testing.assert_allclose(got, ref.sbcl_class_temperatures(features, labels, clusters, 0.2), rtol=1e-12)
    assert got[1] == got[3] == 0.2  # one cluster: the base temperature
    assert got.min() < 0.2 < got.max()  # the clip to the 20th-80th percentiles leaves a spread


def test_ebv_matches_the_loop_and_the_spec_oracles():
    labels = i32([0, 1, 2])
    assert float(EBV(f32(X), labels, f32(TRIANGLE))) == pytest.approx(9.5021321, rel=1e-6)
    assert float(EBV(f32(X), labels, f32(TRIANGLE), label_smoothing=0.0)) == pytest.approx(
        9.2512774, rel=1e-6
    )
    assert float(EBV_J(f32(TRIANGLE))) == pytest.approx(2.988, rel=1e-6)
    assert ref.ebv_objective(TRIANGLE) == pytest.approx(2.988, rel=1e-12)
    # Basis = I: label-smoothed cross-entropy of z/τ.
    z, classes = f32(unit(4, 5, 5)), i32([0, 3, 1, 4, 4])
    smoothed_ce = jax.jit(
        lambda z: jnp.mean(
            optax.softmax_cross_entropy(z / 0.07, optax.smooth_labels(jax.nn.one_hot(classes, 5), 0.1))
        )
    )
    np.testing.assert_allclose(EBV(z, classes, jnp.eye(5)), smoothed_ce(z), rtol=1e-6)
    orthonormal = np.linalg.qr(np.random.default_rng(1).normal(size=(5, 5)))[0]
    assert float(EBV_J(f32(orthonormal))) == 0.0  # every |cos| ≤ θ
    basis = unit(5, 4, 5)
    got = EBV(z, i32([0, 3, 1, 2, 2]), f32(basis), temperature=0.2, label_smoothing=0.3)
    np.testing.assert_allclose(got, ref.ebv(np.asarray(z), [0, 3, 1, 2, 2], basis, 0.2, 0.3), rtol=1e-5)
    np.testing.assert_allclose(EBV_J(f32(basis), threshold=0.1), ref.ebv_objective(basis, 0.1), rtol=1e-5)


def test_ebv_basis_is_nearly_equiangular():
    basis = losses.ebv_basis(jax.random.key(0), 10, 16)
    assert basis.shape == (10, 16) and basis.dtype == jnp.float32
    np.testing.assert_allclose(np.linalg.norm(basis, axis=1), 1.0, rtol=1e-6)
    cosines = np.abs(np.asarray(basis, np.float64) @ np.asarray(basis, np.float64).T) - np.eye(10)
    assert cosines.max() <= 0.002 + 1e-4
    # max_steps bounds the loop: one step from the normalised Gaussian start is one SGD step on J.
    start = np.asarray(cj.l2_normalize(jax.random.normal(jax.random.key(0), (10, 16))), np.float64)
    early = np.asarray(losses.ebv_basis(jax.random.key(0), 10, 16, max_steps=1), np.float64)
    np.testing.assert_allclose(early, ref.ebv_sgd_step(start), rtol=1e-5, atol=1e-6)
    assert np.abs(early @ early.T - np.eye(10)).max() > 0.1  # far from converged


def test_tcm_matches_the_loop_and_the_spec_oracles():
    tcm = lambda z, labels, **kw: float(TCM(f32(z), i32(labels), **kw))
    assert tcm([[1, 0], [0.8, 0.6], [0.6, 0.8]], [0, 0, 1]) == pytest.approx(0.38, rel=1e-6)
    assert tcm(X, [0, 0, 1]) == pytest.approx(0.6, rel=1e-6)
    assert tcm(X, [0, 1, 1], lambda_pos=2.0, lambda_neg=0.5) == pytest.approx(0.25, rel=1e-6)
    # Positives above m⁺ and negatives below m⁻: both sets empty, 0.
    assert tcm([[1, 0], [0.96, 0.28], [0, 1]], [0, 0, 1]) == 0.0
    assert tcm(X[:1], [0]) == 0.0  # a batch of one sample has no pair
    # A positive pair exactly at m⁺ counts in the mean with a zero hinge: (0.2 + 0.8 + 0) / 3.
    assert tcm(X, [0, 0, 0], margin_pos=0.8) == pytest.approx(1 / 3, rel=1e-6)
    assert ref.tcm(X, [0, 0, 0], margin_pos=0.8) == pytest.approx(1 / 3, rel=1e-12)
    z = unit(6, 8, 3)
    labels = [0, 1, 0, 2, 1, 0, 2, 2]
    np.testing.assert_allclose(
        tcm(z, labels, margin_pos=0.5, margin_neg=0.0, lambda_neg=0.7),
        ref.tcm(z, labels, 0.5, 0.0, 1.0, 0.7),
        rtol=1e-5,
    )


def test_unpg_filter_matches_the_spec_and_the_loss_matches_the_loop():
    values = f32([-0.2, 0, 0.05, 0.1, 0.1, 0.15, 0.2, 0.25, 0.3, 0.9])
    keep = jax.jit(_metric.box_and_whisker_keep, static_argnums=2)
    everything = jnp.ones(10, bool)
    np.testing.assert_array_equal(keep(values, everything, 1.5), np.arange(10) < 9)  # all but 0.9
    np.testing.assert_array_equal(keep(values, everything, 1.0), (np.arange(10) > 0) & (np.arange(10) < 9))
    # Invalid entries are never kept and do not move the quartiles: of the valid [0, .1, .15, .25, .9]
    # (odd positions), w = 0 keeps [Q1, Q3] = [.1, .25]; the invalid .1 at position 4 stays out.
    np.testing.assert_array_equal(
        keep(values, jnp.arange(10) % 2 == 1, 0.0), np.isin(np.arange(10), [3, 5, 7])
    )
    assert len(ref.box_and_whisker([-0.2, 0, 0.05, 0.1, 0.1, 0.15, 0.2, 0.25, 0.3, 0.9], 1.0)) == 8

    head = cosface(ARC, ARC_LABELS, HEAD_WEIGHTS)
    pairs = ref.negative_pairs(ARC, ARC_LABELS)
    assert [len(ref.box_and_whisker(pairs, w)) for w in (1.5, 1.0)] == [11, 9]  # of 12, as the spec
    for scale, whisker in ((10.0, 1.5), (10.0, 1.0), (64.0, 1.5)):
        got = UNPG(f32(head), f32(ARC), i32(ARC_LABELS), scale=scale, whisker=whisker)
        np.testing.assert_allclose(got, ref.unpg(head, ARC, ARC_LABELS, scale, whisker), rtol=1e-5)
        assert got > ref.plain_ce(head, ARC_LABELS, scale)  # the extra negatives only add terms
    # One identity: no negative pair, the head's plain cross-entropy.
    same = np.zeros(6, int)
    np.testing.assert_allclose(
        UNPG(f32(head), f32(ARC), i32(same), scale=10.0), ref.plain_ce(head, same, 10.0), rtol=1e-6
    )


GRADIENT_CASES = {
    "sbcl": (
        lambda a, b: losses.sbcl_loss(a, b, i32([0, 0, 1, 1]), i32([0, 1, 2, 2]), f32([0.08, 0.12])),
        lambda a, b: ref.sbcl(a, b, [0, 0, 1, 1], [0, 1, 2, 2], [0.08, 0.12]),
        (unit(7, 4, 3), unit(8, 4, 3)),
    ),
    "ebv": (
        lambda z, basis: losses.ebv_loss(z, i32([0, 2, 1, 2]), basis, temperature=0.3),
        lambda z, basis: ref.ebv(z, [0, 2, 1, 2], basis, 0.3),
        (unit(9, 4, 3), unit(10, 3, 3)),
    ),
    # TCM and UNPG normalise inside the references (as the authors' code): differentiate w.r.t. raw.
    "tcm": (
        lambda raw: losses.tcm_regularizer(
            cj.l2_normalize(raw), i32([0, 1, 0, 1, 1]), margin_pos=0.6, margin_neg=-0.3
        ),
        lambda raw: ref.tcm(raw, [0, 1, 0, 1, 1], 0.6, -0.3),
        (2 * unit(11, 5, 3),),
    ),
    "unpg": (
        lambda head, raw: losses.unpg_loss(head, cj.l2_normalize(raw), i32(ARC_LABELS), scale=10.0),
        lambda head, raw: ref.unpg(head, raw, ARC_LABELS, 10.0),
        (cosface(ARC, ARC_LABELS, HEAD_WEIGHTS), ARC + 0.05 * unit(12, 6, 2)),
    ),
}


def test_gradients_match_finite_differences_of_the_references():
    @jax.jit
    def all_grads(args):
        return {
            name: jax.grad(fn, tuple(range(len(a))))(*a)
            for name, (fn, _, _) in GRADIENT_CASES.items()
            for a in [args[name]]
        }

    got = all_grads({name: tuple(map(f32, args)) for name, (_, _, args) in GRADIENT_CASES.items()})
    for name, (_, reference, args) in GRADIENT_CASES.items():
        for index, grad in enumerate(got[name]):
            numeric = ref_core.numeric_grad(reference, args, index)
            assert np.abs(numeric).max() > 1e-3  # every argument has a gradient to compare
            np.testing.assert_allclose(
                grad, numeric, rtol=2e-4, atol=2e-6, err_msg=f"{name}, argument {index}"
            )


def test_gradient_oracles_of_the_spec():
    @jax.jit
    def grads(x, raw):
        sbcl = lambda a: losses.sbcl_loss(a, f32(Y), i32([0, 0, 1]), i32([0, 1, 2]), f32([0.08, 0.12]))
        tcm = lambda r: losses.tcm_regularizer(cj.l2_normalize(r), i32([0, 0, 1]))
        return jax.grad(sbcl)(x), jax.grad(tcm)(raw)

    grad_x, grad_raw = grads(f32(X), f32([[1, 0], [0.8, 0.6], [0.6, 0.8]]))
    np.testing.assert_allclose(grad_x[2], [2.77291452, 1.95331803], rtol=1e-5)
    np.testing.assert_allclose(grad_raw[1], [-0.444, 0.592], rtol=1e-5)


# Under shard_map: the global batch of 8 rows (value and gradients w.r.t. every float input).
_A, _B = unit(13, 8, 4), unit(14, 8, 4)
_LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 2])
_SUB = np.array([0, 1, 3, 2, 1, 0, 2, 4])
_BASIS = unit(15, 3, 4)
DISTRIBUTED = {
    "sbcl": (
        lambda a, b, labels, sub, **kw: losses.sbcl_loss(a, b, labels, sub, f32([0.08, 0.12, 0.1]), **kw),
        (_A, _B, _LABELS, _SUB),
        (0, 1),
    ),
    "ebv": (
        lambda z, labels, basis, **kw: losses.ebv_loss(z, labels, basis, **kw),
        (_A, _LABELS, _BASIS),
        (0, 2),
    ),
    "tcm": (
        lambda z, labels, **kw: losses.tcm_regularizer(z, labels, margin_pos=0.4, margin_neg=-0.2, **kw),
        (_A, _LABELS),
        (0,),
    ),
    # w = 0.5 keeps 14 of the 21 negative pairs: the filter runs on the gathered batch.
    "unpg": (
        lambda head, z, labels, **kw: losses.unpg_loss(head, z, labels, scale=10.0, whisker=0.5, **kw),
        (cosface(_A, _LABELS, _BASIS), _B, _LABELS),
        (0, 1),
    ),
}
REPLICATED = {"ebv": (2,)}  # argument positions passed whole to every device (the EBV basis)


def _sharded(name, devices):
    fn, args, argnums = DISTRIBUTED[name]
    # `devices` devices split the batch ("data"); the other 8/devices copies replicate it, so one
    # jitted program on the 8 CPU devices checks every device count.
    mesh = parallel.data_mesh(("copies", "data"), shape=(8 // devices, devices))
    specs = tuple(P() if i in REPLICATED.get(name, ()) else P("data") for i in range(len(args)))
    sharded = jax.shard_map(functools.partial(fn, axis_name="data"), mesh=mesh, in_specs=specs, out_specs=P())
    return jax.value_and_grad(sharded, argnums)


GATHERING = ("sbcl", "tcm", "unpg")  # the losses with an `exchange` (EBV only averages)


def _grouped(name):
    # 2 groups of 4 members: candidates within each group, the mean of the groups' losses.
    fn, args, argnums = DISTRIBUTED[name]
    mesh = parallel.data_mesh(("group", "member"), shape=(2, 4))
    fn = functools.partial(fn, axis_name=("group", "member"), exchange="grouped")
    specs = (P(("group", "member")),) * len(args)
    return jax.value_and_grad(jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=P()), argnums)


def _mean_of_halves(name, args):
    fn, _, argnums = DISTRIBUTED[name]
    halves = [jax.value_and_grad(fn, argnums)(*(a[h] for a in args)) for h in (slice(0, 4), slice(4, 8))]
    grads = tuple(jnp.concatenate([g0, g1]) / 2 for g0, g1 in zip(halves[0][1], halves[1][1]))
    return (halves[0][0] + halves[1][0]) / 2, grads


def test_under_shard_map_equals_single_device():
    cases = [(name, devices) for name in sorted(DISTRIBUTED) for devices in (2, 4, 8)]
    inputs = {
        name: tuple(f32(a) if a.dtype.kind == "f" else i32(a) for a in DISTRIBUTED[name][1])
        for name in DISTRIBUTED
    }

    @jax.jit
    def everything(inputs):
        got = {f"{name}-{d}": _sharded(name, d)(*inputs[name]) for name, d in cases}
        expected = {
            name: jax.value_and_grad(fn, argnums)(*inputs[name])
            for name, (fn, _, argnums) in DISTRIBUTED.items()
        }
        expected |= {f"{name}-{d}": expected[name] for name, d in cases}
        for name in GATHERING:
            got[f"{name}-grouped"] = _grouped(name)(*inputs[name])
            expected[f"{name}-grouped"] = _mean_of_halves(name, inputs[name])
        return got, expected

    got, expected = everything(inputs)
    assert len(got) == 15
    for key in got:
        for x, y in zip(jax.tree.leaves(got[key]), jax.tree.leaves(expected[key]), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=key)


@pytest.mark.parametrize("name", GATHERING)
def test_ring_exchange_is_refused(name):
    fn, args, _ = DISTRIBUTED[name]
    mesh = parallel.data_mesh("data", devices=jax.devices()[:2])
    ring = jax.shard_map(
        functools.partial(fn, axis_name="data", exchange="ring"),
        mesh=mesh,
        in_specs=(P("data"),) * len(args),
        out_specs=P(),
    )
    with pytest.raises(ValueError, match="ring"):
        jax.eval_shape(ring, *args)


def test_bf16_inputs_give_float32_close_to_the_reference_on_rounded_inputs():
    rounded = lambda a: np.asarray(jnp.asarray(a, jnp.bfloat16).astype(jnp.float32), np.float64)
    a, b, head = rounded(_A), rounded(_B), rounded(cosface(_B, _LABELS, _BASIS))
    basis, tau = rounded(_BASIS), rounded([0.08, 0.12, 0.1])
    labels, sub = i32(_LABELS), i32(_SUB)

    @jax.jit
    def all_losses(a, b, head, basis, tau):
        return (
            losses.sbcl_loss(a, b, labels, sub, tau),
            losses.ebv_loss(a, labels, basis),
            losses.tcm_regularizer(a, labels, margin_pos=0.4, margin_neg=-0.2),
            losses.unpg_loss(head, b, labels, scale=10.0),
        )

    got = all_losses(*(jnp.asarray(v, jnp.bfloat16) for v in (a, b, head, basis, tau)))
    expected = [
        ref.sbcl(a, b, _LABELS, _SUB, tau),
        ref.ebv(a, _LABELS, basis),
        ref.tcm(a, _LABELS, 0.4, -0.2, normalize=False),
        ref.unpg(head, b, _LABELS, 10.0, normalize=False),
    ]
    for value, want in zip(got, expected, strict=True):
        assert value.dtype == jnp.float32
        np.testing.assert_allclose(value, want, rtol=1e-5)


def test_no_nan_with_tiny_temperatures_and_ties():
    z = f32(np.repeat(X[:2], 2, axis=0))  # repeated rows: tied similarities and tied pair cosines
    labels = i32([0, 1, 0, 1])
    fns = [
        lambda z: losses.sbcl_loss(z, z, labels, labels, f32([1e-4, 1e-4]), temperature=1e-4),
        lambda z: losses.ebv_loss(z, labels, f32(TRIANGLE), temperature=1e-4),
        lambda z: losses.tcm_regularizer(z, labels, margin_pos=0.6, margin_neg=0.6),  # pairs at both margins
        lambda z: losses.unpg_loss(f32(np.zeros((4, 3))), z, labels, whisker=0.0),
        lambda z: losses.tcm_regularizer(z[:1], labels[:1]),  # one sample: 0
    ]
    for value, grad in jax.jit(lambda z: [jax.value_and_grad(fn)(z) for fn in fns])(z):
        assert np.isfinite(value) and np.isfinite(grad).all()


def test_bad_inputs_raise_clear_errors():
    z, labels, tau = f32(X), i32([0, 0, 1]), f32([0.1, 0.1])
    sub = i32([0, 1, 2])
    cases = [
        (lambda: losses.sbcl_loss(z, z[:, :1], labels, sub, tau), ValueError, "same shape"),
        (lambda: losses.sbcl_loss(z, z, labels[:2], sub, tau), ValueError, "labels has 2 entries"),
        (lambda: losses.sbcl_loss(z, z, f32(labels), sub, tau), TypeError, "labels must be an integer"),
        (
            lambda: losses.sbcl_loss(z, z, i32([0, 0, 2]), sub, tau),
            ValueError,
            r"labels must lie in \[0, 2\)",
        ),
        (lambda: losses.sbcl_loss(z, z, labels, i32([0, 0, 0]), tau), ValueError, "subclass 0 holds"),
        (
            lambda: losses.sbcl_loss(z, z, labels, sub, f32([0.1, 0.0])),
            ValueError,
            "class_temperatures must all",
        ),
        (
            lambda: losses.sbcl_loss(z, z, labels, sub, f32([[0.1, 0.1]])),
            ValueError,
            "class_temperatures must have",
        ),
        (lambda: losses.sbcl_loss(z, z, labels, sub, tau, temperature=0.0), ValueError, "temperature"),
        (lambda: losses.sbcl_loss(z, z, labels, sub, tau, gamma=-1.0), ValueError, "gamma"),
        (
            lambda: losses.sbcl_loss(z, z, labels, sub, tau, base_temperature=0.0),
            ValueError,
            "base_temperature",
        ),
        (lambda: losses.sbcl_loss(i32(X), i32(X), labels, sub, tau), TypeError, "z_a must be a floating"),
        (lambda: losses.sbcl_class_temperatures(X, [0, 0, 3], [1, 1, 1]), ValueError, r"lie in \[0, 3\)"),
        (lambda: losses.sbcl_class_temperatures(X, [0, 1, 2], [1, 1, 1]), ValueError, "no spread"),
        (
            lambda: losses.sbcl_class_temperatures(X, [0, 0, 1], [1, 1], temperature=0.0),
            ValueError,
            "temperature",
        ),
        (lambda: losses.sbcl_class_temperatures(X, [0, 0, 2], [1, 1, 1]), ValueError, "every class needs"),
        (lambda: losses.sbcl_class_temperatures(X, [0, 0, 1], [1, 0]), ValueError, "clusters_per_class"),
        (lambda: losses.ebv_loss(z, labels, f32(np.eye(3))), ValueError, "D must match"),
        (
            lambda: losses.ebv_loss(z, i32([0, 1, 3]), f32(TRIANGLE)),
            ValueError,
            r"labels must lie in \[0, 3\)",
        ),
        (lambda: losses.ebv_loss(z, labels, f32(TRIANGLE), temperature=-1.0), ValueError, "temperature"),
        (
            lambda: losses.ebv_loss(z, labels, f32(TRIANGLE), label_smoothing=1.0),
            ValueError,
            "label_smoothing",
        ),
        (lambda: losses.ebv_loss(z[0], labels, f32(TRIANGLE)), ValueError, "z must have rank 2"),
        (lambda: losses.ebv_basis_objective(f32(TRIANGLE), threshold=1.0), ValueError, "threshold"),
        (lambda: losses.ebv_basis(jax.random.key(0), 0, 4), ValueError, "num_classes"),
        (lambda: losses.ebv_basis(jax.random.key(0), 3, 4, learning_rate=0.0), ValueError, "learning_rate"),
        (lambda: losses.ebv_basis(jax.random.key(0), 3, 4, threshold=-0.1), ValueError, "threshold"),
        (lambda: losses.ebv_basis(jax.random.key(0), 3, 4, max_steps=0), ValueError, "max_steps"),
        (lambda: losses.ebv_loss(z, labels, i32(TRIANGLE)), TypeError, "basis must be a floating"),
        (lambda: losses.tcm_regularizer(z, labels, margin_pos=1.5), ValueError, "margin_pos"),
        (lambda: losses.tcm_regularizer(z, labels, lambda_neg=-0.1), ValueError, "lambda_neg"),
        (lambda: losses.tcm_regularizer(z, f32(labels)), TypeError, "labels must be an integer"),
        (lambda: losses.unpg_loss(z[:2], z, labels), ValueError, "margin_logits has 2 rows"),
        (lambda: losses.unpg_loss(z, z, i32([0, 1, 2])), ValueError, r"labels must lie in \[0, 2\)"),
        (lambda: losses.unpg_loss(z, z, labels, scale=0.0), ValueError, "scale"),
        (lambda: losses.unpg_loss(z, z, labels, whisker=-1.0), ValueError, "whisker"),
        (
            lambda: losses.unpg_loss(i32(np.zeros((3, 2))), z, labels),
            TypeError,
            "margin_logits must be a float",
        ),
    ]
    for fn, error, match in cases:
        with pytest.raises(error, match=match):
            fn()


def test_docstring_examples_run():
    # The examples call the losses by name; here those names are jitted versions of the same
    # functions (one compilation per example instead of one per operation when run eagerly).
    jitted = {
        "sbcl_loss": jax.jit(losses.sbcl_loss),
        "tcm_regularizer": jax.jit(losses.tcm_regularizer),
        "unpg_loss": jax.jit(losses.unpg_loss, static_argnames=("scale",)),
        "ebv_loss": jax.jit(losses.ebv_loss, static_argnames=("label_smoothing",)),
        "ebv_basis_objective": jax.jit(losses.ebv_basis_objective),
    }
    for module in (_long_tail, _metric, _prototypes):
        results = doctest.testmod(module, extraglobs=jitted, raise_on_error=False)
        assert results.attempted > 0 and results.failed == 0, module.__name__
