"""digits_captions: scikit-learn's real handwritten digits, upscaled, with caption templates."""

from __future__ import annotations

import numpy as np

DIGIT_WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
TEMPLATES = (
    "a handwritten digit {word}",
    "the number {digit} written by hand",
    "a scan of a handwritten {word}",
    "the digit {word}",
    "a small drawing of the number {word}",
)
TEST_FRACTION = 0.2


def digit_caption(label: int, template: int) -> str:
    return TEMPLATES[template].format(word=DIGIT_WORDS[label], digit=label)


def load_split(split: str, image_size: int = 32):
    """`(images uint8[N, S, S, 3], labels int[N], source_index int[N])` of the fixed train/test split.

    The 1,797 8×8 images (values 0..16) are scaled to 0..255 and upscaled by pixel repetition
    (so downsampling by the same factor recovers them exactly); 20% are held out for testing by
    a fixed permutation.
    """
    from sklearn.datasets import load_digits

    if image_size % 8:
        raise ValueError(f"image_size must be a multiple of 8, got {image_size}")
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.images))
    num_test = int(round(TEST_FRACTION * len(order)))
    chosen = {"test": order[:num_test], "train": order[num_test:]}[split]
    pixels = np.round(digits.images[chosen] * (255.0 / 16.0)).astype(np.uint8)
    factor = image_size // 8
    pixels = pixels.repeat(factor, axis=1).repeat(factor, axis=2)
    return np.repeat(pixels[..., None], 3, axis=-1), digits.target[chosen].astype(np.int64), chosen
