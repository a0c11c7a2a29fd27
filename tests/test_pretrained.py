"""Converters from and to PyTorch CLIP / SigLIP (open_clip, transformers) on tiny random models.

Features, logit scale and bias must equal the PyTorch model's (≤ 1e-4, float32) after import,
and exports must load into a fresh PyTorch model with `strict=True` and give the same features.
"""

import dataclasses
import importlib.util
import json
import pathlib
import re

import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from flax import nnx

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
if importlib.util.find_spec("open_clip") is None:  # importing it needs the torchvision stubs
    pytest.skip("open_clip_torch is not installed", allow_module_level=True)

from contrastive_jax import models  # noqa: E402
from tests import torch_refs  # noqa: E402

open_clip = torch_refs.import_open_clip()

ATOL = 1e-4
IMAGE, PATCH, VOCAB, CONTEXT, BATCH = 16, 4, 40, 12, 3


def open_clip_cfg(quick_gelu: bool) -> dict:
    """A tiny model config in open_clip's JSON format (vision heads = width / head_width)."""
    return {
        "embed_dim": 24,
        "quick_gelu": quick_gelu,
        "vision_cfg": {"image_size": IMAGE, "layers": 2, "width": 32, "head_width": 8, "patch_size": PATCH},
        "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "width": 24, "heads": 3, "layers": 2},
    }


def hf_clip_config(eos_token_id: int):
    return transformers.CLIPConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=24,
            intermediate_size=40,
            num_hidden_layers=2,
            num_attention_heads=3,
            max_position_embeddings=CONTEXT,
            eos_token_id=eos_token_id,
            bos_token_id=VOCAB - 2,
            pad_token_id=0,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=56,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE,
            patch_size=PATCH,
        ),
        projection_dim=20,
    )


def hf_siglip_config():
    return transformers.SiglipConfig(
        text_config=dict(
            vocab_size=VOCAB,
            hidden_size=24,
            intermediate_size=44,
            num_hidden_layers=2,
            num_attention_heads=3,
            max_position_embeddings=CONTEXT,
            projection_size=32,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=52,
            num_hidden_layers=2,
            num_attention_heads=4,
            image_size=IMAGE,
            patch_size=PATCH,
        ),
    )


def architecture(config) -> dict:
    """A model config less the logit values, which a converter takes from the checkpoint."""
    return {k: v for k, v in config.to_dict().items() if k not in ("init_logit_scale", "init_logit_bias")}


def with_option(cfg: dict, section: str | None, **option) -> dict:
    """`cfg` with `option` set at the top level (`section=None`) or in one sub-config."""
    return cfg | option if section is None else dict(cfg, **{section: cfg[section] | option})


def close(ours, theirs):
    np.testing.assert_allclose(np.asarray(ours), theirs, atol=ATOL, rtol=0)


# ---------------------------------------------------------------------------------------------
# Feature extraction on each side


def open_clip_features(ref, pixels, tokens):
    with torch.no_grad():
        image = ref.encode_image(pixels, normalize=True).numpy()
        text = ref.encode_text(torch.from_numpy(tokens), normalize=True).numpy()
    return image, text


def hf_features(ref, pixels, tokens):
    with torch.no_grad():
        image = ref.get_image_features(pixel_values=pixels).pooler_output
        text = ref.get_text_features(input_ids=torch.from_numpy(tokens)).pooler_output
    return torch_refs.unit(image), torch_refs.unit(text)


def ours(model, nhwc, tokens):
    return model.encode_image(jnp.asarray(nhwc)), model.encode_text(jnp.asarray(tokens, jnp.int32))


def check_same_features(model, ref, features, tokens):
    pixels, nhwc = torch_refs.images(BATCH, IMAGE)
    image, text = ours(model, nhwc, tokens)
    ref_image, ref_text = features(ref, pixels, tokens)
    assert np.abs(ref_image).min() > 0 and np.std(ref_text, axis=0).min() > 1e-3  # not degenerate
    close(image, ref_image)
    close(text, ref_text)


def check_export(state, fresh, original):
    """`state` loads strictly into `fresh` and holds exactly the original tensors."""
    fresh.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
    reference = original.state_dict()
    for name, value in fresh.state_dict().items():
        assert torch.equal(value, reference[name]), name


# ---------------------------------------------------------------------------------------------
# open_clip


