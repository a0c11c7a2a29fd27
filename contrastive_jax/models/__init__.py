"""Flax NNX models: ViT and text towers, CLIP, SigLIP and CoCa.

`create_model(model_config("tiny", "clip"), rngs=nnx.Rngs(0))` builds a model whose call
returns exactly what the matching loss takes.
"""

from contrastive_jax.models._config import (
    PRESETS,
    count_params,
    create_model,
    estimate_flops,
    model_config,
    summary,
)
from contrastive_jax.models._contrastive import CLIP, MODELS, CoCa, SigLIP
from contrastive_jax.models._layers import MLP, AttentionalPooler, Block, Transformer
from contrastive_jax.models._towers import TextTransformer, VisionTransformer

__all__ = [
    "CLIP",
    "MLP",
    "MODELS",
    "PRESETS",
    "AttentionalPooler",
    "Block",
    "CoCa",
    "SigLIP",
    "TextTransformer",
    "Transformer",
    "VisionTransformer",
    "count_params",
    "create_model",
    "estimate_flops",
    "model_config",
    "summary",
]
