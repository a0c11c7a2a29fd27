"""Converters between PyTorch CLIP / SigLIP checkpoints and the NNX models, both ways.

`from_open_clip`, `from_hf_clip`, `from_hf_siglip` take a state dict (names → torch tensors or
numpy arrays, or a path to a .safetensors / .pt / .bin file) and the source's own config dict;
they return `(model, model_config)`, where `create_model(model_config, rngs=...)` builds the
same architecture (so a trainer can restore the weights into it). `to_open_clip`, `to_hf_clip`,
`to_hf_siglip` go back: a state dict that the PyTorch model loads with `strict=True`.

A converter reads only the source options it handles or knowingly ignores (a table per
config section, from the source library's own config classes); any other option set away from
the source's default raises `NotImplementedError` naming it and its value.

Each source is one table of `_Rule`s: a source tensor name, the model parameters it becomes and
the two transforms between them. Import and export read the same table, so they cannot drift
apart, and both check that every source tensor and every model parameter is used exactly once.
Layouts: torch `Linear` stores `[out, in]` (NNX kernels `[in, out]`), attention weights become
NNX's per-head kernels `[in, heads, head_dim]` / `[heads, head_dim, out]` (a packed
`in_proj_weight` is split into query, key and value), and torch convolutions `[O, I, kh, kw]`
become `[kh, kw, I, O]`, since images here are NHWC.

torch is needed only to read .pt / .bin files and for `as_torch=True`.
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from flax import nnx

from contrastive_jax.models._config import create_model

StateDict = Mapping[str, object] | str | os.PathLike

# transformers' activation names → `ACTIVATIONS` ("gelu_new" is the same tanh approximation).
_HF_ACTIVATIONS = {
    "quick_gelu": "quick_gelu",
    "gelu": "gelu",
    "gelu_pytorch_tanh": "gelu_tanh",
    "gelu_new": "gelu_tanh",
}
# Buffers some checkpoints carry that hold no weights.
_IGNORED_SUFFIXES = (".position_ids",)


# ----------------------------------------------------------------------------------------------
# Reading state dicts


def _to_numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor; numpy has no bfloat16, so widen first
        value = value.detach().cpu()
        if value.is_floating_point():
            value = value.float()
        return value.numpy()
    return np.asarray(value)


def load_state_dict(source: StateDict) -> dict[str, np.ndarray]:
    """Names → numpy arrays, from a mapping or a .safetensors / .pt / .bin file.

    Half-precision weights are widened to float32. A torch checkpoint that wraps its weights (`{"state_dict": ...}`, as open_clip's training
    checkpoints) is unwrapped, and a `module.` prefix (DistributedDataParallel) is dropped.
    """
    if isinstance(source, str | os.PathLike):
        path = os.fspath(source)
        if path.endswith(".safetensors"):
            try:
                from safetensors.torch import load_file  # reads bfloat16, which numpy cannot
            except ImportError:
                from safetensors.numpy import load_file
            source = load_file(path)
        else:
            import torch

            source = torch.load(path, map_location="cpu", weights_only=True)
            if "state_dict" in source:
                source = source["state_dict"]
            if all(key.startswith("module.") for key in source):
                source = {key.removeprefix("module."): value for key, value in source.items()}
    return {key: _to_numpy(value) for key, value in source.items()}


def _scalar(state: dict, name: str, default: float = 0.0) -> float:
    """A scalar tensor's value; a missing one is reported later with every other missing name."""
    return float(state[name].reshape(())) if name in state else default


def _config_dict(config) -> dict:
    return config.to_dict() if hasattr(config, "to_dict") else dict(config)


# ----------------------------------------------------------------------------------------------
# The source options a converter accepts


@dataclasses.dataclass(frozen=True)
class _Options:
    """One section of a source config, as a converter sees it.

    `handled` options are read; `ignored` ones change neither the weights nor the features
    (each says why where it is listed); every other option must keep the source's default,
    given in `defaults` (an option without one is unknown here, so refused at any value).
    """

    section: str
    handled: frozenset[str]
    ignored: frozenset[str]
    defaults: Mapping[str, object]
    # transformers' bookkeeping entries ("_name_or_path", "_commit_hash", "_attn_implementation…")
    ignore_private: bool = False


