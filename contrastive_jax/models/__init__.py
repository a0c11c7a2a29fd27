"""Flax NNX models: ViT and text towers, CLIP, SigLIP, CoCa, and clip-rocket's CL2L and BarLIP.

`create_model(model_config("tiny", "clip"), rngs=nnx.Rngs(0))` builds a model whose call
returns exactly what the matching loss takes. `from_open_clip`, `from_hf_clip`,
`from_hf_siglip` convert PyTorch checkpoints into these models; `to_*` convert back.
`resize_params` fits trained parameters to another image size or text context length.
"""

from contrastive_jax.models._config import (
    MODELS,
    PRESETS,
    count_params,
    create_model,
    estimate_flops,
    model_config,
    summary,
)
from contrastive_jax.models._contrastive import CLIP, CoCa, SigLIP
from contrastive_jax.models._layers import (
    ACTIVATIONS,
    ATTENTION,
    MLP,
    AttentionalPooler,
    Block,
    Transformer,
    check_attention,
)
from contrastive_jax.models._multiview import CL2L, LOCAL_PROJECTORS, BarLIP, BatchNorm, ProjectionMLP
from contrastive_jax.models._pretrained import (
    config_from_hf_clip,
    config_from_hf_siglip,
    config_from_open_clip,
    from_hf_clip,
    from_hf_siglip,
    from_open_clip,
    load_state_dict,
    to_hf_clip,
    to_hf_siglip,
    to_open_clip,
)
from contrastive_jax.models._resize import (
    check_resizable,
    resize_params,
    resize_text_pos_embed,
    resize_vision_pos_embed,
)
from contrastive_jax.models._towers import (
    TextTransformer,
    VisionTransformer,
    drop_patches,
    num_kept_patches,
    pooled_index,
)

__all__ = [
    "ACTIVATIONS",
    "ATTENTION",
    "CLIP",
    "MLP",
    "MODELS",
    "PRESETS",
    "AttentionalPooler",
    "BarLIP",
    "BatchNorm",
    "Block",
    "CL2L",
    "CoCa",
    "LOCAL_PROJECTORS",
    "ProjectionMLP",
    "SigLIP",
    "TextTransformer",
    "Transformer",
    "VisionTransformer",
    "check_attention",
    "check_resizable",
    "config_from_hf_clip",
    "config_from_hf_siglip",
    "config_from_open_clip",
    "count_params",
    "create_model",
    "drop_patches",
    "estimate_flops",
    "from_hf_clip",
    "from_hf_siglip",
    "from_open_clip",
    "load_state_dict",
    "model_config",
    "num_kept_patches",
    "pooled_index",
    "resize_params",
    "resize_text_pos_embed",
    "resize_vision_pos_embed",
    "summary",
    "to_hf_clip",
    "to_hf_siglip",
    "to_open_clip",
]
