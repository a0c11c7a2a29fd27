"""Shipped zero-shot class names, the evaluation suite CLI and the trainer's `Evaluator` API.

Stand-ins for real TFDS datasets (patch_camelyon, imagenet_a, coco_captions) are written locally
under their real names (array_record, no TensorFlow, no network), with the features TFDS gives them.
"""

import dataclasses
import doctest
import io
import json
import os
import re
import subprocess
import sys

import ml_collections
import numpy as np
import pytest
import tensorflow_datasets as tfds
from flax import nnx
from PIL import Image

from contrastive_jax import data, evaluate, train
from contrastive_jax.data import _prompts
from contrastive_jax.evaluate import _evaluator

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RED, GREEN = (255, 0, 0), (0, 255, 0)
PCAM_LABEL = [0, 1, 0, 1, 0, 1, 0, 1]  # 1: metastatic tumour tissue (TFDS patch_camelyon)
PCAM_PAINT = [RED, RED, GREEN, GREEN, GREEN, RED, GREEN, RED]  # red: tumour; images 0 and 3 painted wrong
IMAGENET_A_WNIDS = ["n01498041", "n12267677", "n01440764"]  # stingray, acorn; tench is not in ImageNet-A


def _png(rgb, shape=(16, 16)):
    buffer = io.BytesIO()
    Image.fromarray(np.full((*shape, 3), rgb, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def _features(**features):
    return tfds.features.FeaturesDict(features)


class PatchCamelyon(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("2.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=_features(
                id=tfds.features.Text(),
                image=tfds.features.Image(shape=(None, None, 3)),
                label=tfds.features.ClassLabel(num_classes=2),
            ),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, (paint, label) in enumerate(zip(PCAM_PAINT, PCAM_LABEL)):
            yield i, {"id": str(i), "image": _png(paint), "label": label}


class ImagenetA(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("0.1.0")

    def _info(self):
        wnids = _prompts.shipped_prompts("imagenet2012").label_names
        return tfds.core.DatasetInfo(
            builder=self,
            features=_features(
                image=tfds.features.Image(shape=(None, None, 3)),
                label=tfds.features.ClassLabel(names=list(wnids)),
                file_name=tfds.features.Text(),
            ),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i, wnid in enumerate(IMAGENET_A_WNIDS):
            yield i, {"image": _png(RED), "label": wnid, "file_name": f"{wnid}/{i}.jpg"}


class CocoCaptions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Its real TFDS builder imports TensorFlow: read from its files only."""

    VERSION = tfds.core.Version("1.1.0")

    def _info(self):
        captions = tfds.features.Sequence(
            {"id": tfds.features.Scalar(np.int64), "text": tfds.features.Text()}
        )
        return tfds.core.DatasetInfo(
            builder=self,
            features=_features(image=tfds.features.Image(shape=(None, None, 3)), captions=captions),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        for i in range(5):
            texts = [f"a picture number {i}", f"{i} shades of red"]
            yield (
                i,
                {
                    "image": _png((40 * i, 30, 200)),
                    "captions": [{"id": j, "text": t} for j, t in enumerate(texts)],
                },
            )


class ImagenetV2(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Two builder configs, as TFDS's (whose default is "matched-frequency"): one image each."""

    VERSION = tfds.core.Version("3.0.0")
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name="matched-frequency"),
        tfds.core.BuilderConfig(name="topimages"),
    ]

    def _info(self):
        wnids = list(_prompts.shipped_prompts("imagenet2012").label_names)
        return tfds.core.DatasetInfo(
            builder=self,
            features=_features(
                image=tfds.features.Image(shape=(None, None, 3)), label=tfds.features.ClassLabel(names=wnids)
            ),
        )

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"image": _png(RED), "label": 6 if self.builder_config.name == "matched-frequency" else 988}


class ZsVersions(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [tfds.core.BuilderConfig(name="a"), tfds.core.BuilderConfig(name="b")]
    CLASSES = 2

    def _info(self):
        features = _features(
            image=tfds.features.Image(shape=(None, None, 3)),
            label=tfds.features.ClassLabel(num_classes=self.CLASSES),
        )
        return tfds.core.DatasetInfo(builder=self, features=features)

    def _split_generators(self, dl_manager):
        return {"test": self._generate_examples()}

    def _generate_examples(self):
        yield 0, {"image": _png(RED), "label": 0}


class ZsVersionsNewer(ZsVersions, skip_registration=True):
    name = "zs_versions"
    VERSION = tfds.core.Version("1.1.0")
    CLASSES = 3


@pytest.fixture(scope="module")
def fakes(tmp_path_factory):
    tfds.display_progress_bar(False)
    folder = str(tmp_path_factory.mktemp("fake_tfds"))
    for builder in (PatchCamelyon, ImagenetA, CocoCaptions):
        builder(data_dir=folder, file_format="array_record").download_and_prepare()
    for builder, config in (
        (ImagenetV2, "matched-frequency"),
        (ImagenetV2, "topimages"),
        (ZsVersions, "a"),
        (ZsVersions, "b"),
        (ZsVersionsNewer, "b"),
    ):
        builder(data_dir=folder, config=config, file_format="array_record").download_and_prepare()
    return folder


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, data_dir):
    """A freshly initialised run (step 0), written as experiments/convert.py writes one."""
    from tests.train_common import clip_config

    workdir = str(tmp_path_factory.mktemp("suite_run"))
    config = clip_config()
    with config.unlocked():
        config.model.text.vocab_size = train.make_tokenizer(config.data).vocab_size
    *_, state, _ = train.init_state(config, num_samples=1)
    checkpointer = train.run_checkpointer(workdir)
    checkpointer.save(0, state, {"data": None}, force=True)
    checkpointer.close()
    train.write_run_config(workdir, config)
    return workdir


class TumourTokenizer:
    """Token 0 is 1 for a text that names the metastatic tumour, else 0."""

    vocab_size = 2

    def encode(self, texts, context_length):
        ids = np.zeros((len(texts), context_length), np.int32)
        ids[:, 0] = ["metastatic" in t for t in texts]
        return ids


class RedGreenModel:
    """Image embedding: its mean (normalised) pixel's red and green; text: tumour → red, else green."""

    def encode_image(self, images):
        rg = np.asarray(images, np.float64).mean(axis=(1, 2))[:, :2] + 1
        return rg / np.linalg.norm(rg, axis=1, keepdims=True)

    def encode_text(self, tokens):
        return np.eye(2)[1 - np.asarray(tokens)[:, 0]]  # token 1 → [1, 0] (red), 0 → [0, 1] (green)


def _config():
    return ml_collections.ConfigDict(
        {"data": dict(image_size=8, context_length=4, mean=[0.5] * 3, std=[0.5] * 3)}
    )


def _norm(name: str) -> str:
    return name.lower().replace("_", " ").replace("-", " ").strip()


# TFDS label name → CLIP's name, where CLIP renamed a class (all others equal up to case, "_", "-").
RENAMED = {
    "caltech101": {
        "airplanes": "airplane", "background_google": "background", "car_side": "side of a car",
        "cougar_body": "body of a cougar cat", "cougar_face": "face of a cougar cat",
        "crocodile_head": "head of a  crocodile", "faces": "off-center face", "faces_easy": "centered face",
        "flamingo_head": "head of a flamingo", "leopards": "leopard", "motorbikes": "motorbike",
        "snoopy": "snoopy (cartoon beagle)", "yin_yang": "yin and yang symbol",
    },
    "oxford_flowers102": {"pink-yellow dahlia?": "pink and yellow dahlia", "ball moss": "air plant"},
    "eurosat": {
        "AnnualCrop": "annual crop land", "Forest": "forest", "HerbaceousVegetation": "brushland or shrubland",
        "Highway": "highway or road", "Industrial": "industrial buildings or commercial buildings",
        "Pasture": "pasture land", "PermanentCrop": "permanent crop land",
        "Residential": "residential buildings or homes or apartments", "River": "river", "SeaLake": "lake or sea",
    },
}  # fmt: skip
# TFDS fills these label names from the downloaded files (offline: "0", "1", ...), or they are digits.
COUNT_ONLY = {"cifar10", "cifar100", "stl10", "svhn_cropped", "mnist", "patch_camelyon"}


def test_shipped_names_match_the_tfds_label_features(tmp_path):
    """Every shipped dataset: as many names as TFDS's label feature has classes (read offline from
    the builder's code), and, where TFDS names the classes offline, the same class at each index."""
    shipped = data.shipped_datasets()
    assert (
        len(shipped) == 20 and data.TEMPLATES["openai"] == _prompts.shipped_prompts("imagenet2012").templates
    )
    for name in shipped:
        prompts = data.shipped_prompts(name)
        label = tfds.builder(name, data_dir=str(tmp_path)).info.features["label"]
        assert prompts.num_labels == label.num_classes, name
        scored = prompts.label_subset or range(label.num_classes)
        assert len(prompts.class_names) == len(scored) == len(set(scored)), name
        assert all(t.count("{}") == 1 for t in prompts.templates), name
        if prompts.label_names is not None:  # ImageNet and its variants: TFDS's labels are WordNet ids
            assert prompts.label_names == tuple(label.names), name
            assert prompts.class_names[:2] == ("tench", "goldfish") or prompts.label_subset, name
        elif name not in COUNT_ONLY:
            for tfds_name, ours in zip(label.names, prompts.class_names):
                if name == "sun397":  # "/b/bakery/shop" → "bakery shop"
                    tfds_name = re.sub(r"^/\w/", "", tfds_name).replace("/", " ")
                expected = RENAMED.get(name, {}).get(tfds_name, tfds_name)
                assert _norm(ours) == _norm(expected), (name, tfds_name, ours)
    subset = data.shipped_prompts("imagenet_r")
    assert len(subset.class_names) == 200 and subset.class_names[0] == "goldfish"  # n01443537, label 1
    with pytest.raises(train.ConfigError, match="did you mean 'cifar10'"):
        data.shipped_prompts("cifar11")
    assert doctest.testmod(_prompts).failed == 0 and doctest.testmod(_evaluator).failed == 0


def test_shipped_names_and_templates_are_the_zero_shot_default(fakes):
    source = data.open_eval_source("patch_camelyon", "test", data_dir=fakes)
    assert source.class_names == ["lymph node", "lymph node containing metastatic tumor tissue"]
    model, tokenizer, config = RedGreenModel(), TumourTokenizer(), _config()
    got = evaluate.zero_shot_tfds(model, tokenizer, config, source, batch_size=3)
    assert (got["templates"], got["num_templates"]) == ("patch_camelyon", 1)  # CLIP's one PCam template
    # With TFDS's names ("0", "1") both classes would embed alike: ties go to class 0, 4 / 8.
    assert got["zero_shot_top1"] == pytest.approx(6 / 8)  # only the two wrongly painted images miss
    for templates, count in (("openai", 80), ("simple", 1)):
        other = evaluate.zero_shot_tfds(model, tokenizer, config, source, templates=templates)
        assert (other["templates"], other["num_templates"]) == (templates, count)
    # ImageNet-A: its 200 classes, the labels mapped to them through the WordNet ids.
    wnids = _prompts.shipped_prompts("imagenet2012").label_names
    subset = data.open_eval_source("imagenet_a", "test", data_dir=fakes)
    assert len(subset.class_names) == 200 and subset.prompts_from == "imagenet_a"
    names = {subset.source[i]["file_name"].decode().split("/")[0]: i for i in range(len(subset))}
    labels = {wnid: subset[i]["label"] for wnid, i in names.items()}
    assert (
        subset.class_names[labels["n01498041"]] == "stingray"
        and subset.class_names[labels["n12267677"]] == "acorn"
    )
    assert labels["n01440764"] == -1  # tench: not one of ImageNet-A's classes
    with pytest.raises(train.ConfigError, match="1 of 3 images have a label outside the 200 classes"):
        evaluate.zero_shot_tfds(model, tokenizer, config, subset, templates="simple")
    unnamed = dataclasses.replace(subset, class_names=list(wnids[::-1]), label_map=None)
    with pytest.raises(train.ConfigError, match="does not hold imagenet_a's WordNet ids"):
        data.with_shipped_prompts(unnamed, "imagenet_a")
    with pytest.raises(train.ConfigError, match="for a label feature of 1000 classes, but 'label' has 2"):
        data.with_shipped_prompts(source, "imagenet_a")
    captions = data.open_eval_source("coco_captions", "test", data_dir=fakes)
    with pytest.raises(train.ConfigError, match="no label feature"):
        data.with_shipped_prompts(captions, "cifar10")
    with pytest.raises(train.ConfigError, match="unknown templates 'simpel'; did you mean 'simple'"):
        evaluate.zero_shot_tfds(model, tokenizer, config, source, templates="simpel")
    with pytest.raises(ValueError, match="exactly one"):
        data.template_prompts(["x"], ["a {} and {}"])
    # An Evaluator passes its templates on, and checks its kind against the features.
    openai = evaluate.Evaluator("patch_camelyon", templates="openai", data_dir=fakes)
    assert openai.results(model, tokenizer, config)["num_templates"] == 80
    with pytest.raises(train.ConfigError, match="no ClassLabel label to classify; use kind 'retrieval'"):
        evaluate.Evaluator("coco_captions", data_dir=fakes).source()
    with pytest.raises(train.ConfigError, match="no caption feature to retrieve; use kind 'zero_shot'"):
        evaluate.Evaluator("patch_camelyon", kind="retrieval", data_dir=fakes).source()


def test_builder_configs_and_versions(fakes):
    """A bare name means TFDS's default config; the newest prepared version is read."""
    default = data.open_eval_source("imagenet_v2", "test", data_dir=fakes)
    assert default.class_names[default[0]["label"]] == "stingray"  # matched-frequency's image
    top = data.open_eval_source("imagenet_v2/topimages", "test", data_dir=fakes)
    assert top.class_names[top[0]["label"]] == "acorn" and len(top.class_names) == 1000
    assert (
        len(data.open_eval_source("zs_versions/b", "test", data_dir=fakes).class_names) == 3
    )  # 1.1.0, not 1.0.0
    with pytest.raises(train.ConfigError, match="several builder configs prepared .* \\(a, b\\); name one"):
        data.open_eval_source("zs_versions", "test", data_dir=fakes)
    with pytest.raises(train.ConfigError, match="'zs_versions/c' is not prepared"):
        data.open_eval_source("zs_versions/c", "test", data_dir=fakes)


def test_evaluators_from_config_checks_each_entry():
    config = ml_collections.ConfigDict(
        {"evals": [{"dataset": "cifar10", "every": 100, "templates": "simple"}]}
    )
    [e] = evaluate.evaluators_from_config(config.evals)
    assert (e.dataset, e.split, e.kind, e.max_examples, e.templates) == (
        "cifar10",
        "test",
        "zero_shot",
        0,
        "simple",
    )
    assert [s for s in range(1, 301) if e.due(s)] == [100, 200, 300]
    assert not evaluate.Evaluator("cifar10").due(100)  # every=0: never periodically
    bad = [
        ({"dataset": "cifar10", "knd": "retrieval"}, r"evals\[0\]: unknown key 'knd'; did you mean 'kind'\?"),
        ({"dataset": "cifar10", "kind": "zeroshot"}, r"unknown kind 'zeroshot'; did you mean 'zero_shot'\?"),
        ({"split": "test"}, r"evals\[0\] has no 'dataset'"),
        ({"dataset": "cifar10", "max_examples": -1}, r"'max_examples' must be an integer ≥ 0"),
        ({"dataset": "cifar10", "every": 1.5}, r"'every' must be an integer ≥ 0"),
        ({"dataset": "cifar10", "templates": "opnai"}, r"unknown templates 'opnai'; did you mean 'openai'\?"),
        (
            {"dataset": "coco_captions", "kind": "retrieval", "templates": "simple"},
            "applies to kind 'zero_shot'",
        ),
        ("cifar10", r"evals\[0\] must be a dict"),
    ]
    for entry, message in bad:
        with pytest.raises(train.ConfigError, match=message):
            evaluate.evaluators_from_config([entry])
    with pytest.raises(train.ConfigError, match=r"evals\[1\] repeats cifar10/test/zero_shot"):
        evaluate.evaluators_from_config([{"dataset": "cifar10"}, {"dataset": "cifar10", "max_examples": 5}])
    with pytest.raises(train.ConfigError, match="must be a list"):
        evaluate.evaluators_from_config({"dataset": "cifar10"})
    assert evaluate.evaluators_from_config(None) == []


def test_suite_files(tmp_path):
    shipped = evaluate.read_suite(os.path.join(ROOT, "experiments", "suites", "clip_benchmark.json"))
    zero_shot = {e.dataset for e in shipped if e.kind == "zero_shot"}
    assert zero_shot == set(data.shipped_datasets())  # every dataset with shipped names, once
    assert [(e.dataset, e.split) for e in shipped if e.kind == "retrieval"] == [("coco_captions", "test")]
    given = _suite(
        tmp_path / "a.json", [{"dataset": "cifar10"}, {"dataset": "mnist", "data_dir": "/x", "batch_size": 8}]
    )
    first, second = evaluate.read_suite(given, data_dir="/d", batch_size=32)
    assert (first.data_dir, first.batch_size, second.data_dir, second.batch_size) == ("/d", 32, "/x", 8)
    misspelt = _suite(tmp_path / "b.json", [{"dataset": "cifar10", "kin": "zero_shot"}])
    with pytest.raises(
        train.ConfigError, match=re.escape(f"{misspelt}: evals[0]: unknown key 'kin'; did you mean 'kind'?")
    ):
        evaluate.read_suite(misspelt)
    (tmp_path / "c.json").write_text('[{"dataset": "cifar10"}]')
    with pytest.raises(train.ConfigError, match=r'must hold an object \{"evals"'):
        evaluate.read_suite(str(tmp_path / "c.json"))
    with pytest.raises(train.ConfigError, match="does not exist"):
        evaluate.read_suite(str(tmp_path / "d.json"))


def _cli(workdir, *args, data_dir):
    import jax

    # The test session's compilation cache: the subprocess reuses what the fixtures compiled.
    cache = {"JAX_COMPILATION_CACHE_DIR": jax.config.jax_compilation_cache_dir or ""}
    cache |= {
        "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0",
        "JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES": "0",
    }
    env = dict(os.environ, JAX_PLATFORMS="cpu", **cache)
    command = [
        sys.executable,
        "-m",
        "experiments.zeroshot",
        f"--workdir={workdir}",
        f"--data_dir={data_dir}",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT)


def _suite(path, evals):
    with open(path, "w") as f:
        json.dump({"about": "test", "evals": evals}, f)
    return str(path)


def test_an_unprepared_dataset_fails_before_the_model_loads(fakes, tmp_path):
    from tests.train_common import clip_config

    # A run whose checkpoint folder is empty: loading its model would fail with a checkpoint error.
    workdir = str(tmp_path / "run")
    os.makedirs(os.path.join(workdir, "checkpoints", "7"))
    train.write_run_config(workdir, clip_config())
    suite = _suite(
        tmp_path / "s.json", [{"dataset": "patch_camelyon"}, {"dataset": "cifar10", "kind": "zero_shot"}]
    )
    done = _cli(workdir, f"--suite={suite}", data_dir=fakes)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip().splitlines()[-1] == (
        f"error: dataset 'cifar10' is not prepared in {fakes}; prepare it with: "
        f"tfds build cifar10 --data_dir={fakes} --file_format=array_record"
    )
    assert not os.path.exists(os.path.join(fakes, "cifar10"))  # nothing was downloaded


def test_the_suite_cli_and_the_evaluator_give_the_same_numbers(fakes, run_dir, tmp_path, monkeypatch):
    small = {"split": "test", "batch_size": 8}
    evals = [
        {"dataset": "patch_camelyon", "kind": "zero_shot", "max_examples": 6, **small},
        {"dataset": "coco_captions", "kind": "retrieval", "max_examples": 0, **small},
    ]
    done = _cli(run_dir, f"--suite={_suite(tmp_path / 'mini.json', evals)}", data_dir=fakes)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(run_dir, "zeroshot_suite_mini.json")) as f:
        saved = json.load(f)
    with open(os.path.join(run_dir, "zeroshot_suite_mini.md")) as f:
        table = f.read()
    assert saved["step"] == 0 and done.stdout in table and len(done.stdout.splitlines()) == 2 + len(evals)
    zero_shot, retrieval = saved["results"]
    assert (zero_shot["num_images"], zero_shot["templates"], retrieval["num_captions"]) == (
        6,
        "patch_camelyon",
        10,
    )
    assert f"| patch_camelyon | test | zero_shot | 6 | {100 * zero_shot['zero_shot_top1']:.2f} |" in table
    config, model, _, tokenizer = train.load_run(run_dir)
    opened = []
    monkeypatch.setattr(data, "open_eval_source", lambda *a, **k: opened.append(a) or _open(*a, **k))
    for evaluator, expected in zip(
        evaluate.evaluators_from_config([{**e, "data_dir": fakes} for e in evals]), saved["results"]
    ):
        metrics = evaluator.run(model, tokenizer, config)
        assert metrics == {
            evaluator.prefix + k: v
            for k, v in expected.items()
            if k.startswith("zero_shot_top") or "_r@" in k
        }
        assert len(metrics) == (1 if evaluator.kind == "zero_shot" else 6)  # 2 classes: no top-5
        assert evaluator.run(model, tokenizer, config) == metrics  # the source opened once, kept
    assert len(opened) == 2
    # Encoders of the same model structure share their jitted functions (one trace per run).
    first, second = evaluate.Encoders(model), evaluate.Encoders(nnx.clone(model))
    assert first._image is second._image and first._text is second._text
    assert evaluate.Encoders(model, pixel_mean=[0.4, 0.5, 0.5])._image is not first._image


_open = data.open_eval_source


def test_in_loop_evaluators_log_what_the_suite_cli_gives_for_the_checkpoint(
    fakes, data_dir, tmp_path, monkeypatch
):
    import jax

    from tests.train_common import clip_config, metric_records

    evaluated, run = [], evaluate.Evaluator.run  # the parameters of each in-loop evaluation

    def recording_run(self, model, *args):
        evaluated.append(nnx.state(model))
        return run(self, model, *args)

    monkeypatch.setattr(evaluate.Evaluator, "run", recording_run)

    evals = [{"dataset": "patch_camelyon", "max_examples": 6, "batch_size": 8, "every": 2}]
    config = clip_config(steps=3)
    with config.unlocked():
        config.log_every, config.ema_decay = 10, 0.5  # eval lines only where evaluators ran; EMA evaluated
        config.evals = tuple({**e, "data_dir": fakes} for e in evals)
    workdir = str(tmp_path / "run")
    train.train(config, workdir, evaluate=False)
    logged = {r["step"]: r for r in metric_records(workdir)}
    name = "eval/patch_camelyon/test/zero_shot_top1"
    assert sorted(logged) == [2, 3] and all(name in r and "loss" in r for r in logged.values())
    done = _cli(workdir, f"--suite={_suite(tmp_path / 'loop.json', evals)}", data_dir=fakes)
    assert done.returncode == 0, done.stderr
    with open(os.path.join(workdir, "zeroshot_suite_loop.json")) as f:
        saved = json.load(f)
    assert saved["step"] == 3 and logged[3][name] == saved["results"][0]["zero_shot_top1"]
    _, model, _, _ = train.load_run(workdir)  # the checkpoint's EMA parameters
    assert len(evaluated) == 2
    for got, want in zip(jax.tree.leaves(evaluated[1]), jax.tree.leaves(nnx.state(model)), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(want))
    # A dataset that is not prepared stops the run before its first step, with nothing written.
    with config.unlocked():
        config.evals = ({"dataset": "cifar10", "data_dir": fakes},)
    with pytest.raises(train.ConfigError, match="dataset 'cifar10' is not prepared"):
        train.train(config, str(tmp_path / "unprepared"), evaluate=False)
    assert not os.path.exists(os.path.join(tmp_path, "unprepared", "checkpoints"))
    with config.unlocked():
        config.evals = ({"dataset": "cifar10", "evry": 5},)
    with pytest.raises(
        train.ConfigError, match=r"config.evals\[0\]: unknown key 'evry'; did you mean 'every'"
    ):
        train.validate_config(config, 8)
