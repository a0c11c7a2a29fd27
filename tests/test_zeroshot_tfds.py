"""Zero-shot classification and retrieval on TFDS datasets written locally (array_record, no TF)."""

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import tensorflow_datasets as tfds
from PIL import Image

from contrastive_jax import data, evaluate, train
from contrastive_jax.evaluate import _metrics

# Cube-corner colours: their normalised pixels point in 6 distinct directions.
COLORS = {"dark_red": (255, 0, 0), "green": (0, 255, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
          "cyan": (0, 255, 255), "magenta": (255, 0, 255)}  # fmt: skip
NAMES = list(COLORS)
MISLABELLED = 3  # the first images of the classification set are painted another class's colour


def _png(rgb, shape=(24, 32)):
    image = np.zeros((*shape, 3), np.uint8)
    side = min(shape)
    top, left = (shape[0] - side) // 2, (shape[1] - side) // 2
    image[top : top + side, left : left + side] = rgb  # the centre square holds the colour, the rest is black
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


class ZsColors(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(None, None, 3)),
                    "label": tfds.features.ClassLabel(names=NAMES),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(24):
            label = i % len(NAMES)
            painted = (label + 1) % len(NAMES) if i < MISLABELLED else label
            yield i, {"image": _png(COLORS[NAMES[painted]]), "label": label}


class ZsCaptions(tfds.core.GeneratorBasedBuilder):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "picture": tfds.features.Image(shape=(None, None, 3)),
                    "captions": tfds.features.Sequence({"text": tfds.features.Text()}),
                    "label": tfds.features.ClassLabel(names=NAMES),
                }  # fmt: skip
            ),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, name in enumerate(NAMES):
            texts = [f"a {name} square", f"{name} paint"]
            if i == 0:
                texts.append(f"a {NAMES[1]} thing")  # a wrong caption: retrieves image 1, not image 0
            yield i, {"picture": _png(COLORS[name], (32, 24)), "captions": {"text": texts}, "label": i}


class ColorTokenizer:
    """Token 0 = the index of the colour named in the text (a stand-in for a real tokenizer)."""

    vocab_size = len(NAMES)

    def encode(self, texts, context_length):
        ids = np.zeros((len(texts), context_length), np.int32)
        for row, text in enumerate(texts):
            text = text.decode() if isinstance(text, bytes) else text
            ids[row, 0] = next((k for k, n in enumerate(NAMES) if n.replace("_", " ") in text), 0)
        return ids


class ColorModel:
    """Image embedding = its mean normalised pixel; text embedding = the named colour's: so an
    image's nearest class is the colour it is painted with."""

    def encode_image(self, images):
        mean = np.asarray(images).mean(axis=(1, 2))
        return mean / np.linalg.norm(mean, axis=1, keepdims=True)

    def encode_text(self, tokens):
        table = np.array([COLORS[n] for n in NAMES], np.float64) / 127.5 - 1
        table /= np.linalg.norm(table, axis=1, keepdims=True)
        return table[np.asarray(tokens)[:, 0]]


@pytest.fixture(scope="module")
def prepared(data_dir):
    tfds.display_progress_bar(False)
    for builder in (ZsColors, ZsCaptions):
        builder(data_dir=data_dir, file_format="array_record").download_and_prepare()
    return data_dir


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    from tests.train_common import clip_config

    workdir = str(tmp_path_factory.mktemp("zs_run"))
    train.train(clip_config(steps=4), workdir, evaluate=False)
    return workdir


def _config(image_size=16, **data):
    import ml_collections

    return ml_collections.ConfigDict({"data": dict(image_size=image_size, context_length=4, **data)})


def test_feature_detection_and_errors(prepared):
    colors = data.open_eval_source("zs_colors", "test", data_dir=prepared)
    assert colors.class_names[0] == "dark red" and colors.caption_key is None
    assert colors[0]["image"].shape == (24, 24, 3)  # centre square of 24×32
    captions = data.open_eval_source("zs_captions", "test", data_dir=prepared)
    assert (captions.image_key, captions.caption_key, captions.label_key) == (
        "picture",
        "captions/text",
        "label",
    )
    assert ["a green square", "green paint"] in [captions.captions(i) for i in range(len(captions))]
    with pytest.raises(train.ConfigError, match="unknown dataset"):
        data.open_eval_source("zs_colours", "test", data_dir=prepared)
    with pytest.raises(train.ConfigError, match="Unknown split"):
        data.open_eval_source("zs_colors", "validation", data_dir=prepared)
    with pytest.raises(train.ConfigError, match="not a ClassLabel"):
        data.open_eval_source("zs_captions", "test", data_dir=prepared, label_key="picture")


