"""HCL / debiased CL, hard top-K InfoNCE, LDR-KL / ALDR-KL and comp-sum: loops, oracles, devices, bad input.

Single-device calls run eagerly on a few fixed shapes (so JAX's per-operation caches are shared
between tests); each shard_map test compiles one function holding all its device splits.
"""

import doctest
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

from contrastive_jax import losses, parallel
from tests import references as ref_core
from tests import references_wave2_robust as ref

# The spec's shared oracle inputs: unit rows, y = x rotated by +36.87°; classification logits.
X = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
Y = jnp.array([[0.8, 0.6], [0.0, 1.0], [-0.6, 0.8]])
O = jnp.array([[2.0, 0.5, -1.0], [0.1, 0.2, 0.3]])
T = jnp.array([0, 2])


def unit(seed, *shape):  # NumPy draws: test inputs cost no compilation
    x = np.random.default_rng(seed).normal(size=shape)
    return jnp.asarray(x / np.linalg.norm(x, axis=-1, keepdims=True), jnp.float32)


def logits_and_labels(seed, batch, classes):
    rng = np.random.default_rng(seed)
    return jnp.asarray(2.0 * rng.normal(size=(batch, classes)), jnp.float32), jnp.asarray(
        rng.integers(0, classes, size=batch), jnp.int32
    )


def with_row(x, row, value):
    x = np.array(x)
    x[row] = value
    return jnp.asarray(x)


A, B = unit(0, 6, 5), unit(1, 6, 5)
A64, B64 = np.asarray(A, np.float64), np.asarray(B, np.float64)
LOGITS, LABELS = logits_and_labels(2, 6, 4)
O64, Y64 = np.asarray(LOGITS, np.float64), np.asarray(LABELS)


def close(got, expected, rtol=1e-5, atol=1e-6):
    np.testing.assert_allclose(np.asarray(got, np.float64), expected, rtol=rtol, atol=atol)


def close_to_numeric_grad(grad, reference, args, index):
    close(grad, ref_core.numeric_grad(reference, args, index), rtol=2e-4, atol=2e-6)


# ----------------------------------------------------------------------------------------------
# 2.1 HCL and the debiased contrastive loss

HCL_ORACLES = [  # (tau_plus, beta, spec oracle) on (X, Y), τ = 0.5
    (0.1, 1.0, 1.4848775), (0.1, 0.5, 1.3630902), (0.1, 0.0, 1.1945900), (0.0, 0.0, 1.2524586),
    (0.9, 0.0, 0.10372458),
]  # fmt: skip
HCL_RANDOM = [(0.5, 0.1, 1.0), (0.2, 0.3, 0.5), (1.0, 0.6, 2.0)]  # (τ, τ⁺, β): some anchors clamped
BETAS = (0.0, 0.5, 1.0, 2.0)


def test_hcl_matches_loop_and_oracles_and_grows_with_beta():
    def compute(x, y, a, b):
        return dict(
            oracles=[losses.hcl_loss(x, y, tau_plus=tp, beta=beta) for tp, beta, _ in HCL_ORACLES],
            debiased_oracle=losses.debiased_contrastive_loss(x, y),
            grads=jax.grad(losses.hcl_loss, (0, 1))(x, y),
            random=[
                losses.hcl_loss(a, b, temperature=t, tau_plus=tp, beta=beta) for t, tp, beta in HCL_RANDOM
            ],
            debiased=[
                losses.debiased_contrastive_loss(a, b, temperature=t, tau_plus=tp) for t, tp, _ in HCL_RANDOM
            ],
            betas=[[losses.hcl_loss(u, v, beta=beta) for beta in BETAS] for u, v in ((x, y), (a, b))],
        )

    got = jax.jit(compute)(X, Y, A, B)
    for value, (tau_plus, beta, oracle) in zip(got["oracles"], HCL_ORACLES):
        close(ref.hcl(X, Y, 0.5, tau_plus, beta), oracle, rtol=1e-7)
        close(value, oracle)
    close(got["debiased_oracle"], 1.1945900)
    close(got["grads"][0][0], [-0.25200463, -0.14241944])
    close(got["grads"][1][1], [-0.57455174, 0.3037776])
    for value, debiased, (tau, tau_plus, beta) in zip(got["random"], got["debiased"], HCL_RANDOM):
        close(value, ref.hcl(A64, B64, tau, tau_plus, beta))
        close(debiased, ref.hcl(A64, B64, tau, tau_plus, 0.0))
    for values in got["betas"]:
        assert all(u < v for u, v in zip(values, values[1:])), values


