"""Batch accumulation with exact gradients: contrast k micro-batches as one batch.

A contrastive loss does not decompose over micro-batches (every row is a negative for every
other), so plain gradient accumulation changes the loss. The recompute scheme of GradCache
keeps it exact: (1) encode all k micro-batches without keeping activations, (2) take the loss
and its gradient w.r.t. the k·b embeddings, (3) re-encode one micro-batch at a time and pull
that embedding gradient back into the parameters. Memory: one micro-batch of activations plus
all embeddings; compute: one extra forward pass.

Inside `jax.shard_map` with `axis_name`, the loss sees every device's accumulated rows, so
this is also M2-Encoder's "grouped aggregation with batch accumulation" when the loss uses
`exchange="grouped"`: features of the k micro-steps of all members of a group are scored
together. Earlier micro-batches get gradients (recompute), unlike a stop-gradient store.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from contrastive_jax import _checks


def _split(tree, k: int):
    def split(leaf):
        if leaf.shape[0] % k:
            raise ValueError(f"batch dimension {leaf.shape[0]} is not divisible by num_micro_batches={k}")
        return leaf.reshape(k, leaf.shape[0] // k, *leaf.shape[1:])

    return jax.tree.map(split, tree)


def _merge(tree):
    return jax.tree.map(lambda leaf: leaf.reshape(-1, *leaf.shape[2:]), tree)


def _is_float(leaf) -> bool:
    return jnp.issubdtype(leaf.dtype, jnp.inexact)


def _partition(tree):
    """`(floats, others)`: two trees of `tree`'s structure, None where a leaf belongs to the other."""
    floats = jax.tree.map(lambda leaf: leaf if _is_float(leaf) else None, tree)
    others = jax.tree.map(lambda leaf: None if _is_float(leaf) else leaf, tree)
    return floats, others


def _combine(floats, others):
    return jax.tree.map(lambda f, o: o if f is None else f, floats, others, is_leaf=lambda x: x is None)


def accumulate_value_and_grad(
    encode: Callable, loss: Callable, *, num_micro_batches: int, has_aux: bool = False
) -> Callable:
    """Value and gradient of `loss(params, encode(params, batch))`, k micro-batches at a time.

    Args:
      encode: `encode(params, micro_batch) -> embeddings` (any pytree whose leaves have the
        micro-batch as leading axis, e.g. `(image_emb, text_emb)`). Integer leaves (labels the
        encoder passes through) reach the loss as constants, without a gradient.
      loss: `loss(params, embeddings) -> scalar` (or `(scalar, aux)` with `has_aux`), called
        once on the embeddings of all micro-batches concatenated in order; `params` is passed
        so it can use e.g. the logit scale.
      num_micro_batches: k; every leaf of the batch must have a leading size divisible by k.
      has_aux: whether `loss` returns `(value, aux)`.

    Returns:
      `fn(params, batch) -> ((value, aux) if has_aux else value, grads)`, equal (to float
      tolerance) to `jax.value_and_grad(lambda p: loss(p, encode(p, batch)))(params)`.

    References:
      Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited Setup"
      (GradCache), RepL4NLP 2021. Guo et al., M2-Encoder, arXiv:2401.15896, 2024 (grouped
      aggregation with batch accumulation).
    """
    k = _checks.positive_int("num_micro_batches", num_micro_batches)

    def value_and_grad(params, batch):
        micro_batches = _split(batch, k)
        embeddings = _merge(jax.lax.map(lambda mb: encode(jax.lax.stop_gradient(params), mb), micro_batches))
        # Integer leaves (labels an encoder passes through) have no gradient: they enter the loss as constants.
        floats, others = _partition(embeddings)

        def loss_of_floats(p, float_leaves):
            return loss(p, _combine(float_leaves, others))

        value, (direct_grads, embedding_grads) = jax.value_and_grad(loss_of_floats, (0, 1), has_aux=has_aux)(
            params, floats
        )

        def pull_back(grads, inputs):
            micro_batch, cotangent = inputs
            _, vjp = jax.vjp(lambda p: _partition(encode(p, micro_batch))[0], params)
            return jax.tree.map(jnp.add, grads, vjp(cotangent)[0]), None

        grads, _ = jax.lax.scan(pull_back, direct_grads, (micro_batches, _split(embedding_grads, k)))
        return value, grads

    return value_and_grad
