"""clip-rocket's objectives (Fini et al. 2023): CL2L, BarLIP, SiamLIP and SwALIP with Sinkhorn-Knopp targets.

CL2L is CLIP plus CLIP terms between augmented ("local") views of both modalities, scored through a
separate projector; BarLIP, SiamLIP and SwALIP are the non-contrastive terms the paper adds to CL2L
(the authors' total is `cl2l_loss + term`, SwALIP weighted 0.2). All follow the authors' code,
github.com/facebookresearch/clip-rocket @ebd9e5863cae (`losses.py`, `models.py`, `main.py`,
`repro_exps.txt`). Inside `jax.shard_map` each loss equals the single-device loss of the global batch,
value and gradient; where the authors' multi-GPU code has other gradients, the docstring says so.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from contrastive_jax import _checks, _normalize, parallel
from contrastive_jax.losses import _common
from contrastive_jax.losses._clip import clip_loss
from contrastive_jax.losses._simclr import _positive
from contrastive_jax.tiled import similarity

Array = jax.Array

REDUCTIONS = ("mean", "sum")
SWALIP_VIEWS = 2  # the authors' SwALIPLoss pairs view a with view 1 − a: exactly two views


def _local_stack(name: str, stack, pair_shape: tuple[int, ...], hint: str) -> Array:
    """`stack: f[n, B, D]` whose last two dimensions are the global pair's `[B, D]`."""
    stack = _checks.float_array(name, stack, rank=3, rank_hint=hint)
    if stack.shape[1:] != pair_shape:
        raise ValueError(
            f"{name} must be [n, B, D] with B, D = {pair_shape} as the global embeddings, got shape {stack.shape}"
        )
    return stack


def _local_pair(names: tuple[str, str], stacks, like: Array, *, same_views: bool):
    """Both stacks or neither (None → empty stacks); `same_views`: both hold the same number of views."""
    given = [s is not None for s in stacks]
    if any(given) and not all(given):
        raise ValueError(
            f"pass both {names[0]} and {names[1]} or neither, got only {names[given.index(True)]}"
        )
    if not any(given):
        empty = jnp.zeros((0, *like.shape), like.dtype)
        return empty, empty
    first, second = (_local_stack(n, s, like.shape, "[n, B, D]") for n, s in zip(names, stacks))
    if same_views and first.shape[0] != second.shape[0]:
        raise ValueError(
            f"{names[0]} and {names[1]} must hold the same number of views, got {first.shape[0]} and "
            f"{second.shape[0]}"
        )
    return first, second


