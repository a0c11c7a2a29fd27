"""shapes_count: images of 1–10 identical coloured shapes (plus an optional distractor), with captions.

Everything here is plain NumPy + PIL so it is testable without TFDS; `_builders.py` wraps it.
Shapes sit in distinct cells of a 6×6 grid with a margin, so they never touch: counting the
connected components of a colour recovers the count (the tests use that as an oracle).
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, ImageDraw

IMAGE_SIZE = 64
GRID = 6
COLORS = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "yellow": (230, 200, 30),
    "purple": (150, 60, 190),
    "orange": (245, 140, 30),
}
SHAPES = ("circle", "square", "triangle")
NUMBER_WORDS = ("one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten")
BACKGROUND = (238, 238, 232)
# Zipf exponent of the training (colour, shape) pairs per builder config (0: uniform).
ZIPF = {"default": 0.0, "long_tail": 1.1, "long_tail_steep": 2.0, "tiny": 0.0}


def plural(shape: str, count: int) -> str:
    return shape if count == 1 else shape + "s"


def describe(count: int, color: str, shape: str) -> str:
    return f"{NUMBER_WORDS[count - 1]} {color} {plural(shape, count)}"


def caption(count: int, color: str, shape: str, distractor: tuple[str, str] | None) -> str:
    """ "three red circles", or "three red circles and a blue square" with a distractor."""
    text = describe(count, color, shape)
    if distractor is not None:
        article = "an" if distractor[0][0] in "aeiou" else "a"
        text += f" and {article} {distractor[0]} {distractor[1]}"
    return text


def _draw(draw: ImageDraw.ImageDraw, shape: str, center: tuple[float, float], radius: float, fill) -> None:
    cx, cy = center
    if shape == "circle":
        draw.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=fill)
    elif shape == "square":
        side = radius * 0.9
        draw.rectangle([cx - side, cy - side, cx + side, cy + side], fill=fill)
    else:
        draw.polygon(
            [(cx, cy - radius), (cx - radius, cy + radius * 0.8), (cx + radius, cy + radius * 0.8)], fill=fill
        )


def render(rng: np.random.Generator, count: int, color: str, shape: str, distractor: tuple[str, str] | None):
    """An RGB uint8 image `[64, 64, 3]` with `count` shapes and the optional distractor."""
    image = Image.new("RGB", (IMAGE_SIZE, IMAGE_SIZE), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = IMAGE_SIZE / GRID
    radius = cell * 0.33  # with the jitter below, ≥ 2 px between shapes in neighbouring cells
    cells = rng.choice(GRID * GRID, size=count + (distractor is not None), replace=False)
    for k, index in enumerate(cells):
        row, col = divmod(int(index), GRID)
        jitter = rng.uniform(-0.06, 0.06, size=2) * cell
        center = ((col + 0.5) * cell + jitter[0], (row + 0.5) * cell + jitter[1])
        if k < count:
            _draw(draw, shape, center, radius, COLORS[color])
        else:
            _draw(draw, distractor[1], center, radius, COLORS[distractor[0]])
    return np.asarray(image)


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def combination_weights(zipf: float = 0.0) -> np.ndarray:
    """Probability of each (colour, shape) pair, indexed `colour * len(SHAPES) + shape`.

    `zipf = 0`: uniform. `zipf = s > 0`: the k-th most frequent pair has weight ∝ 1 / k^s, in a
    fixed but arbitrary order of the pairs (the same for every s).
    """
    n = len(COLORS) * len(SHAPES)
    if zipf < 0:
        raise ValueError(f"zipf must be >= 0, got {zipf}")
    if zipf == 0:
        return np.full(n, 1.0 / n)
    order = np.random.default_rng(1234).permutation(n)  # which pairs are frequent is fixed but arbitrary
    weights = np.empty(n)
    weights[order] = 1.0 / np.arange(1, n + 1) ** zipf
    return weights / weights.sum()


def pair_frequencies(builder_config: str = "default") -> np.ndarray:
    """`float[len(COLORS), len(SHAPES)]`: the probability of each (colour, shape) pair in the
    training split of shapes_count's `builder_config` (its test split is always uniform)."""
    if builder_config not in ZIPF:
        raise ValueError(
            f"unknown shapes_count builder config {builder_config!r}; choose one of {sorted(ZIPF)}"
        )
    return combination_weights(ZIPF[builder_config]).reshape(len(COLORS), len(SHAPES))


def example(seed: int, index: int, *, zipf: float = 0.0, distractor_prob: float = 0.5) -> dict:
    """The `index`-th example of a split with base `seed`: deterministic, independent of order.
    Its (colour, shape) pair is drawn from `combination_weights(zipf)`."""
    rng = np.random.default_rng([seed, index])
    colors, n_shapes = list(COLORS), len(SHAPES)
    pair = int(rng.choice(len(colors) * n_shapes, p=combination_weights(zipf)))
    color, shape = colors[pair // n_shapes], SHAPES[pair % n_shapes]
    count = int(rng.integers(1, 11))
    distractor = None
    if rng.random() < distractor_prob:
        other_colors = [c for c in colors if c != color]
        other_shapes = [s for s in SHAPES if s != shape]
        distractor = (
            other_colors[rng.integers(len(other_colors))],
            other_shapes[rng.integers(len(other_shapes))],
        )
    wrong = int(rng.choice([c for c in range(1, 11) if c != count]))
    return {
        "image": render(rng, count, color, shape, distractor),
        "caption": caption(count, color, shape, distractor),
        "counterfactual_caption": caption(wrong, color, shape, distractor),
        "count": count,
        "color": colors.index(color),
        "shape": SHAPES.index(shape),
        "has_distractor": distractor is not None,
    }