def _check_options(source: str, options: _Options, section: Mapping) -> None:
    """Raises `NotImplementedError` naming the first option the converter does not accept."""
    for key, value in section.items():
        if key in options.handled or key in options.ignored:
            continue
        if (options.ignore_private and key.startswith("_")) or (
            key in options.defaults and value == options.defaults[key]
        ):
            continue
        known = f"default {options.defaults[key]!r}" if key in options.defaults else "an unknown option"
        raise NotImplementedError(
            f"{source} {options.section} option {key}={value!r} ({known}) is not converted: only "
            f"{sorted(options.handled)} are read, and every other option must keep its default"
        )


# ----------------------------------------------------------------------------------------------
# The rule table


@dataclasses.dataclass(frozen=True)
class _Rule:
    """One source tensor ↔ the model parameters (dotted paths) it holds."""

    source: str
    targets: tuple[str, ...]
    to_model: Callable[[np.ndarray], tuple[np.ndarray, ...]]
    to_source: Callable[..., np.ndarray]


def _copy(source: str, target: str, source_shape=None, model_shape=None) -> _Rule:
    """Same values; reshaped where the two sides store them differently (e.g. `[1]` vs `[]`)."""

    def to_model(x):
        return (x if model_shape is None else x.reshape(model_shape),)

    def to_source(y):
        return y if source_shape is None else y.reshape(source_shape)

    return _Rule(source, (target,), to_model, to_source)


def _transposed(source: str, target: str) -> _Rule:
    return _Rule(source, (target,), lambda w: (w.T,), lambda k: k.T)


def _linear(source: str, target: str, bias: bool = True) -> list[_Rule]:
    rules = [_transposed(f"{source}.weight", f"{target}.kernel")]
    return rules + [_copy(f"{source}.bias", f"{target}.bias")] if bias else rules


def _norm(source: str, target: str) -> list[_Rule]:
    return [_copy(f"{source}.weight", f"{target}.scale"), _copy(f"{source}.bias", f"{target}.bias")]


def _conv(source: str, target: str) -> _Rule:
    return _Rule(source, (target,), lambda w: (w.transpose(2, 3, 1, 0),), lambda k: k.transpose(3, 2, 0, 1))


def _split_heads(w: np.ndarray, heads: int) -> np.ndarray:
    """torch `[out, in]` → NNX `[in, heads, out / heads]`."""
    return w.T.reshape(w.shape[1], heads, -1)


def _merge_heads(kernel: np.ndarray) -> np.ndarray:
    return kernel.reshape(kernel.shape[0], -1).T


def _attention(source: str, target: str, heads: int, packed: bool) -> list[_Rule]:
    """Query/key/value/output projections: open_clip's packed `nn.MultiheadAttention` (also
    SigLIP's MAP head) or transformers' separate `q_proj`, `k_proj`, `v_proj`, `out_proj`."""
    qkv = tuple(f"{target}.{name}" for name in ("query", "key", "value"))
    if packed:
        rules = [
            _Rule(
                f"{source}.in_proj_weight",
                tuple(f"{path}.kernel" for path in qkv),
                lambda w: tuple(_split_heads(part, heads) for part in np.split(w, 3)),
                lambda *kernels: np.concatenate([_merge_heads(k) for k in kernels]),
            ),
            _Rule(
                f"{source}.in_proj_bias",
                tuple(f"{path}.bias" for path in qkv),
                lambda b: tuple(part.reshape(heads, -1) for part in np.split(b, 3)),
                lambda *biases: np.concatenate([b.reshape(-1) for b in biases]),
            ),
        ]
    else:
        rules = []
        for name, path in zip(("q_proj", "k_proj", "v_proj"), qkv, strict=True):
            rules += [
                _Rule(
                    f"{source}.{name}.weight",
                    (f"{path}.kernel",),
                    lambda w: (_split_heads(w, heads),),
                    _merge_heads,
                ),
                _Rule(
                    f"{source}.{name}.bias",
                    (f"{path}.bias",),
                    lambda b: (b.reshape(heads, -1),),
                    lambda b: b.reshape(-1),
                ),
            ]
    return rules + [
        _Rule(
            f"{source}.out_proj.weight",
            (f"{target}.out.kernel",),
            lambda w: (w.T.reshape(heads, -1, w.shape[0]),),
            lambda k: k.reshape(-1, k.shape[-1]).T,
        ),
        _copy(f"{source}.out_proj.bias", f"{target}.out.bias"),
    ]


