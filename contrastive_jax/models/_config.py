"""Model configs (presets from a CPU-sized toy to CLIP ViT-B/16), the factory and size reports."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from flax import nnx

from contrastive_jax.models._contrastive import DEFAULT_SCALE, MODELS

# (vision: image, patch, width, depth, heads), (text: width, depth, heads, context, vocab), embed dim
PRESETS = {
    "tiny": ((64, 8, 96, 3, 3), (96, 3, 3, 16, 512), 64),
    "small": ((64, 8, 256, 6, 4), (256, 6, 4, 32, 4096), 256),
    "B/16": ((224, 16, 768, 12, 12), (512, 12, 8, 77, 49408), 512),
    # open_clip's large towers (model configs ViT-L-14, ViT-H-14, ViT-g-14): for FSDP.
    "L/14": ((224, 14, 1024, 24, 16), (768, 12, 12, 77, 49408), 768),
    "H/14": ((224, 14, 1280, 32, 16), (1024, 24, 16, 77, 49408), 1024),
    "g/14": ((224, 14, 1408, 40, 16), (1024, 24, 16, 77, 49408), 1024),
}
# Vision MLP widths that are not 4 x width (ViT-g/14: mlp_ratio 4.3637 in open_clip).
VISION_MLP_DIM = {"g/14": 6144}


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
    """
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose one of {sorted(PRESETS)}")
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    (img, patch, v_width, v_depth, v_heads), (t_width, t_depth, t_heads, ctx, vocab), embed = PRESETS[preset]
    c = ml_collections.ConfigDict()
    c.name, c.embed_dim, c.dtype, c.remat = name, embed, dtype, bool(remat)
    c.init_logit_scale = DEFAULT_SCALE[name]
    c.init_logit_bias = -10.0
    c.max_logit_scale = 100.0
    c.vision = ml_collections.ConfigDict(
        dict(
            image_size=image_size or img,
            patch_size=patch,
            width=v_width,
            depth=v_depth,
            num_heads=v_heads,
            mlp_ratio=4.0,
            pool="cls",
        )
    )
    if preset in VISION_MLP_DIM:
        c.vision.mlp_dim = VISION_MLP_DIM[preset]
    c.text = ml_collections.ConfigDict(
        dict(
            vocab_size=vocab,
            context_length=context_length or ctx,
            width=t_width,
            depth=t_depth,
            num_heads=t_heads,
            mlp_ratio=4.0,
            pad_id=0,
        )
    )
    c.coca = ml_collections.ConfigDict(
        dict(
            multimodal_depth=max(t_depth // 2, 1),
            num_caption_queries=min(255, 2 * (img // patch) ** 2),
            pooler_heads=v_heads,
        )
    )
    return c


def create_model(config, *, rngs: nnx.Rngs):
    """Builds the model `config.name` describes ("clip", "siglip" or "coca")."""
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
