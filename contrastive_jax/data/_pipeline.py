"""Random-access sources and the grain input pipeline (deterministic, resumable, multi-host)."""

from __future__ import annotations

import csv
import difflib
import json
import os

import numpy as np
from PIL import Image

# Pixels are scaled to [0, 1], then to [-1, 1]: (x - 0.5) / 0.5.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5


def default_data_dir() -> str:
    return os.environ.get(
        "CONTRASTIVE_JAX_DATA_DIR", os.path.join(os.path.expanduser("~"), ".cache", "contrastive_jax", "tfds")
    )


def load_source(
    name: str,
    split: str,
    *,
    data_dir: str | None = None,
    config: str | None = None,
    image_key: str = "image",
    caption_key: str = "caption",
):
    """A random-access source of records `{"image": uint8[H, W, 3], "caption": str, ...}`.

    The embedded datasets ("shapes_count", "digits_captions") are generated on first use (no
    network). Any other name is read as an already prepared TFDS dataset in array_record
    format (e.g. "coco_captions"), its `image_key` / `caption_key` fields mapped to
    "image" / "caption" (a list of captions gives its first one).
    """
    import tensorflow_datasets as tfds

    from contrastive_jax.data._builders import EMBEDDED

    data_dir = data_dir or default_data_dir()
    check_source(name, config=config, data_dir=data_dir)
    if name in EMBEDDED:
        if split not in ("train", "test"):
            raise _config_error(f"{name} has splits 'train' and 'test', not {split!r}; use 'train' or 'test'")
        builder = EMBEDDED[name](data_dir=data_dir, config=config or "default", file_format="array_record")
        if not os.path.isdir(builder.data_dir) or not builder.info.splits:
            tfds.display_progress_bar(False)
            builder.download_and_prepare()
        return builder.as_data_source(split=split)
    try:
        source = tfds.data_source(f"{name}/{config}" if config else name, split=split, data_dir=data_dir)
    except ValueError as err:  # tfds lists every registered name or config: keep the first line
        raise _config_error(
            f"cannot load dataset {name!r} (config {config!r}): {str(err).splitlines()[0]}"
        ) from err
    return KeyMappedSource(source, image_key, caption_key)


def _config_error(message: str):
    from contrastive_jax.train import ConfigError  # the one error type the entry points report

    return ConfigError(message)


def _prepared_datasets(data_dir: str) -> list[str]:
    """Names of the datasets prepared in a local `data_dir` (TFDS layout: name/config/version)."""
    if not os.path.isdir(data_dir):
        return []
    return sorted(
        n for n in os.listdir(data_dir) if os.path.isdir(os.path.join(data_dir, n)) and not n.startswith(".")
    )


def check_source(name: str, *, config: str | None = None, data_dir: str | None = None) -> None:
    """Raises `ConfigError` (listing the known names) for an unknown dataset or builder config.

    Known datasets: the embedded ones, those registered with TFDS and those already prepared in
    `data_dir`. Builder configs are checked for the embedded datasets (others when loading).
    """
    import tensorflow_datasets as tfds

    from contrastive_jax.data._builders import EMBEDDED
    from contrastive_jax.train import did_you_mean

    if name in EMBEDDED:
        configs = [c.name for c in EMBEDDED[name].BUILDER_CONFIGS]
        if (config or "default") not in configs:
            raise _config_error(
                f"unknown builder config {config!r} for dataset {name!r} (config.data.builder_config); "
                f"{did_you_mean(config, configs)}"
            )
        return
    data_dir = data_dir or default_data_dir()
    if "://" in data_dir:  # remote storage: leave the lookup to TFDS
        return
    prepared, registered = _prepared_datasets(data_dir), tfds.list_builders(with_community_datasets=False)
    if name in prepared or name in registered:
        return
    known = sorted(EMBEDDED) + prepared
    close = difflib.get_close_matches(name, known + registered, n=3, cutoff=0.6)
    fix = f"did you mean {' or '.join(map(repr, close))}?" if close else f"use one of {', '.join(known)}"
    raise _config_error(
        f"unknown dataset {name!r} (config.data.name): not embedded, not a TFDS dataset and not prepared "
        f"in {data_dir}; {fix}"
    )


class KeyMappedSource:
    """Renames a source's image / caption fields (nested keys with '/', lists → first item)."""

    def __init__(self, source, image_key: str, caption_key: str):
        self._source, self._keys = source, (image_key, caption_key)

    def __len__(self):
        return len(self._source)

    @staticmethod
    def _get(record, key: str):
        for part in key.split("/"):
            record = record[part]
        return record

    def __getitem__(self, index):
        record = self._source[index]
        caption = self._get(record, self._keys[1])
        if isinstance(caption, (list, tuple, np.ndarray)):
            caption = caption[0]
        return {"image": np.asarray(self._get(record, self._keys[0])), "caption": caption}


