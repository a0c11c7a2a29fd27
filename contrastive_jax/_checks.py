"""Trace-time input validation shared by every loss.

All checks look only at static shapes and dtypes, so they cost nothing inside `jit` and
raise before any computation is staged. Errors name the offending argument and what was
expected, so a user sees `image_emb must have rank 2 ([B, D]), got shape (4, 3, 2)` rather
than a broadcasting failure three frames deep.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _shape(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def float_array(name: str, x, *, rank: int | None = None, rank_hint: str = "") -> Array:
    """Returns `x` as an array after checking it is floating point (and of `rank`)."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise TypeError(f"{name} must be a floating-point array, got dtype {dtype}")
    if rank is not None and len(_shape(x)) != rank:
        hint = f" ({rank_hint})" if rank_hint else ""
        raise ValueError(f"{name} must have rank {rank}{hint}, got shape {_shape(x)}")
    return jnp.asarray(x)


def int_array(name: str, x, *, rank: int | None = None, rank_hint: str = "") -> Array:
    """Returns `x` as an array after checking it is integer (and of `rank`)."""
    dtype = jnp.result_type(x)
    if not jnp.issubdtype(dtype, jnp.integer):
        raise TypeError(f"{name} must be an integer array, got dtype {dtype}")
    if rank is not None and len(_shape(x)) != rank:
        hint = f" ({rank_hint})" if rank_hint else ""
        raise ValueError(f"{name} must have rank {rank}{hint}, got shape {_shape(x)}")
    return jnp.asarray(x)


def scalar(name: str, x) -> Array:
    """Returns a float scalar; rejects arrays with more than one element and integer dtypes."""
    shape = _shape(x)
    if shape not in ((), (1,)):
        raise ValueError(f"{name} must be a scalar, got shape {shape}")
    dtype = jnp.result_type(x)
    if not (jnp.issubdtype(dtype, jnp.floating) or isinstance(x, (int, float))):
        raise TypeError(f"{name} must be a float scalar, got dtype {dtype}")
    return jnp.reshape(jnp.asarray(x, dtype=jnp.promote_types(dtype, jnp.float32)), ())


def embedding_pair(image_emb, text_emb, *, names: Sequence[str] = ("image_emb", "text_emb")):
    """Checks a pair of `[B, D]` float embedding arrays with identical shapes."""
    a = float_array(names[0], image_emb, rank=2, rank_hint="[B, D]")
    b = float_array(names[1], text_emb, rank=2, rank_hint="[B, D]")
    if a.shape != b.shape:
        raise ValueError(f"{names[0]} and {names[1]} must have the same shape, got {a.shape} and {b.shape}")
    if a.shape[0] == 0:
        raise ValueError(f"{names[0]} must hold at least one row, got shape {a.shape}")
    return a, b


def nonnegative(name: str, value: float) -> float:
    if not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return value


def in_unit_interval(name: str, value: float, *, closed_low: bool = True, closed_high: bool = True) -> float:
    low_ok = value >= 0 if closed_low else value > 0
    high_ok = value <= 1 if closed_high else value < 1
    if not (low_ok and high_ok):
        low, high = "[" if closed_low else "(", "]" if closed_high else ")"
        raise ValueError(f"{name} must lie in {low}0, 1{high}, got {value}")
    return value


def positive_int(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def one_of(name: str, value, choices: Sequence) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
