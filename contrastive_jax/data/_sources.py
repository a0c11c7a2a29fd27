"""Random-access sources: the embedded and prepared TFDS datasets, and a folder of images."""

from __future__ import annotations

import csv
import difflib
import json
import os

import numpy as np
from PIL import Image

from contrastive_jax._errors import ConfigError, did_you_mean


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
    import tensorflow_datasets as tfds  # heavy (~0.5 s), and only TFDS sources need it

    from contrastive_jax.data._builders import EMBEDDED  # defines TFDS builders: imports tfds

    data_dir = data_dir or default_data_dir()
    check_source(name, config=config, data_dir=data_dir)
    if name in EMBEDDED:
        if split not in ("train", "test"):
            raise ConfigError(f"{name} has splits 'train' and 'test', not {split!r}; use 'train' or 'test'")
        builder = EMBEDDED[name](data_dir=data_dir, config=config or "default", file_format="array_record")
        if not os.path.isdir(builder.data_dir) or not builder.info.splits:
            tfds.display_progress_bar(False)
            builder.download_and_prepare()
        return builder.as_data_source(split=split)
    try:
        source = tfds.data_source(f"{name}/{config}" if config else name, split=split, data_dir=data_dir)
    except ValueError as err:  # tfds lists every registered name or config: keep the first line
        raise ConfigError(
            f"cannot load dataset {name!r} (config {config!r}): {str(err).splitlines()[0]}"
        ) from err
    return KeyMappedSource(source, image_key, caption_key)


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
    import tensorflow_datasets as tfds  # heavy (~0.5 s), and only TFDS sources need it

    from contrastive_jax.data._builders import EMBEDDED  # defines TFDS builders: imports tfds

    if name in EMBEDDED:
        configs = [c.name for c in EMBEDDED[name].BUILDER_CONFIGS]
        if (config or "default") not in configs:
            raise ConfigError(
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
    raise ConfigError(
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

    A random-access source with the same record format as the TFDS sources. With
    `decode=False` a record's "image" is the file's bytes, which the pipeline decodes in its
    workers (at reduced size where it can); an unreadable file then becomes a skipped sample.
    """

    def __init__(self, root: str, captions_file: str, *, decode: bool = True):
        self.root, self.decode = root, decode
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
        path = os.path.join(self.root, filename)
        if not self.decode:
            try:
                with open(path, "rb") as f:
                    return {"image": f.read(), "caption": caption, "__key__": filename}
            except OSError as err:
                return {
                    "image": None,
                    "caption": caption,
                    "__key__": filename,
                    "__error__": f"unreadable: {err}",
                }
        with Image.open(path) as image:
            return {"image": np.asarray(image.convert("RGB")), "caption": caption}
