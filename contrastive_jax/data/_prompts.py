"""Zero-shot prompts: caption-grammar prompts for the embedded datasets, and the class names and
templates published for CLIP's benchmark datasets (shipped in `assets/zero_shot_classes.json`)."""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Sequence

from contrastive_jax._errors import ConfigError, did_you_mean
from contrastive_jax.data import _digits, _shapes

QUESTIONS = {"shapes_count": ("color", "shape", "count"), "digits_captions": ("digit",)}


def class_names(dataset_name: str, question: str) -> list[str]:
    """Class names in label order (label value = index; for "count", index + 1)."""
    _check(dataset_name, question)
    return {
        "color": list(_shapes.COLORS),
        "shape": list(_shapes.SHAPES),
        "count": list(_shapes.NUMBER_WORDS),
        "digit": list(_digits.DIGIT_WORDS),
    }[question]


def zero_shot_prompts(dataset_name: str, question: str) -> dict[str, list[str]]:
    """For each class of `question` (in label order), prompts in the captions' own grammar.

    The class embedding is the mean of its prompts' embeddings (prompt ensembling, CLIP §3.1.4):
    for the colour "red", every "{n} red {shape}(s)"; for a count, every colour and shape with
    that number; for a digit, each caption template.
    """
    names = class_names(dataset_name, question)
    colors, shapes = list(_shapes.COLORS), _shapes.SHAPES
    if question == "color":
        return {c: [_shapes.describe(n, c, s) for n in range(1, 11) for s in shapes] for c in names}
    if question == "shape":
        return {s: [_shapes.describe(n, c, s) for n in range(1, 11) for c in colors] for s in names}
    if question == "count":
        return {
            w: [_shapes.describe(n, c, s) for c in colors for s in shapes] for n, w in enumerate(names, 1)
        }
    return {
        w: [_digits.digit_caption(d, t) for t in range(len(_digits.TEMPLATES))] for d, w in enumerate(names)
    }


def _check(dataset_name: str, question: str) -> None:
    if dataset_name not in QUESTIONS:
        raise ValueError(f"no zero-shot questions for {dataset_name!r}; known: {sorted(QUESTIONS)}")
    if question not in QUESTIONS[dataset_name]:
        raise ValueError(f"{dataset_name} has questions {QUESTIONS[dataset_name]}, not {question!r}")


# The 80 prompt templates OpenAI published for zero-shot ImageNet (CLIP, Radford et al. 2021,
# "Prompt_Engineering_for_ImageNet"); a class embedding is the mean over all of them.
OPENAI_IMAGENET_TEMPLATES = (
    "a bad photo of a {}.", "a photo of many {}.", "a sculpture of a {}.",
    "a photo of the hard to see {}.", "a low resolution photo of the {}.", "a rendering of a {}.",
    "graffiti of a {}.", "a bad photo of the {}.", "a cropped photo of the {}.", "a tattoo of a {}.",
    "the embroidered {}.", "a photo of a hard to see {}.", "a bright photo of a {}.",
    "a photo of a clean {}.", "a photo of a dirty {}.", "a dark photo of the {}.", "a drawing of a {}.",
    "a photo of my {}.", "the plastic {}.", "a photo of the cool {}.", "a close-up photo of a {}.",
    "a black and white photo of the {}.", "a painting of the {}.", "a painting of a {}.",
    "a pixelated photo of the {}.", "a sculpture of the {}.", "a bright photo of the {}.",
    "a cropped photo of a {}.", "a plastic {}.", "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.", "a blurry photo of the {}.", "a photo of the {}.",
    "a good photo of the {}.", "a rendering of the {}.", "a {} in a video game.", "a photo of one {}.",
    "a doodle of a {}.", "a close-up photo of the {}.", "a photo of a {}.", "the origami {}.",
    "the {} in a video game.", "a sketch of a {}.", "a doodle of the {}.", "a origami {}.",
    "a low resolution photo of a {}.", "the toy {}.", "a rendition of the {}.",
    "a photo of the clean {}.", "a photo of a large {}.", "a rendition of a {}.",
    "a photo of a nice {}.", "a photo of a weird {}.", "a blurry photo of a {}.", "a cartoon {}.",
    "art of a {}.", "a sketch of the {}.", "a embroidered {}.", "a pixelated photo of a {}.",
    "itap of the {}.", "a jpeg corrupted photo of the {}.", "a good photo of a {}.", "a plushie {}.",
    "a photo of the nice {}.", "a photo of the small {}.", "a photo of the weird {}.",
    "the cartoon {}.", "art of the {}.", "a drawing of the {}.", "a photo of the large {}.",
    "a black and white photo of a {}.", "the plushie {}.", "a dark photo of a {}.", "itap of a {}.",
    "graffiti of the {}.", "a toy {}.", "itap of my {}.", "a photo of a cool {}.",
    "a photo of a small {}.", "a tattoo of the {}.",
)  # fmt: skip
TEMPLATES = {"openai": OPENAI_IMAGENET_TEMPLATES, "simple": ("a photo of a {}.",)}


