"""Fixed class prototypes: equiangular basis vectors (EBV, Shen et al.) and how to generate them."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, parallel
from contrastive_jax._normalize import l2_normalize
from contrastive_jax.losses._metric import class_labels
from contrastive_jax.losses._simclr import _positive
from contrastive_jax.tiled import similarity

Array = jax.Array

# The generator stops once max |cos| is within this of the threshold (the authors' script).
_STOP_TOLERANCE = 1e-4


def ebv_loss(
    z: Array,
    labels: Array,
    basis: Array,
    *,
    temperature: float = 0.07,
    label_smoothing: float = 0.1,
    axis_name=None,
) -> Array:
    """EBV: cross-entropy of each embedding's cosines to fixed, nearly orthogonal class vectors.

    `o_ic = ⟨z_i, d_c⟩ / τ` and `L = mean_i CE_ε(o_i, y_i)` with PyTorch's label smoothing
    (targets `(1−ε)·onehot + ε/C`). Predict with `argmax_c ⟨z, d_c⟩`. The basis is usually a
    constant (from `ebv_basis`); its gradient is returned if asked for.

    Args:
      z: `f[B, D]` L2-normalised embeddings (local rows under shard_map).
      labels: `int[B]` classes in [0, C) (checked when concrete).
      basis: `f[C, D]` unit-norm basis vectors `d_c` (the authors normalise the loaded rows).
      temperature: τ (0.07, hard-coded in the authors' training scripts).
      label_smoothing: ε in [0, 1) (0.1, `CrossEntropyLoss(label_smoothing=0.1)` in both of the
        authors' training scripts; their ablation lists label smoothing as a variant, so the
        paper's base runs may use 0).
      axis_name: `None` for one device; inside shard_map the mesh axis (or tuple) of the batch:
        the mean over the global batch (a `pmean`, no exchange of embeddings).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: wrong ranks, `z` and `basis` of different widths, labels out of range (when
        concrete), `temperature <= 0`, `label_smoothing` outside [0, 1).
      TypeError: non-float `z` / `basis` or non-integer `labels`.

    Examples:
      >>> import jax.numpy as jnp
      >>> z = jnp.array([[1.0, 0.0], [0.0, 1.0]])
      >>> round(float(ebv_loss(z, jnp.array([0, 1]), jnp.eye(2), label_smoothing=0.0)), 4)
      0.0

    References:
      Shen et al., "Equiangular Basis Vectors", CVPR 2023 (arXiv 2303.11637);
      github.com/aassxun/Equiangular-Basis-Vectors (ImageNet_Validation_Experiment/EBV_ImageNet.py,
      `train_one_epoch`).
    """
    z = _checks.float_array("z", z, rank=2, rank_hint="[B, D]")
    basis = _checks.float_array("basis", basis, rank=2, rank_hint="[C, D]")
    if z.shape[1] != basis.shape[1]:
        raise ValueError(f"z is [B, D] = {z.shape} and basis [C, D] = {basis.shape}: D must match")
    if z.shape[0] == 0 or basis.shape[0] == 0:
        raise ValueError(f"z and basis must hold at least one row, got {z.shape} and {basis.shape}")
    labels = class_labels("labels", labels, basis.shape[0], z.shape[0])
    _positive("temperature", temperature)
    _checks.in_unit_interval("label_smoothing", label_smoothing, closed_high=False)
    plan = parallel.plan_negatives(axis_name, "all_gather")
    logits = similarity(z, basis) / temperature
    target = jnp.take_along_axis(logits, labels[:, None], axis=1)[:, 0]
    smoothed = (1 - label_smoothing) * target + label_smoothing * jnp.mean(logits, axis=1)
    return plan.mean(jnp.mean(jax.nn.logsumexp(logits, axis=1) - smoothed))


def _excess_cosines(basis: Array, threshold) -> Array:
    """`Σ_{i≠j} relu(|⟨d_i, d_j⟩| − θ)` over ordered pairs, rows used as given."""
    cosines = jnp.abs(similarity(basis, basis))
    off_diagonal = ~jnp.eye(basis.shape[0], dtype=bool)
    return jnp.sum(jnp.where(off_diagonal, jax.nn.relu(cosines - threshold), 0.0))


def _max_abs_cosine(basis: Array) -> Array:
    cosines = jnp.abs(similarity(basis, basis))
    return jnp.max(jnp.where(jnp.eye(basis.shape[0], dtype=bool), 0.0, cosines))


def ebv_basis_objective(basis: Array, *, threshold: float = 0.002) -> Array:
    """The objective EBV's generator descends: `J(D) = Σ_{i≠j} relu(|⟨d_i, d_j⟩| − θ)`.

    Over ordered pairs (each unordered pair counts twice), on the rows as given: pass
    row-normalised vectors (the generator re-normalises before every step, outside the
    gradient). `J = 0` exactly when every pair's |cos| is at most θ.

    Args:
      basis: `f[C, D]` unit rows.
      threshold: θ in [0, 1) (0.002, the authors' script).

    Returns:
      A float32 scalar.

    Raises:
      ValueError: `basis` not of rank 2, `threshold` outside [0, 1).
      TypeError: non-float `basis`.

    Examples:
      >>> import jax.numpy as jnp
      >>> float(ebv_basis_objective(jnp.eye(3)))
      0.0

    References:
      Shen et al., "Equiangular Basis Vectors", CVPR 2023;
      github.com/aassxun/Equiangular-Basis-Vectors (Generate_EBV/Generate_EBV.py, `main`).
    """
    basis = _checks.float_array("basis", basis, rank=2, rank_hint="[C, D]")
    _checks.in_unit_interval("threshold", threshold, closed_high=False)
    return _excess_cosines(basis.astype(jnp.float32), threshold)


@functools.partial(jax.jit, static_argnums=(1, 2))
def _generate_basis(key, num_classes, dim, threshold, learning_rate, max_steps):
    descent = jax.grad(_excess_cosines)

    def unfinished(carry):
        step, basis = carry
        return (step < max_steps) & (_max_abs_cosine(basis) > threshold + _STOP_TOLERANCE)

    def sgd_step(carry):
        step, basis = carry
        return step + 1, l2_normalize(basis - learning_rate * descent(basis, threshold))

    start = l2_normalize(jax.random.normal(key, (num_classes, dim), jnp.float32))
    return jax.lax.while_loop(unfinished, sgd_step, (0, start))[1]


def ebv_basis(
    key: Array,
    num_classes: int,
    dim: int,
    *,
    threshold: float = 0.002,
    learning_rate: float = 1e-3,
    max_steps: int = 100_000,
) -> Array:
    """Generates C unit vectors in R^D whose pairwise |cos| is at most about θ (EBV's basis).

    Rows start as normalised Gaussians; each step re-normalises them, stops once
    `max_{i≠j} |⟨d_i, d_j⟩| ≤ θ + 1e-4`, else takes a plain gradient step (SGD, no momentum) on
    `ebv_basis_objective`. One jitted `lax.while_loop`. The authors' script does the same in
    PyTorch; its random numbers differ, so it cannot reproduce their shipped `.pkl` bases. After
    `max_steps` steps without meeting the bound (e.g. C much larger than D with a small θ) the
    last normalised basis is returned: check `ebv_basis_objective(basis, threshold=...)`.

    Args:
      key: a `jax.random` key.
      num_classes: C; dim: D (positive ints).
      threshold: θ in [0, 1) (0.002); learning_rate: SGD step (1e-3); max_steps: at most this many
        steps (100 000). All from the authors' script.

    Returns:
      `f32[C, D]` with unit rows.

    Raises:
      ValueError: non-positive `num_classes`, `dim`, `max_steps` or `learning_rate`, `threshold`
        outside [0, 1).

    Examples:
      >>> import jax
      >>> basis = ebv_basis(jax.random.key(0), 10, 16)
      >>> bool(abs(basis @ basis.T - jax.numpy.eye(10)).max() <= 0.002 + 1e-4)
      True

    References:
      Shen et al., "Equiangular Basis Vectors", CVPR 2023;
      github.com/aassxun/Equiangular-Basis-Vectors (Generate_EBV/Generate_EBV.py, `main`).
    """
    num_classes = _checks.positive_int("num_classes", num_classes)
    dim = _checks.positive_int("dim", dim)
    max_steps = _checks.positive_int("max_steps", max_steps)
    _checks.in_unit_interval("threshold", threshold, closed_high=False)
    _positive("learning_rate", learning_rate)
    hyper = (jnp.float32(threshold), jnp.float32(learning_rate), jnp.int32(max_steps))
    return _generate_basis(key, num_classes, dim, *hyper)  # one compilation per (C, D)