def cl2l_loss(
    image_emb: Array,
    text_emb: Array,
    image_local: Array | None,
    text_local: Array | None,
    logit_scale: Array,
    local_logit_scale: Array,
    *,
    label_smoothing: float = 0.1,
    reduction: str = "mean",
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """CL2L: CLIP on the global pair plus smoothed CLIP between every image view and every text view.

    With `clip_ε(u, v; s)` = `clip_loss(u, v, s, label_smoothing=ε)` (the mean of both directions)
    and n local views per modality,
    `L = [clip_0(z_img, z_txt; s) + n · mean_{a,b ∈ 1..n} clip_ε(h_img^a, h_txt^b; s_h)] / (1 + n)`,
    twice that for `reduction="sum"`. This is the authors' per-modality form (image side: the
    global image→text CE and the mean of the n² local image→text CEs weighted 1 : n; text side
    alike; the mean of the two sides) rewritten; label smoothing applies to the local terms only.
    With no local views (`None` or n = 0) it is `clip_loss`.

    Every term is a `clip_loss` called with this `axis_name` and `exchange` (so "ring" is offered
    too; the n² local terms are one batched call), and inside shard_map the loss equals the
    single-device loss of the global batch with exact gradients. The authors gather other
    devices' features with a non-differentiable `all_gather`: their values are the same, their
    gradients under DDP lack the terms through other devices' rows.

    Args:
      image_emb, text_emb: `f[B, D]` L2-normalised global embeddings, row i of each a pair.
      image_local, text_local: `f[n, B, D]` L2-normalised embeddings of n augmented views of the
        same B samples from the local projector (clip-rocket: 2 random-resized crops,
        `--num-augs 2`; 2 EDA-augmented captions), or both `None`.
      logit_scale: float scalar `s` of the global terms (exp of the parameter, clamped by the
        caller; clip-rocket initialises it to 1/0.07 and clamps it to 100).
      local_logit_scale: float scalar `s_h` of the local terms (clip-rocket: its own parameter,
        initialised to 10, clamped to 100, with `--separate-proj` in every reported run).
      label_smoothing: ε of the local terms, in [0, 1). Default 0.1: the command-line default is
        0.0 but every reported CL2L, BarLIP and SiamLIP run uses 0.1 (`repro_exps.txt`); the
        SwALIP runs use 0.0.
      reduction: "mean" (the command-line default `avg`; equals `clip_loss` without local views)
        or "sum" (2×, used by the CC12M, YFCC and 29M runs).
      axis_name, exchange: as in `clip_loss`.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: only one of the local stacks given, stacks of other rank than 3, of different
        view counts, or whose `[B, D]` differs from the global pair's; `label_smoothing` outside
        [0, 1); unknown `reduction`; a non-scalar scale; the checks of `clip_loss`.
      TypeError: non-float embeddings or scales.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> loss = jax.jit(cl2l_loss)
      >>> round(float(loss(x, x, jnp.stack([x, x]), jnp.stack([x, x]), 10.0, 10.0)), 4)
      0.3331
      >>> round(float(loss(x, x, None, None, 10.0, 10.0)), 4)  # clip_loss(x, x, 10.0)
      0.096

    References:
      Fini et al., "Improved baselines for vision-language pre-training", TMLR 2023 (clip-rocket);
      github.com/facebookresearch/clip-rocket (losses.py, `CL2LLoss.forward`; models.py, `CL2L`).
    """
    image_emb, text_emb = _checks.embedding_pair(image_emb, text_emb)
    image_local, text_local = _local_pair(
        ("image_local", "text_local"), (image_local, text_local), image_emb, same_views=True
    )
    _checks.scalar("local_logit_scale", local_logit_scale)
    _checks.in_unit_interval("label_smoothing", label_smoothing, closed_high=False)
    _checks.one_of("reduction", reduction, REDUCTIONS)
    shared = dict(axis_name=axis_name, exchange=exchange)
    loss = clip_loss(image_emb, text_emb, logit_scale, **shared)
    n = image_local.shape[0]
    if n:
        image_view, text_view = _all_pairs(n)
        local_terms = jax.vmap(  # the n² (image view, text view) pairs as one batched CLIP loss
            lambda u, v: clip_loss(u, v, local_logit_scale, label_smoothing=label_smoothing, **shared)
        )(image_local[image_view], text_local[text_view])
        loss = (loss + jnp.sum(local_terms) / n) / (1 + n)  # n · (mean of n² terms) = sum / n
    return 2.0 * loss if reduction == "sum" else loss


def _all_pairs(n: int, m: int | None = None) -> tuple[Array, Array]:
    """Indices `(a, b)` of every pair of `range(n) × range(m)` (m = n by default), a major."""
    m = n if m is None else m
    return jnp.repeat(jnp.arange(n), m), jnp.tile(jnp.arange(m), n)


def _barlow_twins(v_image: Array, v_text: Array, lambda_offdiag: float, scale: float, plan) -> Array:
    """`f32[P]`: `κ [Σ_d (1 − C_dd)² + λ Σ_{d≠e} C_de²]` for P pairs `[P, B, D]`, C over the global batch."""
    batch = v_image.shape[1] * parallel.axis_size(plan.mean_axes)
    local_sums = jax.vmap(lambda a, b: similarity(a.T, b.T))(v_image, v_text)  # [P, D, D]: Σ_n a_n b_nᵀ
    corr = plan.sum(local_sums) / batch  # one psum for all pairs
    on_diagonal = jnp.eye(corr.shape[-1], dtype=bool)
    invariance = jnp.sum(jnp.square(1.0 - jnp.diagonal(corr, axis1=1, axis2=2)), axis=1)
    redundancy = jnp.sum(jnp.where(on_diagonal, 0.0, jnp.square(corr)), axis=(1, 2))
    return scale * (invariance + lambda_offdiag * redundancy)


def barlip_loss(
    v_image: Array,
    v_text: Array,
    *,
    v_image_local: Array | None = None,
    v_text_local: Array | None = None,
    lambda_offdiag: float = 5e-3,
    scale: float = 0.025,
    axis_name=None,
) -> Array:
    """BarLIP: the Barlow Twins loss between image and text projections, global and local views.

    `C = (1/N) Σ_n v_img[n] v_txt[n]ᵀ` (`D × D`, N the global batch) and
    `ℬ = κ [Σ_d (1 − C_dd)² + λ Σ_{d≠e} C_de²]`; the loss is the mean of ℬ over the global pair
    and every (image view a, text view b) pair of local views: `1 + n_img · n_txt` terms. The
    authors train `cl2l_loss + barlip_loss` (weight 1).

    The inputs are the raw projector outputs: not normalised, and the loss does not standardise
    their columns (the original Barlow Twins batch-normalises inside its loss; BarLIP's projector
    ends in BatchNorm instead). Callers without such a projector should standardise each column
    over the batch first.

    Across devices `C = psum(v_imgᵀ v_txt) / N` (no gather), exact under autodiff. The authors
    all-reduce `C` outside autograd and divide by the world size, so under DDP their gradient is
    1/W of the gradient of the global loss (W devices): matching their training dynamics means
    `scale / W`.

    Args:
      v_image, v_text: `f[B, D]` image and text projector outputs, row i of each a pair
        (clip-rocket: a 3-layer MLP, each Linear followed by BatchNorm, width 8192).
      v_image_local: optional `f[n_img, B, D]` projections of the image views; with
        v_text_local: `f[n_txt, B, D]` of the text views (both or neither).
      lambda_offdiag: λ, the weight of the redundancy (off-diagonal) term, >= 0 (5e-3,
        `--barlip-lamb`).
      scale: κ, the loss scale, > 0 (0.025, `--barlip-scale-loss`).
      axis_name: `None` for one device; inside shard_map/pmap, the mesh axis (or tuple) the
        batch is split over. The result is then the global-batch loss on every device.

    Returns:
      A float32 scalar.

    Raises:
      ValueError: shapes that differ, ranks other than 2 (3 for the local stacks), local stacks
        whose `[B, D]` differs from the global pair's, only one local stack given, `scale <= 0`,
        `lambda_offdiag < 0`.
      TypeError: non-float inputs.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> z = jnp.array([[1.0, 1.0], [1.0, -1.0], [-1.0, 1.0], [-1.0, -1.0]])  # zᵀz / N = I
      >>> float(jax.jit(barlip_loss)(z, z))
      0.0

    References:
      Fini et al., "Improved baselines for vision-language pre-training", TMLR 2023;
      github.com/facebookresearch/clip-rocket (losses.py, `BarLIPLoss`; main.py, `--barlip-*`).
      Zbontar et al., "Barlow Twins: Self-Supervised Learning via Redundancy Reduction", ICML 2021.
    """
    v_image, v_text = _checks.embedding_pair(v_image, v_text, names=("v_image", "v_text"))
    v_image_local, v_text_local = _local_pair(
        ("v_image_local", "v_text_local"), (v_image_local, v_text_local), v_image, same_views=False
    )
    _positive("scale", scale)
    _checks.nonnegative("lambda_offdiag", lambda_offdiag)
    plan = parallel.plan_negatives(axis_name, "all_gather")
    image_view, text_view = _all_pairs(v_image_local.shape[0], v_text_local.shape[0])
    images = jnp.concatenate([v_image[None], v_image_local[image_view]])  # the global pair, then the locals
    texts = jnp.concatenate([v_text[None], v_text_local[text_view]])
    return jnp.mean(_barlow_twins(images, texts, lambda_offdiag, scale, plan))


def _negative_cosine(prediction: Array, target: Array) -> Array:
    """`f32[P]`: `2 − 2 mean_i ⟨p̂_i, sg(v̂_i)⟩` over the local rows of P pairs `[P, B, D]`."""
    p = _normalize.l2_normalize(prediction.astype(jnp.float32))
    v = jax.lax.stop_gradient(_normalize.l2_normalize(target.astype(jnp.float32)))
    return 2.0 - 2.0 * jnp.mean(jnp.sum(p * v, axis=-1), axis=-1)


def siamlip_loss(
    p_image: Array,
    p_text: Array,
    v_image: Array,
    v_text: Array,
    *,
    p_image_local: Array | None = None,
    p_text_local: Array | None = None,
    v_image_local: Array | None = None,
    v_text_local: Array | None = None,
    axis_name=None,
) -> Array:
    """SiamLIP: each modality's predictor regresses the other modality's (stop-gradient) projection.

    `NC(p, v) = 2 − 2 mean_i ⟨p̂_i, sg(v̂_i)⟩` with `û = u / max(‖u‖, 1e-12)`, and the loss is the
    mean of `NC(p_img, v_txt)`, `NC(p_txt, v_img)` and, with n local views, `NC(p_img^a, v_txt^b)`
    and `NC(p_txt^a, v_img^b)` for every a, b: `2 + 2n²` terms. The gradient with respect to
    every `v` is exactly zero. With `v` from a momentum encoder this is the paper's "BYOLIP". The
    authors train `cl2l_loss + siamlip_loss`.

    Inputs are normalised inside (they are predictor and projector outputs, as in the authors'
    code), so the loss is invariant to positive rescaling of any row. It is a per-sample mean:
    across devices the local means are averaged (`pmean`), no gather.

    Args:
      p_image: `f[B, D]` image→text predictor outputs; v_text: `f[B, D]` text projections.
      p_text: `f[B, D']` text→image predictor outputs; v_image: `f[B, D']` image projections.
      p_image_local, v_image_local, p_text_local, v_text_local: optional `f[n, B, ·]` stacks of
        the same for n local views (all four or none; clip-rocket: 2 views).
      axis_name: `None` for one device; inside shard_map/pmap, the mesh axis (or tuple) the
        batch is split over. The result is then the global-batch loss on every device.

    Returns:
      A float32 scalar in [0, 4].

    Raises:
      ValueError: shapes of a predictor and its target that differ, other ranks, local stacks not
        matching their global arrays or of different view counts, a partial set of local stacks.
      TypeError: non-float inputs.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> p = jnp.array([[2.0, 0.0], [0.0, 1.0], [0.0, -3.0]])
      >>> loss = jax.jit(siamlip_loss)
      >>> bool(abs(loss(p, p, p, p)) < 1e-6), round(float(loss(p, p, -p, -p)), 4)
      (True, 4.0)

    References:
      Fini et al., "Improved baselines for vision-language pre-training", TMLR 2023;
      github.com/facebookresearch/clip-rocket (losses.py, `SiamLIPLoss`). Chen & He, "Exploring
      Simple Siamese Representation Learning", CVPR 2021.
    """
    p_image, v_text = _checks.embedding_pair(p_image, v_text, names=("p_image", "v_text"))
    p_text, v_image = _checks.embedding_pair(p_text, v_image, names=("p_text", "v_image"))
    if p_image.shape[0] != p_text.shape[0]:
        raise ValueError(
            f"p_image and p_text must hold the same B rows, got {p_image.shape} and {p_text.shape}"
        )
    locals_ = (p_image_local, v_text_local, p_text_local, v_image_local)
    names = ("p_image_local", "v_text_local", "p_text_local", "v_image_local")
    if any(s is not None for s in locals_) and not all(s is not None for s in locals_):
        missing = [n for n, s in zip(names, locals_) if s is None]
        raise ValueError(
            f"pass all four local stacks ({', '.join(names)}) or none; missing {', '.join(missing)}"
        )
    p_image_local, v_text_local = _local_pair(names[:2], locals_[:2], p_image, same_views=True)
    p_text_local, v_image_local = _local_pair(names[2:], locals_[2:], p_text, same_views=True)
    if p_image_local.shape[0] != p_text_local.shape[0]:
        raise ValueError(
            f"the image and text local stacks must hold the same number of views, got "
            f"{p_image_local.shape[0]} and {p_text_local.shape[0]}"
        )
    plan = parallel.plan_negatives(axis_name, "all_gather")
    prediction_view, target_view = _all_pairs(p_image_local.shape[0])
    image_to_text = _negative_cosine(  # the global pair, then every (prediction view, target view)
        jnp.concatenate([p_image[None], p_image_local[prediction_view]]),
        jnp.concatenate([v_text[None], v_text_local[target_view]]),
    )
    text_to_image = _negative_cosine(
        jnp.concatenate([p_text[None], p_text_local[prediction_view]]),
        jnp.concatenate([v_image[None], v_image_local[target_view]]),
    )
    return plan.mean(jnp.mean(jnp.concatenate([image_to_text, text_to_image])))


def _lse_over_samples(u: Array, sample_axes: tuple[str, ...]) -> Array:
    """`f32[K]`: log Σ_b exp(u_bk) over the samples of every device of `sample_axes`."""
    top = jnp.max(u, axis=0)
    if sample_axes:
        top = jax.lax.pmax(top, sample_axes)
    total = jnp.sum(jnp.exp(u - top), axis=0)  # >= 1: the column's maximum contributes exp(0)
    if sample_axes:
        total = jax.lax.psum(total, sample_axes)
    return top + jnp.log(total)


def _sinkhorn(logits: Array, epsilon: float, num_iters: int, sample_axes: tuple[str, ...]) -> Array:
    # The authors' iterations in the log domain: exp(G/ε), the total and every prototype's sum and
    # every sample's sum normalised. The total and the factors 1/K, 1/B are cancelled by the
    # normalisation that follows them, and the last sample normalisation with the final ×B is a
    # softmax over prototypes, so only the two log-sum-exps remain; no exp can overflow.
    u = jax.lax.stop_gradient(logits).astype(jnp.float32) / epsilon

    def iteration(_, u):
        u = u - _lse_over_samples(u, sample_axes)
        return u - jax.nn.logsumexp(u, axis=1, keepdims=True)

    u = jax.lax.fori_loop(0, num_iters - 1, iteration, u)
    return jax.nn.softmax(u - _lse_over_samples(u, sample_axes), axis=1)


def sinkhorn_knopp(logits: Array, *, epsilon: float = 0.05, num_iters: int = 3, axis_name=None) -> Array:
    """Sinkhorn-Knopp soft assignments of samples (rows) to prototypes (columns), without gradient.

    On `G: [B, K]` (B samples, K prototypes), the authors' iterations: `Q_kb = exp(G_bk/ε)`,
    `Q ← Q / Σ Q`, then `num_iters` times `Q_kb ← Q_kb / (K Σ_b' Q_kb')` (each prototype gets mass
    1/K) and `Q_kb ← Q_kb / (B Σ_k' Q_k'b)` (each sample 1/B); the result `T_bk = B · Q_kb`, each
    row summing to 1. Computed in the log domain (a softmax over prototypes after the last
    prototype normalisation; the same values), so it is finite for any finite logits and ε.

    Across devices the rows (samples) are split and every device holds all K prototypes: the
    prototype sums are taken over all devices' samples (a psum, as the authors' `all_reduce`s),
    the sample sums locally, and B is the global number of rows.

    Args:
      logits: `f[B, K]` sample–prototype similarities (local rows under shard_map).
      epsilon: ε, the entropic regularisation, > 0 (0.05, `--target-epsilon`).
      num_iters: number of Sinkhorn iterations, >= 1 (3, `--sk-iters`).
      axis_name: `None` for one device; inside shard_map/pmap, the mesh axis (or tuple) the rows
        are split over.

    Returns:
      `f32[B, K]` targets (stop-gradient), rows summing to 1.

    Raises:
      ValueError: logits of rank other than 2, `epsilon <= 0`, `num_iters` not a positive integer.
      TypeError: non-float logits.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> targets = jax.jit(sinkhorn_knopp)(x @ x.T)
      >>> [round(float(t), 4) for t in targets.sum(axis=1)]
      [1.0, 1.0, 1.0]

    References:
      Cuturi, "Sinkhorn Distances: Lightspeed Computation of Optimal Transport", NeurIPS 2013;
      Caron et al., "Unsupervised Learning of Visual Features by Contrasting Cluster Assignments"
      (SwAV), NeurIPS 2020; github.com/facebookresearch/clip-rocket (losses.py,
      `SwALIPLoss.sinkhorn_knopp`).
    """
    logits = _checks.float_array("logits", logits, rank=2, rank_hint="[B, K]")
    _positive("epsilon", epsilon)
    num_iters = _checks.positive_int("num_iters", num_iters)
    plan = parallel.plan_negatives(axis_name, "all_gather")
    return _sinkhorn(logits, epsilon, num_iters, plan.gather_axes)


def _soft_cross_entropy(logits: Array, targets: Array) -> Array:
    """`−mean_rows Σ_c T log softmax(L)` over all rows of `[..., rows, classes]`."""
    return -jnp.mean(jnp.sum(targets * jax.nn.log_softmax(logits, axis=-1), axis=-1))


def swalip_loss(
    image_local: Array,
    text_local: Array,
    local_logit_scale: Array,
    *,
    epsilon: float = 0.05,
    sinkhorn_iters: int = 3,
    axis_name=None,
    exchange: str = "all_gather",
) -> Array:
    """SwALIP: swapped prediction of Sinkhorn assignments between local image and text views.

    The other modality's global batch serves as the prototypes. For views a, b ∈ {1, 2},
    `G_img^{ab} = h_img^a (h_txt^b)ᵀ` and `G_txt^{ab} = h_txt^a (h_img^b)ᵀ` (cosines), and
    `L = (1/4) Σ_{a,b} ½ [CE(s_h G_img^{ab}, SK(G_img^{āb̄})) + CE(s_h G_txt^{ab}, SK(G_txt^{āb̄}))]`
    with ā the other view, `SK` = `sinkhorn_knopp` on the unscaled cosines (no gradient) and
    `CE(L, T) = −mean_rows Σ_c T log softmax(L)`. The authors train `cl2l_loss(label_smoothing=0)
    + 0.2 · swalip_loss` (`--swalip-weight 0.2`); this returns the unweighted term.

    Across devices each device scores its rows against the gathered other modality (so the
    prototypes are the global batch) and the Sinkhorn prototype sums are psums over the gathered
    devices. The gather is differentiable, so gradients are exact; the authors' `all_gather` is
    not: under DDP their gradient lacks the terms through other devices' rows (values agree).

    Args:
      image_local, text_local: `f[2, B, D]` L2-normalised embeddings of the two local views of
        each modality (local projector).
      local_logit_scale: float scalar `s_h` (as in `cl2l_loss`).
      epsilon: ε of the Sinkhorn targets, > 0 (0.05, `--target-epsilon`).
      sinkhorn_iters: Sinkhorn iterations, >= 1 (3, `--sk-iters`).
      axis_name, exchange: as in `clip_loss`, with exchange "all_gather" or "grouped".

    Returns:
      A float32 scalar.

    Raises:
      ValueError: other than 2 views, shapes that differ, rank other than 3, an empty batch,
        `epsilon <= 0`, `sinkhorn_iters` not a positive integer, a non-scalar scale,
        `exchange="ring"`.
      TypeError: non-float inputs.

    Examples:
      >>> import jax, jax.numpy as jnp
      >>> x = jnp.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
      >>> round(float(jax.jit(swalip_loss)(jnp.stack([x, x]), jnp.stack([x, x]), 10.0)), 4)
      0.1209

    References:
      Fini et al., "Improved baselines for vision-language pre-training", TMLR 2023;
      github.com/facebookresearch/clip-rocket (losses.py, `SwALIPLoss`; main.py, `--sk-iters`,
      `--target-epsilon`, `--swalip-weight`). Caron et al. (SwAV), NeurIPS 2020.
    """
    image_local = _checks.float_array("image_local", image_local, rank=3, rank_hint="[2, B, D]")
    text_local = _checks.float_array("text_local", text_local, rank=3, rank_hint="[2, B, D]")
    if image_local.shape != text_local.shape:
        raise ValueError(
            f"image_local and text_local must have the same shape, got {image_local.shape} and {text_local.shape}"
        )
    if image_local.shape[0] != SWALIP_VIEWS:
        raise ValueError(
            f"swalip_loss takes exactly {SWALIP_VIEWS} local views per modality (the authors' SwALIPLoss "
            f"hard-codes 2: view a is predicted from view 1 − a), got {image_local.shape[0]}"
        )
    if image_local.shape[1] == 0:
        raise ValueError(f"image_local must hold at least one sample, got shape {image_local.shape}")
    scale = _checks.scalar("local_logit_scale", local_logit_scale)
    _positive("epsilon", epsilon)
    sinkhorn_iters = _checks.positive_int("sinkhorn_iters", sinkhorn_iters)
    plan = _common.plan_for(axis_name, exchange, "swalip_loss")
    by_sample = (jnp.swapaxes(image_local, 0, 1), jnp.swapaxes(text_local, 0, 1))
    gathered, _ = _common.gather_all(plan, *by_sample)  # [N, 2, D]: gathered along samples
    image_all, text_all = (jnp.swapaxes(g, 0, 1) for g in gathered)
    view_pairs = jax.vmap(jax.vmap(similarity, (None, 0)), (0, None))  # [2, b, D], [2, N, D] -> [2, 2, b, N]
    cos = jnp.stack(
        [view_pairs(image_local, text_all), view_pairs(text_local, image_all)]
    )  # [modality, a, b]
    swapped = cos[:, ::-1, ::-1].reshape(-1, *cos.shape[-2:])  # view pair (a, b) gets (1 − a, 1 − b)
    sinkhorn = jax.vmap(lambda c: _sinkhorn(c, epsilon, sinkhorn_iters, plan.gather_axes))
    targets = sinkhorn(swapped).reshape(cos.shape)
    # The mean over the 2 modalities × 4 view pairs (of equal row counts) is (1/4) Σ_{a,b} ½ [CE + CE].
    return plan.mean(_soft_cross_entropy(scale * cos, targets))
