"""Two-tower models (CLIP, SigLIP) and CoCa, returning what the losses consume."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from contrastive_jax import _normalize
from contrastive_jax.models._layers import AttentionalPooler, Transformer
from contrastive_jax.models._towers import TextTransformer, VisionTransformer

Array = jax.Array


def _dtype(name: str):
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[name]


# Tower options a config may leave out (older configs and the presets): today's layout. The
# converters in `_pretrained` write every one of them.
VISION_DEFAULTS = dict(
    act="gelu_tanh", mlp_dim=0, norm_eps=1e-6, patch_bias=False, pre_norm=True, map_style="coca", proj=True
)
TEXT_DEFAULTS = dict(
    act="gelu_tanh", mlp_dim=0, norm_eps=1e-6, causal=True, pool="last", eos_id=0, proj_bias=False
)


# Model-level options a config may leave out, with the value that reproduces today's models:
# the attention implementation (`ATTENTION` in _layers) and FLIP's patch dropout rate.
DEFAULT_ATTENTION = "xla"
DEFAULT_PATCH_DROPOUT = 0.0


def _options(section, defaults) -> dict:
    return {key: section.get(key, default) for key, default in defaults.items()}


def _attention(config) -> str:
    return config.get("attention", DEFAULT_ATTENTION)


def _vision(config, embed_dim, dtype, rngs, pool=None):
    v = config.vision
    options = _options(v, VISION_DEFAULTS)
    if not options.pop("proj"):  # SigLIP: the pooled vision output is the embedding
        embed_dim = None
    return VisionTransformer(
        image_size=v.image_size,
        patch_size=v.patch_size,
        width=v.width,
        depth=v.depth,
        num_heads=v.num_heads,
        mlp_ratio=v.mlp_ratio,
        embed_dim=embed_dim,
        pool=pool or v.pool,
        dtype=dtype,
        rngs=rngs,
        remat=bool(config.get("remat", False)),
        attention=_attention(config),
        patch_dropout=v.get("patch_dropout", DEFAULT_PATCH_DROPOUT),
        **options,
    )


def _text(config, embed_dim, dtype, rngs, cls_token=False):
    t = config.text
    return TextTransformer(
        vocab_size=t.vocab_size,
        context_length=t.context_length,
        width=t.width,
        depth=t.depth,
        num_heads=t.num_heads,
        mlp_ratio=t.mlp_ratio,
        embed_dim=embed_dim,
        pad_id=t.pad_id,
        cls_token=cls_token,
        dtype=dtype,
        rngs=rngs,
        remat=bool(config.get("remat", False)),
        attention=_attention(config),
        **_options(t, TEXT_DEFAULTS),
    )


class CLIP(nnx.Module):
    """Image and text towers with a learnable temperature.

    `model(images, tokens)` → `{"image_emb", "text_emb"}` (`f32[B, E]`, unit norm) and
    `"logit_scale"` = `exp(param)`, ready for `losses.clip_loss`. The parameter starts at
    `config.init_logit_scale` (`log(1/0.07)`, Radford et al. 2021, §2.5); as in open_clip the
    forward pass does not clamp it: the trainer's optimizer projects the parameter onto
    `[0, ln max_logit_scale]` after each step (`train.clamp_logit_scale`), so its gradient is
    never cut off.

    `config.attention` ("xla", default; or "cudnn") picks every attention layer's
    implementation (see `models.ATTENTION`), `config.vision.patch_dropout` (default 0.0) FLIP's
    patch dropout rate, used in calls that pass `patch_dropout_key` (see `VisionTransformer`).
    """

    def __init__(self, config, *, rngs: nnx.Rngs):
        dtype = _dtype(config.dtype)
        self.vision = _vision(config, config.embed_dim, dtype, rngs)
        self.text = _text(config, config.embed_dim, dtype, rngs)
        self.logit_scale_param = nnx.Param(jnp.asarray(config.init_logit_scale, jnp.float32))
        self.max_logit_scale = float(config.max_logit_scale)

    def encode_image(self, images: Array, *, patch_dropout_key: Array | None = None) -> Array:
        return _normalize.l2_normalize(self.vision(images, patch_dropout_key=patch_dropout_key))

    def encode_text(self, tokens: Array) -> Array:
        return _normalize.l2_normalize(self.text(tokens))

    def logit_scale(self) -> Array:
        return jnp.exp(self.logit_scale_param.value.astype(jnp.float32))

    def __call__(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> dict[str, Array]:
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"images and tokens differ in batch size: {images.shape[0]} vs {tokens.shape[0]}"
            )
        return {
            "image_emb": self.encode_image(images, patch_dropout_key=patch_dropout_key),
            "text_emb": self.encode_text(tokens),
            "logit_scale": self.logit_scale(),
        }


class SigLIP(CLIP):
    """CLIP's towers with SigLIP's learnable scale (init 10) and bias (init −10).

    Adds `"logit_bias"` to the outputs, for `losses.siglip_loss` (Zhai et al. 2023, §3.3).
    """

    def __init__(self, config, *, rngs: nnx.Rngs):
        super().__init__(config, rngs=rngs)
        self.logit_bias = nnx.Param(jnp.asarray(config.init_logit_bias, jnp.float32))

    def __call__(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> dict[str, Array]:
        outputs = super().__call__(images, tokens, patch_dropout_key=patch_dropout_key)
        return outputs | {"logit_bias": self.logit_bias.value}


class CoCa(CLIP):
    """Contrastive Captioner: CLIP-style embeddings plus a captioning decoder.

    Image: ViT tokens → attentional pooler with `1 + num_caption_queries` queries; the first
    gives the contrastive embedding, the rest are the tokens the decoder cross-attends to.
    Text: a causal unimodal decoder with a CLS token appended after the text (its output is the
    text embedding), then a multimodal decoder (causal self-attention + cross-attention to the
    image tokens) and a vocabulary head. The model shifts tokens: logits at positions 0..T−2
    predict tokens 1..T−1, returned as `caption_logits: f32[B, T−1, V]` and
    `caption_labels: int[B, T−1]` for `losses.coca_loss`.

    References:
      Yu et al., "CoCa: Contrastive Captioners are Image-Text Foundation Models", 2022, §3.
    """

    def __init__(self, config, *, rngs: nnx.Rngs):
        dtype = _dtype(config.dtype)
        v, t, c = config.vision, config.text, config.coca
        self.vision = _vision(config, None, dtype, rngs)
        self.text = _text(config, None, dtype, rngs, cls_token=True)
        self.pooler = AttentionalPooler(
            v.width,
            v.width,
            1 + c.num_caption_queries,
            c.pooler_heads,
            dtype=dtype,
            rngs=rngs,
            attention=_attention(config),
        )
        self.image_proj = nnx.Linear(v.width, config.embed_dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.text_proj = nnx.Linear(t.width, config.embed_dim, use_bias=False, dtype=dtype, rngs=rngs)
        self.decoder = Transformer(
            t.width,
            c.multimodal_depth,
            t.num_heads,
            t.mlp_ratio,
            dtype=dtype,
            rngs=rngs,
            cross_width=v.width,
            remat=bool(config.get("remat", False)),
            attention=_attention(config),
        )
        self.decoder_norm = nnx.LayerNorm(t.width, dtype=dtype, rngs=rngs)
        self.head = nnx.Linear(t.width, t.vocab_size, dtype=dtype, rngs=rngs)
        self.logit_scale_param = nnx.Param(jnp.asarray(config.init_logit_scale, jnp.float32))
        self.max_logit_scale = float(config.max_logit_scale)

    def _image(self, images, patch_dropout_key=None):
        _, tokens = self.vision(images, return_tokens=True, patch_dropout_key=patch_dropout_key)
        pooled = self.pooler(tokens)
        return self.image_proj(pooled[:, 0]).astype(jnp.float32), pooled[:, 1:]

    def encode_image(self, images: Array, *, patch_dropout_key: Array | None = None) -> Array:
        return _normalize.l2_normalize(self._image(images, patch_dropout_key)[0])

    def encode_text(self, tokens: Array) -> Array:
        return _normalize.l2_normalize(self.text_proj(self.text(tokens)).astype(jnp.float32))

    def __call__(
        self, images: Array, tokens: Array, *, patch_dropout_key: Array | None = None
    ) -> dict[str, Array]:
        if images.shape[0] != tokens.shape[0]:
            raise ValueError(
                f"images and tokens differ in batch size: {images.shape[0]} vs {tokens.shape[0]}"
            )
        image_emb, image_tokens = self._image(images, patch_dropout_key)
        text_pooled, text_tokens = self.text(tokens, return_tokens=True)
        hidden = self.decoder(text_tokens, causal=True, context=image_tokens.astype(text_tokens.dtype))
        logits = self.head(self.decoder_norm(hidden)).astype(jnp.float32)
        return {
            "image_emb": _normalize.l2_normalize(image_emb),
            "text_emb": _normalize.l2_normalize(self.text_proj(text_pooled).astype(jnp.float32)),
            "logit_scale": self.logit_scale(),
            "caption_logits": logits[:, :-1],
            "caption_labels": tokens[:, 1:],
        }
