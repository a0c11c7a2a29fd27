"""Image decoding and training crops, at uint8, on the host (in the input pipeline's workers).

`load_image(image, size=S, augment=..., rng=...)` turns encoded bytes (JPEG, PNG, WebP, ...) or a
decoded `uint8[H, W(, C)]` array into `uint8[S, S, 3]`:

* the crop box is chosen first, on the full-resolution grid, from the image's size as read from
  its header (so an image over `max_pixels` is refused before any pixel is decoded);
* a JPEG whose crop is at least twice the target in both directions is decoded at a reduced size
  (libjpeg's DCT scaling by 1/2, 1/4 or 1/8: the largest that keeps the crop >= S pixels), which
  is most of the decoding time saved on large photos;
* the box is cut and resized to S x S.

Augmentations (`AUGMENTATIONS`):

* "none": the whole image resized to S x S, bilinear (what the pipeline always did);
* "center": the largest centred square, bilinear (evaluation);
* "rrc": torchvision's `RandomResizedCrop(S, scale=(0.9, 1.0), ratio=(3/4, 4/3))` with bicubic
  resampling, open_clip's training transform (its `image_transform(is_train=True)` default);
* "inception": big_vision's `inception_crop` (area 5-100% of the image, aspect ratio 3/4-4/3,
  up to 100 tries, else the whole image; Szegedy et al. 2015), bilinear;
* "rrc_local": torchvision's `RandomResizedCrop(S)` at its default scale (0.08, 1.0), ratio
  (3/4, 4/3), bicubic: the crop of clip-rocket's local views (Fini et al. 2023, its
  `datasets.py::get_train_dataset`; see `_views.py`).

Resampling is Pillow's, which filters with the kernel widened by the scale factor when it
shrinks (antialiased); big_vision's TF resize does not antialias by default, so "inception"
crops are smoother than big_vision's when they shrink much.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image

try:  # libjpeg-turbo without Pillow's overhead; decodes to the same pixels (tests check it)
    import simplejpeg
except ImportError:  # pragma: no cover - optional speed-up
    simplejpeg = None

RRC_SCALE, RRC_RATIO = (0.9, 1.0), (3 / 4, 4 / 3)  # open_clip's AugmentationCfg default scale
LOCAL_RRC_SCALE = (0.08, 1.0)  # torchvision's RandomResizedCrop default; clip-rocket's local views
INCEPTION_AREA, INCEPTION_RATIO = (0.05, 1.0), (3 / 4, 4 / 3)  # big_vision: area_min=5, area_max=100
# Pillow's decompression-bomb limit: a larger image is skipped unread.
DEFAULT_MAX_PIXELS = Image.MAX_IMAGE_PIXELS or 89_478_485


class BadImage(Exception):
    """An image the pipeline skips: `kind` is "corrupt_image" or "too_large"."""

    def __init__(self, kind: str, detail: str):
        super().__init__(f"{kind}: {detail}")
        self.kind, self.detail = kind, detail


Box = tuple[int, int, int, int]  # (left, top, width, height) in pixels of the full-size image


def random_resized_crop_box(
    rng: np.random.Generator, width: int, height: int, scale=RRC_SCALE, ratio=RRC_RATIO
):
    """torchvision's `RandomResizedCrop.get_params`: area fraction ~ U(scale), aspect ratio (w/h)
    log-uniform in `ratio`, 10 tries; else the centred crop with the ratio clamped into range."""
    area = width * height
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        w, h = int(round(height * max(ratio))), height
    else:
        w, h = width, height
    return (width - w) // 2, (height - h) // 2, w, h


def inception_crop_box(
    rng: np.random.Generator, width: int, height: int, area_range=INCEPTION_AREA, ratio=INCEPTION_RATIO
):
    """An inception crop: area fraction ~ U(area_range), aspect ratio (w/h) ~ U(ratio) as in
    `tf.image.sample_distorted_bounding_box`, 100 tries, else the whole image."""
    area = width * height
    for _ in range(100):
        target_area = area * rng.uniform(*area_range)
        aspect = rng.uniform(*ratio)
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, width - w + 1)), int(rng.integers(0, height - h + 1)), w, h
    return 0, 0, width, height


def center_box(width: int, height: int) -> Box:
    side = min(width, height)
    return (width - side) // 2, (height - side) // 2, side, side


# augment → (its crop box of a width x height image from the sample's rng, its resampling filter)
_CROPS = {
    "none": (lambda rng, width, height: (0, 0, width, height), Image.BILINEAR),
    "center": (lambda rng, width, height: center_box(width, height), Image.BILINEAR),
    "rrc": (random_resized_crop_box, Image.BICUBIC),
    "inception": (inception_crop_box, Image.BILINEAR),
    "rrc_local": (
        lambda rng, width, height: random_resized_crop_box(rng, width, height, scale=LOCAL_RRC_SCALE),
        Image.BICUBIC,
    ),
}
AUGMENTATIONS = tuple(_CROPS)


def _check_augment(augment: str) -> None:
    if augment not in _CROPS:
        raise ValueError(f"unknown augment {augment!r}; choose one of {', '.join(AUGMENTATIONS)}")


def crop_box(augment: str, rng, width: int, height: int) -> Box:
    """The region of a `width` x `height` image that `augment` keeps."""
    _check_augment(augment)
    return _CROPS[augment][0](rng, width, height)


def _is_jpeg(data: bytes) -> bool:
    return data[:3] == b"\xff\xd8\xff"


def _reduction(box: Box, size: int) -> int:
    """The DCT scale 1/s (s in 1, 2, 4, 8) that keeps the crop at least `size` pixels each way."""
    s = 1
    while s < 8 and min(box[2], box[3]) >= 2 * s * size:
        s *= 2
    return s


def _decode_jpeg(data: bytes, width: int, height: int, reduction: int) -> np.ndarray:
    """RGB pixels of a JPEG at 1/`reduction` of its size (libjpeg's scaled decoding)."""
    min_w, min_h = -(-width // reduction), -(-height // reduction)
    if simplejpeg is not None:
        try:
            return simplejpeg.decode_jpeg(data, colorspace="RGB", min_width=min_w, min_height=min_h)
        except ValueError:
            pass  # CMYK, arithmetic coding, ...: Pillow decodes what libjpeg's fast path refuses
    image = Image.open(io.BytesIO(data))
    if reduction > 1:
        image.draft("RGB", (min_w, min_h))
    return np.asarray(image.convert("RGB"))


def _read_header(data: bytes) -> tuple[int, int]:
    if simplejpeg is not None and _is_jpeg(data):
        try:
            height, width, _, _ = simplejpeg.decode_jpeg_header(data)
            return width, height
        except ValueError:
            pass
    with Image.open(io.BytesIO(data)) as image:  # reads the header only
        return image.size


def _rgb(array) -> np.ndarray:
    array = np.asarray(array)
    if array.ndim == 2:
        array = array[..., None]
    if array.shape[-1] == 1:
        return np.repeat(array, 3, axis=-1)
    return array[..., :3]


def decodes_at_full_size(image, size: int | None) -> bool:
    """Whether `load_image(image, size=size, ...)` decodes `image` at full size whatever its crop:
    a decoded array, a non-JPEG, or a JPEG whose short side is under `2 * size` (no DCT-scaled
    decode can then keep the crop >= `size`). Its pixels then equal `load_image(image, size=None)`'s,
    so a sample's several views may share one decode. Unreadable bytes give False."""
    if not isinstance(image, (bytes, bytearray, memoryview)):
        return True
    data = bytes(image)
    if not _is_jpeg(data) or not size:
        return True
    try:
        width, height = _read_header(data)
    except Exception:  # noqa: BLE001 - load_image reports it
        return False
    return min(width, height) < 2 * size


def _cut_and_resize(pixels: np.ndarray, box, size: int, resample, scale: tuple[float, float]) -> np.ndarray:
    """`box` (full-size pixels) of `pixels` (decoded at `scale` of full size) resized to size x size."""
    left, top, w, h = box
    sx, sy = scale
    if (left, top, w, h) == (0, 0, pixels.shape[1], pixels.shape[0]) == (0, 0, size, size):
        return pixels  # already the size asked for: nothing to cut or resample
    image = Image.fromarray(np.ascontiguousarray(pixels.astype(np.uint8, copy=False)))
    if sx == 1 and sy == 1:
        if (left, top, w, h) != (0, 0, image.width, image.height):
            image = image.crop((left, top, left + w, top + h))  # torchvision: crop, then resize
        if image.size != (size, size):
            image = image.resize((size, size), resample)
    else:  # a reduced decode: the same region in the scaled grid, to sub-pixel precision
        region = (left * sx, top * sy, (left + w) * sx, (top + h) * sy)
        image = image.resize((size, size), resample, box=region)
    return np.asarray(image)


def load_image(
    image,
    *,
    size: int | None,
    augment: str = "none",
    flip: bool = False,
    rng: np.random.Generator | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> np.ndarray:
    """`uint8[size, size, 3]` from encoded bytes or a decoded array (see the module docstring).

    Args:
      image: encoded bytes (any format Pillow reads) or `uint8[H, W]` / `[H, W, C]` pixels.
      size: the output side; None keeps the decoded image as it is (no crop, no resize).
      augment: one of `AUGMENTATIONS`.
      flip: mirror left-right with probability 1/2 (drawn from `rng` after the crop).
      rng: the sample's generator; needed by "rrc", "rrc_local", "inception" and `flip`.
      max_pixels: an encoded image with more pixels (width x height, from its header) is
        refused without being decoded.

    Raises:
      BadImage: undecodable or truncated data ("corrupt_image"), or over `max_pixels`
        ("too_large"); the pipeline counts and skips such samples.
    """
    _check_augment(augment)
    if isinstance(image, (bytes, bytearray, memoryview)):
        data = bytes(image)
        try:
            width, height = _read_header(data)
        except Exception as err:  # noqa: BLE001 - whatever the decoder says, the bytes are bad
            raise BadImage("corrupt_image", f"unreadable header ({type(err).__name__}: {err})") from err
        if width * height > max_pixels:
            raise BadImage("too_large", f"{width}x{height} pixels exceeds data.max_pixels={max_pixels}")
        box = crop_box(augment, rng, width, height) if size else (0, 0, width, height)
        reduction = _reduction(box, size) if size and _is_jpeg(data) else 1
        try:
            if _is_jpeg(data):
                pixels = _decode_jpeg(data, width, height, reduction)
            else:
                with Image.open(io.BytesIO(data)) as opened:
                    pixels = np.asarray(opened.convert("RGB"))
        except Exception as err:  # noqa: BLE001
            raise BadImage("corrupt_image", f"{type(err).__name__}: {err}") from err
        scale = (pixels.shape[1] / width, pixels.shape[0] / height)
    else:
        pixels = _rgb(image)
        height, width = pixels.shape[:2]
        box = crop_box(augment, rng, width, height) if size else (0, 0, width, height)
        scale = (1.0, 1.0)
    pixels = _rgb(pixels)
    if size:
        pixels = _cut_and_resize(pixels, box, size, _CROPS[augment][1], scale)
    if flip and rng.random() < 0.5:
        pixels = pixels[:, ::-1]
    return np.ascontiguousarray(pixels, dtype=np.uint8)
