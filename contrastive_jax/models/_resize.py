"""Fitting trained parameters to another image resolution or text context length.

A ViT's learned position embeddings hold one row per patch of a `G × G` grid (after the class
token's row); at another resolution the grid has another size, and the rows are resampled as an
image would be. The text tower's position embeddings hold one row per position; another context
length keeps the first rows or interpolates the table. Nothing else in a model depends on either
size, so `resize_params` turns the parameters of a model of config A into those of a model of
config B that differs from A only in `vision.image_size` and `text.context_length`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections

from contrastive_jax.models._contrastive import (
    DEFAULT_ATTENTION,
    DEFAULT_PATCH_DROPOUT,
    TEXT_DEFAULTS,
    VISION_DEFAULTS,
)

Array = jax.Array

# The keys `resize_params` adapts the parameters to.
RESIZED_KEYS = ("vision.image_size", "text.context_length")
# Keys that choose how a model computes, not which parameters it has: they may differ freely.
COMPUTE_KEYS = ("dtype", "remat", "attention", "vision.patch_dropout")
# Values a config may leave out (older configs, converted models), as the models read them.
_OPTIONAL = {
    "remat": False,
    "attention": DEFAULT_ATTENTION,
    "vision.patch_dropout": DEFAULT_PATCH_DROPOUT,
    **{f"vision.{key}": value for key, value in VISION_DEFAULTS.items()},
    **{f"text.{key}": value for key, value in TEXT_DEFAULTS.items()},
}


def resize_vision_pos_embed(
    pos_embed: Array, grid_size: int | tuple[int, int], *, num_prefix_tokens: int = 1
) -> Array:
    """ViT position embeddings resampled from their square patch grid to `grid_size`.

    The first `num_prefix_tokens` rows (the class token's) are kept as they are; the other
    `G²` rows, as a `G × G` image with `D` channels, are resized by bicubic interpolation with
    antialiasing, half-pixel centres (`align_corners=False`), as open_clip's `resize_pos_embed`
    calls `F.interpolate(mode="bicubic", antialias=True, align_corners=False)`: `jax.image.resize`
    with "bicubic" and `antialias=True` is the same resampling (Keys' cubic, a = −0.5, whose
    support widens by the downscale factor when shrinking). The same grid size returns the
    rows unchanged.

    Args:
      pos_embed: `f[P + G², D]`, `P = num_prefix_tokens`.
      grid_size: the new grid, `S` (square) or `(H, W)`: `image_size // patch_size`.
      num_prefix_tokens: rows before the grid (1: the class token of `pool="cls"`; 0 for the
        "gap" and "map" pools, which have none).

    Returns:
      `f[P + H·W, D]`, in `pos_embed`'s dtype (computed in float32).

    Raises:
      ValueError: `pos_embed` not 2-D, its grid rows not a square number, or a grid size < 1.

    Examples:
      >>> resize_vision_pos_embed(jnp.ones((1 + 16, 8)), 6).shape
      (37, 8)

    References:
      open_clip's `resize_pos_embed` (open_clip/model.py); Dosovitskiy et al., "An Image is
      Worth 16x16 Words", ICLR 2021, §3.2 (2-D interpolation for fine-tuning at higher
      resolution).
    """
    if pos_embed.ndim != 2:
        raise ValueError(f"pos_embed must be [P + G^2, D], got shape {pos_embed.shape}")
    rows = pos_embed.shape[0] - num_prefix_tokens
    old = math.isqrt(max(rows, 0))
    if rows < 1 or old * old != rows:
        raise ValueError(
            f"pos_embed has {rows} rows after {num_prefix_tokens} prefix token(s), not a square grid"
        )
    new = (grid_size, grid_size) if isinstance(grid_size, int) else tuple(grid_size)
    if len(new) != 2 or min(new) < 1:
        raise ValueError(f"grid_size must be a positive int or (H, W), got {grid_size!r}")
    prefix, grid = pos_embed[:num_prefix_tokens], pos_embed[num_prefix_tokens:]
    grid = grid.astype(jnp.float32).reshape(old, old, -1)
    grid = jax.image.resize(grid, (*new, grid.shape[-1]), "bicubic", antialias=True)
    return jnp.concatenate([prefix, grid.reshape(-1, grid.shape[-1]).astype(pos_embed.dtype)])


def resize_text_pos_embed(pos_embed: Array, context_length: int) -> Array:
    """Text position embeddings cut or extended to `context_length` rows.

    Cutting keeps the first `context_length` rows: every position a text that fits still has
    keeps its embedding, so a causal tower read at the text's end gives such texts the same
    embedding as before. (open_clip's `resize_text_pos_embed` interpolates when cutting too,
    which moves every position; here the rows are kept.) Extending follows open_clip's
    `resize_text_pos_embed`: the whole `[T, D]` table is linearly interpolated to the new length
    (`F.interpolate(mode="linear", align_corners=False, antialias=False)`, half-pixel centres, the
    end rows held beyond the old ends), so every row, the old ones included, is resampled.

    Args:
      pos_embed: `f[T, D]`.
      context_length: the new number of positions, ≥ 1.

    Returns:
      `f[context_length, D]` in `pos_embed`'s dtype.

    Raises:
      ValueError: `pos_embed` not 2-D, or `context_length` < 1.

    Examples:
      >>> table = jnp.arange(4.0)[:, None]
      >>> resize_text_pos_embed(table, 2)[:, 0].tolist(), resize_text_pos_embed(table, 8)[:, 0].tolist()
      ([0.0, 1.0], [0.0, 0.25, 0.75, 1.25, 1.75, 2.25, 2.75, 3.0])

    References:
      open_clip's `resize_text_pos_embed` (open_clip/model.py).
    """
    if pos_embed.ndim != 2:
        raise ValueError(f"pos_embed must be [T, D], got shape {pos_embed.shape}")
    if isinstance(context_length, bool) or not isinstance(context_length, int) or context_length < 1:
        raise ValueError(f"context_length must be a positive int, got {context_length!r}")
    if context_length <= pos_embed.shape[0]:
        return pos_embed[:context_length]
    table = pos_embed.astype(jnp.float32)
    table = jax.image.resize(table, (context_length, table.shape[1]), "linear", antialias=False)
    return table.astype(pos_embed.dtype)


def _flat(config, prefix: str = "") -> dict:
    config = config.to_dict() if isinstance(config, ml_collections.ConfigDict) else dict(config)
    flat = {}
    for key, value in config.items():
        if isinstance(value, ml_collections.ConfigDict | dict):
            flat.update(_flat(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _effective(config) -> dict:
    flat = {**_OPTIONAL, **_flat(config)}
    if flat.get("name") != "coca":  # only CoCa reads its section
        flat = {key: value for key, value in flat.items() if not key.startswith("coca.")}
    return flat


def check_resizable(from_config, to_config) -> None:
    """Raises `ValueError` naming the first key, other than `RESIZED_KEYS` and `COMPUTE_KEYS`,
    whose value differs between the two model configs (a key one leaves out counts as its
    default, and CoCa's section counts only for CoCa)."""
    a, b = _effective(from_config), _effective(to_config)
    for key in sorted(a.keys() | b.keys()):
        if key in RESIZED_KEYS or key in COMPUTE_KEYS:
            continue
        missing = "<missing>"
        if a.get(key, missing) != b.get(key, missing):
            raise ValueError(
                f"model configs differ in {key} ({a.get(key, missing)!r} vs {b.get(key, missing)!r}): "
                f"resize_params adapts parameters only to another {' / '.join(RESIZED_KEYS)}"
            )


def _key_name(entry) -> str | None:
    for attribute in ("key", "name", "idx"):
        if hasattr(entry, attribute):
            return str(getattr(entry, attribute))
    return None


def resize_params(params, from_config, to_config):
    """Parameters of a model of `from_config`, fitted to a model of `to_config`.

    `to_config` may differ from `from_config` in `vision.image_size` (the vision position
    embeddings go to the new patch grid: `resize_vision_pos_embed`) and `text.context_length`
    (`resize_text_pos_embed`; CoCa's extra last row, its CLS token's, is kept as it is), and in
    how the model computes (`COMPUTE_KEYS`: dtype, remat, attention, patch dropout). Every
    other parameter is returned as it is.

    Args:
      params: the parameter tree of a model built from `from_config`: an `nnx.State`
        (`nnx.split(model, nnx.Param, ...)[1]`), its `to_pure_dict()`, or the nested dicts a
        checkpoint restores (with `"value"` leaves); leaves are arrays.
      from_config, to_config: model configs (`config.model`; ConfigDicts or dicts).

    Returns:
      A tree of the same kind, with the position embeddings `to_config`'s model has.

    Raises:
      ValueError: naming the first other key whose value differs (see `check_resizable`), or
        when `params` holds no vision or text position embeddings.

    Examples:
      >>> from contrastive_jax import models
      >>> small = models.model_config("tiny", "clip", image_size=32)  # 4 x 4 patches, 16 positions
      >>> large = models.model_config("tiny", "clip", image_size=64, context_length=8)
      >>> params = {"vision": {"pos_embed": jnp.zeros((17, 96))}, "text": {"pos_embed": jnp.zeros((16, 96))}}
      >>> fitted = resize_params(params, small, large)
      >>> fitted["vision"]["pos_embed"].shape, fitted["text"]["pos_embed"].shape
      ((65, 96), (8, 96))
    """
    check_resizable(from_config, to_config)
    v, t = to_config["vision"], to_config["text"]
    grid = int(v["image_size"]) // int(v["patch_size"])
    prefix = int(v.get("pool", "cls") == "cls")
    cls_rows = int(to_config["name"] == "coca")  # CoCa's text CLS token has the last row
    length = int(t["context_length"])

    def text(table):
        text_rows = table.shape[0] - cls_rows
        return jnp.concatenate([resize_text_pos_embed(table[:text_rows], length), table[text_rows:]])

    resize = {
        ("vision", "pos_embed"): lambda x: resize_vision_pos_embed(x, grid, num_prefix_tokens=prefix),
        ("text", "pos_embed"): text,
    }
    seen = set()

    def fit(path, leaf):
        names = tuple(_key_name(entry) for entry in path)
        names = names[:-1] if names[-1:] == ("value",) else names
        if names in resize:
            seen.add(names)
            return resize[names](jnp.asarray(leaf))
        return leaf

    fitted = jax.tree_util.tree_map_with_path(fit, params)
    if seen != set(resize):
        raise ValueError(
            f"params hold no {sorted('.'.join(k) for k in set(resize) - seen)}: give the parameter tree of "
            "a model built from from_config"
        )
    return fitted