def test_hcl_special_cases():
    def compute(x, y, a, b):
        return dict(
            plain=losses.hcl_loss(a, b, temperature=0.3, tau_plus=0.0, beta=0.0),
            nt_xent=losses.nt_xent_loss(a, b, temperature=0.3),
            beta_zero=losses.hcl_loss(a, b, tau_plus=0.2, beta=0.0),
            debiased=losses.debiased_contrastive_loss(a, b, tau_plus=0.2),
            clamped=losses.hcl_loss(x, y, tau_plus=0.9, beta=0.0),
        )

    got = jax.jit(compute)(X, Y, A, B)
    close(got["plain"], got["nt_xent"])  # β = 0, τ⁺ = 0 is NT-Xent
    close(got["beta_zero"], got["debiased"])  # β = 0 is the debiased loss
    # τ⁺ = 0.9: every anchor of the oracle batch is clamped, G = M e^{−1/τ}.
    z = np.concatenate([X, Y]).astype(np.float64)
    pos = np.array([z[r] @ z[(r + 3) % 6] for r in range(6)]) / 0.5
    clamped = np.mean(-np.log(np.exp(pos) / (np.exp(pos) + 4 * np.exp(-2.0))))
    close(clamped, 0.10372458, rtol=1e-7)
    close(got["clamped"], clamped)


def test_hcl_gradients_match_the_loop_and_flow_through_the_importance_weights():
    hcl = lambda a, b: losses.hcl_loss(a, b, temperature=0.4, tau_plus=0.2, beta=0.7)
    debiased = lambda a, b: losses.debiased_contrastive_loss(a, b, temperature=0.4)
    grads = jax.jit(lambda a, b: (jax.grad(hcl, (0, 1))(a, b), jax.grad(debiased, (0, 1))(a, b)))(A, B)
    for index in (0, 1):
        close_to_numeric_grad(grads[0][index], lambda a, b: ref.hcl(a, b, 0.4, 0.2, 0.7), (A64, B64), index)
        close_to_numeric_grad(grads[1][index], lambda a, b: ref.hcl(a, b, 0.4, 0.1, 0.0), (A64, B64), index)
    frozen = ref.hcl_weights(A64, B64, 0.4, 0.7)
    detached = ref_core.numeric_grad(
        lambda a, b: ref.hcl(a, b, 0.4, 0.2, 0.7, frozen_weights=frozen), (A64, B64), 0
    )
    assert np.max(np.abs(np.asarray(grads[0][0]) - detached)) > 1e-2


# ----------------------------------------------------------------------------------------------
# 2.2 hard top-K InfoNCE


def test_hard_topk_matches_loop_oracles_and_grows_with_k():
    topk = losses.hard_topk_infonce_loss
    symmetric = lambda a, b: topk(a, b, temperature=0.3, num_hard=2, symmetric=True)

    def compute(x, y, a, b):
        return dict(
            oracles=[topk(x, y, temperature=0.5, num_hard=k) for k in (1, 2)],
            by_k=[topk(a, b, temperature=0.2, num_hard=k) for k in range(1, 6)],
            infonce=losses.infonce_with_negatives(a, b, jnp.zeros((6, 0, 5)), temperature=0.2),
            vg=jax.value_and_grad(symmetric, (0, 1))(a, b),
        )

    got = jax.jit(compute)(X, Y, A, B)
    close(ref.hard_topk_infonce(X, Y, 0.5, 1), 0.65426964, rtol=1e-7)
    close(got["oracles"], [0.65426964, 0.79634098])
    for k, value in enumerate(got["by_k"], start=1):
        close(value, ref.hard_topk_infonce(A64, B64, 0.2, k))
    assert all(u < v for u, v in zip(got["by_k"], got["by_k"][1:]))
    close(got["by_k"][-1], got["infonce"])  # K = N − 1 is one-direction InfoNCE
    # symmetric: the mean of the two directions; the selection is piecewise constant, so the
    # gradient is that of the kept terms.
    value, grads = got["vg"]
    close(value, ref.hard_topk_infonce(A64, B64, 0.3, 2, True))
    for index in (0, 1):
        close_to_numeric_grad(
            grads[index], lambda a, b: ref.hard_topk_infonce(a, b, 0.3, 2, True), (A64, B64), index
        )