# Sub-module names of one transformer block in each source.
_OPEN_CLIP_BLOCK = dict(norm1="ln_1", attn="attn", norm2="ln_2", fc1="mlp.c_fc", fc2="mlp.c_proj")
_HF_BLOCK = dict(norm1="layer_norm1", attn="self_attn", norm2="layer_norm2", fc1="mlp.fc1", fc2="mlp.fc2")


def _blocks(source: str, target: str, depth: int, heads: int, names: dict, packed: bool) -> list[_Rule]:
    rules = []
    for i in range(depth):
        src, dst = f"{source}.{i}", f"{target}.{i}"
        rules += _norm(f"{src}.{names['norm1']}", f"{dst}.norm1")
        rules += _attention(f"{src}.{names['attn']}", f"{dst}.attn", heads, packed)
        rules += _norm(f"{src}.{names['norm2']}", f"{dst}.norm2")
        rules += _linear(f"{src}.{names['fc1']}", f"{dst}.mlp.fc1")
        rules += _linear(f"{src}.{names['fc2']}", f"{dst}.mlp.fc2")
    return rules


# ----------------------------------------------------------------------------------------------
# Applying a table


def _variable(model, path: str):
    node = model
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def _param_paths(model) -> set[str]:
    flat = nnx.to_flat_state(nnx.state(model, nnx.Param))
    return {".".join(str(part) for part in path) for path, _ in flat}


def _check_targets(model, rules: list[_Rule]) -> None:
    targets = [path for rule in rules for path in rule.targets]
    missing = _param_paths(model) - set(targets)
    if missing or len(targets) != len(set(targets)):
        raise ValueError(f"conversion table does not cover the model exactly; unmapped: {sorted(missing)}")


def _load(model, rules: list[_Rule], state: dict[str, np.ndarray]) -> None:
    _check_targets(model, rules)
    missing = [rule.source for rule in rules if rule.source not in state]
    unused = {key for key in state if not key.endswith(_IGNORED_SUFFIXES)} - {rule.source for rule in rules}
    if missing or unused:
        raise ValueError(
            f"state dict does not match the config: missing {missing[:8]} ({len(missing)}), "
            f"unexpected {sorted(unused)[:8]} ({len(unused)})"
        )
    for rule in rules:
        for path, value in zip(rule.targets, rule.to_model(state[rule.source]), strict=True):
            variable = _variable(model, path)
            if value.shape != variable.shape:
                raise ValueError(f"{rule.source} → {path}: shape {value.shape}, model has {variable.shape}")
            variable.set_value(jnp.asarray(value, variable.dtype))


def _export(model, rules: list[_Rule], as_torch: bool) -> dict:
    _check_targets(model, rules)
    state = {}
    for rule in rules:
        values = [np.asarray(_variable(model, path).get_value(), np.float32) for path in rule.targets]
        state[rule.source] = np.array(rule.to_source(*values), np.float32, order="C")  # own, writable
    if as_torch:
        import torch

        state = {key: torch.from_numpy(value) for key, value in state.items()}
    return state


def _model_config(name: str, embed_dim: int, logit_scale: float, logit_bias: float, vision: dict, text: dict):
    config = ml_collections.ConfigDict()
    config.name, config.embed_dim, config.dtype = name, int(embed_dim), "float32"
    config.init_logit_scale, config.init_logit_bias = float(logit_scale), float(logit_bias)
    config.max_logit_scale = 100.0
    config.vision = ml_collections.ConfigDict(vision)
    config.text = ml_collections.ConfigDict(text)
    return config


def _build(config, rules, state):
    # The initial values of the logit parameters become the checkpoint's (a trainer that
    # re-initialises from this config then starts where the source model ended).
    config.init_logit_scale = _scalar(state, "logit_scale", config.init_logit_scale)
    if config.name == "siglip":
        config.init_logit_bias = _scalar(state, "logit_bias", config.init_logit_bias)
    # Only the structure is built (no random initial values): `_load` sets every parameter.
    model = nnx.eval_shape(lambda: create_model(config, rngs=nnx.Rngs(0)))
    _load(model, rules, state)
    unset = [
        path
        for path, leaf in nnx.to_flat_state(nnx.state(model))
        if isinstance(leaf.get_value(), jax.ShapeDtypeStruct)
    ]
    if unset:
        raise ValueError(f"the conversion leaves model variables without values: {unset[:8]}")
    return model, config


# ----------------------------------------------------------------------------------------------
# open_clip


