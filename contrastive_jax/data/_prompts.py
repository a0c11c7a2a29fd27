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