def template_prompts(names, templates: str | Sequence[str] = "openai") -> dict[str, list[str]]:
    """For each class name, its prompts: every template filled with it.

    Args:
      names: class names.
      templates: a key of `TEMPLATES` ("openai", "simple"), or the templates themselves (each
        with one "{}"), e.g. `shipped_prompts(name).templates`.

    Raises:
      ValueError: an unknown key, or a template without exactly one "{}".
    """
    if isinstance(templates, str):
        if templates not in TEMPLATES:
            raise ValueError(f"unknown templates {templates!r}; choose one of {sorted(TEMPLATES)}")
        templates = TEMPLATES[templates]
    bad = [t for t in templates if t.count("{}") != 1]
    if bad or not templates:
        raise ValueError(f"each template needs exactly one '{{}}' for the class name; got {bad or 'none'}")
    return {name: [t.format(name) for t in templates] for name in names}


_SHIPPED_FILE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "assets", "zero_shot_classes.json")


@dataclasses.dataclass(frozen=True)
class ClassPrompts:
    """The zero-shot class names and prompt templates shipped for one TFDS dataset.

    Attributes:
      dataset: the TFDS name ("cifar10").
      class_names: the names, in the order of the classes scored.
      templates: the dataset's prompt templates, each with one "{}".
      num_labels: how many classes the dataset's TFDS `label` feature has.
      label_subset: the label values of the classes scored, in order (ImageNet-A / -R score 200
        of ImageNet's 1,000 labels), or None: every label, class `i` is label `i`.
      label_names: the names the TFDS label feature must hold (ImageNet's WordNet ids), or None.
    """

    dataset: str
    class_names: tuple[str, ...]
    templates: tuple[str, ...]
    num_labels: int
    label_subset: tuple[int, ...] | None = None
    label_names: tuple[str, ...] | None = None


@functools.cache
def _shipped() -> dict:
    with open(_SHIPPED_FILE, encoding="utf-8") as f:
        return json.load(f)["datasets"]


def shipped_datasets() -> tuple[str, ...]:
    """The TFDS datasets whose class names and templates are shipped (`shipped_prompts`)."""
    return tuple(sorted(_shipped()))


def shipped_prompts(name: str) -> ClassPrompts:
    """The class names (in TFDS label order) and templates OpenAI published for a TFDS dataset.

    CLIP's curated names and per-dataset templates (Radford et al. 2021, openai/CLIP's
    `data/prompts.md` and ImageNet notebook; svhn's from LAION's CLIP_benchmark), put in the order
    of TFDS's `label` feature. ImageNet's variants share its 1,000 names and 80 templates;
    `imagenet_a` and `imagenet_r` score only their 200 classes (`label_subset`, chosen by WordNet
    id), as LAION's CLIP_benchmark does.

    Args:
      name: a TFDS name, optionally with a builder config ("imagenet_v2/topimages": its base name).

    Returns:
      A `ClassPrompts`.

    Raises:
      ConfigError: no names are shipped for `name` (with the close matches).

    Examples:
      >>> p = shipped_prompts("cifar10")
      >>> p.class_names[:3], len(p.templates)
      (('airplane', 'automobile', 'bird'), 18)
      >>> len(shipped_prompts("imagenet_a").class_names), shipped_prompts("imagenet_a").num_labels
      (200, 1000)

    References:
      Radford et al. 2021, "Learning Transferable Visual Models From Natural Language
      Supervision", §3.1.4 and Appendix A; https://github.com/openai/CLIP/blob/main/data/prompts.md.
    """
    base = name.partition("/")[0]
    entries = _shipped()
    if base not in entries:
        raise ConfigError(f"no class names are shipped for dataset {name!r}; {did_you_mean(base, entries)}")
    entry = entries[base]
    parent = entries[entry["classes_of"]] if "classes_of" in entry else entry
    names, subset = parent["classes"], None
    if "classes_of" in entry and "wnids" in entry:
        position = {wnid: i for i, wnid in enumerate(parent["wnids"])}
        subset = tuple(position[wnid] for wnid in entry["wnids"])
        names = [names[i] for i in subset]
    wnids = parent.get("wnids")
    return ClassPrompts(
        dataset=base,
        class_names=tuple(names),
        templates=tuple(parent["templates"]),
        num_labels=len(parent["classes"]),
        label_subset=subset,
        label_names=tuple(wnids) if wnids else None,
    )