def test_detect_keys_prefers_the_conventional_names():
    features = tfds.features.FeaturesDict(
        {
            "image": tfds.features.Image(shape=(None, None, 3)),
            "thumb": tfds.features.Image(shape=(None, None, 3)),
            "title": tfds.features.Text(),
            "caption": tfds.features.Text(),
            "color": tfds.features.ClassLabel(names=["a", "b"]),
            "shape": tfds.features.ClassLabel(names=["c", "d"]),
        }
    )
    # two ClassLabels, neither named "label": no classification unless --label_key picks one
    assert data.detect_keys(features) == {"image": "image", "label": None, "caption": "caption"}
    assert data.detect_keys(features, label_key="shape")["label"] == "shape"


def test_known_answers_with_a_colour_model(prepared):
    colors = data.open_eval_source("zs_colors", "test", data_dir=prepared)
    config = _config(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])
    got = evaluate.zero_shot_tfds(ColorModel(), ColorTokenizer(), config, colors, batch_size=5)
    assert got["zero_shot_top1"] == pytest.approx(1 - MISLABELLED / 24)  # exactly the mislabelled miss
    assert got["num_templates"] == 80 and got["num_classes"] == 6 and got["num_images"] == 24
    simple = evaluate.zero_shot_tfds(ColorModel(), ColorTokenizer(), config, colors, templates="simple")
    assert simple["num_templates"] == 1 and simple["zero_shot_top1"] == got["zero_shot_top1"]
    captions = data.open_eval_source("zs_captions", "test", data_dir=prepared)
    got = evaluate.retrieval_tfds(ColorModel(), ColorTokenizer(), config, captions, batch_size=4)
    assert got["num_captions"] == 13
    # image 1's captions tie with image 0's wrong one, and ties count against the query
    assert got["image_to_text_r@1"] == pytest.approx(5 / 6) and got["image_to_text_r@5"] == 1.0
    assert got["text_to_image_r@1"] == pytest.approx(12 / 13)  # only the wrong caption misses


def test_pixel_statistics_of_the_config_are_used(prepared):
    colors = data.open_eval_source("zs_colors", "test", data_dir=prepared)
    rgb = np.array(list(COLORS.values()), np.float64) / 255
    raw = _config(mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0])  # pixels stay in [0, 1]
    for config, table in ((raw, rgb), (_config(), 2 * rgb - 1)):  # default: (x - 0.5) / 0.5
        emb, _, _ = evaluate.embed_images(ColorModel(), ColorTokenizer(), config, colors, batch_size=7)
        table = table / np.linalg.norm(table, axis=1, keepdims=True)
        # every image embeds exactly as its colour normalised this way (the black border cropped off)
        np.testing.assert_allclose(np.max(emb @ table.T, axis=1), 1.0, atol=1e-6)


def test_topk_matches_a_sort_and_ties_follow_argmax():
    rng = np.random.default_rng(0)
    images, classes = rng.normal(size=(50, 4)), rng.normal(size=(7, 4))
    labels = rng.integers(0, 7, 50)
    got = _metrics.zero_shot_topk(images, classes, labels)
    order = np.argsort(-(images @ classes.T), axis=1, kind="stable")
    for k in (1, 5):
        assert got[f"top{k}"] == pytest.approx(np.mean([labels[i] in order[i, :k] for i in range(50)]))
    tied = _metrics.zero_shot_topk(np.ones((2, 2)), np.eye(2), np.array([0, 1]))
    assert tied == {"top1": 0.5}  # no top5 with 2 classes; a tie goes to the lower index, as argmax


def test_grouped_recall_matches_a_loop():
    rng = np.random.default_rng(1)
    images, texts = rng.normal(size=(12, 5)), rng.normal(size=(30, 5))
    owner = rng.integers(0, 12, 30)
    got = _metrics.retrieval_recall_grouped(images, texts, owner, ks=(1, 5))
    for k in (1, 5):
        i2t = [
            set(np.argsort(-(images[i] @ texts.T))[:k]) & set(np.flatnonzero(owner == i)) for i in range(12)
        ]
        t2i = [owner[j] in np.argsort(-(texts[j] @ images.T))[:k] for j in range(30)]
        with_captions = [i for i in range(12) if (owner == i).any()]
        # images without captions can never be hits
        assert got[f"image_to_text_r@{k}"] == pytest.approx(sum(bool(i2t[i]) for i in with_captions) / 12)
        assert got[f"text_to_image_r@{k}"] == pytest.approx(np.mean(t2i))


