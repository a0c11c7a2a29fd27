"""Every core loss × every exchange under shard_map equals the single-device loss on the global batch.

Checked for values and gradients, on 1, 2, 4 and 8 (fake CPU) devices, with the gradient taken
outside shard_map (the DESIGN's primary pattern), inside it followed by a pmean (the pmap
habit), under `check_vma=False`, and under `jax.pmap`.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from benchmarks.hlo_accounting import _group_size
from contrastive_jax import losses, parallel

BATCH, DIM = 16, 8
RTOL = 1e-5


def data(seed=0, batch=BATCH):
    keys = jax.random.split(jax.random.key(seed), 4)
    x = cj.l2_normalize(jax.random.normal(keys[0], (batch, DIM)))
    y = cj.l2_normalize(jax.random.normal(keys[1], (batch, DIM)))
    logits = jax.random.normal(keys[2], (batch, 5, 9))
    labels = jax.random.randint(keys[3], (batch, 5), 0, 9)
    return x, y, logits, labels


# Each case: (loss on local arrays with parallel kwargs, replicated scalars, sharded extra inputs).
def clip_case(x, y, s, **kw):
    return losses.clip_loss(x, y, s, label_smoothing=0.1, **kw)


def siglip_case(x, y, s, b, **kw):
    return losses.siglip_loss(x, y, s, b, **kw)


def coca_case(x, y, s, logits, labels, **kw):
    return losses.coca_loss(x, y, s, logits, labels, **kw)[0]


CASES = {
    "clip": (clip_case, (jnp.float32(7.0),), ()),
    "siglip": (siglip_case, (jnp.float32(7.0), jnp.float32(-4.0)), ()),
    "coca": (coca_case, (jnp.float32(7.0),), ("logits", "labels")),
}


def run_case(name, mesh, axis_name, exchange, block_size=None, **options):
    fn, scalars, extra_names = CASES[name]
    x, y, logits, labels = data()
    extras = {"logits": logits, "labels": labels}
    extra = tuple(extras[k] for k in extra_names)
    kwargs = {} if name == "coca" and block_size is None else {"block_size": block_size, **options}
    single = lambda x, y, *s: fn(x, y, *s[: len(scalars)], *s[len(scalars) :], **kwargs)
    sharded = jax.shard_map(
        lambda x, y, *s: fn(x, y, *s, axis_name=axis_name, exchange=exchange, **kwargs),
        mesh=mesh,
        in_specs=(P(mesh.axis_names), P(mesh.axis_names))
        + (P(),) * len(scalars)
        + (P(mesh.axis_names),) * len(extra),
        out_specs=P(),
    )
    argnums = tuple(range(2 + len(scalars)))
    expected = jax.value_and_grad(single, argnums)(x, y, *scalars, *extra)
    got = jax.jit(jax.value_and_grad(sharded, argnums))(x, y, *scalars, *extra)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("devices", [1, 2, 4, 8])
@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_matches_single_device(name, exchange, devices):
    mesh = parallel.data_mesh("data", devices=jax.devices()[:devices])
    run_case(name, mesh, "data", exchange)


@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_tiled_inside_exchange(name, exchange):
    mesh = parallel.data_mesh("data", devices=jax.devices()[:4])
    run_case(name, mesh, "data", exchange, block_size=3)


def test_tuple_axis_name_over_a_2d_mesh():
    mesh = parallel.data_mesh(("replica", "data"), shape=(2, 4))
    run_case("clip", mesh, ("replica", "data"), "all_gather")
    run_case("siglip", mesh, ("replica", "data"), "ring")


@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_pallas_kernel_inside_exchange(name, exchange):
    # The ring reduces each visiting block through the same dispatcher as the single-device path.
    # Pallas's interpret mode does not support check_vma=True, so this compares per-device
    # values and gradients with the blockwise path (itself checked against one device above).
    fn, scalars, _ = CASES[name]
    mesh = parallel.data_mesh("data", devices=jax.devices()[:4])
    x, y, _, _ = data()

    def per_device(impl):
        loss = lambda x, y: fn(x, y, *scalars, axis_name="data", exchange=exchange, block_size=3, impl=impl)
        return jax.shard_map(
            jax.value_and_grad(loss, (0, 1)),
            mesh=mesh,
            in_specs=(P("data"), P("data")),
            out_specs=(P(), (P("data"), P("data"))),
            check_vma=False,
        )

    got = jax.jit(per_device("pallas_interpret"))(x, y)
    expected = jax.jit(per_device("blockwise"))(x, y)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)


@pytest.mark.parametrize("block_size", [None, 3])
@pytest.mark.parametrize("exchange, shape", [("all_gather", (8,)), ("ring", (8,)), ("grouped", (2, 4))])
def test_siglip_confident_positive_pairs_are_exact_across_devices(exchange, shape, block_size):
    # x = y = I (8 pairs): L_ii = s + b = z, L_ij = b = −z. Over groups of size B (B = 8, or 4 for
    # two groups): loss = B·softplus(−z), d/ds = −σ(−z), d/db = (B − 2)·σ(−z), exact in float64.
    # Each device must find its positives' columns (gathered: device offset; ring: block owner).
    axes = ("data",) if len(shape) == 1 else ("group", "member")
    mesh = parallel.data_mesh(axes, shape=shape)
    eye = jnp.eye(8)
    loss = jax.shard_map(
        lambda x, y, s, b: losses.siglip_loss(
            x, y, s, b, axis_name=axes if len(axes) > 1 else axes[0], exchange=exchange, block_size=block_size
        ),
        mesh=mesh,
        in_specs=(P(axes), P(axes), P(), P()),
        out_specs=P(),
    )
    batch = 8 // (shape[0] if exchange == "grouped" else 1)
    for z in (15.0, 30.0):
        value, (d_scale, d_bias) = jax.jit(jax.value_and_grad(loss, (2, 3)))(eye, eye, 2 * z, -z)
        sigma = 1.0 / (1.0 + np.exp(np.float64(z)))
        np.testing.assert_allclose(value, batch * np.log1p(np.exp(-np.float64(z))), rtol=1e-5)
        np.testing.assert_allclose(d_scale, -sigma, rtol=1e-5)
        np.testing.assert_allclose(d_bias, (batch - 2) * sigma, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# Grouped aggregation


def grouped_siglip_reference(x, y, s, b, groups):
    size = x.shape[0] // groups
    return jnp.mean(
        jnp.stack(
            [
                losses.siglip_loss(x[g * size : (g + 1) * size], y[g * size : (g + 1) * size], s, b)
                for g in range(groups)
            ]
        )
    )


@pytest.mark.parametrize("groups, members", [(1, 8), (2, 4), (4, 2), (8, 1)])
def test_grouped_exchange_equals_grouped_loss(groups, members):
    mesh = parallel.data_mesh(("group", "member"), shape=(groups, members))
    x, y, _, _ = data()
    specs = (P(("group", "member")), P(("group", "member")), P(), P())
    for loss, reference in (
        (
            lambda x, y, s, b, **kw: losses.clip_loss(x, y, s, **kw),
            lambda x, y, s, b: losses.grouped_clip_loss(x, y, s, num_groups=groups),
        ),
        (losses.siglip_loss, lambda x, y, s, b: grouped_siglip_reference(x, y, s, b, groups)),
    ):
        sharded = jax.shard_map(
            functools.partial(loss, axis_name=("group", "member"), exchange="grouped"),
            mesh=mesh,
            in_specs=specs,
            out_specs=P(),
        )
        got = jax.jit(jax.value_and_grad(sharded, (0, 1, 2, 3)))(x, y, 5.0, -2.0)
        expected = jax.value_and_grad(reference, (0, 1, 2, 3))(x, y, 5.0, -2.0)
        for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
            np.testing.assert_allclose(a, b, rtol=RTOL, atol=1e-6)


def test_grouped_hlo_gathers_over_members_only():
    mesh = parallel.data_mesh(("group", "member"), shape=(2, 4))
    x, y, _, _ = data()
    sharded = jax.shard_map(
        lambda x, y: losses.clip_loss(x, y, 5.0, axis_name=("group", "member"), exchange="grouped"),
        mesh=mesh,
        in_specs=(P(("group", "member")),) * 2,
        out_specs=P(),
    )
    hlo = jax.jit(sharded).lower(x, y).compile().as_text()
    gathers = [line for line in hlo.splitlines() if "all-gather(" in line]
    assert gathers
    for line in gathers:
        # explicit `{{0,1,2,3},{4,5,6,7}}`, iota `[2,4]<=[8]` or named `mesh[...] {'member'}` groups
        assert _group_size(line, 8) == 4, line  # the 4 members, never all 8 devices


# ---------------------------------------------------------------------------------------------
# iSogCLR across devices: replicated or sample-sharded state


@pytest.mark.parametrize(
    "exchange, devices", [(e, n) for e in ("all_gather", "ring") for n in (1, 2, 4, 8)] + [("grouped", 8)]
)
@pytest.mark.parametrize("sharded_state", [False, True])
def test_isogclr_matches_single_device(exchange, devices, sharded_state):
    num_samples = 32
    x, y, _, _ = data(3)
    ids = jax.random.permutation(jax.random.key(1), num_samples)[:BATCH]
    state = losses.isogclr_init(num_samples, tau_init=0.03)
    _, state = losses.isogclr_loss(x[::-1], y[::-1], ids[::-1], state)  # a revisit, not a first visit
    if exchange == "grouped":
        mesh, axes = parallel.data_mesh(("g", "m"), shape=(2, 4)), ("g", "m")
        groups = [slice(0, 8), slice(8, 16)]
    else:
        mesh = parallel.data_mesh("data", devices=jax.devices()[:devices])
        axes, groups = "data", [slice(0, 16)]
    state_spec = P(axes) if sharded_state else P()

    def single(x, y):  # the grouped reference runs each group on its own, state threaded through
        total, new_state = 0.0, state
        for g in groups:
            loss, new_state = losses.isogclr_loss(x[g], y[g], ids[g], new_state)
            total += loss / len(groups)
        return total, new_state

    sharded = jax.shard_map(
        lambda x, y, i, st: losses.isogclr_loss(x, y, i, st, axis_name=axes, exchange=exchange),
        mesh=mesh,
        in_specs=(P(axes), P(axes), P(axes), state_spec),
        out_specs=(P(), state_spec),
    )
    (loss, new_state), grads = jax.jit(
        jax.value_and_grad(lambda x, y: sharded(x, y, ids, state), (0, 1), has_aux=True)
    )(x, y)
    (ref_loss, ref_state), ref_grads = jax.value_and_grad(single, (0, 1), has_aux=True)(x, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    for a, b in zip(grads, ref_grads):
        # atol: an entry near 0 is a difference of much larger terms; summed in another order
        # (jax 0.11.2's XLA) it moved by 2.2e-7 while the gradients reach 0.14.
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    for a, b in zip(jax.tree.leaves(new_state), jax.tree.leaves(ref_state)):
        np.testing.assert_allclose(np.asarray(a, np.float64), np.asarray(b, np.float64), rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Other gradient patterns


def param_loss_single(w, x, y):
    return losses.clip_loss(cj.l2_normalize(x * w), y, 5.0)


@pytest.mark.parametrize("check_vma", [True, False])
@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
def test_per_device_grad_then_pmean(exchange, check_vma):
    mesh = parallel.data_mesh("data", devices=jax.devices()[:4])
    x, y, _, _ = data(4)
    w = jnp.linspace(0.5, 1.5, DIM)

    def per_device(w, x, y):
        loss_fn = lambda w: losses.clip_loss(
            cj.l2_normalize(x * w), y, 5.0, axis_name="data", exchange=exchange
        )
        loss, grad = jax.value_and_grad(loss_fn)(w)
        return loss, jax.lax.pmean(grad, "data")

    sharded = jax.shard_map(
        per_device, mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P()), check_vma=check_vma
    )
    loss, grad = jax.jit(sharded)(w, x, y)
    ref_loss, ref_grad = jax.value_and_grad(param_loss_single)(w, x, y)
    np.testing.assert_allclose(loss, ref_loss, rtol=RTOL)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-7)


@pytest.mark.parametrize("exchange", ["all_gather", "ring"])
def test_pmap_recipe(exchange):
    x, y, _, _ = data(5)
    w = jnp.linspace(0.5, 1.5, DIM)

    def per_device(w, x, y):
        loss_fn = lambda w: losses.clip_loss(
            cj.l2_normalize(x * w), y, 5.0, axis_name="data", exchange=exchange
        )
        loss, grad = jax.value_and_grad(loss_fn)(w)
        return loss, jax.lax.pmean(grad, "data")

    loss, grad = jax.pmap(per_device, axis_name="data", in_axes=(None, 0, 0), devices=jax.devices()[:4])(
        w, x.reshape(4, -1, DIM), y.reshape(4, -1, DIM)
    )
    ref_loss, ref_grad = jax.value_and_grad(param_loss_single)(w, x, y)
    np.testing.assert_allclose(loss, np.full(4, ref_loss), rtol=RTOL)
    np.testing.assert_allclose(grad[0], ref_grad, rtol=1e-4, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# Errors


def test_clear_errors():
    mesh = parallel.data_mesh("data", devices=jax.devices()[:2])
    x, y, _, _ = data()
    run = lambda fn, specs=(P("data"), P("data")): jax.shard_map(
        fn, mesh=mesh, in_specs=specs, out_specs=P()
    )(x, y)
    with pytest.raises(ValueError, match="not a mesh axis"):
        run(lambda x, y: losses.clip_loss(x, y, 1.0, axis_name="batch"))
    with pytest.raises(ValueError, match="exchange"):
        run(lambda x, y: losses.clip_loss(x, y, 1.0, axis_name="data", exchange="allgather"))
    with pytest.raises(ValueError, match="group_axis, member_axis"):
        run(lambda x, y: losses.clip_loss(x, y, 1.0, axis_name="data", exchange="grouped"))
    with pytest.raises(ValueError, match="same shape"):  # local batches that do not match
        run(lambda x, y: losses.clip_loss(x, y[:-1], 1.0, axis_name="data"))
    with pytest.raises(TypeError):
        run(lambda x, y: losses.clip_loss(x, y, 1.0, axis_name=3))
    with pytest.raises(ValueError, match="replicated"):
        state = losses.isogclr_init(15)
        jax.shard_map(
            lambda x, y, st: losses.isogclr_loss(x, y, jnp.arange(8), st, axis_name="data")[0],
            mesh=mesh,
            in_specs=(P("data"), P("data"), P()),
            out_specs=P(),
        )(x, y, jax.tree.map(lambda a: a[:7], state))


# ---------------------------------------------------------------------------------------------
# The public ring seams


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16])
def test_ring_sum_equals_the_gathered_sum_values_and_gradients(dtype):
    # term(ops, block, owner): a nonlinear function of the local rows, a scale and a visiting
    # block, weighted by the block's owner so a wrong owner index would show.
    def term(ops, block, owner):
        rows, scale = ops
        sim = jnp.tanh(scale * rows.astype(jnp.float32) @ block.astype(jnp.float32).T)
        return jnp.sum(sim * (owner + 1.0), axis=1), jnp.sum(sim**2)

    def gathered(rows, scale, block):  # the same sum, every block visible at once
        blocks = jax.lax.all_gather(block, "data")
        parts = [term((rows, scale), blocks[k], k) for k in range(blocks.shape[0])]
        return jax.tree.map(lambda *p: sum(p), *parts)

    def ringed(rows, scale, block):
        scale = jax.lax.pcast(scale, ("data",), to="varying")
        return parallel.ring_sum(term, (rows, scale), block, ("data",))

    def step(fn, x, y):
        sharded = jax.shard_map(
            lambda r, s, b: (lambda out: jax.lax.psum(jnp.sum(out[0] ** 2) + out[1], "data"))(fn(r, s, b)),
            mesh=mesh,
            in_specs=(P("data"), P(), P("data")),
            out_specs=P(),
        )
        return jax.jit(jax.value_and_grad(sharded, (0, 1, 2)))(x, jnp.float32(1.5), y)

    mesh = parallel.data_mesh("data", devices=jax.devices()[:4])
    x, y, _, _ = data(6)
    x, y = x.astype(dtype), y.astype(dtype)
    # Reference: the gathered sum in float32 on the same (rounded) inputs. In bf16 autodiff rounds
    # each of the 4 blocks' gradient contributions to bf16 (2^-8 relative); the ring sums them in
    # float32 and rounds once more, so each entry is within 5 roundings of the largest entry.
    expected = step(gathered, x.astype(jnp.float32), y.astype(jnp.float32))
    got = step(ringed, x, y)
    assert [g.dtype for g in got[1]] == [dtype, jnp.float32, dtype]
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        atol = 1e-6 if dtype == jnp.float32 else 5 * 2.0**-8 * float(np.abs(b).max())
        np.testing.assert_allclose(np.asarray(a, np.float32), b, rtol=1e-5, atol=atol)