def make_open_clip(quick_gelu: bool, seed: int = 0, **extra):
    cfg = open_clip_cfg(quick_gelu) | extra
    return cfg, torch_refs.randomize(open_clip.model.CLIP(**cfg), seed)


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["openai_quickgelu", "laion_gelu"])
def test_open_clip_features_equal(quick_gelu):
    cfg, ref = make_open_clip(quick_gelu)
    model, config = models.from_open_clip(ref.state_dict(), cfg)
    assert config.vision.act == ("quick_gelu" if quick_gelu else "gelu")
    check_same_features(model, ref, open_clip_features, torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB))
    np.testing.assert_allclose(float(model.logit_scale()), float(ref.logit_scale.detach().exp()), rtol=1e-6)


def test_open_clip_activation_matters():
    """The QuickGELU/GELU choice is not a no-op: the other activation gives other features."""
    cfg, ref = make_open_clip(quick_gelu=True)
    wrong = dict(cfg, quick_gelu=False)
    model, _ = models.from_open_clip(ref.state_dict(), wrong)
    pixels, nhwc = torch_refs.images(BATCH, IMAGE)
    image, _ = ours(model, nhwc, torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB))
    assert (
        np.abs(
            np.asarray(image) - open_clip_features(ref, pixels, torch_refs.clip_tokens(1, CONTEXT, VOCAB))[0]
        ).max()
        > 1e-3
    )


@pytest.mark.parametrize("quick_gelu", [True, False], ids=["openai_quickgelu", "laion_gelu"])
def test_open_clip_round_trip_loads_strictly(quick_gelu):
    cfg, ref = make_open_clip(quick_gelu)
    model, config = models.from_open_clip(ref.state_dict(), cfg)
    fresh = open_clip.model.CLIP(**cfg).eval()
    check_export(models.to_open_clip(model, config, as_torch=True), fresh, ref)
    check_same_features(
        model, fresh, open_clip_features, torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB, seed=5)
    )


def test_open_clip_logit_bias_gives_siglip():
    cfg, ref = make_open_clip(False, init_logit_bias=-10.0)
    model, config = models.from_open_clip(ref.state_dict(), cfg)
    assert config.name == "siglip" and isinstance(model, models.SigLIP)
    np.testing.assert_allclose(float(model.logit_bias.get_value()), float(ref.logit_bias.detach()), rtol=1e-6)
    check_same_features(model, ref, open_clip_features, torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB))
    check_export(models.to_open_clip(model, config), open_clip.model.CLIP(**cfg), ref)


def test_open_clip_from_files(tmp_path):
    """A .safetensors file, and a training checkpoint `.pt` (`{"state_dict": {"module.…"}}`)."""
    from safetensors.torch import save_file

    cfg, ref = make_open_clip(True)
    state = ref.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "model.safetensors")
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "ckpt.pt")
    tokens = torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB)
    for path in (tmp_path / "model.safetensors", str(tmp_path / "ckpt.pt")):
        model, _ = models.from_open_clip(path, cfg)
        check_same_features(model, ref, open_clip_features, tokens)


def test_bfloat16_safetensors_are_widened(tmp_path):
    from safetensors.torch import save_file

    cfg, ref = make_open_clip(False)
    half = {k: v.to(torch.bfloat16).contiguous() for k, v in ref.state_dict().items()}
    save_file(half, tmp_path / "half.safetensors")
    model, _ = models.from_open_clip(tmp_path / "half.safetensors", cfg)
    widened = open_clip.model.CLIP(**cfg).eval()
    widened.load_state_dict({k: v.float() for k, v in half.items()})
    check_same_features(model, widened, open_clip_features, torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB))


def test_open_clip_shorter_tokens():
    """Rows shorter than the context give open_clip's features of the rows zero-padded to it
    (open_clip itself takes only full-context rows)."""
    cfg, ref = make_open_clip(False)
    model, _ = models.from_open_clip(ref.state_dict(), cfg)
    short = torch_refs.clip_tokens(BATCH, 7, VOCAB)
    padded = np.pad(short, ((0, 0), (0, CONTEXT - 7)))
    _, text = ours(model, torch_refs.images(BATCH, IMAGE)[1], short)
    close(text, open_clip_features(ref, torch_refs.images(1, IMAGE)[0], padded)[1])


