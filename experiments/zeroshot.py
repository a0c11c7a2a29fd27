"""Zero-shot classification and retrieval on prepared TFDS datasets:

    python -m experiments.zeroshot --workdir DIR --dataset NAME [--split test] [--templates openai]
    python -m experiments.zeroshot --workdir DIR --suite experiments/suites/clip_benchmark.json

DIR is a training run's workdir or a directory written by experiments/convert.py. A dataset with
an image and a `ClassLabel` label is classified zero-shot (top-1, top-5 with ≥ 5 classes); one
with captions gets image↔text recall@1/5/10; one with both gets both. For the datasets of
`data.shipped_datasets()` (ImageNet and its variants, CIFAR, Caltech101, Flowers, Pets, Food101,
Cars, DTD, EuroSAT, RESISC45, SUN397, SVHN, STL10, MNIST, PatchCamelyon) the class names and
templates are CLIP's; otherwise the names come from the label feature ("_" → " ") and the
templates are OpenAI's 80 ImageNet ones. `--templates openai|simple` overrides the templates,
`--class_names FILE` the names (one per line, in class order). Writes
`DIR/zeroshot_<dataset>_<split>.json` and prints it.

`--suite FILE`: a JSON file `{"evals": [{"dataset": ..., "split": ..., "kind": "zero_shot" |
"retrieval", "max_examples": ...}, ...]}` (the keys of `evaluate.Evaluator`); every dataset is
opened before any evaluation runs, then each runs on the run's newest checkpoint. Writes
`DIR/zeroshot_suite_<FILE's stem>.json` (all results) and `.md` (one table row per evaluation)
and prints the table. An unknown, unprepared (with the command that prepares it) or unsuitable
dataset, a bad suite file or a directory that is not a run end with one line `error: ...`.
"""

import json
import os

from absl import flags

from experiments import _cli

_WORKDIR = flags.DEFINE_string(
    "workdir", None, "A training run's (or convert.py's) directory.", required=True
)
_DATASET = flags.DEFINE_string("dataset", None, "A prepared TFDS dataset name (name or name/config).")
_SUITE = flags.DEFINE_string("suite", None, "A JSON file of evaluations (instead of --dataset).")
_SPLIT = flags.DEFINE_string("split", "test", "Split (TFDS slicing allowed, e.g. 'test[:1000]').")
_TEMPLATES = flags.DEFINE_enum(
    "templates",
    None,
    ["openai", "simple"],
    "80 OpenAI prompts or 'a photo of a {}.' (default: the dataset's own where shipped, else openai)",
)
_DATA_DIR = flags.DEFINE_string("data_dir", None, "TFDS data directory (default: the library's).")
_MAX = flags.DEFINE_integer("max_examples", 0, "Evaluate the first N images only (0: all).")
_BATCH = flags.DEFINE_integer("batch_size", 256, "Images / texts per forward pass.")
_IMAGE_KEY = flags.DEFINE_string("image_key", None, "Image feature (default: detected).")
_LABEL_KEY = flags.DEFINE_string("label_key", None, "ClassLabel feature (default: detected).")
_CAPTION_KEY = flags.DEFINE_string("caption_key", None, "Text feature, '/' for nested (default: detected).")
_CLASS_NAMES = flags.DEFINE_string(
    "class_names", None, "A text file of class names, one per line in class order (replaces the default)."
)
flags.declare_key_flag("debug")

# Flags that a suite file sets per evaluation instead.
_PER_DATASET = ("split", "max_examples", "templates", "image_key", "label_key", "caption_key", "class_names")
# The markdown table's metric columns: (result key, header).
_COLUMNS = (
    ("zero_shot_top1", "top-1"),
    ("zero_shot_top5", "top-5"),
    ("image_to_text_r@1", "I→T R@1"),
    ("image_to_text_r@5", "I→T R@5"),
    ("text_to_image_r@1", "T→I R@1"),
    ("text_to_image_r@5", "T→I R@5"),
)


def _percent(value) -> str:
    return "" if value is None else f"{100 * value:.2f}"


def markdown_table(results: list[dict]) -> str:
    """One row per evaluation: dataset, split, kind, images, then accuracies / recalls in %."""
    header = ["dataset", "split", "kind", "images", *(name for _, name in _COLUMNS)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in results:
        cells = [r["dataset"], r["split"], r["kind"], str(r["num_images"])]
        cells += [_percent(r.get(key)) for key, _ in _COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def run_suite(workdir: str, path: str) -> None:
    from contrastive_jax import evaluate, train

    given = [f"--{name}" for name in _PER_DATASET if flags.FLAGS[name].present]
    if given:
        raise _cli.CommandLineError(f"{', '.join(given)} cannot go with --suite; set them in the suite file")
    train.check_run_dir(workdir)
    evaluators = evaluate.read_suite(path, data_dir=_DATA_DIR.value, batch_size=_BATCH.value)
    for evaluator in evaluators:
        evaluator.source()  # every dataset opens (or fails) before any evaluation runs
    config, model, step, tokenizer = train.load_run(workdir)
    results = [evaluator.results(model, tokenizer, config) for evaluator in evaluators]
    stem = os.path.splitext(os.path.basename(path))[0]
    table = markdown_table(results)
    with open(os.path.join(workdir, f"zeroshot_suite_{stem}.json"), "w") as f:
        json.dump({"suite": path, "step": step, "results": results}, f, indent=2)
    with open(os.path.join(workdir, f"zeroshot_suite_{stem}.md"), "w") as f:
        f.write(f"Zero-shot suite `{stem}`, step {step}.\n\n{table}")
    print(table, end="")


def run_dataset(workdir: str) -> None:
    from contrastive_jax import data, evaluate, train

    train.check_run_dir(workdir)
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
    config, model, step, tokenizer = train.load_run(workdir)
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
    with open(os.path.join(workdir, name), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


def main(argv):
    del argv
    if (_DATASET.value is None) == (_SUITE.value is None):
        raise _cli.CommandLineError("pass exactly one of --dataset=NAME or --suite=FILE")
    if _SUITE.value:
        run_suite(_WORKDIR.value, _SUITE.value)
    else:
        run_dataset(_WORKDIR.value)


if __name__ == "__main__":
    _cli.run(main)