# open_clip's options (`CLIP.__init__` and the CLIPVisionCfg / CLIPTextCfg dataclasses of
# open_clip/model.py, with their defaults) that the conversion reads, ignores or refuses.
_OPEN_CLIP_MODEL = _Options(
    "model",
    handled=frozenset(
        {"embed_dim", "quick_gelu", "vision_cfg", "text_cfg", "init_logit_scale", "init_logit_bias"}
    ),
    ignored=frozenset(
        {
            "output_dict",  # the container forward returns its outputs in
            "cast_dtype",  # PyTorch's compute precision; here `model_config.dtype` chooses it
        }
    ),
    defaults=dict(
        custom_text=False,  # CustomTextCLIP keeps its text tower under other names
        multimodal_cfg=None,  # CoCa
        nonscalar_logit_scale=False,
    ),
)
_OPEN_CLIP_CUSTOM_BLOCK = dict(
    qk_norm=False,
    scaled_cosine_attn=False,
    scale_heads=False,
    scale_attn_inner=False,
    scale_attn=False,
    scale_fc=False,
)
_OPEN_CLIP_VISION = _Options(
    "vision_cfg",
    # `layers` must be an int (a tuple is a ResNet) and `block_type` None or "default"
    handled=frozenset(
        {"layers", "width", "head_width", "mlp_ratio", "patch_size", "image_size", "block_type"}
    ),
    ignored=frozenset(
        {
            "patch_dropout",  # training only: open_clip's PatchDropout is the identity in eval mode
            "output_tokens",  # forward also returns the tokens; the embedding is the same
            "attn_pooler_queries",  # read only with attentional_pool, which is refused
            "attn_pooler_heads",  # likewise
            "timm_model_pretrained",  # the timm_* options are read only with timm_model_name (refused)
            "timm_pool",
            "timm_proj",
            "timm_proj_bias",
            "timm_drop",
            "timm_drop_path",
        }
    ),
    defaults=dict(
        ls_init_value=None,
        attentional_pool=False,
        no_ln_pre=False,
        pos_embed_type="learnable",
        final_ln_after_pool=False,
        pool_type="tok",
        act_kwargs=None,
        norm_kwargs=None,
        timm_model_name=None,
        **_OPEN_CLIP_CUSTOM_BLOCK,
    ),
)
_OPEN_CLIP_TEXT = _Options(
    "text_cfg",
    handled=frozenset(
        {"context_length", "vocab_size", "width", "heads", "layers", "mlp_ratio", "pad_id", "block_type"}
    ),
    ignored=frozenset(
        {
            "hf_tokenizer_name",  # the tokenizer's options: the model takes its token ids as given
            "tokenizer_mode",
            "tokenizer_kwargs",
            "eos_id",  # read only with pool_type "eos", which is refused
            "output_tokens",  # forward also returns the tokens; the embedding is the same
            "hf_model_pretrained",  # the hf_* options are read only with hf_model_name (refused)
            "hf_proj_type",
            "hf_pooler_type",
        }
    ),
    defaults=dict(
        ls_init_value=None,
        embed_cls=False,
        no_causal_mask=False,
        final_ln_after_pool=False,
        pool_type="argmax",
        proj_bias=False,
        proj_type="linear",
        act_kwargs=None,
        norm_kwargs=None,
        hf_model_name=None,
        **_OPEN_CLIP_CUSTOM_BLOCK,
    ),
)


def _check_open_clip(cfg: dict) -> None:
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    _check_options("open_clip", _OPEN_CLIP_MODEL, cfg)
    _check_options("open_clip", _OPEN_CLIP_VISION, v)
    _check_options("open_clip", _OPEN_CLIP_TEXT, t)
    if not isinstance(v.get("layers", 12), int):
        raise NotImplementedError(
            f"open_clip vision_cfg option layers={v['layers']!r} is not converted: a tuple is a "
            "ResNet tower, and only ViTs are"
        )
    for section, options in (("vision_cfg", v), ("text_cfg", t)):
        if options.get("block_type") not in (None, "default"):
            raise NotImplementedError(
                f"open_clip {section} option block_type={options['block_type']!r} is not converted: "
                "only the default block"
            )