# ----------------------------------------------------------------------------------------------
# 2.12 LDR-KL and ALDR-KL

LDR_RANDOM = [(0.1, 10.0), (1.0, 0.5), (0.0, 2.0)]  # (θ, λ)


def test_ldr_kl_matches_loop_oracles_and_limits():
    low = with_row(LOGITS, 5, -200.0)  # a row whose softplus scores underflow in float32: q = 0, not 0/0

    def compute(o, t, logits, labels, low):
        return dict(
            oracles=[
                losses.ldr_kl_loss(o, t, threshold=th, lam=lam)
                for th, lam in ((0.1, 10.0), (1.0, 1.0), (2.0, 1.0))
            ],
            oracle_grad=jax.grad(losses.ldr_kl_loss)(o, t),
            random=[losses.ldr_kl_loss(logits, labels, threshold=th, lam=lam) for th, lam in LDR_RANDOM],
            grad=jax.grad(lambda v: losses.ldr_kl_loss(v, labels, threshold=0.3, lam=0.7))(logits),
            limits=[losses.ldr_kl_loss(logits, labels, lam=lam) for lam in (1e-4, 1e5)],
            low=jax.value_and_grad(lambda v: losses.ldr_kl_loss(v, labels))(low),
            tiny=jax.grad(lambda v: losses.ldr_kl_loss(v, labels, lam=1e-4))(logits),
        )

    got = jax.jit(compute)(O, T, LOGITS, LABELS, low)
    close(got["oracles"], [-0.39291341, 0.25503724, 1.055277])
    close(got["oracle_grad"][0], [-0.14065505, 0.16546437, 0.06929791])
    for value, (threshold, lam) in zip(got["random"], LDR_RANDOM):
        close(value, ref.ldr_kl(O64, Y64, threshold, lam))
    close_to_numeric_grad(got["grad"], lambda o: ref.ldr_kl(o, Y64, 0.3, 0.7), (O64,), 0)
    # λ → 0: the largest gap (minus λ log K); λ → ∞: the mean gap.
    scores = np.logaddexp(0.0, O64)
    q = scores / scores.mean(axis=1, keepdims=True)
    gaps = 0.1 * (np.arange(4)[None, :] != Y64[:, None]) + q - q[np.arange(6), Y64][:, None]
    close(got["limits"][0], np.mean(gaps.max(axis=1)) - 1e-4 * np.log(4))
    close(got["limits"][1], np.mean(gaps), atol=1e-5)
    value, grad = got["low"]
    close(value, ref.ldr_kl(np.asarray(low, np.float64), Y64, 0.1, 10.0))
    assert np.isfinite(grad).all() and np.isfinite(got["tiny"]).all()


def test_aldr_kl_matches_loop_over_steps_and_oracles():
    step = jax.jit(losses.aldr_kl_loss)
    state = losses.aldr_kl_init(5)
    for expected_loss, expected_lam in ((-0.79738912, [10, 9.99620993, 10, 9.97502671, 10]),
                                        (-0.79738915, [10, 9.99620706, 10, 9.97490203, 10])):  # fmt: skip
        loss, state = step(O, T, jnp.array([3, 1]), state)
        close(loss, expected_loss)
        close(state.lam, expected_lam, rtol=1e-6)
    step = jax.jit(functools.partial(losses.aldr_kl_loss, threshold=1.0, lam0=1.0))
    loss, state = step(O, T, jnp.array([3, 1]), losses.aldr_kl_init(5, lam0=1.0))
    close(loss, -0.11729385)
    close(state.lam, [1, 0.96431127, 1, 0.82325044, 1], rtol=1e-6)
    # Random rows over three steps, repeated ids (own λ for the loss, last occurrence stored), softplus.
    for softplus in (False, True):
        step = jax.jit(
            functools.partial(losses.aldr_kl_loss, threshold=0.5, lam0=1.0, alpha=1.5, softplus=softplus)
        )
        state = losses.aldr_kl_init(8, lam0=1.0)
        oracle = ref.ALDRKL(8, lam0=1.0, threshold=0.5, alpha=1.5, softplus=softplus)
        for n, ids in enumerate(([0, 3, 5, 7, 1, 2], [3, 1, 3, 6, 0, 3], [7, 3, 0, 4, 2, 6])):
            logits = O64 * (1.0 + n) - n
            loss, state = step(jnp.asarray(logits, jnp.float32), LABELS, jnp.array(ids), state)
            expected, _ = oracle.step(logits, Y64, ids)
            close(loss, expected)
            close(state.lam, oracle.lam, rtol=2e-6)


