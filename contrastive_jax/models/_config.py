"""Model configs (size presets from CPU toys to open_clip's ViT-g/14), the factory and size reports."""

from __future__ import annotations

import dataclasses
import math

import jax
import ml_collections
import numpy as np
from flax import nnx

from contrastive_jax.models._contrastive import CLIP, DEFAULT_ATTENTION, DEFAULT_PATCH_DROPOUT, CoCa, SigLIP
from contrastive_jax.models._multiview import BARLIP_DEFAULTS, CL2L, CL2L_DEFAULTS, BarLIP

MODELS = {"clip": CLIP, "siglip": SigLIP, "coca": CoCa, "cl2l": CL2L, "barlip": BarLIP}
_CLIP_SCALE = math.log(1 / 0.07)
DEFAULT_SCALE = {"clip": _CLIP_SCALE, "siglip": math.log(10.0), "coca": _CLIP_SCALE, "cl2l": _CLIP_SCALE,
                 "barlip": _CLIP_SCALE}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class VisionPreset:
    """A ViT tower's size; `mlp_dim=None` is 4 × width."""

    image_size: int
    patch_size: int
    width: int
    depth: int
    num_heads: int
    mlp_dim: int | None = None


@dataclasses.dataclass(frozen=True)
class TextPreset:
    """A text transformer's size and its tokenizer's context and vocabulary."""

    width: int
    depth: int
    num_heads: int
    context_length: int
    vocab_size: int


@dataclasses.dataclass(frozen=True)
class Preset:
    """An architecture size: the two towers and the shared embedding width."""

    vision: VisionPreset
    text: TextPreset
    embed_dim: int


PRESETS = {
    "tiny": Preset(
        vision=VisionPreset(image_size=64, patch_size=8, width=96, depth=3, num_heads=3),
        text=TextPreset(width=96, depth=3, num_heads=3, context_length=16, vocab_size=512),
        embed_dim=64,
    ),
    "small": Preset(
        vision=VisionPreset(image_size=64, patch_size=8, width=256, depth=6, num_heads=4),
        text=TextPreset(width=256, depth=6, num_heads=4, context_length=32, vocab_size=4096),
        embed_dim=256,
    ),
    "B/16": Preset(
        vision=VisionPreset(image_size=224, patch_size=16, width=768, depth=12, num_heads=12),
        text=TextPreset(width=512, depth=12, num_heads=8, context_length=77, vocab_size=49408),
        embed_dim=512,
    ),
    # open_clip's large towers (model configs ViT-L-14, ViT-H-14, ViT-g-14): for FSDP.
    "L/14": Preset(
        vision=VisionPreset(image_size=224, patch_size=14, width=1024, depth=24, num_heads=16),
        text=TextPreset(width=768, depth=12, num_heads=12, context_length=77, vocab_size=49408),
        embed_dim=768,
    ),
    "H/14": Preset(
        vision=VisionPreset(image_size=224, patch_size=14, width=1280, depth=32, num_heads=16),
        text=TextPreset(width=1024, depth=24, num_heads=16, context_length=77, vocab_size=49408),
        embed_dim=1024,
    ),
    "g/14": Preset(
        # open_clip's mlp_ratio 4.3637 for ViT-g-14: an MLP width of 6144, not 4 x 1408
        vision=VisionPreset(image_size=224, patch_size=14, width=1408, depth=40, num_heads=16, mlp_dim=6144),
        text=TextPreset(width=1024, depth=24, num_heads=16, context_length=77, vocab_size=49408),
        embed_dim=1024,
    ),
}


