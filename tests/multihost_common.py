"""Shared by the multi-host worker and test: the batch, the model and one SGD step."""

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import PartitionSpec as P

import contrastive_jax as cj
from contrastive_jax import losses

BATCH, IN_DIM, EMBED = 32, 12, 8


def global_batch():
    rng = np.random.default_rng(0)
    images = rng.normal(size=(BATCH, IN_DIM)).astype(np.float32)
    texts = rng.normal(size=(BATCH, IN_DIM)).astype(np.float32)
    params = {
        "image_proj": rng.normal(size=(IN_DIM, EMBED)).astype(np.float32) * 0.3,
        "text_proj": rng.normal(size=(IN_DIM, EMBED)).astype(np.float32) * 0.3,
        "scale_param": np.float32(np.log(10.0)),
    }
    return images, texts, params


def loss_fn(params, images, texts, **parallel_kwargs):
    image_emb = cj.l2_normalize(images @ params["image_proj"])
    text_emb = cj.l2_normalize(texts @ params["text_proj"])
    scale = cj.logit_scale_from_param(params["scale_param"])
    return losses.clip_loss(image_emb, text_emb, scale, **parallel_kwargs) + 0.5 * losses.siglip_loss(
        image_emb, text_emb, scale, -5.0, **parallel_kwargs
    )


def train_step(params, images, texts, *, mesh=None, exchange="all_gather", lr=0.5):
    """One SGD step; with a mesh the loss runs under shard_map over its "data" axis."""
    if mesh is None:
        fn = loss_fn
    else:
        fn = jax.shard_map(
            lambda p, x, y: loss_fn(p, x, y, axis_name="data", exchange=exchange),
            mesh=mesh,
            in_specs=(P(), P("data"), P("data")),
            out_specs=P(),
        )
    loss, grads = jax.jit(jax.value_and_grad(fn))(params, images, texts)
    new_params = jax.tree.map(lambda p, g: p - lr * g, params, grads)
    return loss, jnp.concatenate(
        [
            new_params["image_proj"].ravel(),
            new_params["text_proj"].ravel(),
            jnp.reshape(new_params["scale_param"], (1,)),
        ]
    )