def test_aldr_kl_gradient_treats_the_new_lambda_as_a_constant():
    state = losses.aldr_kl_init(6, lam0=2.0).replace(lam=jnp.array([2.0, 1.4, 1.9, 1.2, 1.7, 1.5]))
    ids = [3, 0, 1, 5, 2, 4]
    oracle = ref.ALDRKL(6, lam0=2.0, threshold=0.3, alpha=3.0)
    oracle.lam = np.asarray(state.lam, np.float64)
    frozen = oracle.new_lambdas(O64, ids)
    loss = lambda o, i, st: losses.aldr_kl_loss(o, LABELS, i, st, threshold=0.3, lam0=2.0, alpha=3.0)[0]
    grad = jax.jit(jax.grad(loss))(LOGITS, jnp.array(ids), state)
    close_to_numeric_grad(grad, lambda o: ref.aldr_terms(o, Y64, frozen, 0.3, 2.0, 3.0), (O64,), 0)


def test_aldr_kl_state_properties():
    ids = jnp.array([1, 4, 6, 0, 3, 7])
    peaked = jnp.asarray(
        np.concatenate([[[50.0, 0, 0, 0], [0, 80.0, 0, 0], [1.0, 0, 0, -1.0]], O64[3:]]), jnp.float32
    )
    step = jax.jit(functools.partial(losses.aldr_kl_loss, lam0=1.0, alpha=1.5))
    state = losses.aldr_kl_init(10, lam0=1.0)
    for _ in range(3):
        _, state = step(peaked, LABELS, ids, state)
    np.testing.assert_array_equal(np.asarray(state.lam)[[2, 5, 8, 9]], 1.0)  # only indexed entries change
    lams = np.asarray(state.lam)[np.asarray(ids)]
    assert np.all((lams >= 1.0 - 1 / 1.5) & (lams < 1.0)), lams
    assert lams.min() < 1.0 - 1 / 1.5 + 0.05  # a peaked row drives λ near its lower bound
    huge_alpha = jax.jit(functools.partial(losses.aldr_kl_loss, lam0=1.0, alpha=1e12))
    _, state = huge_alpha(peaked, LABELS, ids, losses.aldr_kl_init(10, lam0=1.0))
    close(state.lam, 1.0, rtol=1e-9)  # α → ∞ keeps λ = λ₀
    # An all-zero row: q = 0, p uniform, λ = λ₀ and its term is λ₀ log((1 + (K−1) e^{θ/λ₀}) / K).
    zero_row = with_row(LOGITS, 5, 0.0)
    vg = jax.value_and_grad(lambda o, st: losses.aldr_kl_loss(o, LABELS, ids, st), has_aux=True)
    (loss, state), grad = jax.jit(vg)(zero_row, losses.aldr_kl_init(10))
    lams = ref.ALDRKL(10).new_lambdas(O64[:5], range(5))  # from the stored λ₀ = 10
    expected = (
        5 * ref.aldr_terms(O64[:5], Y64[:5], lams, 0.1, 10.0, 2.0) + 10 * np.log((1 + 3 * np.exp(0.01)) / 4)
    ) / 6
    close(loss, expected)
    close(np.asarray(state.lam)[7], 10.0)  # row 5 has id 7
    assert np.isfinite(grad).all()


# ----------------------------------------------------------------------------------------------
# 2.14 comp-sum

COMP_SUM_ORACLES = (
    (0.0, 0.9982427),
    (0.5, 0.77855999),
    (1.0, 0.62162707),
    (1.5, 0.50771913),
    (2.0, 0.42361878),
)
COMP_SUM_TAUS = (0.0, 0.3, 1.0, 1.5, 1.7, 2.0, 3.0, 1 - 1e-3, 1 + 1e-3)