def model_config(
    preset: str = "tiny",
    name: str = "clip",
    *,
    image_size: int | None = None,
    context_length: int | None = None,
    dtype: str = "float32",
    remat: bool = False,
) -> ml_collections.ConfigDict:
    """A model config: architecture `preset` for model `name`.

    Args:
      preset: size preset: "tiny", "small" (CPU toys), "B/16" (CLIP's ViT-B/16, 149.6M
        parameters as CLIP), "L/14", "H/14", "g/14" (open_clip's ViT-L-14, ViT-H-14, ViT-g-14).
      name: "clip", "siglip" or "coca".
      image_size, context_length: override the preset's (e.g. to match a dataset).
      dtype: compute dtype, "float32" or "bfloat16" (parameters stay float32): bfloat16 halves
        the activations' memory.
      remat: rematerialise every transformer block in the backward pass (see `Transformer`).

    The config also holds `attention="xla"` (the attention implementation, "xla" or "cudnn":
    `models.ATTENTION`) and `vision.patch_dropout=0.0` (FLIP's patch dropout rate in training:
    `models.drop_patches`). A config without them (older runs' config.json) builds the same
    model as these defaults.
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    v, t = PRESETS[preset].vision, PRESETS[preset].text
    c = ml_collections.ConfigDict()
    c.name, c.embed_dim, c.dtype, c.remat = name, PRESETS[preset].embed_dim, dtype, bool(remat)
    c.attention = DEFAULT_ATTENTION
    c.init_logit_scale = DEFAULT_SCALE[name]
    c.init_logit_bias = -10.0
    c.max_logit_scale = 100.0
    c.vision = ml_collections.ConfigDict(
        dict(
            image_size=image_size or v.image_size,
            patch_size=v.patch_size,
            width=v.width,
            depth=v.depth,
            num_heads=v.num_heads,
            mlp_ratio=4.0,
            pool="cls",
            patch_dropout=DEFAULT_PATCH_DROPOUT,
        )
    )
    if v.mlp_dim is not None:
        c.vision.mlp_dim = v.mlp_dim
    c.text = ml_collections.ConfigDict(
        dict(
            vocab_size=t.vocab_size,
            context_length=context_length or t.context_length,
            width=t.width,
            depth=t.depth,
            num_heads=t.num_heads,
            mlp_ratio=4.0,
            pad_id=0,
        )
    )
    c.coca = ml_collections.ConfigDict(
        dict(
            multimodal_depth=max(t.depth // 2, 1),
            num_caption_queries=min(255, 2 * (v.image_size // v.patch_size) ** 2),
            pooler_heads=v.num_heads,
        )
    )
    if name in ("cl2l", "barlip"):
        c.cl2l = ml_collections.ConfigDict(CL2L_DEFAULTS)
    if name == "barlip":
        c.barlip = ml_collections.ConfigDict(BARLIP_DEFAULTS)
    return c


def create_model(config, *, rngs: nnx.Rngs):
    """Builds the model `config.name` describes (one of `MODELS`: "clip", "siglip", "coca", "cl2l", "barlip")."""
    config = ml_collections.ConfigDict(config) if isinstance(config, dict) else config
    if config.name not in MODELS:
        raise ValueError(f"unknown model {config.name!r}; choose one of {sorted(MODELS)}")
    return MODELS[config.name](config, rngs=rngs)


def count_params(model_or_state) -> int:
    """Number of parameters (elements of `nnx.Param` variables)."""
    state = nnx.state(model_or_state, nnx.Param) if isinstance(model_or_state, nnx.Module) else model_or_state
    return int(sum(np.prod(leaf.shape) for leaf in jax.tree.leaves(state)))


def _mlp_width(tower) -> int:
    return int(tower.get("mlp_dim", 0) or int(tower.width * tower.mlp_ratio))


def _block_flops(tokens: int, width: int, mlp_width: int, context: int = 0, context_width: int = 0) -> int:
    """Forward FLOPs (2 per multiply-add) of one pre-LN block, matrix products only."""
    flops = 2 * tokens * width * 3 * width + 2 * 2 * tokens * tokens * width + 2 * tokens * width * width
    flops += 2 * 2 * tokens * width * mlp_width
    if context:  # cross-attention: q and out projections of the queries, k/v of the context
        flops += 2 * 2 * tokens * width * width + 2 * 2 * context * context_width * width
        flops += 2 * 2 * tokens * context * width
    return flops


def estimate_flops(config, batch_size: int = 1) -> int:
    """Analytic forward FLOPs of one image-text pair × `batch_size` (matrix products, 2·MACs).

    Counts patch embedding, attention projections and products, MLPs, pooling and projections
    (and CoCa's pooler, decoder and vocabulary head); elementwise work (softmax, LayerNorm,
    GELU) is left out, as is usual for transformer FLOP counts.
    """
    v, t = config.vision, config.text
    patches = (v.image_size // v.patch_size) ** 2
    v_tokens = patches + (v.pool == "cls")
    flops = 2 * patches * (v.patch_size**2 * 3) * v.width
    flops += v.depth * _block_flops(v_tokens, v.width, _mlp_width(v))
    t_tokens = t.context_length + (config.name == "coca")
    flops += t.depth * _block_flops(t_tokens, t.width, _mlp_width(t))
    if config.name == "coca":
        queries = 1 + config.coca.num_caption_queries
        flops += 2 * queries * v.width * v.width * 2 + 2 * 2 * v_tokens * v.width * v.width
        flops += 2 * 2 * queries * v_tokens * v.width
        flops += 2 * v.width * config.embed_dim + 2 * t.width * config.embed_dim
        flops += config.coca.multimodal_depth * _block_flops(
            t.context_length, t.width, _mlp_width(t), context=queries - 1, context_width=v.width
        )
        flops += 2 * t.context_length * t.width * t.vocab_size
    else:
        if v.pool == "map":
            flops += (
                2 * v.width * v.width * 2 + 2 * 2 * v_tokens * v.width * v.width + 2 * 2 * v_tokens * v.width
            )
        flops += 2 * v.width * config.embed_dim + 2 * t.width * config.embed_dim
    return int(flops * batch_size)


def summary(model, config) -> str:
    """A short report printed at start-up: parameters per tower and forward GFLOPs per pair."""
    total = count_params(model)
    parts = {name: count_params(getattr(model, name)) for name in ("vision", "text") if hasattr(model, name)}
    other = total - sum(parts.values())
    lines = [
        f"{config.name.upper()} model: {total / 1e6:.2f}M parameters "
        f"(vision {parts.get('vision', 0) / 1e6:.2f}M, text {parts.get('text', 0) / 1e6:.2f}M, "
        f"other {other / 1e6:.2f}M); {estimate_flops(config) / 1e9:.3f} GFLOPs forward per image-text pair; "
        f"compute dtype {config.dtype}"
    ]
    return "\n".join(lines)