def config_from_open_clip(model_cfg: Mapping) -> ml_collections.ConfigDict:
    """The `model_config` `from_open_clip` returns, from open_clip's model config alone.

    The logit scale (and bias) are open_clip's initial values; `from_open_clip` replaces them
    with the checkpoint's. Raises `NotImplementedError` as `from_open_clip` does.
    """
    cfg = _config_dict(model_cfg)
    _check_open_clip(cfg)
    v, t = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
    image_size = v.get("image_size", 224)
    if not isinstance(image_size, int):
        if image_size[0] != image_size[1]:
            raise NotImplementedError(f"non-square image_size {image_size}")
        image_size = image_size[0]
    act = "quick_gelu" if cfg.get("quick_gelu", False) else "gelu"
    v_width, t_width = v.get("width", 768), t.get("width", 512)
    v_ratio, t_ratio = v.get("mlp_ratio", 4.0), t.get("mlp_ratio", 4.0)
    vision = dict(
        image_size=image_size,
        patch_size=v.get("patch_size", 16),
        width=v_width,
        depth=v.get("layers", 12),
        num_heads=v_width // v.get("head_width", 64),
        mlp_ratio=v_ratio,
        pool="cls",
        act=act,
        mlp_dim=int(v_width * v_ratio),
        norm_eps=1e-5,
        patch_bias=False,
        pre_norm=True,
        map_style="coca",
        proj=True,
    )
    text = dict(
        vocab_size=t.get("vocab_size", 49408),
        context_length=t.get("context_length", 77),
        width=t_width,
        depth=t.get("layers", 12),
        num_heads=t.get("heads", 8),
        mlp_ratio=t_ratio,
        pad_id=t.get("pad_id", 0),
        act=act,
        mlp_dim=int(t_width * t_ratio),
        norm_eps=1e-5,
        causal=True,
        pool="argmax",
        eos_id=0,
        proj_bias=False,
    )
    logit_scale = cfg.get("init_logit_scale", math.log(1 / 0.07))
    logit_bias = cfg.get("init_logit_bias")
    name = "clip" if logit_bias is None else "siglip"
    return _model_config(
        name, cfg["embed_dim"], logit_scale, -10.0 if logit_bias is None else logit_bias, vision, text
    )


def _open_clip_rules(config) -> list[_Rule]:
    v, t = config.vision, config.text
    rules = [
        _conv("visual.conv1.weight", "vision.patch_embed.kernel"),
        _copy("visual.class_embedding", "vision.cls_token"),
        _copy("visual.positional_embedding", "vision.pos_embed"),
        *_norm("visual.ln_pre", "vision.norm_pre"),
        *_blocks(
            "visual.transformer.resblocks",
            "vision.transformer.blocks",
            v.depth,
            v.num_heads,
            _OPEN_CLIP_BLOCK,
            True,
        ),
        *_norm("visual.ln_post", "vision.norm_post"),
        _copy("visual.proj", "vision.proj.kernel"),  # used as `x @ proj`: already [in, out]
        _copy("token_embedding.weight", "text.token_embed.embedding"),
        _copy("positional_embedding", "text.pos_embed"),
        *_blocks(
            "transformer.resblocks", "text.transformer.blocks", t.depth, t.num_heads, _OPEN_CLIP_BLOCK, True
        ),
        *_norm("ln_final", "text.norm_final"),
        _copy("text_projection", "text.proj.kernel"),
        _copy("logit_scale", "logit_scale_param"),
    ]
    return rules + [_copy("logit_bias", "logit_bias")] if config.name == "siglip" else rules


def from_open_clip(state_dict: StateDict, model_cfg: Mapping) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """An open_clip `CLIP` (ViT vision tower, its own text tower) as a `CLIP` model.

    Args:
      state_dict: the open_clip model's state dict, or a path to a checkpoint file.
      model_cfg: open_clip's model config (the JSON in `open_clip/model_configs/`), e.g.
        `{"embed_dim": 512, "quick_gelu": true, "vision_cfg": {...}, "text_cfg": {...}}`.
        `quick_gelu` selects QuickGELU (OpenAI's weights) over exact GELU (LAION's).

    Returns:
      `(model, model_config)`; with open_clip's `init_logit_bias` in the config (so a
      `logit_bias` in the state dict) the model is a `SigLIP`. Token ids are open_clip's tokenizer's; the text
      embedding is read at the largest id (the end-of-text token), as open_clip does.

    Raises:
      NotImplementedError: naming an option the conversion neither reads nor knowingly ignores,
        set away from open_clip's default (layer scale, attentional pooling, ResNet / timm / HF
        towers, custom blocks, other pool types, CoCa).
    """
    config = config_from_open_clip(model_cfg)
    state = load_state_dict(state_dict)
    return _build(config, _open_clip_rules(config), state)


