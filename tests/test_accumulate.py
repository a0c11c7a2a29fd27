"""Batch accumulation (GradCache recompute) gives the big-batch gradient exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from contrastive_jax import losses, parallel


def setup(seed=0, batch=16):
    keys = jax.random.split(jax.random.key(seed), 5)
    params = {
        "image": jax.random.normal(keys[0], (6, 4)) * 0.5,
        "text": jax.random.normal(keys[1], (5, 4)) * 0.5,
        "scale": jnp.float32(2.0),
    }
    batch = {"image": jax.random.normal(keys[2], (batch, 6)), "text": jax.random.normal(keys[3], (batch, 5))}
    return params, batch


def encode(params, batch):
    # tanh makes the encoder non-linear, so a wrong pull-back point would show up.
    image = cj.l2_normalize(jnp.tanh(batch["image"] @ params["image"]))
    text = cj.l2_normalize(jnp.tanh(batch["text"] @ params["text"]))
    return image, text


def clip(params, embeddings, **kw):
    return losses.clip_loss(*embeddings, jnp.exp(params["scale"]), **kw)


@pytest.mark.parametrize("k", [1, 2, 4])
def test_equals_full_batch_gradient(k):
    params, batch = setup()
    expected = jax.value_and_grad(lambda p: clip(p, encode(p, batch)))(params)
    got = jax.jit(parallel.accumulate_value_and_grad(encode, clip, num_micro_batches=k))(params, batch)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_differs_from_naive_accumulation():
    # Averaging per-micro-batch losses is a different (smaller-batch) objective.
    params, batch = setup()
    full = clip(params, encode(params, batch))
    halves = [jax.tree.map(lambda a: a[s], batch) for s in (slice(0, 8), slice(8, 16))]
    naive = np.mean([clip(params, encode(params, h)) for h in halves])
    assert abs(float(full) - naive) > 1e-3


def test_grouped_accumulation_across_devices():
    params, batch = setup(1, batch=32)
    mesh = parallel.data_mesh(("group", "member"), shape=(2, 2), devices=jax.devices()[:4])
    axes = ("group", "member")
    loss = lambda p, e: clip(p, e, axis_name=axes, exchange="grouped")
    step = parallel.accumulate_value_and_grad(encode, loss, num_micro_batches=2)
    sharded = jax.shard_map(step, mesh=mesh, in_specs=(P(), P(axes)), out_specs=(P(), P()))
    value, grads = jax.jit(sharded)(params, batch)
    # Reference: each group's 16 rows (both members' accumulated micro-batches) form one CLIP batch.
    ref = lambda p: losses.grouped_clip_loss(*encode(p, batch), jnp.exp(p["scale"]), num_groups=2)
    ref_value, ref_grads = jax.value_and_grad(ref)(params)
    np.testing.assert_allclose(value, ref_value, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(ref_grads)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_rejects_indivisible_batch():
    params, batch = setup(batch=10)
    with pytest.raises(ValueError, match="divisible"):
        parallel.accumulate_value_and_grad(encode, clip, num_micro_batches=4)(params, batch)