def test_trained_model_against_a_numpy_recomputation(prepared, run_dir):
    config, model, _, tokenizer = train.load_run(run_dir)
    colors = data.open_eval_source("zs_colors", "test", data_dir=prepared)
    got = evaluate.zero_shot_tfds(model, tokenizer, config, colors, templates="simple", batch_size=16)
    assert 0 <= got["zero_shot_top1"] <= got["zero_shot_top5"] <= 1
    # Slow path: eager model, images cropped / resized / normalised by hand.
    size = config.data.image_size
    images = np.stack([
        np.asarray(Image.fromarray(data.center_square(colors.source[i]["image"])).resize((size, size), Image.BILINEAR))
        for i in range(len(colors))
    ]).astype(np.float32) / 127.5 - 1  # fmt: skip
    image_emb = np.asarray(model.encode_image(images))
    class_emb = np.asarray(
        model.encode_text(tokenizer.encode([f"a photo of a {n}." for n in colors.class_names], 16))
    )
    labels = np.array([colors.source[i]["label"] for i in range(len(colors))])
    expected = np.mean(np.argmax(image_emb @ class_emb.T, axis=1) == labels)
    assert got["zero_shot_top1"] == pytest.approx(expected)
    captions = data.open_eval_source("zs_captions", "test", data_dir=prepared)
    recall = evaluate.retrieval_tfds(model, tokenizer, config, captions)
    for direction in ("image_to_text", "text_to_image"):
        r = [recall[f"{direction}_r@{k}"] for k in (1, 5, 10)]
        assert 0 <= r[0] <= r[1] <= r[2] <= 1
    assert recall["text_to_image_r@10"] == 1.0  # 6 images: every image is in the top 10


def test_cli_classifies_and_retrieves(prepared, run_dir):
    def cli(*args):
        env = dict(os.environ, CONTRASTIVE_JAX_DATA_DIR=prepared, JAX_PLATFORMS="cpu")
        return subprocess.run(
            [sys.executable, "-m", "experiments.zeroshot", f"--workdir={run_dir}", f"--data_dir={prepared}", *args],
            capture_output=True, text=True, env=env, cwd=os.path.dirname(os.path.dirname(__file__)),
        )  # fmt: skip

    done = cli("--dataset=zs_captions", "--templates=simple")
    assert done.returncode == 0, done.stderr
    with open(os.path.join(run_dir, "zeroshot_zs_captions_test.json")) as f:
        saved = json.load(f)
    assert saved == json.loads(done.stdout[done.stdout.index("{") :])
    assert saved["step"] == 4 and 0 <= saved["classification"]["zero_shot_top1"] <= 1
    assert saved["retrieval"]["num_captions"] == 13
    failed = cli("--dataset=zs_colours")
    assert failed.returncode == 1 and failed.stderr.strip().splitlines()[-1].startswith(
        "error: unknown dataset"
    )


def test_a_class_names_file_names_the_labels(prepared, tmp_path):
    """--class_names: names by label order from a file (imagenet2012's labels are WordNet ids)."""
    colors = data.open_eval_source("zs_colors", "test", data_dir=prepared)
    config = _config(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])

    def top1(source):
        return evaluate.zero_shot_tfds(ColorModel(), ColorTokenizer(), config, source, templates="simple")[
            "zero_shot_top1"
        ]

    (tmp_path / "same.txt").write_text("\n".join(NAMES) + "\n")
    assert top1(data.with_class_names(colors, str(tmp_path / "same.txt"))) == pytest.approx(
        1 - MISLABELLED / 24
    )
    # Label L named after colour L + 1: only the images painted with colour L + 1 are now right.
    (tmp_path / "rotated.txt").write_text("\n".join(NAMES[1:] + NAMES[:1]))
    assert top1(data.with_class_names(colors, str(tmp_path / "rotated.txt"))) == pytest.approx(
        MISLABELLED / 24
    )
    (tmp_path / "short.txt").write_text("\n".join(NAMES[:-1]))
    with pytest.raises(train.ConfigError, match="has 5 class names but the label feature 'label' has 6"):
        data.with_class_names(colors, str(tmp_path / "short.txt"))
    with pytest.raises(train.ConfigError, match="does not exist"):
        data.with_class_names(colors, str(tmp_path / "missing.txt"))
