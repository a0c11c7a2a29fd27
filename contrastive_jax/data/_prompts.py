"""Class names and caption-grammar prompts for zero-shot evaluation on the embedded datasets."""

from __future__ import annotations

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


def template_prompts(names, templates: str = "openai") -> dict[str, list[str]]:
    """For each class name, its prompts: every template of `TEMPLATES[templates]` filled with it."""
    if templates not in TEMPLATES:
        raise ValueError(f"unknown templates {templates!r}; choose one of {sorted(TEMPLATES)}")
    return {name: [t.format(name) for t in TEMPLATES[templates]] for name in names}