def test_open_clip_unsupported_options_raise():
    cfg, ref = make_open_clip(False)
    layer_scale = dict(cfg, vision_cfg=dict(cfg["vision_cfg"], ls_init_value=0.1))
    with pytest.raises(NotImplementedError, match="ls_init_value"):
        models.from_open_clip(ref.state_dict(), layer_scale)
    with pytest.raises(ValueError, match="unexpected"):
        models.from_open_clip(ref.state_dict() | {"extra.weight": torch.ones(2)}, cfg)
    for name in ("ln_final.bias", "logit_scale"):
        state = ref.state_dict()
        del state[name]
        with pytest.raises(ValueError, match=f"missing \\['{name}'\\]"):
            models.from_open_clip(state, cfg)
    wider = dict(cfg, embed_dim=cfg["embed_dim"] + 8)
    with pytest.raises(ValueError, match="shape"):
        models.from_open_clip(ref.state_dict(), wider)


@pytest.mark.parametrize(
    "section, option",
    [
        ("vision_cfg", dict(attentional_pool=True)),
        ("vision_cfg", dict(layers=(1, 1, 1, 1))),  # ResNet tower
        ("vision_cfg", dict(timm_model_name="vit_base_patch16_224")),
        ("vision_cfg", dict(block_type="custom")),
        ("vision_cfg", dict(pool_type="avg")),
        ("text_cfg", dict(hf_model_name="bert-base-uncased")),
        ("text_cfg", dict(pool_type="eos")),
        (None, dict(multimodal_cfg={"layers": 1})),
    ],
)
def test_open_clip_architectures_not_converted_raise(section, option):
    with pytest.raises(NotImplementedError, match=next(iter(option))):
        models.from_open_clip({}, with_option(open_clip_cfg(False), section, **option))


@pytest.mark.parametrize(
    "section, option",
    [
        ("vision_cfg", dict(ls_init_value=0.1)),  # layer scale
        ("text_cfg", dict(qk_norm=True)),
        (None, dict(nonscalar_logit_scale=True)),
        ("vision_cfg", dict(rope=True)),  # not an open_clip option at all
    ],
)
def test_open_clip_option_outside_the_allow_list_is_named(section, option):
    (key, value), cfg = next(iter(option.items())), open_clip_cfg(False)
    with pytest.raises(NotImplementedError, match=re.escape(f"{section or 'model'} option {key}={value!r}")):
        models.config_from_open_clip(with_option(cfg, section, **option))


def test_open_clip_every_option_at_its_default_converts():
    """A config naming every field of open_clip's CLIPVisionCfg / CLIPTextCfg at its default
    (as `dataclasses.asdict` writes it) gives the config of the short JSON form."""
    cfg = open_clip_cfg(True)
    full = dict(
        cfg,
        vision_cfg=dataclasses.asdict(open_clip.model.CLIPVisionCfg()) | cfg["vision_cfg"],
        text_cfg=dataclasses.asdict(open_clip.model.CLIPTextCfg()) | cfg["text_cfg"],
    )
    assert len(full["vision_cfg"]) > 30 and len(full["text_cfg"]) > 30
    assert models.config_from_open_clip(full).to_json() == models.config_from_open_clip(cfg).to_json()


def test_open_clip_ignored_options_keep_the_features():
    """Options the converter knowingly ignores (patch dropout, off in eval mode; the tokenizer's
    settings; the timm tower's, read only with a timm tower) change nothing: the PyTorch model
    built with them gives the converted model's features."""
    cfg = open_clip_cfg(False)
    ignored = with_option(cfg, "vision_cfg", patch_dropout=0.5, timm_pool="")
    ignored = with_option(ignored, "text_cfg", hf_tokenizer_name="bert-base-uncased", tokenizer_kwargs={})
    ref = torch_refs.randomize(open_clip.model.CLIP(**ignored), 1)
    model, config = models.from_open_clip(ref.state_dict(), ignored)
    assert architecture(config) == architecture(models.config_from_open_clip(cfg))
    check_same_features(model, ref, open_clip_features, torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB))


def test_export_checks_the_model_is_covered():
    """A config that does not describe the model (a SigLIP model exported as plain CLIP, whose
    table has no `logit_bias`) is refused rather than silently dropping a parameter."""
    cfg, ref = make_open_clip(False, init_logit_bias=-10.0)
    model, config = models.from_open_clip(ref.state_dict(), cfg)
    config.name = "clip"
    with pytest.raises(ValueError, match="logit_bias"):
        models.to_open_clip(model, config)


