"""Local image views: clip-rocket's strong augmentation of a sample's extra crops, on uint8 HWC.

Fini et al. 2023, "Improved baselines for vision-language pre-training" (CL2L / BarLIP), train
with each image's global view plus n "local" views, each (`datasets.py::get_train_dataset`, the
`augment` Compose, with `main.py`'s defaults):

    RandomResizedCrop(S, scale=(0.08, 1), ratio=(3/4, 4/3), bicubic)      load_image "rrc_local"
    RandomApply([ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8)                   color_jitter
    RandomGrayscale(p=0.2)                                                  grayscale
    RandomApply([GaussianBlur(sigma ~ U(0.1, 2.0))], p=0.5)                 gaussian_blur
    RandomHorizontalFlip()  (p=0.5)                                         horizontal_flip

(its Solarization has p=0 there and is left out). Every draw comes from the generator passed in.

ColorJitter follows torchvision's definitions (`torchvision.transforms.functional`): brightness
blends with black, contrast with the mean of the grayscale image, saturation with the grayscale
image (ITU-R 601-2 luma, L = R*299/1000 + G*587/1000 + B*114/1000), hue shifts H in HSV; each
result is rounded and clipped to uint8, as each torchvision op returns uint8. The four are applied
in a random order with factors ~ U[1 - 0.4, 1 + 0.4] (hue: U[-0.1, 0.1]). Computed in float32 on
the pixels; torchvision's PIL path (what clip-rocket runs on PIL images) truncates where this
rounds, rounds the contrast mean to an integer, and shifts hue on a uint8 HSV image, so it can
differ from these by a level or a few.
Grayscale and blur are Pillow's, as torchvision's on PIL images.

References:
  Fini et al. 2023, https://arxiv.org/abs/2305.08675 (code: facebookresearch/clip-rocket);
  Chen et al. 2020, SimCLR, https://arxiv.org/abs/2002.05709 (the blur and jitter recipe).
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageFilter

from contrastive_jax.data._images import load_image

JITTER_STRENGTH = dict(brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1)
JITTER_PROB, GRAYSCALE_PROB, BLUR_PROB, FLIP_PROB = 0.8, 0.2, 0.5, 0.5
BLUR_SIGMA = (0.1, 2.0)
_LUMA = np.array([299, 587, 114], np.float32) / 1000  # ITU-R 601-2, as PIL's convert("L")


def _to_uint8(pixels: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(pixels), 0, 255).astype(np.uint8)


def _luma(pixels: np.ndarray) -> np.ndarray:
    """`f32[H, W]`: the grayscale (L) of `uint8[H, W, 3]`, unrounded."""
    return pixels.astype(np.float32) @ _LUMA


def adjust_brightness(pixels: np.ndarray, factor: float) -> np.ndarray:
    """`factor * x`, clipped: a blend with black (torchvision `adjust_brightness`)."""
    return _to_uint8(pixels.astype(np.float32) * np.float32(factor))


def adjust_contrast(pixels: np.ndarray, factor: float) -> np.ndarray:
    """`factor * x + (1 - factor) * mean(L)`: a blend with the grayscale image's mean
    (torchvision `adjust_contrast`)."""
    mean = _luma(pixels).mean(dtype=np.float64)
    return _to_uint8(pixels.astype(np.float32) * np.float32(factor) + np.float32((1 - factor) * mean))


def adjust_saturation(pixels: np.ndarray, factor: float) -> np.ndarray:
    """`factor * x + (1 - factor) * L`: a blend with the grayscale image (torchvision
    `adjust_saturation`)."""
    gray = _luma(pixels)[..., None]
    return _to_uint8(pixels.astype(np.float32) * np.float32(factor) + gray * np.float32(1 - factor))


def _rgb_to_hsv(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`(h, s, v)` in [0, 1] of float RGB planes in [0, 1], as `colorsys.rgb_to_hsv` per pixel
    (the same sextant precedence: red, then green, then blue when two tie for the maximum)."""
    value = np.maximum(np.maximum(r, g), b)
    chroma = value - np.minimum(np.minimum(r, g), b)
    saturation = np.divide(chroma, value, out=np.zeros_like(value), where=value > 0)
    safe = np.where(chroma > 0, chroma, np.float32(1))  # grey pixels: h = 0, as colorsys
    hue = np.where(r == value, (g - b) / safe, np.where(g == value, 2 + (b - r) / safe, 4 + (r - g) / safe))
    return _mod(hue / 6, 1), saturation, value


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """`f32[H, W, 3]` RGB in [0, 1]: channel n in (5, 3, 1) is v - v s clip(min(k, 4 - k), 0, 1)
    with k = (n + 6 h) mod 6, the closed form of the sextant table `colorsys.hsv_to_rgb` uses."""
    chroma = value * saturation
    ks = (_mod(n + 6 * hue, 6) for n in (5, 3, 1))
    return np.stack([value - chroma * np.clip(np.minimum(k, 4 - k), 0, 1) for k in ks], axis=-1)


