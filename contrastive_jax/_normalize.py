"""Embedding normalisation and logit-scale helpers used with every loss."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from contrastive_jax import _checks


def l2_normalize(x: jax.Array, axis: int = -1, eps: float = 1e-12) -> jax.Array:
    """Scales `x` to unit L2 norm along `axis`; all-zero vectors stay zero (no NaN).

    `x / max(‖x‖, eps)`, as `torch.nn.functional.normalize`. The gradient at an all-zero
    vector is finite: the norm is computed through `sqrt(max(Σx², eps²))`, whose derivative
    at zero is zero rather than `0/0`.

    Args:
      x: float array, e.g. `f32[B, D]` embeddings.
      axis: axis to normalise over.
      eps: lower bound on the norm.

    Returns:
      An array of `x`'s shape and dtype; the norm is computed in float32.

    Examples:
      >>> import jax.numpy as jnp
      >>> l2_normalize(jnp.array([[3.0, 4.0], [0.0, 0.0]])).tolist()
      [[0.6000000238418579, 0.800000011920929], [0.0, 0.0]]
    """
    x = _checks.float_array("x", x)
    x32 = x.astype(jnp.float32)
    sq = jnp.sum(x32 * x32, axis=axis, keepdims=True)
    norm = jnp.sqrt(jnp.maximum(sq, eps * eps))
    return (x32 / norm).astype(x.dtype)


def logit_scale_from_param(param: jax.Array, max_scale: float = 100.0) -> jax.Array:
    """`min(exp(param), max_scale)`: CLIP's learnable temperature as a multiplicative scale.

    CLIP stores `param = log(1/τ)` (initialised to `log(1/0.07)`) and caps the scale at 100.
    This helper caps the *value*: above `ln max_scale` the scale is `max_scale` and the
    gradient with respect to `param` is exactly 0, so a parameter that has crossed the cap
    stays there unless something else moves it. open_clip instead clamps the *parameter*
    after each optimiser step and uses `exp(param)` unclamped, so the gradient is never cut
    off; the trainer here does the same (`contrastive_jax.train.clamp_logit_scale`, the last
    link of its optax chain). Use this helper for a fixed or externally projected parameter.

    Args:
      param: float scalar, the log of the scale.
      max_scale: upper bound of the returned scale.

    Returns:
      A float32 scalar `s` with `0 < s <= max_scale`.

    References:
      Radford et al., "Learning Transferable Visual Models From Natural Language
      Supervision", 2021, §2.5.
    """
    if not max_scale > 0:
        raise ValueError(f"max_scale must be > 0, got {max_scale}")
    param = _checks.scalar("param", param)
    return jnp.exp(jnp.minimum(param.astype(jnp.float32), math.log(max_scale)))
