"""Evaluators as small pluggable units: one TFDS dataset, split and kind each, built from a config.

A config lists them (`config.evals`, big_vision's manner), each a dict with the fields of
`Evaluator`; `evaluators_from_config` checks the list, and `Evaluator.run(model, tokenizer, config)`
gives flat metrics `{"eval/<dataset>/<split>/<metric>": value}` for a logger. The numbers are
those of `python -m experiments.zeroshot --suite FILE` (which runs the same `Evaluator.results`).
"""

from __future__ import annotations

import dataclasses
import json
import os

from contrastive_jax import data
from contrastive_jax._errors import ConfigError, did_you_mean
from contrastive_jax.evaluate import _tfds

KINDS = ("zero_shot", "retrieval")


@dataclasses.dataclass
class Evaluator:
    """Zero-shot classification or image↔text retrieval on one split of a prepared TFDS dataset.

    Attributes:
      dataset: a TFDS name ("cifar10", "imagenet_v2/topimages", "coco_captions").
      split: its split, TFDS slicing allowed ("test", "validation[:1000]").
      kind: "zero_shot" (top-1 / top-5 accuracy, `zero_shot_tfds`) or "retrieval" (recall@1/5/10,
        `retrieval_tfds`).
      every: how often the trainer runs it, in training steps (`due`); the trainer also runs every
        evaluator after its last step, so 0 means only then.
      max_examples: evaluate the first N images only (0: all).
      data_dir: the TFDS data directory (default: `data.default_data_dir()`).
      templates: "openai", "simple", or None: the dataset's own templates where shipped, else
        "openai" (`zero_shot_tfds`).
      batch_size: images / texts per forward pass (256, as experiments/zeroshot.py).
    """

    dataset: str
    split: str = "test"
    kind: str = "zero_shot"
    every: int = 0
    max_examples: int = 0
    data_dir: str | None = None
    templates: str | None = None
    batch_size: int = 256
    _source: data.EvalSource | None = dataclasses.field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self):
        _check_fields(self)

    @property
    def prefix(self) -> str:
        """`"eval/<dataset>/<split>/"`, the start of every metric name of `run`."""
        return f"eval/{self.dataset}/{self.split}/"

    def due(self, step: int) -> bool:
        """Whether the trainer should run it after training step `step` (a multiple of `every`)."""
        return self.every > 0 and step > 0 and step % self.every == 0

    def source(self) -> data.EvalSource:
        """The dataset's `EvalSource`, opened on the first call and kept.

        Raises:
          ConfigError: the dataset is unknown or not prepared, or lacks the kind's feature (a
            `ClassLabel` for zero-shot, captions for retrieval).
        """
        if self._source is None:
            source = data.open_eval_source(self.dataset, self.split, data_dir=self.data_dir)
            if self.kind == "zero_shot" and source.class_names is None:
                raise ConfigError(f"{self.dataset} has no ClassLabel label to classify; use kind 'retrieval'")
            if self.kind == "retrieval" and source.caption_key is None:
                raise ConfigError(f"{self.dataset} has no caption feature to retrieve; use kind 'zero_shot'")
            self._source = source
        return self._source

    def results(self, model, tokenizer, config) -> dict:
        """`{"dataset", "split", "kind", ...}` plus `zero_shot_tfds`'s or `retrieval_tfds`'s result."""
        head = {"dataset": self.dataset, "split": self.split, "kind": self.kind}
        options = {"batch_size": self.batch_size, "max_examples": self.max_examples}
        if self.kind == "zero_shot":
            got = _tfds.zero_shot_tfds(
                model, tokenizer, config, self.source(), templates=self.templates, **options
            )
        else:
            got = _tfds.retrieval_tfds(model, tokenizer, config, self.source(), **options)
        return {**head, **got}

    def run(self, model, tokenizer, config) -> dict[str, float]:
        """Flat metrics: `{prefix + "zero_shot_top1": ..., prefix + "zero_shot_top5": ...}` for
        zero-shot, `{prefix + "image_to_text_r@1": ..., prefix + "text_to_image_r@10": ...}` for
        retrieval (`prefix` = "eval/<dataset>/<split>/"); counts are left out."""
        return {
            self.prefix + k: float(v)
            for k, v in self.results(model, tokenizer, config).items()
            if _is_metric(k)
        }


def _is_metric(key: str) -> bool:
    return key.startswith("zero_shot_top") or "_r@" in key