def _mod(x: np.ndarray, m: float) -> np.ndarray:
    """x mod m in [0, m), floor-based (`%` on float arrays is several times slower)."""
    return x - m * np.floor(x / m)


def adjust_hue(pixels: np.ndarray, shift: float) -> np.ndarray:
    """H + `shift` (mod 1) in HSV, `shift` in [-0.5, 0.5] (torchvision `adjust_hue`)."""
    planes = np.moveaxis(pixels, -1, 0).astype(np.float32) / 255  # contiguous planes: faster
    hue, saturation, value = _rgb_to_hsv(*planes)
    return _to_uint8(_hsv_to_rgb(_mod(hue + np.float32(shift), 1), saturation, value) * 255)


_JITTER_OPS = (adjust_brightness, adjust_contrast, adjust_saturation, adjust_hue)


def color_jitter(
    pixels: np.ndarray, rng: np.random.Generator, strength: dict = JITTER_STRENGTH
) -> np.ndarray:
    """torchvision's `ColorJitter(**strength)`: a random order of the four ops (its
    `get_params`: the permutation, then brightness, contrast, saturation, hue factors), factors
    ~ U[max(0, 1 - s), 1 + s] and the hue shift ~ U[-s, s]."""
    order = rng.permutation(4)
    factors = [rng.uniform(max(0.0, 1 - strength[key]), 1 + strength[key]) for key in
               ("brightness", "contrast", "saturation")]  # fmt: skip
    factors.append(rng.uniform(-strength["hue"], strength["hue"]))
    for op in order:
        pixels = _JITTER_OPS[op](pixels, factors[op])
    return pixels


def grayscale(pixels: np.ndarray) -> np.ndarray:
    """`uint8[H, W, 3]` with R = G = B = Pillow's L (torchvision `rgb_to_grayscale`, 3 channels)."""
    gray = np.asarray(Image.fromarray(pixels).convert("L"))
    return np.repeat(gray[..., None], 3, axis=-1)


def gaussian_blur(pixels: np.ndarray, sigma: float) -> np.ndarray:
    """Pillow's `ImageFilter.GaussianBlur(radius=sigma)` (its radius is the standard deviation),
    as clip-rocket's `utils.GaussianBlur` (SimCLR's)."""
    return np.asarray(Image.fromarray(pixels).filter(ImageFilter.GaussianBlur(radius=sigma)))


def horizontal_flip(pixels: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(pixels[:, ::-1])


def photometric_augment(pixels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The local view's ops after its crop: jitter (p 0.8), grayscale (p 0.2), blur (p 0.5,
    sigma ~ U(0.1, 2.0)), flip (p 0.5), in clip-rocket's order."""
    if rng.random() < JITTER_PROB:
        pixels = color_jitter(pixels, rng)
    if rng.random() < GRAYSCALE_PROB:
        pixels = grayscale(pixels)
    if rng.random() < BLUR_PROB:
        pixels = gaussian_blur(pixels, rng.uniform(*BLUR_SIGMA))
    if rng.random() < FLIP_PROB:
        pixels = horizontal_flip(pixels)
    return np.ascontiguousarray(pixels, dtype=np.uint8)


def local_image_views(
    image, *, count: int, size: int, rng: np.random.Generator, max_pixels: int
) -> np.ndarray:
    """`uint8[count, size, size, 3]`: `count` local views of one image, each a "rrc_local" crop
    then `photometric_augment`, all from `rng`.

    Args:
      image: encoded bytes (decoded once here, at full size) or decoded `uint8[H, W(, C)]` pixels.
      max_pixels: as `load_image`'s; raises `BadImage` for bytes that do not decode or are too large.
    """
    pixels = load_image(image, size=None, max_pixels=max_pixels)
    views = [
        photometric_augment(load_image(pixels, size=size, augment="rrc_local", rng=rng), rng)
        for _ in range(count)
    ]
    return np.stack(views)