class ImageTextFolder:
    """Images in a folder plus a captions file: CSV/TSV with columns `filename,caption` or JSONL.

    A random-access source with the same record format as the TFDS sources.
    """

    def __init__(self, root: str, captions_file: str):
        self.root = root
        path = captions_file if os.path.isabs(captions_file) else os.path.join(root, captions_file)
        with open(path, newline="") as f:
            if path.endswith(".jsonl"):
                rows = [json.loads(line) for line in f if line.strip()]
            else:
                rows = list(csv.DictReader(f, delimiter="\t" if path.endswith(".tsv") else ","))
        if not rows or not {"filename", "caption"} <= set(rows[0]):
            raise ValueError(f"{path} needs 'filename' and 'caption' fields in every row")
        self.rows = [(r["filename"], r["caption"]) for r in rows]

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, index):
        filename, caption = self.rows[index]
        with Image.open(os.path.join(self.root, filename)) as image:
            return {"image": np.asarray(image.convert("RGB")), "caption": caption}


def pixel_stats(data_config) -> tuple:
    """`(mean, std)` of a data config: per-channel lists `data.mean`/`data.std` when it has them
    (a converted pretrained model carries its source's, e.g. OpenAI CLIP's), else 0.5 / 0.5."""
    mean = data_config.get("mean", None)
    std = data_config.get("std", None)
    mean = PIXEL_MEAN if mean is None else np.asarray(mean, np.float32)
    std = PIXEL_STD if std is None else np.asarray(std, np.float32)
    return mean, std


def _preprocess(index, record, *, tokenizer, context_length, image_size, mean=PIXEL_MEAN, std=PIXEL_STD):
    image = np.asarray(record["image"])
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=-1)
    if image_size and image.shape[:2] != (image_size, image_size):
        image = np.asarray(
            Image.fromarray(image.astype(np.uint8)).resize((image_size, image_size), Image.BILINEAR)
        )
    out = {
        "image": ((image.astype(np.float32) / 255.0) - mean) / std,
        "tokens": tokenizer.encode([record["caption"]], context_length)[0],
        "index": np.int32(index),
    }
    if "counterfactual_caption" in record:
        out["cf_tokens"] = tokenizer.encode([record["counterfactual_caption"]], context_length)[0]
    for key in ("count", "color", "shape", "label", "has_distractor"):
        if key in record:
            out[key] = np.int32(record[key])
    return out


def make_dataset(
    source,
    *,
    tokenizer,
    batch_size: int,
    context_length: int,
    seed: int = 0,
    shuffle: bool = True,
    num_epochs: int | None = None,
    drop_remainder: bool = True,
    image_size: int | None = None,
    process_index: int = 0,
    process_count: int = 1,
    pixel_mean=PIXEL_MEAN,
    pixel_std=PIXEL_STD,
):
    """A grain `MapDataset` of batches; `iter()` of it has `get_state()` / `set_state()`.

    Order: index every record (its position in the source is the sample id, `index`), shuffle
    globally with `seed` (re-shuffled each epoch), keep this process's share (every
    `process_count`-th record from `process_index`, so processes are disjoint), repeat
    `num_epochs` times (None: forever), preprocess, batch.

    Each batch is a dict of NumPy arrays: "image" `f32[B, H, W, 3]` (`(pixel/255 − pixel_mean) /
    pixel_std`, scalars or per-channel; default [-1, 1]; see `pixel_stats`), "tokens"
    `int32[B, T]`, "index" `int32[B]`, and where the records have them "cf_tokens" (the
    counterfactual caption), "count", "color", "shape", "label", "has_distractor".
    """
    import grain

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, {process_count})")
    num_records = len(source)
    # grain hands map_with_index the position in the repeated stream, so reduce it to the record's.
    dataset = grain.MapDataset.source(source).map_with_index(lambda i, record: (i % num_records, record))
    if shuffle:
        dataset = dataset.shuffle(seed=seed)
    dataset = dataset[process_index::process_count]
    if num_epochs != 1:
        dataset = dataset.repeat(num_epochs)
    preprocess = lambda item: _preprocess(
        *item,
        tokenizer=tokenizer,
        context_length=context_length,
        image_size=image_size,
        mean=pixel_mean,
        std=pixel_std,
    )
    return dataset.map(preprocess).batch(batch_size, drop_remainder=drop_remainder)
