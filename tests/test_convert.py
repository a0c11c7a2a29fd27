"""experiments/convert.py end to end: a tiny random open_clip CLIP (OpenAI-style, QuickGELU, CLIP's
49,408-token embedding table) written as .safetensors + its JSON config → a converted directory
whose restored model gives the PyTorch features, fine-tuned with `init_from` and the counting
loss, then evaluated zero-shot on a TFDS classification dataset written here, with CLIP's BPE
tokenizer throughout."""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
if importlib.util.find_spec("open_clip") is None:
    pytest.skip("open_clip_torch is not installed", allow_module_level=True)

from contrastive_jax import train  # noqa: E402
from tests import torch_refs  # noqa: E402
from tests.train_common import metric_records  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
IMAGE, CONTEXT, VOCAB = 32, 16, 49408


def tiny_openai_clip(tmp_path):
    """A tiny open_clip CLIP with every weight random, saved as open_clip's files are."""
    from safetensors.torch import save_file

    open_clip = torch_refs.import_open_clip()
    cfg = {
        "embed_dim": 16,
        "quick_gelu": True,
        "vision_cfg": {"image_size": IMAGE, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
        "text_cfg": {"context_length": CONTEXT, "vocab_size": VOCAB, "width": 32, "heads": 2, "layers": 1},
    }
    ref = torch_refs.randomize(open_clip.model.CLIP(**cfg), seed=4)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "model_config.json").write_text(json.dumps(cfg))
    return cfg, ref


@pytest.fixture(scope="module")
def converted(data_dir, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("convert")
    cfg, ref = tiny_openai_clip(tmp_path)
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    command = [sys.executable, "-m", "experiments.convert", "--source=open_clip", "--tokenizer=clip_bpe"]
    files = [
        f"--checkpoint={tmp_path / 'model.safetensors'}",
        f"--model_config={tmp_path / 'model_config.json'}",
    ]
    done = subprocess.run(
        [*command, *files, f"--out={tmp_path / 'out'}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    # The same command again: the directory is taken, one line, nothing changed.
    again = subprocess.run(
        [*command, *files, f"--out={tmp_path / 'out'}"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    assert again.returncode == 1 and "already holds checkpoints" in again.stderr
    assert "Traceback" not in again.stderr
    return tmp_path / "out", ref


def test_the_converted_directory_restores_the_pytorch_model(converted):
    out, ref = converted
    config, model, step, tokenizer = train.load_run(str(out))
    assert step == 0 and config.data.tokenizer == "clip_bpe" and config.data.image_size == IMAGE
    np.testing.assert_allclose(config.data.mean, [0.48145466, 0.4578275, 0.40821073])
    pixels, nhwc = torch_refs.images(3, IMAGE)
    tokens = tokenizer.encode(["a photo of a cat!", "three red circles", ""], CONTEXT)
    with torch.no_grad():
        want_image = ref.encode_image(pixels, normalize=True).numpy()
        want_text = ref.encode_text(torch.from_numpy(np.asarray(tokens, np.int64)), normalize=True).numpy()
    np.testing.assert_allclose(model.encode_image(jnp.asarray(nhwc)), want_image, atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.encode_text(jnp.asarray(tokens)), want_text, atol=1e-4, rtol=0)
    np.testing.assert_allclose(float(model.logit_scale()), float(ref.logit_scale.detach().exp()), rtol=1e-6)


def test_fine_tune_with_the_counting_loss_then_zero_shot_on_tfds(converted, tmp_path):
    from contrastive_jax import data, evaluate
    from tests.test_zeroshot_tfds import ZsColors
    from tests.train_common import clip_config

    out, _ = converted
    config = clip_config(steps=3, loss="clip_count")
    with config.unlocked():
        config.init_from = str(out)
    assert train.train(config, str(tmp_path), evaluate=False) == {"steps": 3}
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model"]["text"]["vocab_size"] == VOCAB and saved["model"]["vision"]["image_size"] == IMAGE
    np.testing.assert_allclose(saved["data"]["std"], [0.26862954, 0.26130258, 0.27577711])
    records = metric_records(tmp_path)
    assert [r["step"] for r in records] == [1, 2, 3]
    assert all(np.isfinite([r["loss"], r["counting"]]).all() for r in records)

    data_dir = os.environ["CONTRASTIVE_JAX_DATA_DIR"]
    ZsColors(data_dir=data_dir, file_format="array_record").download_and_prepare()
    config, model, step, tokenizer = train.load_run(str(tmp_path))
    source = data.open_eval_source("zs_colors", "test", data_dir=data_dir)
    results = evaluate.zero_shot_tfds(model, tokenizer, config, source, templates="simple")
    assert step == 3 and 0.0 <= results["zero_shot_top1"] <= results["zero_shot_top5"] <= 1.0


def test_siglip_converts_with_its_tokenizer(tmp_path):
    """hf_siglip + spiece.model: the directory's tokenizer gives transformers' SiglipTokenizer ids,
    and the restored model's text features on them equal SiglipModel's."""
    import transformers
    from safetensors.torch import save_file

    from experiments.convert import convert
    from tests.test_clip_tokenizer import _siglip_spiece
    from tests.test_pretrained import hf_features, hf_siglip_config

    spiece = _siglip_spiece(tmp_path / "tok")
    reference_tokenizer = transformers.SiglipTokenizer(vocab_file=spiece)
    hf_config = hf_siglip_config()
    hf_config.text_config.vocab_size = reference_tokenizer.vocab_size
    ref = torch_refs.randomize(transformers.SiglipModel(hf_config), seed=3)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(hf_config.to_dict()))
    convert(
        "hf_siglip",
        str(tmp_path / "model.safetensors"),
        str(tmp_path / "config.json"),
        spiece,
        str(tmp_path / "out"),
    )

    config, model, _, tokenizer = train.load_run(str(tmp_path / "out"))
    assert config.data.tokenizer == f"siglip:{tmp_path / 'out' / 'spiece.model'}"
    texts = ["A photo of THREE red circles.", "a blue square, and two green triangles!", ""]
    length = config.data.context_length
    tokens = tokenizer.encode(texts, length)
    want = reference_tokenizer(texts, padding="max_length", max_length=length, truncation=True)["input_ids"]
    assert tokens.tolist() == want
    pixels, nhwc = torch_refs.images(len(texts), config.data.image_size)
    ref_image, ref_text = hf_features(ref, pixels, np.asarray(tokens, np.int64))
    np.testing.assert_allclose(model.encode_text(jnp.asarray(tokens)), ref_text, atol=1e-4, rtol=0)
    np.testing.assert_allclose(model.encode_image(jnp.asarray(nhwc)), ref_image, atol=1e-4, rtol=0)