def test_converted_config_rebuilds_the_architecture():
    """`create_model(model_config)` makes the same architecture: the converted weights restored
    into it give the same features (what the trainer does with a converted checkpoint)."""
    for make, convert in (
        (lambda: make_open_clip(True), models.from_open_clip),
        (
            lambda: (hf_siglip_config(), torch_refs.randomize(transformers.SiglipModel(hf_siglip_config()))),
            models.from_hf_siglip,
        ),
    ):
        cfg, ref = make()
        model, config = convert(ref.state_dict(), cfg)
        config = ml_collections.ConfigDict(json.loads(config.to_json()))  # as a checkpoint stores it
        rebuilt = models.create_model(config, rngs=nnx.Rngs(7))
        assert config.name.upper() in models.summary(rebuilt, config)
        nnx.update(rebuilt, nnx.state(model))
        tokens = torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB)
        _, nhwc = torch_refs.images(BATCH, IMAGE)
        for a, b in zip(ours(rebuilt, nhwc, tokens), ours(model, nhwc, tokens), strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
        assert models.count_params(rebuilt) == sum(p.numel() for p in ref.parameters())


# ---------------------------------------------------------------------------------------------
# transformers CLIPModel


@pytest.mark.parametrize("eos_token_id", [5, 2], ids=["eos_token", "legacy_argmax"])
def test_hf_clip_features_equal(eos_token_id):
    hf_config = hf_clip_config(eos_token_id)
    ref = torch_refs.randomize(transformers.CLIPModel(hf_config))
    model, config = models.from_hf_clip(ref.state_dict(), hf_config.to_dict())
    assert config.text.pool == ("eos" if eos_token_id == 5 else "argmax")
    tokens = (
        torch_refs.eos_tokens(BATCH, CONTEXT, VOCAB, eos_token_id)
        if eos_token_id != 2
        else torch_refs.clip_tokens(BATCH, CONTEXT, VOCAB)
    )
    check_same_features(model, ref, hf_features, tokens)
    np.testing.assert_allclose(float(model.logit_scale()), float(ref.logit_scale.detach().exp()), rtol=1e-6)


def test_hf_clip_round_trip_loads_strictly(tmp_path):
    from safetensors.torch import save_file

    hf_config = hf_clip_config(5)
    ref = torch_refs.randomize(transformers.CLIPModel(hf_config))
    save_file(ref.state_dict(), tmp_path / "model.safetensors")
    model, config = models.from_hf_clip(tmp_path / "model.safetensors", hf_config)
    fresh = transformers.CLIPModel(hf_config).eval()
    check_export(models.to_hf_clip(model, config), fresh, ref)
    check_same_features(model, fresh, hf_features, torch_refs.eos_tokens(BATCH, CONTEXT, VOCAB, 5, seed=6))


# transformers 4.x wrote every `PretrainedConfig` option into config.json (configuration_utils.py)
HF4_GENERIC_OPTIONS = dict(
    return_dict=True,
    output_hidden_states=False,
    output_attentions=False,
    torchscript=False,
    torch_dtype=None,
    use_bfloat16=False,
    tf_legacy_loss=False,
    pruned_heads={},
    tie_word_embeddings=True,
    chunk_size_feed_forward=0,
    is_encoder_decoder=False,
    is_decoder=False,
    cross_attention_hidden_size=None,
    add_cross_attention=False,
    tie_encoder_decoder=False,
    max_length=20,
    min_length=0,
    do_sample=False,
    early_stopping=False,
    num_beams=1,
    num_beam_groups=1,
    diversity_penalty=0.0,
    temperature=1.0,
    top_k=50,
    top_p=1.0,
    typical_p=1.0,
    repetition_penalty=1.0,
    length_penalty=1.0,
    no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0,
    bad_words_ids=None,
    num_return_sequences=1,
    output_scores=False,
    return_dict_in_generate=False,
    forced_bos_token_id=None,
    forced_eos_token_id=None,
    remove_invalid_values=False,
    exponential_decay_length_penalty=None,
    suppress_tokens=None,
    begin_suppress_tokens=None,
    architectures=None,
    finetuning_task=None,
    id2label={"0": "LABEL_0", "1": "LABEL_1"},
    label2id={"LABEL_0": 0, "LABEL_1": 1},
    tokenizer_class=None,
    prefix=None,
    sep_token_id=None,
    decoder_start_token_id=None,
    task_specific_params=None,
    problem_type=None,
    _name_or_path="",
    transformers_version="4.21.3",
)


def hf4_config_json(config: dict) -> dict:
    """`config` as transformers 4.x saved it: the generic options in every section, the old
    `dropout` option, and CLIP's `*_config_dict` overrides repeating the sub-configs."""
    sections = {
        k: HF4_GENERIC_OPTIONS | dict(dropout=0.0) | config[k] for k in ("text_config", "vision_config")
    }
    saved = HF4_GENERIC_OPTIONS | config | sections
    if config["model_type"] == "clip":
        saved |= dict(
            text_config_dict=dict(hidden_size=config["text_config"]["hidden_size"]), vision_config_dict=None
        )
    return saved


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_hf_config_json_of_transformers_4_converts(kind):
    config = (hf_clip_config(5) if kind == "clip" else hf_siglip_config()).to_dict()
    convert = models.config_from_hf_clip if kind == "clip" else models.config_from_hf_siglip
    assert convert(hf4_config_json(config)).to_json() == convert(config).to_json()


@pytest.mark.parametrize(
    "section, option",
    [
        ("vision_config", dict(num_channels=1)),
        ("text_config", dict(pruned_heads={"0": [1]})),
        (None, dict(model_type="siglip")),
        ("text_config", dict(use_rope=True)),  # not an option transformers' CLIP has
    ],
)
def test_hf_clip_option_outside_the_allow_list_is_named(section, option):
    (key, value), config = next(iter(option.items())), hf_clip_config(5).to_dict()
    with pytest.raises(
        NotImplementedError, match=re.escape(f"{section or 'CLIPConfig'} option {key}={value!r}")
    ):
        models.config_from_hf_clip(with_option(config, section, **option))


def test_hf_clip_ignored_options_keep_the_features():
    """CLIPModel projects to the top-level `projection_dim` whatever its sub-configs say, and
    dropout is off in eval mode: a model built with those converts to the same features."""
    hf_config = hf_clip_config(5)
    hf_config.text_config.projection_dim = hf_config.vision_config.projection_dim = 7
    hf_config.vision_config.attention_dropout = 0.5
    ref = torch_refs.randomize(transformers.CLIPModel(hf_config))
    model, config = models.from_hf_clip(ref.state_dict(), hf_config)
    assert architecture(config) == architecture(models.config_from_hf_clip(hf_clip_config(5)))
    check_same_features(model, ref, hf_features, torch_refs.eos_tokens(BATCH, CONTEXT, VOCAB, 5))


# ---------------------------------------------------------------------------------------------
# transformers SiglipModel


def siglip_tokens(length=CONTEXT, seed=4):
    return np.random.default_rng(seed).integers(0, VOCAB, (BATCH, length))


@pytest.mark.parametrize("length", [CONTEXT, 7], ids=["full_context", "shorter"])
def test_hf_siglip_features_equal(length):
    hf_config = hf_siglip_config()
    ref = torch_refs.randomize(transformers.SiglipModel(hf_config))
    model, config = models.from_hf_siglip(ref.state_dict(), hf_config.to_dict())
    assert isinstance(model, models.SigLIP) and config.vision.pool == "map"
    check_same_features(model, ref, hf_features, siglip_tokens(length))
    np.testing.assert_allclose(float(model.logit_scale()), float(ref.logit_scale.detach().exp()), rtol=1e-6)
    np.testing.assert_allclose(float(model.logit_bias.get_value()), float(ref.logit_bias.detach()), rtol=1e-6)
    # the config starts a re-initialised model at the checkpoint's values
    assert config.init_logit_scale == pytest.approx(float(ref.logit_scale.detach()))
    assert config.init_logit_bias == pytest.approx(float(ref.logit_bias.detach()))


def test_hf_siglip_round_trip_loads_strictly(tmp_path):
    hf_config = hf_siglip_config()
    ref = torch_refs.randomize(transformers.SiglipModel(hf_config))
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    model, config = models.from_hf_siglip(tmp_path / "pytorch_model.bin", hf_config)
    fresh = transformers.SiglipModel(hf_config).eval()
    check_export(models.to_hf_siglip(model, config), fresh, ref)
    check_same_features(model, fresh, hf_features, siglip_tokens(seed=8))


@pytest.mark.parametrize(
    "section, option",
    [
        ("vision_config", dict(vision_use_head=False)),  # no attention-pooling head
        ("vision_config", dict(num_channels=1)),
        (None, dict(text_config_dict={})),  # CLIP's option, not SigLIP's
    ],
)
def test_hf_siglip_option_outside_the_allow_list_is_named(section, option):
    (key, value), config = next(iter(option.items())), hf_siglip_config().to_dict()
    with pytest.raises(
        NotImplementedError, match=re.escape(f"{section or 'SiglipConfig'} option {key}={value!r}")
    ):
        models.config_from_hf_siglip(with_option(config, section, **option))


def test_hf_siglip_ignored_options_keep_the_features():
    """Dropout (off in eval mode) is ignored: a SiglipModel built with it gives the same features."""
    hf_config = hf_siglip_config()
    hf_config.text_config.attention_dropout = hf_config.vision_config.attention_dropout = 0.5
    ref = torch_refs.randomize(transformers.SiglipModel(hf_config))
    model, config = models.from_hf_siglip(ref.state_dict(), hf_config)
    assert architecture(config) == architecture(models.config_from_hf_siglip(hf_siglip_config()))
    check_same_features(model, ref, hf_features, siglip_tokens())


# ---------------------------------------------------------------------------------------------
# Real sizes: architecture only (PyTorch on its meta device, NNX abstractly)


def real_size_cases():
    configs = pathlib.Path(open_clip.__file__).parent / "model_configs"
    for name in ("ViT-B-32-quickgelu", "ViT-B-16"):
        cfg = json.loads((configs / f"{name}.json").read_text())
        yield pytest.param(
            lambda cfg=cfg: open_clip.model.CLIP(**cfg),
            lambda cfg=cfg: models.config_from_open_clip(cfg),
            id=name,
        )
    # transformers' default configs are openai/clip-vit-base-patch32 and siglip-base-patch16-224
    clip, siglip = transformers.CLIPConfig(), transformers.SiglipConfig()
    yield pytest.param(
        lambda: transformers.CLIPModel(clip), lambda: models.config_from_hf_clip(clip), id="hf_clip"
    )
    yield pytest.param(
        lambda: transformers.SiglipModel(siglip), lambda: models.config_from_hf_siglip(siglip), id="hf_siglip"
    )


@pytest.mark.parametrize("make_ref, make_config", list(real_size_cases()))
def test_real_size_architectures_have_the_same_parameters(make_ref, make_config):
    """`config_from_*` on real configs gives the source's architecture (parameter for parameter
    in number; head counts and layouts are checked on the tiny models above)."""
    with torch.device("meta"):
        ref = make_ref()
    abstract = nnx.eval_shape(lambda: models.create_model(make_config(), rngs=nnx.Rngs(0)))
    assert models.count_params(abstract) == sum(p.numel() for p in ref.parameters())


# ---------------------------------------------------------------------------------------------
# Tower options in isolation


def test_pooled_index_modes():
    tokens = jnp.array([[7, 3, 9, 2, 0, 0], [9, 2, 5, 2, 1, 0]])
    assert models.pooled_index(tokens, "last", 0, 2).tolist() == [3, 4]
    assert models.pooled_index(tokens, "argmax", 0, 2).tolist() == [2, 0]
    assert models.pooled_index(tokens, "eos", 0, 2).tolist() == [3, 1]
    assert models.pooled_index(tokens, "final", 0, 2).tolist() == [5, 5]


def test_activations():
    """Each name is torch's function to float32 rounding; exact and tanh GELU really differ."""
    x = jnp.linspace(-4.0, 4.0, 81)
    xt = torch.tensor(np.asarray(x))
    exact = torch.nn.functional.gelu(xt).numpy()
    np.testing.assert_allclose(models.ACTIVATIONS["gelu"](x), exact, atol=1e-6)
    tanh = torch.nn.functional.gelu(xt, approximate="tanh").numpy()
    np.testing.assert_allclose(models.ACTIVATIONS["gelu_tanh"](x), tanh, atol=1e-6)
    quick = (xt * torch.sigmoid(1.702 * xt)).numpy()
    np.testing.assert_allclose(models.ACTIVATIONS["quick_gelu"](x), quick, atol=1e-6)
    assert np.abs(exact - tanh).max() > 1e-4