def to_open_clip(model, model_config, *, as_torch: bool = False) -> dict:
    """The open_clip state dict of a model `from_open_clip` made (after fine-tuning, say).

    Returns names → float32 numpy arrays (`as_torch=True`: torch tensors) that
    `open_clip.model.CLIP(**model_cfg).load_state_dict(..., strict=True)` accepts.
    """
    return _export(model, _open_clip_rules(model_config), as_torch)


# ----------------------------------------------------------------------------------------------
# transformers: CLIPModel and SiglipModel


# Options every transformers `PretrainedConfig` carries (configuration_utils.py, 4.x and 5.x,
# generation defaults included) that neither CLIPModel nor SiglipModel reads: output and
# serialisation switches, storage dtype, classification, encoder-decoder and generation settings,
# tokenizer hints (the text pooling reads `eos_token_id` where it is handled below).
_HF_GENERIC = frozenset(
    """
    return_dict output_hidden_states output_attentions torchscript use_bfloat16 tf_legacy_loss
    chunk_size_feed_forward transformers_version architectures dtype torch_dtype attn_implementation
    finetuning_task id2label label2id num_labels problem_type task_specific_params tie_word_embeddings
    is_encoder_decoder is_decoder add_cross_attention cross_attention_hidden_size tie_encoder_decoder
    decoder_start_token_id use_cache max_length min_length do_sample early_stopping num_beams
    num_beam_groups diversity_penalty temperature top_k top_p typical_p repetition_penalty
    length_penalty no_repeat_ngram_size encoder_no_repeat_ngram_size bad_words_ids
    num_return_sequences output_scores return_dict_in_generate forced_bos_token_id
    forced_eos_token_id remove_invalid_values exponential_decay_length_penalty suppress_tokens
    begin_suppress_tokens tokenizer_class prefix bos_token_id pad_token_id eos_token_id sep_token_id
    """.split()
)
# Training-time options: dropout, and the initialisation of weights the checkpoint replaces.
_HF_TRAINING = frozenset({"attention_dropout", "dropout", "initializer_range", "initializer_factor"})
_HF_GENERIC_DEFAULTS = dict(pruned_heads={})  # pruned heads would change the architecture
_HF_TOWER = frozenset(
    {
        "hidden_size",
        "intermediate_size",
        "num_hidden_layers",
        "num_attention_heads",
        "hidden_act",
        "layer_norm_eps",
    }
)
_HF_VISION = _HF_TOWER | {"image_size", "patch_size"}
_HF_TEXT = _HF_TOWER | {"vocab_size", "max_position_embeddings", "pad_token_id"}


def _hf_options(section: str, handled, defaults: dict, ignored=frozenset()) -> _Options:
    return _Options(
        section,
        frozenset(handled),
        _HF_GENERIC | _HF_TRAINING | ignored,
        _HF_GENERIC_DEFAULTS | defaults,
        ignore_private=True,
    )


# transformers' CLIPConfig / CLIPTextConfig / CLIPVisionConfig (models/clip/configuration_clip.py).
_HF_CLIP_MODEL = _hf_options(
    "CLIPConfig",
    # transformers 4.x's *_config_dict: their entries override the sub-configs' (saved files agree)
    {
        "text_config",
        "vision_config",
        "text_config_dict",
        "vision_config_dict",
        "projection_dim",
        "logit_scale_init_value",
    },
    dict(model_type="clip"),
)
# CLIPModel projects both towers to the CLIPConfig's projection_dim, not to a sub-config's
_HF_CLIP_TEXT = _hf_options(
    "text_config", _HF_TEXT | {"eos_token_id"}, dict(model_type="clip_text_model"), {"projection_dim"}
)
_HF_CLIP_VISION = _hf_options(
    "vision_config", _HF_VISION, dict(model_type="clip_vision_model", num_channels=3), {"projection_dim"}
)
# transformers' SiglipConfig / SiglipTextConfig / SiglipVisionConfig (models/siglip/configuration_siglip.py).
_HF_SIGLIP_MODEL = _hf_options("SiglipConfig", {"text_config", "vision_config"}, dict(model_type="siglip"))
_HF_SIGLIP_TEXT = _hf_options(
    "text_config", _HF_TEXT | {"projection_size"}, dict(model_type="siglip_text_model")
)
_HF_SIGLIP_VISION = _hf_options(
    "vision_config",
    _HF_VISION,
    dict(model_type="siglip_vision_model", num_channels=3, vision_use_head=True),
)


