"""Convert a pretrained CLIP or SigLIP checkpoint into a directory this library trains and evaluates.

    python -m experiments.convert --source open_clip --checkpoint open_clip_pytorch_model.bin \
        --model_config ViT-B-32-quickgelu.json --tokenizer clip_bpe --out /tmp/vit_b32_openai
    python -m experiments.convert --source hf_siglip --checkpoint model.safetensors \
        --model_config config.json --tokenizer spiece.model --out /tmp/siglip_base

The output directory has a run's layout: `config.json` (a complete training config whose `model`
section is the converted architecture, with the source's tokenizer, context length, image size
and pixel mean/std), `checkpoints/0/` (the converted parameters with a fresh optimizer state) and
the tokenizer file. Train from it with `--config.init_from=DIR`, evaluate it with
`python -m experiments.eval --workdir DIR` or `python -m experiments.zeroshot --workdir DIR`.
"""

from __future__ import annotations

import json
import os
import shutil

# Pixel statistics of each source's preprocessing: OpenAI's for CLIP, 0.5 for SigLIP.
OPENAI_MEAN, OPENAI_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)
SOURCES = {
    # source: (converter name in contrastive_jax.models, model family, pixel mean, pixel std)
    "open_clip": ("from_open_clip", "clip", OPENAI_MEAN, OPENAI_STD),
    "hf_clip": ("from_hf_clip", "clip", OPENAI_MEAN, OPENAI_STD),
    "hf_siglip": ("from_hf_siglip", "siglip", (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
}


def _read_config(path: str) -> dict:
    from contrastive_jax.train import ConfigError

    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise ConfigError(f"cannot read the model config {path!r}: {err}") from err


def _place_tokenizer(tokenizer: str, out: str, source: str) -> str:
    """Copies a tokenizer file into `out` (the config names it relative to the directory).

    SigLIP's SentencePiece `spiece.model` is named "siglip:spiece.model": transformers'
    SiglipTokenizer rules (no punctuation, lower case, `</s>` padding) go with it.
    """
    from contrastive_jax.train import ConfigError

    if tokenizer in ("word", "clip_bpe"):  # the embedded datasets' words; OpenAI's BPE
        return tokenizer
    path = tokenizer.removeprefix("siglip:")
    if not os.path.isfile(path) or not path.endswith((".json", ".model", ".txt.gz")):
        raise ConfigError(
            f"--tokenizer {tokenizer!r} must be 'clip_bpe' or an existing tokenizer.json, SentencePiece "
            ".model or CLIP BPE .txt.gz file (the source's own tokenizer)"
        )
    name = os.path.basename(path)
    shutil.copyfile(path, os.path.join(out, name))
    siglip = tokenizer.startswith("siglip:") or (source == "hf_siglip" and name.endswith(".model"))
    return f"siglip:{name}" if siglip else name


def convert(
    source: str, checkpoint: str, model_config: str, tokenizer: str, out: str, *, mean=None, std=None
):
    """Writes the converted model to `out`; returns its training config.

    Args:
      source: "open_clip", "hf_clip" or "hf_siglip".
      checkpoint: the source's weights (.safetensors, .pt or .bin).
      model_config: the source's own config JSON (open_clip's model config; transformers'
        `config.json`).
      tokenizer: "clip_bpe" (OpenAI's BPE, ids equal to open_clip.tokenize), or the source's
        tokenizer file (tokenizer.json, SentencePiece .model, BPE .txt.gz) copied into `out`
        (for hf_siglip a .model is SigLIP's spiece.model: ids equal transformers'
        SiglipTokenizer); "word" for the embedded datasets' word vocabulary (tests).
      out: the directory to write (must not hold checkpoints yet).
      mean, std: pixel statistics (per channel); default: the source's.
    """
    from contrastive_jax import models, train
    from contrastive_jax.train import ConfigError
    from experiments.configs.common import base_config

    if source not in SOURCES:
        raise ConfigError(f"unknown --source {source!r}; choose one of {sorted(SOURCES)}")
    if not os.path.isfile(checkpoint):
        raise ConfigError(f"checkpoint file {checkpoint!r} does not exist")
    if os.path.isdir(train.RunPaths(out).checkpoints):
        raise ConfigError(f"{out} already holds checkpoints; choose a new --out directory")
    converter, family, source_mean, source_std = SOURCES[source]
    model, model_cfg = getattr(models, converter)(checkpoint, _read_config(model_config))

    os.makedirs(out, exist_ok=True)
    config = base_config(loss=family, model=family)
    with config.unlocked():
        config.model = model_cfg
        config.data.tokenizer = _place_tokenizer(tokenizer, out, source)
        config.data.context_length = int(model_cfg.text.context_length)
        config.data.image_size = int(model_cfg.vision.image_size)
        config.data.mean = list(mean or source_mean)
        config.data.std = list(std or source_std)
    # The state the trainer would build for this config, with the converted parameters in it:
    # what restores here is exactly what `init_from` and evaluation will rebuild.
    from flax import nnx

    _, _, _, _, state, _ = train.init_state(config, num_samples=1)
    _, params, _ = nnx.split(model, nnx.Param, ...)
    expected, got = jax_specs(state["params"]), jax_specs(params)
    if expected != got:
        raise ConfigError(
            f"the converted model does not match create_model(model_config): {sorted(set(got) ^ set(expected))[:4]}"
        )
    state["params"] = params
    checkpointer = train.run_checkpointer(out)
    checkpointer.save(0, state, {"data": None, "converted_from": os.path.abspath(checkpoint)}, force=True)
    checkpointer.close()
    train.write_run_config(out, config)
    return config


def jax_specs(tree) -> dict:
    import jax

    return {
        jax.tree_util.keystr(path): (leaf.shape, str(leaf.dtype))
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]
    }


def main(argv):
    del argv
    from absl import flags

    f = flags.FLAGS
    config = convert(f.source, f.checkpoint, f.model_config, f.tokenizer, f.out)
    print(f"Wrote {f.out}: {config.model.name} model; train from it with --config.init_from={f.out}")


if __name__ == "__main__":
    from absl import flags

    flags.DEFINE_enum("source", None, sorted(SOURCES), "Where the checkpoint comes from.", required=True)
    flags.DEFINE_string("checkpoint", None, "The source's weights file.", required=True)
    flags.DEFINE_string("model_config", None, "The source's model config JSON.", required=True)
    flags.DEFINE_string(
        "tokenizer",
        None,
        "clip_bpe, or the source's tokenizer.json / .model (SigLIP: spiece.model) / .txt.gz file to copy.",
        required=True,
    )
    flags.DEFINE_string("out", None, "Directory to write.", required=True)
    from experiments import _cli

    _cli.run(main)
