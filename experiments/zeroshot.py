"""Zero-shot classification and retrieval on a prepared TFDS dataset:

    python -m experiments.zeroshot --workdir DIR --dataset NAME [--split test] [--templates openai]

DIR is a training run's workdir or a directory written by experiments/convert.py. A dataset with
an image and a `ClassLabel` label is classified zero-shot (top-1, top-5 with ≥ 5 classes; class
names from the label feature, "_" → " "); one with captions gets image↔text recall@1/5/10; one
with both gets both. `--class_names FILE` names the classes where the label feature holds ids
(TFDS's imagenet2012: WordNet ids; write CLIP's 1,000 names one per line). Writes `DIR/zeroshot_<dataset>_<split>.json` and prints it. An unknown
dataset or split, missing features or a directory that is not a run end with one line `error: ...`.
"""

import json
import os

from absl import flags

from experiments import _cli

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training run's (or convert.py's) directory.", required=True
)
_DATASET = flags.DEFINE_string(
    "dataset", None, "A prepared TFDS dataset name (name or name/config).", required=True
)
_SPLIT = flags.DEFINE_string("split", "test", "Split (TFDS slicing allowed, e.g. 'test[:1000]').")
_TEMPLATES = flags.DEFINE_enum(
    "templates", "openai", ["openai", "simple"], "80 OpenAI prompts or 'a photo of a {}.'"
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the library's).")
_MAX = flags.DEFINE_integer("max_examples", 0, "Evaluate the first N images only (0: all).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Images / texts per forward pass.")
_IMAGE_KEY = flags.DEFINE_string("image_key", None, "Image feature (default: detected).")
_LABEL_KEY = flags.DEFINE_string("label_key", None, "ClassLabel feature (default: detected).")
_CAPTION_KEY = flags.DEFINE_string("caption_key", None, "Text feature, '/' for nested (default: detected).")
_CLASS_NAMES = flags.DEFINE_string(
    "class_names", None, "A text file of class names, one per line in label order (e.g. for imagenet2012)."
)
flags.declare_key_flag("debug")


def main(argv):
    del argv
    from contrastive_jax import data, evaluate, train

    train.check_run_dir(_WORKDIR.value)
    source = data.open_eval_source(
        _DATASET.value,
        _SPLIT.value,
        data_dir=_DATA_DIR.value,
        image_key=_IMAGE_KEY.value,
        label_key=_LABEL_KEY.value,
        caption_key=_CAPTION_KEY.value,
    )
    if _CLASS_NAMES.value:
        source = data.with_class_names(source, _CLASS_NAMES.value)
    config, model, step, tokenizer = train.load_run(_WORKDIR.value)
    results = evaluate.evaluate_tfds(
        model,
        tokenizer,
        config,
        source,
        templates=_TEMPLATES.value,
        batch_size=_BATCH.value,
        max_examples=_MAX.value,
    )
    results = {"dataset": _DATASET.value, "split": _SPLIT.value, "step": step, **results}
    name = f"zeroshot_{_DATASET.value.replace('/', '_')}_{_SPLIT.value.replace('/', '_')}.json"
    with open(os.path.join(_WORKDIR.value, name), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _cli.run(main)
