"""clip-rocket's multi-view models: CL2L (CLIP plus local-view heads) and BarLIP (plus Barlow heads).

Both are `CLIP` (same towers, same global embeddings, so evaluation, conversion and resizing
treat them as CLIP) with extra heads that only training reads:

* `CL2L`: the local projectors `h`, which embed the augmented views of each sample (the
  pipeline's `local_image` / `local_tokens`, `data.local_views`) for `losses.cl2l_loss`, and
  their own logit scale;
* `BarLIP`: CL2L plus the Barlow projectors `v` on the towers' pooled features of the global
  pair and of every view, for `losses.barlip_loss`.

The heads' BatchNorm layers normalise with the statistics of the batch being trained on
(training-mode BatchNorm; under the trainer's sharded `jit` the statistics are those of the
global batch, as PyTorch's SyncBatchNorm), and keep no running averages: nothing evaluates the
heads. So a head's output for one sample depends on the rest of its batch, and the trainer
refuses to split such a batch into micro-batches (`grad_accum_steps`).

References:
  Fini et al., "Improved baselines for vision-language pre-training", TMLR 2023;
  github.com/facebookresearch/clip-rocket @ebd9e5863cae (models.py: `CLIP._build_mlp`, `CL2L`,
  `BARLIP`; main.py: `--barlip-hidden-dim 3000`, `--barlip-proj-dim 8192`).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax import _normalize
from contrastive_jax.models._contrastive import CLIP, _dtype

Array = jax.Array

LOCAL_PROJECTORS = ("mlp", "linear", "shared")
# clip-rocket's settings (models.py, main.py); the trainer's configs may make them smaller.
CL2L_DEFAULTS = dict(local_projector="mlp", local_width=4096, init_local_logit_scale=math.log(10.0))
BARLIP_DEFAULTS = dict(width=3000, dim=8192)
BATCH_NORM_EPS = 1e-5  # PyTorch's BatchNorm1d default


class BatchNorm(nnx.Module):
    """Training-mode BatchNorm over axis −2 of `[..., B, F]`: each leading index (a view) apart.

    `y = (x − mean_B x) / sqrt(var_B x + 1e-5) · scale + bias`, the biased variance, computed in
    float32. No running statistics (see the module docstring).
    """

    def __init__(self, features: int, *, affine: bool = True, rngs: nnx.Rngs):
        del rngs
        self.scale = nnx.Param(jnp.ones((features,), jnp.float32)) if affine else None
        self.bias = nnx.Param(jnp.zeros((features,), jnp.float32)) if affine else None

    def __call__(self, x: Array) -> Array:
        if x.ndim < 2 or x.shape[-2] < 2:
            raise ValueError(f"BatchNorm needs a batch of at least 2 rows on axis -2, got shape {x.shape}")
        x32 = x.astype(jnp.float32)
        mean = jnp.mean(x32, axis=-2, keepdims=True)
        var = jnp.mean(jnp.square(x32 - mean), axis=-2, keepdims=True)
        y = (x32 - mean) * jax.lax.rsqrt(var + BATCH_NORM_EPS)
        if self.scale is not None:
            y = y * self.scale.value + self.bias.value
        return y.astype(x.dtype)


class ProjectionMLP(nnx.Module):
    """`layers` Linear layers, each but the last followed by BatchNorm and ReLU.

    `last_norm=True` puts a BatchNorm after the last Linear too (BarLIP's projector). This is
    clip-rocket's `_build_mlp(in, hidden, out, num_layers=3)` (the CL2L local heads) and, with
    `last_norm`, its BarLIP projector. Linear layers have biases, as PyTorch's default.
    """

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, *, layers: int = 3, last_norm: bool = False,
        dtype=jnp.float32, rngs: nnx.Rngs,
    ):  # fmt: skip
        if layers < 1:
            raise ValueError(f"ProjectionMLP needs at least one layer, got {layers}")
        widths = [in_dim] + [hidden] * (layers - 1) + [out_dim]
        self.linears = nnx.List(
            [nnx.Linear(a, b, dtype=dtype, rngs=rngs) for a, b in zip(widths[:-1], widths[1:])]
        )
        norms = [BatchNorm(w, rngs=rngs) for w in widths[1:-1]]
        if last_norm:
            norms.append(BatchNorm(out_dim, rngs=rngs))
        self.norms = nnx.List(norms)

    def __call__(self, x: Array) -> Array:
        last = len(self.linears) - 1
        for i, linear in enumerate(self.linears):
            x = linear(x)
            if i < len(self.norms):
                x = self.norms[i](x)
            if i < last:
                x = jax.nn.relu(x)
        return x.astype(jnp.float32)


def _head(kind: str, in_dim: int, width: int, embed_dim: int, dtype, rngs):
    if kind == "mlp":
        return ProjectionMLP(in_dim, width, embed_dim, dtype=dtype, rngs=rngs)
    return nnx.Linear(in_dim, embed_dim, use_bias=False, dtype=dtype, rngs=rngs)


def _project(tower, features: Array) -> Array:
    """A tower's own projection of its pooled features (the identity for a tower without one)."""
    if tower.proj is None:
        return features
    return tower.proj(features.astype(tower.dtype)).astype(jnp.float32)


def _views(name: str, x: Array, rank: int) -> tuple[int, int]:
    if x.ndim != rank:
        raise ValueError(
            f"{name} must have rank {rank} ([B, n, ...]: n views per sample), got shape {x.shape}"
        )
    return x.shape[0], x.shape[1]


class CL2L(CLIP):
    """CLIP with clip-rocket's local-view heads: `encode_views` embeds n augmented views per sample.

    `config.cl2l.local_projector`: "mlp" (default; clip-rocket's `--separate-proj` of every reported
    run: `vision/text width → local_width (4096) → BN → ReLU → local_width → BN → ReLU → embed_dim`
    on the towers' pooled features, and a logit scale of its own initialised to
    `init_local_logit_scale` = ln 10), "linear" (a bias-free Linear per tower instead) or "shared"
    (the global projections and logit scale, clip-rocket without `--separate-proj`).
    """

    def __init__(self, config, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        c = {**CL2L_DEFAULTS, **dict(config.get("cl2l", {}))}
        if c["local_projector"] not in LOCAL_PROJECTORS:
            raise ValueError(
                f"config.cl2l.local_projector={c['local_projector']!r}; choose one of {LOCAL_PROJECTORS}"
            )
        self.local_projector = c["local_projector"]
        dtype = _dtype(config.dtype)
        if self.local_projector != "shared":
            head = lambda width: _head(
                self.local_projector, width, c["local_width"], config.embed_dim, dtype, rngs
            )
            self.local_image_head, self.local_text_head = head(config.vision.width), head(config.text.width)
            self.local_logit_scale_param = nnx.Param(jnp.asarray(c["init_local_logit_scale"], jnp.float32))

    def local_logit_scale(self) -> Array:
        if self.local_projector == "shared":
            return self.logit_scale()
        return jnp.exp(self.local_logit_scale_param.value.astype(jnp.float32))

    def view_features(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> tuple[Array, Array]:
        """The towers' pooled features (before any projection) of every view: `f32[n, B, W]` each.

        `images: f[B, n, S, S, 3]`, `tokens: int[B, n, T]`; one tower call per view, so each
        view's rows stay split over the devices as the batch is.
        """
        batch, n = _views("local images", images, 5)
        if _views("local tokens", tokens, 3) != (batch, n):
            raise ValueError(
                f"local images and tokens differ in batch or view count: {images.shape[:2]} vs {tokens.shape[:2]}"
            )
        keys = [None] * n if patch_dropout_key is None else list(jax.random.split(patch_dropout_key, n))
        image = [self.vision(images[:, a], patch_dropout_key=keys[a], project=False) for a in range(n)]
        text = [self.text(tokens[:, a], project=False) for a in range(n)]
        return jnp.stack(image), jnp.stack(text)

    def local_heads(self, image: Array, text: Array) -> dict[str, Array]:
        """Pooled view features `[n, B, W]` → `{"image_local", "text_local"}` (`f32[B, n, E]`, unit
        norm) and `"local_logit_scale"`."""
        if self.local_projector == "shared":
            image, text = _project(self.vision, image), _project(self.text, text)
        else:
            image, text = self.local_image_head(image), self.local_text_head(text)
        by_sample = lambda x: jnp.swapaxes(_normalize.l2_normalize(x.astype(jnp.float32)), 0, 1)
        return {
            "image_local": by_sample(image),
            "text_local": by_sample(text),
            "local_logit_scale": self.local_logit_scale(),
        }

    def encode_views(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> dict[str, Array]:
        """The outputs of n augmented views per sample for the loss: `local_heads` of `view_features`.

        The stacks are by sample (`[B, n, E]`, as the trainer splits outputs over devices by
        row); `losses.cl2l_loss` takes them views first (`swapaxes(0, 1)`).
        """
        return self.local_heads(*self.view_features(images, tokens, patch_dropout_key=patch_dropout_key))


class BarLIP(CL2L):
    """CL2L plus BarLIP's projectors on the towers' pooled features (global pair and views).

    Each is clip-rocket's `width → width → dim` MLP with BatchNorm after every Linear
    (`config.barlip.width` 3000, `config.barlip.dim` 8192: `--barlip-hidden-dim`,
    `--barlip-proj-dim`), one per modality, shared by the global pair and the views (without
    `--separate-proj-child`, as every reported run). `model(images, tokens)` adds `v_image`,
    `v_text` (`f32[B, dim]`, raw); `encode_views` adds `v_image_local`, `v_text_local`
    (`f32[B, n, dim]`).
    """

    def __init__(self, config, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        c = {**BARLIP_DEFAULTS, **dict(config.get("barlip", {}))}
        dtype = _dtype(config.dtype)
        mlp = lambda width: ProjectionMLP(width, c["width"], c["dim"], last_norm=True, dtype=dtype, rngs=rngs)
        self.barlip_image_head = mlp(config.vision.width)
        self.barlip_text_head = mlp(config.text.width)

    def __call__(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> dict[str, Array]:
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"images and tokens differ in batch size: {images.shape[0]} vs {tokens.shape[0]}"
            )
        image = self.vision(images, patch_dropout_key=patch_dropout_key, project=False)
        text = self.text(tokens, project=False)
        return {
            "image_emb": _normalize.l2_normalize(_project(self.vision, image)),
            "text_emb": _normalize.l2_normalize(_project(self.text, text)),
            "logit_scale": self.logit_scale(),
            "v_image": self.barlip_image_head(image),
            "v_text": self.barlip_text_head(text),
        }

    def encode_views(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> dict[str, Array]:
        image, text = self.view_features(images, tokens, patch_dropout_key=patch_dropout_key)
        by_sample = lambda x: jnp.swapaxes(x, 0, 1)
        return self.local_heads(image, text) | {
            "v_image_local": by_sample(self.barlip_image_head(image)),
            "v_text_local": by_sample(self.barlip_text_head(text)),
        }