def test_comp_sum_matches_loop_oracles_and_special_cases():
    hopeless = jnp.array([[0.0, 200.0], [0.0, 80.0], [0.0, 100.0]])

    def compute(o, t, logits, labels, hopeless):
        first = jnp.zeros(1, jnp.int32)
        return dict(
            oracles=[losses.comp_sum_loss(o, t, tau=tau) for tau, _ in COMP_SUM_ORACLES],
            taus={tau: losses.comp_sum_loss(logits, labels, tau=tau) for tau in COMP_SUM_TAUS},
            ce=optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean(),
            grad=jax.grad(lambda v: losses.comp_sum_loss(v, labels, tau=0.4))(logits),
            hopeless=[
                losses.comp_sum_loss(hopeless[i : i + 1], first, tau=tau)
                for i, tau in enumerate((2.0, 0.0, 0.0))
            ],
        )

    got = jax.jit(compute)(O, T, LOGITS, LABELS, hopeless)
    for value, (tau, oracle) in zip(got["oracles"], COMP_SUM_ORACLES):
        close(ref.comp_sum(O, T, tau), oracle, rtol=1e-7)
        close(value, oracle)
    taus = got["taus"]
    for tau in COMP_SUM_TAUS[:7]:
        close(taus[tau], ref.comp_sum(O64, Y64, tau))
    close_to_numeric_grad(got["grad"], lambda o: ref.comp_sum(o, Y64, 0.4), (O64,), 0)
    probs = np.exp(O64 - O64.max(axis=1, keepdims=True))
    p_y = (probs / probs.sum(axis=1, keepdims=True))[np.arange(6), Y64]
    close(taus[1.0], got["ce"])  # cross-entropy
    close(taus[2.0], np.mean(1 - p_y))  # MAE
    close(taus[1.5], np.mean((1 - p_y**0.5) / 0.5))  # GCE, q = 0.5
    close(taus[0.0], np.mean(1 / p_y - 1))  # sum-exponential
    for tau in COMP_SUM_TAUS[7:]:  # continuous at τ = 1
        close(taus[tau], taus[1.0], rtol=3e-3)
    # No u = e^ℓ − 1 is formed: MAE of a hopeless row is 1, not inf/inf; τ < 1 overflows only past ℓ ≈ 88/(1−τ).
    mae, finite, overflow = (float(v) for v in got["hopeless"])
    assert mae == 1.0 and np.isfinite(finite) and overflow == np.inf


def test_comp_sum_clip_matches_loop_and_clip_loss():
    taus = (0.0, 0.7, 1.0, 2.0)
    oracles = ((1.5, 0.83340596), (0.5, 2.2424998), (1.0, 1.3111575))

    def compute(x, y, a, b):
        return dict(
            oracles=[losses.comp_sum_clip_loss(x, y, 10.0, tau=tau) for tau, _ in oracles],
            random=[losses.comp_sum_clip_loss(a, b, 5.0, tau=tau) for tau in taus],
            clip=losses.clip_loss(a, b, 5.0),
            grads=jax.grad(lambda a, b, s: losses.comp_sum_clip_loss(a, b, s, tau=1.6), (0, 1, 2))(a, b, 4.0),
        )

    got = jax.jit(compute)(X, Y, A, B)
    for value, (tau, oracle) in zip(got["oracles"], oracles):
        close(ref.comp_sum_clip(X, Y, 10.0, tau), oracle, rtol=1e-7)
        close(value, oracle)
    for value, tau in zip(got["random"], taus):
        close(value, ref.comp_sum_clip(A64, B64, 5.0, tau))
    close(got["random"][2], got["clip"])  # τ = 1 is clip_loss
    for index in (0, 1, 2):  # the logit scale's gradient too
        close_to_numeric_grad(got["grads"][index], lambda a, b, s: ref.comp_sum_clip(a, b, s, 1.6), (A64, B64, 4.0),
                              index)  # fmt: skip


# ----------------------------------------------------------------------------------------------
# shard_map ≡ one device. A (2, 2, 2) mesh holds the 2-, 4- and 8-device splits (batch split over
# ("a",), ("a", "b") or all three axes, replicated over the rest) in ONE compiled function per test.

MESH = parallel.data_mesh(("a", "b", "c"), shape=(2, 2, 2))
SPLITS = {"2 devices": ("a",), "4 devices": ("a", "b"), "8 devices": ("a", "b", "c")}
EMB_A, EMB_B = unit(11, 8, 4), unit(12, 8, 4)
CLS_LOGITS, CLS_LABELS = logits_and_labels(13, 8, 5)


def _compare(results, expected, name):
    for label, got in results.items():
        for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6, err_msg=f"{name}, {label}")


def _sharded(fn, axes, specs, out_specs, argnums, has_aux=False, **kwargs):
    mapped = jax.shard_map(functools.partial(fn, axis_name=axes, **kwargs), mesh=MESH, in_specs=specs,
                           out_specs=out_specs)  # fmt: skip
    return jax.value_and_grad(mapped, argnums, has_aux=has_aux)


