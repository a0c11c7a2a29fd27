"""Real JPEG bytes for the shard tests: crops of the two photographs scikit-learn ships
(`load_sample_images`: a temple in China and a flower), re-encoded with Pillow."""

from __future__ import annotations

import functools
import io

import numpy as np
from PIL import Image


@functools.cache
def _photos():
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)  # uint8[427, 640, 3] each


def photo(i: int, size=(256, 256), *, seed: int = 0) -> np.ndarray:
    """A random square crop of one of the photographs, resized to `size` (w, h)."""
    rng = np.random.default_rng([seed, i])
    image = _photos()[i % 2]
    h, w = image.shape[:2]
    side = int(rng.integers(200, min(h, w)))
    top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    crop = Image.fromarray(image[top : top + side, left : left + side])
    return np.asarray(crop.resize(size, Image.BICUBIC))


def jpeg(pixels: np.ndarray, quality: int = 95) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "JPEG", quality=quality)
    return buffer.getvalue()


def png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


CORRUPT, CAPTIONLESS, AS_PNG = 5, 9, 12


def photo_records(n: int = 48, size=(256, 256), *, seed: int = 0) -> list[dict]:
    """`n` image-text records of JPEG bytes; record CORRUPT's JPEG is cut to a third, record
    CAPTIONLESS has no caption and record AS_PNG is a PNG."""
    records = []
    for i in range(n):
        pixels = photo(i, size, seed=seed)
        image = png(pixels) if i == AS_PNG else jpeg(pixels)
        records.append({"image": image, "caption": f"photo {i} of a {'temple' if i % 2 == 0 else 'flower'}",
                        "uid": f"uid-{i:04d}"})  # fmt: skip
    if n > CORRUPT:
        records[CORRUPT]["image"] = records[CORRUPT]["image"][: len(records[CORRUPT]["image"]) // 3]
    if n > CAPTIONLESS:
        records[CAPTIONLESS]["caption"] = None
    return records