def _hf_activation(section: dict) -> str:
    act = section.get("hidden_act", "gelu")
    if act not in _HF_ACTIVATIONS:
        raise NotImplementedError(f"hidden_act {act!r}; supported: {sorted(_HF_ACTIVATIONS)}")
    return _HF_ACTIVATIONS[act]


def _hf_vision(v: dict, **options) -> dict:
    width = v["hidden_size"]
    return dict(
        image_size=v["image_size"],
        patch_size=v["patch_size"],
        width=width,
        depth=v["num_hidden_layers"],
        num_heads=v["num_attention_heads"],
        mlp_ratio=v["intermediate_size"] / width,
        act=_hf_activation(v),
        mlp_dim=v["intermediate_size"],
        norm_eps=v["layer_norm_eps"],
        **options,
    )


def _hf_text(t: dict, **options) -> dict:
    width = t["hidden_size"]
    return dict(
        vocab_size=t["vocab_size"],
        context_length=t["max_position_embeddings"],
        width=width,
        depth=t["num_hidden_layers"],
        num_heads=t["num_attention_heads"],
        mlp_ratio=t["intermediate_size"] / width,
        pad_id=t.get("pad_token_id") or 0,
        act=_hf_activation(t),
        mlp_dim=t["intermediate_size"],
        norm_eps=t["layer_norm_eps"],
        **options,
    )


def _hf_text_rules(t, head: list[_Rule]) -> list[_Rule]:
    return [
        _copy("text_model.embeddings.token_embedding.weight", "text.token_embed.embedding"),
        _copy("text_model.embeddings.position_embedding.weight", "text.pos_embed"),
        *_blocks(
            "text_model.encoder.layers", "text.transformer.blocks", t.depth, t.num_heads, _HF_BLOCK, False
        ),
        *_norm("text_model.final_layer_norm", "text.norm_final"),
        *head,
    ]


def _hf_vision_blocks(v) -> list[_Rule]:
    return _blocks(
        "vision_model.encoder.layers", "vision.transformer.blocks", v.depth, v.num_heads, _HF_BLOCK, False
    )


def _hf_clip_rules(config) -> list[_Rule]:
    v = config.vision
    return [
        _copy("vision_model.embeddings.class_embedding", "vision.cls_token"),
        _conv("vision_model.embeddings.patch_embedding.weight", "vision.patch_embed.kernel"),
        _copy("vision_model.embeddings.position_embedding.weight", "vision.pos_embed"),
        *_norm("vision_model.pre_layrnorm", "vision.norm_pre"),  # sic: transformers' name
        *_hf_vision_blocks(v),
        *_norm("vision_model.post_layernorm", "vision.norm_post"),
        _transposed("visual_projection.weight", "vision.proj.kernel"),
        *_hf_text_rules(config.text, [_transposed("text_projection.weight", "text.proj.kernel")]),
        _copy("logit_scale", "logit_scale_param"),
    ]


def config_from_hf_clip(hf_config) -> ml_collections.ConfigDict:
    """The `model_config` `from_hf_clip` returns, from the `CLIPConfig` (or its dict) alone."""
    cfg = _config_dict(hf_config)
    t = {**cfg["text_config"], **(cfg.get("text_config_dict") or {})}
    v = {**cfg["vision_config"], **(cfg.get("vision_config_dict") or {})}
    for options, section in ((_HF_CLIP_MODEL, cfg), (_HF_CLIP_TEXT, t), (_HF_CLIP_VISION, v)):
        _check_options("transformers", options, section)
    legacy = t["eos_token_id"] == 2
    pool = dict(pool="argmax", eos_id=0) if legacy else dict(pool="eos", eos_id=t["eos_token_id"])
    vision = _hf_vision(v, pool="cls", patch_bias=False, pre_norm=True, map_style="coca", proj=True)
    text = _hf_text(t, causal=True, proj_bias=False, **pool)
    logit_scale = cfg.get("logit_scale_init_value", math.log(1 / 0.07))
    return _model_config("clip", cfg["projection_dim"], logit_scale, -10.0, vision, text)


def from_hf_clip(state_dict: StateDict, hf_config) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """A transformers `CLIPModel` as a `CLIP` model.

    Args:
      state_dict: `CLIPModel.state_dict()`, or a path to `model.safetensors` / `pytorch_model.bin`.
      hf_config: the `CLIPConfig` or its `to_dict()` (`config.json`).

    The text embedding is read where transformers reads it: at the first `eos_token_id`, or at
    the largest id when the config has the legacy `eos_token_id == 2`.

    Raises:
      NotImplementedError: naming an option the conversion neither reads nor knowingly ignores,
        set away from transformers' default (e.g. `num_channels`, pruned heads).
    """
    config = config_from_hf_clip(hf_config)
    return _build(config, _hf_clip_rules(config), load_state_dict(state_dict))


