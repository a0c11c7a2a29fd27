"""The wider catalogue: loop references, identities between losses, gradients, devices and bad input."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from contrastive_jax import losses, parallel
from tests import references as ref_core
from tests import references_catalogue as ref


def unit(seed, *shape):
    return cj.l2_normalize(jax.random.normal(jax.random.key(seed), shape))


A, B = unit(0, 6, 5), unit(1, 6, 5)
JIT_OR_NOT = pytest.mark.parametrize("wrap", [lambda f: f, jax.jit], ids=["eager", "jit"])


@JIT_OR_NOT
def test_two_view_losses_match_loops(wrap):
    checks = [
        (lambda a, b: losses.nt_xent_loss(a, b, temperature=0.2), ref.nt_xent(A, B, 0.2)),
        (lambda a, b: losses.dcl_loss(a, b, temperature=0.2), ref.dcl(A, B, 0.2)),
        (lambda a, b: losses.dclw_loss(a, b, temperature=0.2, sigma=0.5),
         ref.dcl(A, B, 0.2, ref.dclw_weights(A, B, 0.5))),
        (lambda a, b: losses.dhel_loss(a, b, temperature=0.3), ref.mv_dhel([A, B], 0.3)),
    ]  # fmt: skip
    for fn, expected in checks:
        np.testing.assert_allclose(wrap(fn)(A, B), expected, rtol=1e-5)


@JIT_OR_NOT
def test_multiview_losses_match_loops(wrap):
    views = jnp.stack([A, B, unit(2, 6, 5)])
    np.testing.assert_allclose(wrap(functools.partial(losses.mv_infonce_loss, temperature=0.3))(views),
                               ref.mv_infonce(views, 0.3), rtol=1e-5)  # fmt: skip
    np.testing.assert_allclose(wrap(functools.partial(losses.mv_dhel_loss, temperature=0.3))(views),
                               ref.mv_dhel(views, 0.3), rtol=1e-5)  # fmt: skip


@pytest.mark.parametrize("mode", ["all", "one"])
def test_supcon_matches_loop_with_several_positives(mode):
    features = jnp.stack([A, B, unit(3, 6, 5)], axis=1)
    labels = jnp.array([0, 1, 0, 2, 1, 3])  # label 3 has one sample: its view-mates are its positives
    got = losses.supcon_loss(features, labels, temperature=0.1, base_temperature=0.07, contrast_mode=mode)
    np.testing.assert_allclose(got, ref.supcon(features, labels, 0.1, 0.07, mode), rtol=1e-5)
    mask = (labels[:, None] == labels[None, :]).astype(jnp.float32)
    np.testing.assert_allclose(losses.supcon_loss(features, mask=mask, temperature=0.1, base_temperature=0.07,
                                                  contrast_mode=mode), got, rtol=1e-6)  # fmt: skip


def test_supcon_anchor_without_positives_counts_as_zero():
    features = jnp.stack([A], axis=1)  # one view: a unique label has no positive at all
    labels = jnp.array([0, 0, 1, 1, 2, 3])
    got = losses.supcon_loss(features, labels, temperature=0.1, base_temperature=0.1)
    np.testing.assert_allclose(got, ref.supcon(features, labels, 0.1, 0.1), rtol=1e-5)


def test_oracles_between_losses():
    tau = 0.2
    nt = losses.nt_xent_loss(A, B, temperature=tau)
    # SupCon with one positive per anchor (no labels, two views) is NT-Xent.
    np.testing.assert_allclose(losses.supcon_loss(jnp.stack([A, B], 1), temperature=tau, base_temperature=tau), nt,
                               rtol=1e-6)  # fmt: skip
    # NT-Xent = DCL + mean softplus(pos − lse_neg): DCL is below NT-Xent.
    z, n = np.concatenate([A, B]).astype(np.float64), 6
    sim = z @ z.T / tau
    partner = (np.arange(12) + n) % 12
    gap = []
    for i in range(12):
        negs = [sim[i, k] for k in range(12) if k not in (i, partner[i])]
        gap.append(np.logaddexp(0, sim[i, partner[i]] - np.logaddexp.reduce(negs)))
    np.testing.assert_allclose(nt, losses.dcl_loss(A, B, temperature=tau) + np.mean(gap), rtol=1e-5)
    # optax's ntxent agrees when each label has exactly one positive (the other view).
    np.testing.assert_allclose(
        optax.losses.ntxent(jnp.concatenate([A, B]), jnp.tile(jnp.arange(6), 2), temperature=tau),
        nt,
        rtol=1e-5,
    )
    # MV-DHEL with two views is DHEL; MV-InfoNCE(V=2) >= NT-Xent, equal for identical views.
    np.testing.assert_allclose(losses.mv_dhel_loss(jnp.stack([A, B]), temperature=tau),
                               losses.dhel_loss(A, B, temperature=tau), rtol=1e-6)  # fmt: skip
    assert losses.mv_infonce_loss(jnp.stack([A, B]), temperature=tau) > nt
    np.testing.assert_allclose(losses.mv_infonce_loss(jnp.stack([A, A]), temperature=tau),
                               losses.nt_xent_loss(A, A, temperature=tau), rtol=1e-6)  # fmt: skip
    # DCLW with σ → ∞ has uniform weights, i.e. DCL.
    np.testing.assert_allclose(losses.dclw_loss(A, B, sigma=1e6), losses.dcl_loss(A, B), rtol=1e-5)


def test_hard_negatives():
    image, text, cf = A, B, unit(4, 6, 5)
    assert float(losses.counting_loss(image, text, text)) == pytest.approx(np.log(2), rel=1e-6)
    expected = np.mean(np.logaddexp(0, np.sum(np.asarray(image) * (np.asarray(cf) - np.asarray(text)), 1)))
    np.testing.assert_allclose(losses.counting_loss(image, text, cf), expected, rtol=1e-5)
    queue = unit(5, 9, 5)
    per_query = unit(6, 6, 4, 5)
    for negatives, in_batch in ((queue, True), (per_query, True), (queue, False)):
        np.testing.assert_allclose(losses.infonce_with_negatives(A, B, negatives, temperature=0.2, in_batch=in_batch),
                                   ref.infonce_extra(A, B, negatives, 0.2, in_batch), rtol=1e-5)  # fmt: skip


def test_mochi():
    key = jax.random.key(7)
    queue = unit(8, 32, 5)
    synthetic = losses.mochi_negatives(key, A, queue, num_hardest=4, num_mixed=5, num_query_mixed=3)
    assert synthetic.shape == (6, 8, 5)
    np.testing.assert_allclose(jnp.linalg.norm(synthetic, axis=-1), 1.0, rtol=1e-5)
    # Mixed points lie in the span of the query's 4 hardest negatives (s) or of q and them (s').
    hardest = np.asarray(queue)[np.argsort(-(np.asarray(A) @ np.asarray(queue).T), axis=1)[:, :4]]
    for i in range(6):
        basis = np.concatenate([hardest[i], np.asarray(A)[i : i + 1]]).T
        for k in range(8):
            coef, *_ = np.linalg.lstsq(
                basis if k >= 5 else basis[:, :4], np.asarray(synthetic[i, k]), rcond=None
            )
            residual = (basis if k >= 5 else basis[:, :4]) @ coef - np.asarray(synthetic[i, k])
            assert np.linalg.norm(residual) < 1e-4
    # s = s' = 0 adds nothing: plain InfoNCE with the queue.
    empty = losses.mochi_negatives(key, A, queue, num_mixed=0, num_query_mixed=0)
    assert empty.shape == (6, 0, 5)
    np.testing.assert_allclose(losses.infonce_with_negatives(A, B, empty), ref.infonce_extra(A, B, np.zeros((6, 0, 5)),
                                                                                             0.07), rtol=1e-5)  # fmt: skip
    grads = jax.grad(
        lambda q: losses.mochi_negatives(key, q, queue, num_hardest=4, num_mixed=2, num_query_mixed=2).sum()
    )(A)
    assert np.all(grads == 0)  # constants for the gradient by default


def test_cwcl():
    np.testing.assert_allclose(losses.cwcl_loss(A, B, temperature=0.2), ref.cwcl(A, B, 0.2), rtol=1e-5)
    identity = jnp.eye(6)
    one_direction = jnp.mean(jax.nn.logsumexp(A @ B.T / 0.2, axis=1) - jnp.sum(A * B, 1) / 0.2)
    np.testing.assert_allclose(
        losses.cwcl_loss(A, B, temperature=0.2, weights=identity), one_direction, rtol=1e-5
    )


def test_mw_loss_and_auc():
    rng = np.random.default_rng(0)
    scores = rng.normal(size=(4, 7)).astype(np.float32)
    scores[0, :3] = scores[0, 3]  # ties
    labels = rng.random((4, 7)) < 0.4
    labels[:, 0], labels[:, 1] = True, False
    np.testing.assert_allclose(losses.mw_loss(scores, labels), ref.mw(scores, labels), rtol=1e-5)
    for row in range(4):
        assert float(losses.auc(scores[row], labels[row])) == pytest.approx(ref.auc(scores[row], labels[row]))
    equal = jnp.zeros(6)
    lab = jnp.array([1, 0, 1, 0, 0, 1], bool)
    assert float(losses.mw_loss(equal, lab)) == pytest.approx(np.log(2), rel=1e-6)
    assert float(losses.auc(equal, lab)) == 0.5
    aucs = losses.auc(scores, labels)
    assert float(losses.mw_loss(scores, labels)) >= float(np.log(2) * (1 - np.mean(aucs)))
    separations = [float(losses.mw_loss(jnp.where(lab, m, 0.0), lab)) for m in (0.0, 0.5, 1.0, 2.0)]
    assert all(x > y for x, y in zip(separations, separations[1:]))  # monotone in the margin
    assert np.isnan(losses.auc(jnp.zeros(3), jnp.zeros(3, bool)))


def test_alignment_and_uniformity():
    np.testing.assert_allclose(losses.alignment_loss(A, B), ref.alignment(A, B), rtol=1e-5)
    np.testing.assert_allclose(losses.alignment_loss(A, B, alpha=3.0), ref.alignment(A, B, 3.0), rtol=1e-5)
    np.testing.assert_allclose(losses.uniformity_loss(A), ref.uniformity(A), rtol=1e-5)
    # A regular simplex of n points (n ≤ D + 1) attains −t(2 + 2/(n−1)), the minimum.
    n = 5
    simplex = cj.l2_normalize(jnp.eye(n) - 1.0 / n)
    np.testing.assert_allclose(losses.uniformity_loss(simplex), -2.0 * (2 + 2 / (n - 1)), rtol=1e-5)
    assert losses.uniformity_loss(simplex) < losses.uniformity_loss(cj.l2_normalize(simplex + 2.0))
    combined = losses.clip_align_uniform_loss(A, B)
    expected = (
        ref_core.clip_loss(A, B, 100.0) + ref.alignment(A, B) + 0.5 * (ref.uniformity(A) + ref.uniformity(B))
    )
    np.testing.assert_allclose(combined, expected, rtol=1e-5)


_FROZEN = np.asarray(unit(10, 3, 3), np.float64)
_FROZEN_WEIGHTS = _FROZEN @ _FROZEN.T / 2 + 0.5
GRADIENT_CASES = {
    "nt_xent": (lambda a, b: losses.nt_xent_loss(a, b, temperature=0.3), lambda a, b: ref.nt_xent(a, b, 0.3)),
    "supcon": (lambda a, b: losses.supcon_loss(jnp.stack([a, b], 1), jnp.array([0, 1, 0]), temperature=0.3),
               lambda a, b: ref.supcon(np.stack([a, b], 1), [0, 1, 0], 0.3, 0.07)),
    "dhel": (lambda a, b: losses.dhel_loss(a, b, temperature=0.3), lambda a, b: ref.mv_dhel([a, b], 0.3)),
    "mv_infonce": (lambda a, b: losses.mv_infonce_loss(jnp.stack([a, b, 0.5 * (a + b)]), temperature=0.3),
                   lambda a, b: ref.mv_infonce([a, b, 0.5 * (a + b)], 0.3)),
    # CWCL's weights are constants for the gradient: the reference holds them at their value.
    "cwcl": (lambda a, b: losses.cwcl_loss(a, b, temperature=0.3),
             lambda a, b: ref.cwcl(a, b, 0.3, weights=_FROZEN_WEIGHTS)),
    "geometry": (lambda a, b: losses.uniformity_loss(a) + losses.alignment_loss(a, b),
                 lambda a, b: ref.uniformity(a) + ref.alignment(a, b)),
}  # fmt: skip


@pytest.mark.parametrize("name", sorted(GRADIENT_CASES))
def test_gradients_match_finite_differences_of_the_references(name):
    fn, reference = GRADIENT_CASES[name]
    a, b = np.asarray(unit(9, 3, 3), np.float64), np.asarray(unit(10, 3, 3), np.float64)
    grads = jax.grad(fn, (0, 1))(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))
    for index in range(2):
        numeric = ref_core.numeric_grad(reference, (a, b), index)
        np.testing.assert_allclose(grads[index], numeric, rtol=2e-4, atol=2e-6)


def test_bf16_inputs_stay_close_and_finite_for_tiny_temperature():
    a16, b16 = A.astype(jnp.bfloat16), B.astype(jnp.bfloat16)
    for fn in (losses.nt_xent_loss, losses.dcl_loss, losses.dhel_loss):
        value = fn(a16, b16)
        assert value.dtype == jnp.float32
        np.testing.assert_allclose(value, fn(A, B), rtol=3e-2)
        value, grads = jax.value_and_grad(lambda a, b: fn(a, b, temperature=1e-4), (0, 1))(A, A)
        assert np.isfinite(value) and all(np.isfinite(g).all() for g in grads)


DISTRIBUTED = {
    "nt_xent": lambda a, b, **kw: losses.nt_xent_loss(a, b, temperature=0.3, **kw),
    "supcon": lambda a, b, **kw: losses.supcon_loss(jnp.stack([a, b], 1), jnp.sum(a > 0, axis=1), **kw),
    "dcl": lambda a, b, **kw: losses.dcl_loss(a, b, **kw),
    "dclw": lambda a, b, **kw: losses.dclw_loss(a, b, **kw),
    "dhel": lambda a, b, **kw: losses.dhel_loss(a, b, **kw),
    "mv_infonce": lambda a, b, **kw: losses.mv_infonce_loss(jnp.stack([a, b, a + b]), **kw),
    "mv_dhel": lambda a, b, **kw: losses.mv_dhel_loss(jnp.stack([a, b, b]), **kw),
    "clip_align_uniform": lambda a, b, **kw: losses.clip_align_uniform_loss(a, b, 20.0, **kw),
}


@pytest.mark.parametrize("devices", [2, 4, 8])
@pytest.mark.parametrize("name", sorted(DISTRIBUTED))
def test_catalogue_under_shard_map_equals_single_device(name, devices):
    fn = DISTRIBUTED[name]
    a, b = unit(11, 8, 4), unit(12, 8, 4)
    mesh = parallel.data_mesh("data", devices=jax.devices()[:devices])
    sharded = jax.shard_map(functools.partial(fn, axis_name="data"), mesh=mesh, in_specs=(P("data"), P("data")),
                            out_specs=P())  # fmt: skip
    got = jax.jit(jax.value_and_grad(sharded, (0, 1)))(a, b)
    expected = jax.value_and_grad(fn, (0, 1))(a, b)
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_bad_inputs():
    with pytest.raises(ValueError):
        losses.nt_xent_loss(A, B[:, :3])
    with pytest.raises(ValueError):
        losses.nt_xent_loss(A, B, temperature=0.0)
    with pytest.raises(ValueError):
        losses.supcon_loss(A)  # rank 2 instead of [N, V, D]
    with pytest.raises(ValueError):
        losses.supcon_loss(jnp.stack([A, B], 1), jnp.zeros(6, jnp.int32), mask=jnp.eye(6))
    with pytest.raises(TypeError):
        losses.supcon_loss(jnp.stack([A, B], 1), jnp.zeros(6))
    with pytest.raises(ValueError):
        losses.mv_dhel_loss(A[None])  # one view
    with pytest.raises(ValueError):
        losses.infonce_with_negatives(A, B, jnp.zeros((6, 3, 4)))
    with pytest.raises(ValueError):
        losses.mw_loss(jnp.zeros(4), jnp.zeros(3, bool))
    with pytest.raises(ValueError):
        losses.uniformity_loss(A[:1])
    mesh = parallel.data_mesh("data", devices=jax.devices()[:2])
    with pytest.raises(ValueError, match="ring"):
        jax.shard_map(lambda a, b: losses.nt_xent_loss(a, b, axis_name="data", exchange="ring"), mesh=mesh,
                      in_specs=(P("data"), P("data")), out_specs=P())(A, B)  # fmt: skip


DECOUPLED = {
    "dcl_loss": lambda a, b, **kw: losses.dcl_loss(a, b, **kw),
    "dclw_loss": lambda a, b, **kw: losses.dclw_loss(a, b, **kw),
    "dhel_loss": lambda a, b, **kw: losses.dhel_loss(a, b, **kw),
    "mv_dhel_loss": lambda a, b, **kw: losses.mv_dhel_loss(jnp.stack([a, b, b]), **kw),
}


@pytest.mark.parametrize("name", sorted(DECOUPLED))
def test_decoupled_losses_reject_a_batch_without_negatives(name):
    fn = DECOUPLED[name]
    with pytest.raises(ValueError, match=f"{name} needs at least 2 samples"):
        jax.jit(fn)(A[:1], B[:1])
    # Across devices the global batch counts: one row on each of 2 devices is a batch of 2 ...
    two = parallel.data_mesh("data", devices=jax.devices()[:2])
    shard = lambda mesh, axes: jax.shard_map(
        functools.partial(fn, axis_name=axes, exchange="grouped" if len(axes) == 2 else "all_gather"),
        mesh=mesh, in_specs=(P(axes), P(axes)), out_specs=P())  # fmt: skip
    np.testing.assert_allclose(shard(two, ("data",))(A[:2], B[:2]), fn(A[:2], B[:2]), rtol=1e-5)
    # ... but 2 groups of one member each (grouped exchange) are two batches of one.
    groups = parallel.data_mesh(("group", "member"), shape=(2, 1), devices=jax.devices()[:2])
    with pytest.raises(ValueError, match="across 1 devices"):
        shard(groups, ("group", "member"))(A[:2], B[:2])


def test_dclw_weight_has_the_papers_factor_n():
    # The paper divides by the batch mean of exp(s_i/σ): w = 2 − N·softmax. Early releases of the
    # PyTorch reference code left out N (w = 2 − softmax ≈ 2): a different loss.
    a, b = unit(0, 8, 5), unit(1, 8, 5)
    with_n = ref.dclw_weights(a, b, 0.5)
    without_n = [2 - (2 - w) / 8 for w in with_n]  # 2 − softmax_i
    np.testing.assert_allclose(ref.dcl(a, b, 0.2, with_n), 5.3368, atol=1e-4)
    np.testing.assert_allclose(ref.dcl(a, b, 0.2, without_n), 3.6515, atol=1e-4)
    np.testing.assert_allclose(losses.dclw_loss(a, b, temperature=0.2, sigma=0.5), 5.3368, atol=1e-4)