def _check_fields(evaluator: Evaluator) -> None:
    where = f"evaluator {evaluator.dataset!r}"
    if not isinstance(evaluator.dataset, str) or not evaluator.dataset:
        raise ConfigError(f"an evaluator's 'dataset' must be a TFDS name, not {evaluator.dataset!r}")
    if not isinstance(evaluator.split, str) or not evaluator.split:
        raise ConfigError(f"{where}: 'split' must be a split name, not {evaluator.split!r}")
    if evaluator.kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {evaluator.kind!r}; {did_you_mean(evaluator.kind, KINDS)}")
    for name in ("every", "max_examples", "batch_size"):
        value = getattr(evaluator, name)
        least = 1 if name == "batch_size" else 0
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise ConfigError(f"{where}: {name!r} must be an integer ≥ {least}, not {value!r}")
    if evaluator.templates is not None and evaluator.templates not in data.TEMPLATES:
        raise ConfigError(
            f"{where}: unknown templates {evaluator.templates!r}; {did_you_mean(evaluator.templates, data.TEMPLATES)}"
            " (or leave it out: the dataset's own)"
        )
    if evaluator.templates is not None and evaluator.kind == "retrieval":
        raise ConfigError(f"{where}: 'templates' applies to kind 'zero_shot' only")
    if evaluator.data_dir is not None and not isinstance(evaluator.data_dir, str):
        raise ConfigError(f"{where}: 'data_dir' must be a path, not {evaluator.data_dir!r}")


FIELDS = tuple(f.name for f in dataclasses.fields(Evaluator) if f.init)


def evaluators_from_config(evals) -> list[Evaluator]:
    """`Evaluator`s from a list of dicts (or ConfigDicts) with its fields, e.g. `config.evals`.

    Args:
      evals: a list or tuple of mappings; each needs "dataset" and may set the other fields of
        `Evaluator` ("split", "kind", "every", "max_examples", "data_dir", "templates",
        "batch_size"). None or empty: no evaluators.

    Returns:
      One `Evaluator` per item, in order (nothing is opened yet: see `Evaluator.source`).

    Raises:
      ConfigError: not a list of mappings, an unknown key (with the close matches), a missing
        "dataset", a bad value (an unknown kind or templates, a negative count), or the same
        (dataset, split, kind) twice.

    Examples:
      >>> [e] = evaluators_from_config([{"dataset": "cifar10", "every": 1000}])
      >>> e.kind, e.split, e.prefix
      ('zero_shot', 'test', 'eval/cifar10/test/')
      >>> evaluators_from_config([{"dataset": "cifar10", "knd": "retrieval"}])
      Traceback (most recent call last):
      ...
      contrastive_jax._errors.ConfigError: evals[0]: unknown key 'knd'; did you mean 'kind'?
    """
    if evals is None:
        return []
    if isinstance(evals, (str, bytes)) or not isinstance(evals, (list, tuple)):
        raise ConfigError(f"evals must be a list of evaluator dicts, not {type(evals).__name__}")
    evaluators, seen = [], set()
    for i, item in enumerate(evals):
        if not hasattr(item, "items"):
            raise ConfigError(f"evals[{i}] must be a dict with the keys {', '.join(FIELDS)}; got {item!r}")
        fields = dict(item.items())
        for key in fields:
            if key not in FIELDS:
                raise ConfigError(f"evals[{i}]: unknown key {key!r}; {did_you_mean(key, FIELDS)}")
        if "dataset" not in fields:
            raise ConfigError(f"evals[{i}] has no 'dataset' (a TFDS name such as 'cifar10')")
        try:
            evaluator = Evaluator(**fields)
        except ConfigError as err:
            raise ConfigError(f"evals[{i}]: {err}") from None
        key = (evaluator.dataset, evaluator.split, evaluator.kind)
        if key in seen:
            raise ConfigError(f"evals[{i}] repeats {'/'.join(key)}; each (dataset, split, kind) once")
        seen.add(key)
        evaluators.append(evaluator)
    return evaluators


def read_suite(path: str, *, data_dir: str | None = None, batch_size: int = 256) -> list[Evaluator]:
    """The `Evaluator`s of a suite file: JSON `{"evals": [{...}, ...]}` (and an optional "about").

    Each item has the keys of `evaluators_from_config`; `data_dir` and `batch_size` are the
    defaults of the items that leave them out. Example: experiments/suites/clip_benchmark.json.

    Raises:
      ConfigError: the file is missing, not JSON, not of that shape, or an item is bad (the message
        starts with the path and the item, e.g. "suite.json: evals[2]: unknown key ...").
    """
    if not os.path.isfile(path):
        raise ConfigError(f"suite file {path} does not exist; see experiments/suites/ for examples")
    try:
        with open(path, encoding="utf-8") as f:
            suite = json.load(f)
    except json.JSONDecodeError as err:
        raise ConfigError(f"suite file {path} is not valid JSON: {err}") from None
    if not isinstance(suite, dict) or "evals" not in suite or set(suite) - {"about", "evals"}:
        raise ConfigError(
            f'suite file {path} must hold an object {{"evals": [...]}} (and an optional "about")'
        )
    defaults = {"data_dir": data_dir, "batch_size": batch_size}
    evals = suite["evals"]
    if isinstance(evals, list):
        evals = [{**defaults, **item} if isinstance(item, dict) else item for item in evals]
    try:
        return evaluators_from_config(evals)
    except ConfigError as err:
        raise ConfigError(f"{path}: {err}") from None