DISTRIBUTED = {  # name: (fn, args, differentiated argnums)
    "hcl": (lambda a, b, **kw: losses.hcl_loss(a, b, temperature=0.3, **kw), (EMB_A, EMB_B), (0, 1)),
    "debiased": (lambda a, b, **kw: losses.debiased_contrastive_loss(a, b, **kw), (EMB_A, EMB_B), (0, 1)),
    "hard_topk": (lambda a, b, **kw: losses.hard_topk_infonce_loss(a, b, temperature=0.3, num_hard=3,
                                                                   symmetric=True, **kw), (EMB_A, EMB_B), (0, 1)),
    "ldr_kl": (lambda o, y, **kw: losses.ldr_kl_loss(o, y, **kw), (CLS_LOGITS, CLS_LABELS), (0,)),
    "comp_sum": (lambda o, y, **kw: losses.comp_sum_loss(o, y, tau=0.6, **kw), (CLS_LOGITS, CLS_LABELS), (0,)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(DISTRIBUTED))
def test_under_shard_map_equals_single_device(name):
    fn, args, argnums = DISTRIBUTED[name]

    def run(*args):
        single = jax.value_and_grad(fn, argnums)(*args)
        return single, {
            label: _sharded(fn, axes, (P(axes),) * len(args), P(), argnums)(*args)
            for label, axes in SPLITS.items()
        }

    expected, results = jax.jit(run)(*args)
    _compare(results, expected, name)


def test_comp_sum_clip_under_shard_map_all_gather_and_ring():
    fn = lambda a, b, s, **kw: losses.comp_sum_clip_loss(a, b, s, tau=1.4, **kw)
    argnums, specs = (0, 1, 2), lambda axes: (P(axes), P(axes), P())

    def run(a, b, s):
        sharded = {
            label: _sharded(fn, axes, specs(axes), P(), argnums)(a, b, s) for label, axes in SPLITS.items()
        }
        axes = SPLITS["8 devices"]
        sharded["ring, 8 devices"] = _sharded(fn, axes, specs(axes), P(), argnums, exchange="ring")(a, b, s)
        return jax.value_and_grad(fn, argnums)(a, b, s), sharded

    single, sharded = jax.jit(run)(EMB_A, EMB_B, jnp.float32(6.0))
    _compare(sharded, single, "comp_sum_clip")


def test_aldr_kl_under_shard_map_with_replicated_and_sharded_state():
    ids = jnp.array([3, 9, 14, 0, 7, 9, 12, 5])  # id 9 twice, on different devices
    state = losses.aldr_kl_init(16, lam0=1.0).replace(lam=jnp.asarray(np.linspace(0.6, 1.0, 16), jnp.float32))
    fn = lambda o, y, i, st, **kw: losses.aldr_kl_loss(o, y, i, st, threshold=0.5, lam0=1.0, **kw)

    def run(o, y, i, st):
        single = jax.value_and_grad(fn, 0, has_aux=True)(o, y, i, st)
        results = {
            label: _sharded(fn, axes, (P(axes),) * 3 + (P(),), (P(), P()), 0, has_aux=True)(o, y, i, st)
            for label, axes in SPLITS.items()
        }
        axes = SPLITS["8 devices"]
        results["sharded state, 8 devices"] = _sharded(fn, axes, (P(axes),) * 4, (P(), P(axes)), 0,
                                                       has_aux=True)(o, y, i, st)  # fmt: skip
        return single, results

    single, results = jax.jit(run)(CLS_LOGITS, CLS_LABELS, ids, state)
    _compare(results, single, "aldr_kl_loss")
    assert np.asarray(single[0][1].lam)[9] != np.asarray(state.lam)[9]


def test_gathering_losses_refuse_the_ring_and_count_the_global_batch():
    two = parallel.data_mesh("data", devices=jax.devices()[:2])
    on_two = lambda fn: jax.shard_map(fn, mesh=two, in_specs=(P("data"), P("data")), out_specs=P())
    for name, fn in (("hcl_loss", losses.hcl_loss), ("debiased_contrastive_loss", losses.debiased_contrastive_loss),
                     ("hard_topk_infonce_loss", functools.partial(losses.hard_topk_infonce_loss, temperature=0.5,
                                                                  num_hard=1))):  # fmt: skip
        with pytest.raises(ValueError, match=f"{name} supports exchange"):
            on_two(lambda a, b, fn=fn: fn(a, b, axis_name="data", exchange="ring"))(A, B)
    # One row per device on two devices is a global batch of two: K = 1 is the most there is.
    with pytest.raises(ValueError, match=r"num_hard must be an int in \[1, N - 1\] = \[1, 1\]"):
        on_two(
            lambda a, b: losses.hard_topk_infonce_loss(a, b, temperature=0.5, num_hard=2, axis_name="data")
        )(A64[:2], B64[:2])


# ----------------------------------------------------------------------------------------------
# bf16 inputs, tiny temperatures, ties


def test_bf16_inputs_give_float32_close_to_the_loop_on_rounded_inputs():
    a16, b16, o16 = A.astype(jnp.bfloat16), B.astype(jnp.bfloat16), LOGITS.astype(jnp.bfloat16)
    a, b, o = (np.asarray(v, np.float64) for v in (a16, b16, o16))
    state, ids = losses.aldr_kl_init(6, lam0=1.0), [5, 0, 2, 1, 3, 4]

    def compute(a16, b16, o16, labels, ids, state):
        return [
            losses.hcl_loss(a16, b16),
            losses.debiased_contrastive_loss(a16, b16),
            losses.hard_topk_infonce_loss(a16, b16, temperature=0.2, num_hard=2),
            losses.comp_sum_clip_loss(a16, b16, 10.0, tau=1.5),
            losses.ldr_kl_loss(o16, labels),
            losses.comp_sum_loss(o16, labels, tau=0.5),
            losses.aldr_kl_loss(o16, labels, ids, state, lam0=1.0)[0],
        ]

    got = jax.jit(compute)(a16, b16, o16, LABELS, jnp.array(ids), state)
    expected = [
        ref.hcl(a, b, 0.5, 0.1, 1.0),
        ref.hcl(a, b, 0.5, 0.1, 0.0),
        ref.hard_topk_infonce(a, b, 0.2, 2),
        ref.comp_sum_clip(a, b, 10.0, 1.5),
        ref.ldr_kl(o, Y64, 0.1, 10.0),
        ref.comp_sum(o, Y64, 0.5),
        ref.ALDRKL(6, lam0=1.0).step(o, Y64, ids)[0],
    ]
    for value, reference in zip(got, expected, strict=True):
        assert value.dtype == jnp.float32
        close(value, reference, rtol=1e-5, atol=1e-5)


def test_embedding_losses_finite_at_tiny_temperatures_and_ties():
    fns = [
        lambda a, b: losses.hcl_loss(a, b, temperature=1e-4, tau_plus=0.2, beta=0.7),
        lambda a, b: losses.debiased_contrastive_loss(a, b, temperature=1e-4, tau_plus=0.5),
        lambda a, b: losses.hard_topk_infonce_loss(a, b, temperature=1e-4, num_hard=2, symmetric=True),
        lambda a, b: losses.comp_sum_clip_loss(a, b, 1e4, tau=1.6),
    ]
    all_of_them = jax.jit(lambda a, b: [jax.value_and_grad(fn, (0, 1))(a, b) for fn in fns])
    same = jnp.asarray(np.tile(A64[:1], (6, 1)), jnp.float32)  # every similarity ties at 1
    for a, b in ((A, B), (same, same)):
        assert all(np.isfinite(leaf).all() for leaf in jax.tree.leaves(all_of_them(a, b)))


# ----------------------------------------------------------------------------------------------
# Bad input (NumPy inputs: nothing is computed before the error)


def test_bad_inputs_raise_clear_errors():
    a, b, logits, labels = np.asarray(A), np.asarray(B), np.asarray(LOGITS), np.asarray(LABELS)
    state, ids = losses.aldr_kl_init(6), np.arange(6, dtype=np.int32)
    with_label = lambda value: np.concatenate([[value], labels[1:]]).astype(labels.dtype)
    topk = functools.partial(losses.hard_topk_infonce_loss, a, b)
    value_errors = [
        (lambda: losses.hcl_loss(a, b[:, :3]), "same shape"),
        (lambda: losses.hcl_loss(a[None], b[None]), "rank 2"),
        (lambda: losses.hcl_loss(a, b, temperature=0.0), "temperature"),
        (lambda: losses.hcl_loss(a, b, tau_plus=1.0), "tau_plus"),
        (lambda: losses.hcl_loss(a, b, tau_plus=-0.1), "tau_plus"),
        (lambda: losses.hcl_loss(a, b, beta=-1.0), "beta"),
        (lambda: losses.hcl_loss(a[:1], b[:1]), "hcl_loss needs at least 2 samples"),
        (
            lambda: losses.debiased_contrastive_loss(a[:1], b[:1]),
            "debiased_contrastive_loss needs at least 2",
        ),
        (lambda: topk(temperature=0.5, num_hard=0), "num_hard"),
        (lambda: topk(temperature=0.5, num_hard=6), "num_hard"),
        (lambda: topk(temperature=0.5, num_hard=2.0), "num_hard"),
        (lambda: topk(temperature=0.5, num_hard=True), "num_hard"),
        (lambda: topk(temperature=-1.0, num_hard=1), "temperature"),
        (lambda: losses.ldr_kl_loss(logits[0], labels[0]), "rank 2"),
        (lambda: losses.ldr_kl_loss(logits[:, :1], labels), "K >= 2"),
        (lambda: losses.ldr_kl_loss(logits, labels[:5]), "labels has 5 entries"),
        (lambda: losses.ldr_kl_loss(logits, with_label(4)), r"labels must lie in \[0, 4\)"),
        (lambda: losses.ldr_kl_loss(logits, with_label(-1)), "labels must lie"),
        (lambda: losses.ldr_kl_loss(logits, labels, threshold=-0.1), "threshold"),
        (lambda: losses.ldr_kl_loss(logits, labels, lam=0.0), "lam"),
        (lambda: losses.aldr_kl_loss(logits, labels, ids, state, alpha=1.0), "alpha"),
        (lambda: losses.aldr_kl_loss(logits, labels, ids, state, lam0=1.0), "lam0=1.0 but the state"),
        (lambda: losses.aldr_kl_loss(logits, labels, ids + 1, state), r"indices must lie in \[0, 6\)"),
        (lambda: losses.aldr_kl_loss(logits, labels, ids[:4], state), "indices has 4 entries"),
        (lambda: losses.aldr_kl_loss(logits, with_label(7), ids, state), "labels must lie"),
        (
            lambda: losses.aldr_kl_loss(logits, labels, ids, state.replace(lam=np.ones(4, np.float32))),
            "replicated",
        ),
        (lambda: losses.aldr_kl_init(0), "num_samples"),
        (lambda: losses.aldr_kl_init(4, lam0=0.0), "lam0"),
        (lambda: losses.comp_sum_loss(logits, labels, tau=-1.0), "tau"),
        (lambda: losses.comp_sum_loss(logits, with_label(9)), "labels must lie"),
        (lambda: losses.comp_sum_clip_loss(a, b, 10.0, tau=-0.5), "tau"),
        (lambda: losses.comp_sum_clip_loss(a, b, np.ones(2, np.float32)), "logit_scale"),
        (lambda: losses.comp_sum_clip_loss(a, b[:4], 10.0), "same shape"),
    ]
    for call, message in value_errors:
        with pytest.raises(ValueError, match=message):
            call()
    type_errors = [
        (lambda: losses.hcl_loss(np.ones((4, 3), np.int32), np.ones((4, 3), np.int32)), "z_a"),
        (lambda: losses.ldr_kl_loss(logits, labels.astype(np.float32)), "labels"),
        (lambda: losses.comp_sum_loss(logits.astype(np.int32), labels), "logits"),
        (lambda: losses.aldr_kl_loss(logits, labels, ids.astype(np.float32), state), "indices"),
        (lambda: losses.aldr_kl_loss(logits, labels, ids, {"lam": state.lam}), "aldr_kl_init"),
    ]
    for call, message in type_errors:
        with pytest.raises(TypeError, match=message):
            call()


def test_docstring_examples_run():
    functions = [losses.hcl_loss, losses.debiased_contrastive_loss, losses.hard_topk_infonce_loss,
                 losses.ldr_kl_loss, losses.aldr_kl_init, losses.aldr_kl_loss, losses.comp_sum_loss,
                 losses.comp_sum_clip_loss]  # fmt: skip
    runner = doctest.DocTestRunner()
    for fn in functions:
        tests = doctest.DocTestFinder().find(fn, globs=dict(fn.__globals__))
        assert tests and tests[0].examples, fn.__name__
        for test in tests:
            runner.run(test)
    assert runner.summarize(verbose=False).failed == 0