def to_hf_clip(model, model_config, *, as_torch: bool = False) -> dict:
    """The `CLIPModel` state dict of a model `from_hf_clip` made; loads with `strict=True`."""
    return _export(model, _hf_clip_rules(model_config), as_torch)


def _hf_siglip_rules(config) -> list[_Rule]:
    v = config.vision
    head = "vision_model.head"
    return [
        _conv("vision_model.embeddings.patch_embedding.weight", "vision.patch_embed.kernel"),
        _copy("vision_model.embeddings.patch_embedding.bias", "vision.patch_embed.bias"),
        _copy("vision_model.embeddings.position_embedding.weight", "vision.pos_embed"),
        *_hf_vision_blocks(v),
        *_norm("vision_model.post_layernorm", "vision.norm_post"),
        _copy(
            f"{head}.probe", "vision.pooler.queries", source_shape=(1, 1, v.width), model_shape=(1, v.width)
        ),
        *_attention(f"{head}.attention", "vision.pooler.attn", v.num_heads, packed=True),
        *_norm(f"{head}.layernorm", "vision.pooler.norm"),
        *_linear(f"{head}.mlp.fc1", "vision.pooler.mlp.fc1"),
        *_linear(f"{head}.mlp.fc2", "vision.pooler.mlp.fc2"),
        *_hf_text_rules(config.text, _linear("text_model.head", "text.proj")),
        _copy("logit_scale", "logit_scale_param", source_shape=(1,), model_shape=()),
        _copy("logit_bias", "logit_bias", source_shape=(1,), model_shape=()),
    ]


def config_from_hf_siglip(hf_config) -> ml_collections.ConfigDict:
    """The `model_config` `from_hf_siglip` returns, from the `SiglipConfig` (or its dict) alone.

    The logit scale and bias start at SigLIP's initial values, log 10 and −10 (Zhai et al.
    2023, §3.3); `from_hf_siglip` replaces them with the checkpoint's.
    """
    cfg = _config_dict(hf_config)
    v, t = cfg["vision_config"], cfg["text_config"]
    for options, section in ((_HF_SIGLIP_MODEL, cfg), (_HF_SIGLIP_TEXT, t), (_HF_SIGLIP_VISION, v)):
        _check_options("transformers", options, section)
    embed_dim = t.get("projection_size") or t["hidden_size"]
    if embed_dim != v["hidden_size"]:
        raise ValueError(f"text projection_size {embed_dim} differs from the vision width {v['hidden_size']}")
    vision = _hf_vision(v, pool="map", patch_bias=True, pre_norm=False, map_style="siglip", proj=False)
    text = _hf_text(t, causal=False, pool="final", eos_id=0, proj_bias=True)
    return _model_config("siglip", embed_dim, math.log(10.0), -10.0, vision, text)


def from_hf_siglip(state_dict: StateDict, hf_config) -> tuple[nnx.Module, ml_collections.ConfigDict]:
    """A transformers `SiglipModel` as a `SigLIP` model.

    Args:
      state_dict: `SiglipModel.state_dict()`, or a path to `model.safetensors` / `pytorch_model.bin`.
      hf_config: the `SiglipConfig` or its `to_dict()` (`config.json`).

    The layout SigLIP differs in, as options of the towers: no class token and no LayerNorm
    before the vision transformer, a patch convolution with bias, the MAP head
    (`map_style="siglip"`) whose output is the image embedding (no projection); bidirectional
    text attention read at the last position (texts padded to the full context, as SigLIP's
    tokenizer does), a text head with bias; and the logit bias.

    Raises:
      NotImplementedError: naming an option the conversion neither reads nor knowingly ignores,
        set away from transformers' default (e.g. `vision_use_head=False`, `num_channels`).
    """
    config = config_from_hf_siglip(hf_config)
    return _build(config, _hf_siglip_rules(config), load_state_dict(state_dict))


def to_hf_siglip(model, model_config, *, as_torch: bool = False) -> dict:
    """The `SiglipModel` state dict of a model `from_hf_siglip` made; loads with `strict=True`."""
    return _export(model, _hf_siglip_rules(model_config), as_torch)
