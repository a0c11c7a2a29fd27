"""Prepared TFDS datasets for evaluation: feature detection, classification and caption sources.

`open_eval_source(name, split)` reads a prepared dataset (array_record, no TensorFlow) and finds
its image, `ClassLabel` label and caption features from the dataset info. Its records are centre-
cropped to a square, so `make_dataset` then resizes and normalises them exactly as in training.
A locally prepared dataset is read from its files alone (`tfds.builder_from_directory`), so one
whose TFDS builder code imports TensorFlow (`coco_captions`) reads without it, and a dataset that
is not prepared is an error, never a download. The datasets of `shipped_datasets()` get CLIP's
class names and templates (`with_shipped_prompts`).
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from contrastive_jax._errors import ConfigError
from contrastive_jax.data._prompts import shipped_datasets, shipped_prompts
from contrastive_jax.data._sources import check_source, default_data_dir, load_source


@dataclasses.dataclass
class EvalSource:
    """Records `{"image": uint8[S, S, 3] (centre square), "caption": "", "label": int}`, plus
    `class_names` (label order, "_" → " ") when a label feature was found and `captions(i)` when
    a caption feature was found (a list of strings per image).

    With `label_map` (`int[num_labels]`), a record's label is `label_map[label feature]`: the
    index among `class_names`, or -1 for a label outside them. `templates` are the dataset's own
    prompt templates (from `prompts_from`'s shipped prompts), the zero-shot default."""

    source: object
    image_key: str
    label_key: str | None = None
    caption_key: str | None = None
    class_names: list[str] | None = None
    text_source: object = None  # the same records with images left undecoded
    label_map: np.ndarray | None = None
    templates: tuple[str, ...] | None = None
    prompts_from: str | None = None

    def __len__(self):
        return len(self.source)

    def __getitem__(self, index):
        record = self.source[index]
        out = {"image": center_square(np.asarray(_get(record, self.image_key))), "caption": ""}
        if self.label_key:
            label = int(_get(record, self.label_key))
            out["label"] = int(self.label_map[label]) if self.label_map is not None else label
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
    "label" (else the only one); the Text feature with "caption" or "captions" in its key (nested
    keys joined with "/", e.g. coco_captions' "captions/text"), never another Text feature (file
    names, ids). Raises `ConfigError` when no image feature is found, when a given key is missing
    or of the wrong type, or when neither a label nor a caption is found.
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
        if role == "caption":  # a lone Text feature is as likely a file name or an id
            named = [k for k in candidates if {"caption", "captions"} & set(k.split("/"))]
            keys[role] = named[0] if len(named) == 1 else None
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


def with_shipped_prompts(source: EvalSource, name: str) -> EvalSource:
    """`source` with the class names and templates shipped for the TFDS dataset `name`.

    The names replace the label feature's (`shipped_prompts(name).class_names`, in label order);
    for `imagenet_a` / `imagenet_r` only their 200 labels are classes, the others map to -1
    (`label_map`), which zero-shot evaluation reports as an error. The templates become the
    zero-shot default (`zero_shot_tfds(templates=None)`).

    Raises:
      ConfigError: nothing is shipped for `name`; `source` has no label feature; its label feature
        has another number of classes, or other WordNet ids, than the shipped names expect.
    """
    prompts = shipped_prompts(name)
    if source.class_names is None:
        raise ConfigError(f"this {name} source has no label feature to name; pass --label_key")
    if len(source.class_names) != prompts.num_labels:
        raise ConfigError(
            f"the shipped class names of {prompts.dataset} are for a label feature of {prompts.num_labels} "
            f"classes, but {source.label_key!r} has {len(source.class_names)}"
        )
    if prompts.label_names is not None and tuple(source.class_names) != prompts.label_names:
        raise ConfigError(
            f"the label feature {source.label_key!r} does not hold {prompts.dataset}'s WordNet ids in "
            "their sorted order; the shipped class names do not apply"
        )
    label_map = None
    if prompts.label_subset is not None:
        label_map = np.full(prompts.num_labels, -1, np.int64)
        label_map[list(prompts.label_subset)] = np.arange(len(prompts.label_subset))
    return dataclasses.replace(
        source,
        class_names=list(prompts.class_names),
        label_map=label_map,
        templates=prompts.templates,
        prompts_from=prompts.dataset,
    )


def _prepare_command(name: str, data_dir: str) -> str:
    """The command that prepares TFDS dataset `name` in `data_dir` as array_record."""
    return f"tfds build {name} --data_dir={data_dir} --file_format=array_record"


def _newest_version_dir(folder: str) -> str | None:
    """The newest `folder/<version>` holding a dataset_info.json, or None."""
    import tensorflow_datasets as tfds

    versions = []
    for entry in os.listdir(folder) if os.path.isdir(folder) else []:
        if os.path.isfile(os.path.join(folder, entry, "dataset_info.json")):
            try:
                versions.append(tfds.core.Version(entry))
            except ValueError:
                continue
    return os.path.join(folder, str(max(versions))) if versions else None


def _default_config(base: str, prepared: list[str]) -> str | None:
    """The builder config a bare name means: TFDS's default, else the only one prepared."""
    import tensorflow_datasets as tfds

    try:
        builder_cls = tfds.builder_cls(base)
        configs = list(getattr(builder_cls, "BUILDER_CONFIGS", None) or [])
        default = getattr(builder_cls, "DEFAULT_BUILDER_CONFIG_NAME", None)
        if default or configs:
            return default or configs[0].name
    except Exception:  # noqa: BLE001 - its code may need TensorFlow or be unregistered
        pass
    return prepared[0] if len(prepared) == 1 else None


def _prepared_dir(name: str, data_dir: str) -> str:
    """The folder of the newest prepared version of `name` ("name" or "name/config") in `data_dir`.

    Raises:
      ConfigError: it is not prepared there (with the command that prepares it), or a bare name
        has several builder configs prepared and none is the default.
    """
    base, _, config = name.partition("/")
    folder = os.path.join(data_dir, base)
    found = _newest_version_dir(os.path.join(folder, config)) if config else _newest_version_dir(folder)
    if found is None and not config and os.path.isdir(folder):
        configs = sorted(c for c in os.listdir(folder) if _newest_version_dir(os.path.join(folder, c)))
        default = _default_config(base, configs)
        if default is None and configs:
            raise ConfigError(
                f"dataset {base!r} has several builder configs prepared in {data_dir} "
                f"({', '.join(configs)}); name one, e.g. {base}/{configs[0]}"
            )
        found = _newest_version_dir(os.path.join(folder, default)) if default else None
    if found is None:
        raise ConfigError(
            f"dataset {name!r} is not prepared in {data_dir}; prepare it with: {_prepare_command(name, data_dir)}"
        )
    return found


def _data_source(name: str, split: str, data_dir: str, decoders=None):
    """A random-access source of a prepared dataset: its files locally, TFDS for remote storage."""
    import tensorflow_datasets as tfds

    if "://" in data_dir:
        return tfds.data_source(name, split=split, data_dir=data_dir, download=False, decoders=decoders)
    builder = tfds.builder_from_directory(_prepared_dir(name, data_dir))
    return builder.as_data_source(split=split, decoders=decoders)


def open_eval_source(
    name: str, split: str, *, data_dir=None, image_key=None, label_key=None, caption_key=None
) -> EvalSource:
    """A prepared TFDS dataset (or an embedded one) as an `EvalSource`, features detected.

    `name` may carry a builder config ("name/config"; a bare name means TFDS's default config)
    and `split` a slice ("test[:500]"). A dataset of `shipped_datasets()` whose label feature is
    "label" gets the shipped class names and templates (`with_shipped_prompts`).
    Raises `ConfigError` for an unknown dataset or split, one not prepared in `data_dir` (with the
    command that prepares it), or missing features (see `detect_keys`).
    """
    import tensorflow_datasets as tfds

    data_dir = data_dir or default_data_dir()
    base, _, config = name.partition("/")
    check_source(base, config=config or None, data_dir=data_dir)
    if base in _embedded():
        load_source(base, "train", data_dir=data_dir, config=config or None)  # prepares it on first use
    full_name = name if config or base not in _embedded() else f"{base}/default"
    try:
        source = _data_source(full_name, split, data_dir)
        keys = detect_keys(
            source.dataset_info.features, image_key=image_key, label_key=label_key, caption_key=caption_key
        )
        text_source = (
            _data_source(full_name, split, data_dir, decoders={keys["image"]: tfds.decode.SkipDecoding()})
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
    opened = EvalSource(source, keys["image"], keys["label"], keys["caption"], class_names, text_source)
    if keys["label"] == "label" and base in shipped_datasets():
        opened = with_shipped_prompts(opened, base)
    return opened


def _embedded():
    from contrastive_jax.data._builders import EMBEDDED  # imports tensorflow_datasets (heavy)

    return EMBEDDED
