"""Prepared TFDS datasets for evaluation: feature detection, classification and caption sources.

`open_eval_source(name, split)` reads a prepared dataset (array_record, no TensorFlow) and finds
its image, `ClassLabel` label and caption features from the dataset info. Its records are centre-
cropped to a square, so `make_dataset` then resizes and normalises them exactly as in training.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from contrastive_jax._errors import ConfigError
from contrastive_jax.data._sources import check_source, default_data_dir, load_source


@dataclasses.dataclass
class EvalSource:
    """Records `{"image": uint8[S, S, 3] (centre square), "caption": "", "label": int}`, plus
    `class_names` (label order, "_" → " ") when a label feature was found and `captions(i)` when
    a caption feature was found (a list of strings per image)."""

    source: object
    image_key: str
    label_key: str | None = None
    caption_key: str | None = None
    class_names: list[str] | None = None
    text_source: object = None  # the same records with images left undecoded

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        record = self.source[index]
        out = {"image": center_square(np.asarray(_get(record, self.image_key))), "caption": ""}
        if self.label_key:
            out["label"] = int(_get(record, self.label_key))
        return out

    def captions(self, index) -> list[str]:
        value = _get(self.text_source[index], self.caption_key)
        values = list(value) if isinstance(value, (list, tuple, np.ndarray)) else [value]
        return [v.decode() if isinstance(v, bytes) else str(v) for v in values]


def center_square(image: np.ndarray) -> np.ndarray:
    """The largest centred square of an `[H, W, C]` (or `[H, W]`) image."""
    h, w = image.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    return image[top : top + side, left : left + side]


def _get(record, key: str):
    for part in key.split("/"):
        record = record[part]
    return record


def _flat_features(features, prefix: str = "") -> dict:
    """`{"a/b": feature}` for every leaf feature; a Sequence of X counts as X (several per image)."""
    import tensorflow_datasets as tfds

    out = {}
    for key, feature in features.items():
        path = f"{prefix}{key}"
        while isinstance(feature, tfds.features.Sequence):
            feature = feature.feature
        if isinstance(feature, tfds.features.FeaturesDict):
            out.update(_flat_features(feature, path + "/"))
        else:
            out[path] = feature
    return out


def detect_keys(features, *, image_key=None, label_key=None, caption_key=None) -> dict:
    """`{"image": key, "label": key | None, "caption": key | None}` from a dataset's features.

    Defaults: the feature named "image" (else the only Image feature); the `ClassLabel` named
    "label" (else the only one); the Text feature named "caption"/"captions" (else the only one,
    nested keys joined with "/"). Raises `ConfigError` when no image feature is found, when a
    given key is missing or of the wrong type, or when neither a label nor a caption is found.
    """
    import tensorflow_datasets as tfds

    flat = _flat_features(features)
    kinds = {
        "image": tfds.features.Image,
        "label": tfds.features.ClassLabel,
        "caption": tfds.features.Text,
    }
    given = {"image": image_key, "label": label_key, "caption": caption_key}
    keys = {}
    for role, kind in kinds.items():
        candidates = [k for k, f in flat.items() if isinstance(f, kind)]
        if given[role] is not None:
            if given[role] not in candidates:
                raise ConfigError(
                    f"--{role}_key={given[role]!r} is not a {kind.__name__} feature; "
                    f"the dataset's {kind.__name__} features: {candidates or 'none'}"
                )
            keys[role] = given[role]
            continue
        named = [k for k in candidates if k.split("/")[-1] in (role, role + "s")]
        keys[role] = (named or candidates)[0] if len(named) == 1 or len(candidates) == 1 else None
    features_text = ", ".join(f"{k} ({type(f).__name__})" for k, f in flat.items())
    if keys["image"] is None:
        raise ConfigError(f"no single Image feature found (features: {features_text}); pass --image_key")
    if keys["label"] is None and keys["caption"] is None:
        raise ConfigError(
            f"neither a ClassLabel label nor a Text caption feature found (features: {features_text}); "
            "pass --label_key or --caption_key"
        )
    return keys


def with_class_names(source: EvalSource, path: str) -> EvalSource:
    """`source` with the class names of a text file (one per line, in label order).

    For datasets whose label feature holds ids, not names (TFDS's `imagenet2012`: WordNet ids).
    Raises `ConfigError` when the file is missing, or its line count differs from the labels'.
    """
    if not os.path.isfile(path):
        raise ConfigError(f"class names file {path!r} does not exist")
    with open(path, encoding="utf-8") as f:
        names = [line.strip() for line in f if line.strip()]
    if source.class_names is None:
        raise ConfigError("this dataset has no label feature to name; pass --label_key")
    if len(names) != len(source.class_names):
        raise ConfigError(
            f"{path} has {len(names)} class names but the label feature {source.label_key!r} has "
            f"{len(source.class_names)} classes"
        )
    return dataclasses.replace(source, class_names=names)


def open_eval_source(
    name: str, split: str, *, data_dir=None, image_key=None, label_key=None, caption_key=None
) -> EvalSource:
    """A prepared TFDS dataset (or an embedded one) as an `EvalSource`, features detected.

    `name` may carry a builder config ("name/config") and `split` a slice ("test[:500]").
    Raises `ConfigError` for an unknown dataset or split, or missing features (see `detect_keys`).
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or default_data_dir()
    base, _, config = name.partition("/")
    check_source(base, config=config or None, data_dir=data_dir)
    if base in _embedded():
        load_source(base, "train", data_dir=data_dir, config=config or None)  # prepares it on first use
    full_name = name if config or base not in _embedded() else f"{base}/default"
    try:
        source = tfds.data_source(full_name, split=split, data_dir=data_dir)
        keys = detect_keys(
            source.dataset_info.features, image_key=image_key, label_key=label_key, caption_key=caption_key
        )
        text_source = (
            tfds.data_source(
                full_name,
                split=split,
                data_dir=data_dir,
                decoders={keys["image"]: tfds.decode.SkipDecoding()},
            )
            if keys["caption"]
            else None
        )
    except ValueError as err:
        if type(err).__name__ == "ConfigError":
            raise
        raise ConfigError(f"cannot load {name!r} split {split!r}: {str(err).splitlines()[0]}") from err
    class_names = None
    if keys["label"]:
        label_feature = _flat_features(source.dataset_info.features)[keys["label"]]
        class_names = [n.replace("_", " ") for n in label_feature.names]
    return EvalSource(source, keys["image"], keys["label"], keys["caption"], class_names, text_source)


def _embedded():
    from contrastive_jax.data._builders import EMBEDDED  # imports tensorflow_datasets (heavy)

    return EMBEDDED
