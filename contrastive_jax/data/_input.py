"""The one place a dataset is built from a config: `input_from_config(config.data, split, ...)`.

Training, evaluation, zero-shot evaluation and the end-of-run plots all call it, so a source
(embedded or prepared TFDS, webdataset shards, parquet, a folder) plugs in here once. The data
config's keys (absent ones take the defaults of `DATA_DEFAULTS`):

    name           embedded / TFDS dataset name, or "webdataset", "parquet", "folder"
    urls           shards (webdataset, parquet) for training: brace ranges, "::" lists, URLs
    eval_urls      shards for evaluation ("" = none: the run is not evaluated on held-out data)
    resampled      webdataset: draw shards with replacement (no global index, no sample ids)
    image_keys, caption_key, json_fields   shard member extensions / parquet columns (lists are
                   comma-separated); caption_key "" is the source's own: "txt" for shards and
                   parquet, "caption" for TFDS (whose image feature is `image_key`, "image")
    folder, captions, eval_captions        name="folder": images + a CSV/TSV/JSONL of captions
    augment, flip  training crop ("none", "rrc", "inception", "rrc_local") and horizontal flip;
                   evaluation always takes the centre square
    local_views    training only: n > 0 adds n strongly augmented crops and captions per sample
                   ("local_image" uint8[B, n, S, S, 3], "local_tokens" int32[B, n, T]), the
                   extra views of clip-rocket's CL2L / BarLIP (Fini et al. 2023); 0: none
    drop_stopwords_prob  training only: each caption drops its English stopwords with this
                   probability (clip-rocket's weak text augmentation, 0.8 in its runs); 0: never
    num_workers    worker processes per host (0: threads in the training process)
    read_threads   threads per process/worker reading random-access sources (None: 16
                   in-process, as grain's default; 1 per worker process)
    shuffle_buffer window shuffle of the streaming sources (resampled shards, parquet)
    max_pixels     images with more pixels are skipped unread
    index_dir      where shard indexes are cached when the shards' folder is read-only
"""

from __future__ import annotations

import dataclasses

import grain
import ml_collections

from contrastive_jax._errors import ConfigError
from contrastive_jax.data._images import DEFAULT_MAX_PIXELS
from contrastive_jax.data._parquet import ParquetShards
from contrastive_jax.data._pipeline import check_drop_stopwords_prob, make_dataset, pixel_stats
from contrastive_jax.data._sources import ImageTextFolder, check_source, load_source
from contrastive_jax.data._tokenizers import make_tokenizer
from contrastive_jax.data._webdataset import ResampledShards, WebDatasetSource

SHARDED_SOURCES = ("webdataset", "parquet")
FILE_SOURCES = (*SHARDED_SOURCES, "folder")
DATA_DEFAULTS = dict(
    urls="",
    eval_urls="",
    resampled=False,
    image_keys="jpg,jpeg,png,webp",
    caption_key="",
    json_fields="",
    folder="",
    captions="",
    eval_captions="",
    augment="none",
    flip=False,
    num_workers=0,
    read_threads=None,
    shuffle_buffer=1000,
    max_pixels=DEFAULT_MAX_PIXELS,
    index_dir=None,
    local_views=0,
    drop_stopwords_prob=0.0,
)


def data_option(data_config, key: str):
    """`data_config.key`, or its default from `DATA_DEFAULTS` when the config predates it."""
    return data_config.get(key, DATA_DEFAULTS[key])


def _names(value) -> tuple[str, ...]:
    if isinstance(value, (list, tuple)):
        return tuple(str(v).strip() for v in value if str(v).strip())
    return tuple(v.strip() for v in str(value or "").split(",") if v.strip())


_OPTIONAL_TYPES = {"read_threads": int, "index_dir": str}  # keys whose default is None


def with_data_defaults(data_config) -> ml_collections.ConfigDict:
    """`data_config` (a dict or ConfigDict) with every `DATA_DEFAULTS` key present, so that each
    can be set from the command line (`--config.data.num_workers=4`)."""
    config = ml_collections.ConfigDict(dict(data_config))
    with config.unlocked():
        for key, value in DATA_DEFAULTS.items():
            if key not in config:
                config[key] = (
                    ml_collections.FieldReference(None, field_type=_OPTIONAL_TYPES[key])
                    if value is None
                    else value
                )
        if "reseed_on_layout_change" not in config:
            config.reseed_on_layout_change = False
    return config


def has_eval_split(data_config) -> bool:
    """Whether the config names held-out data to evaluate on (TFDS: its test split)."""
    name = data_config.name
    if name in SHARDED_SOURCES:
        return bool(data_option(data_config, "eval_urls"))
    if name == "folder":
        return bool(data_option(data_config, "eval_captions"))
    return True


def check_data_config(data_config) -> None:
    """`ConfigError` (one line, naming the field and the fix) for a data config that cannot load."""
    name = data_config.name
    if name in SHARDED_SOURCES:
        if not data_option(data_config, "urls"):
            raise ConfigError(
                f"config.data.name={name!r} needs the shards: --config.data.urls='DIR/{{00000..00099}}.tar'"
            )
        if data_option(data_config, "resampled") and name != "webdataset":
            raise ConfigError("config.data.resampled applies to webdataset shards only; set it False")
        if not _names(data_option(data_config, "image_keys")):
            raise ConfigError("config.data.image_keys is empty; e.g. --config.data.image_keys=jpg,png,webp")
    elif name == "folder":
        if not data_option(data_config, "folder") or not data_option(data_config, "captions"):
            raise ConfigError(
                "config.data.name='folder' needs --config.data.folder=DIR and --config.data.captions=FILE "
                "(a CSV/TSV with filename,caption columns or a JSONL file)"
            )
    else:
        check_source(name, config=data_config.get("builder_config", None))
    for key in ("num_workers", "shuffle_buffer", "max_pixels"):
        value = data_option(data_config, key)
        if not isinstance(value, int) or isinstance(value, bool) or value < (1 if key == "max_pixels" else 0):
            raise ConfigError(
                f"config.data.{key} is {value!r} but must be a {'positive' if key == 'max_pixels' else 'non-negative'} integer"
            )
    views = data_option(data_config, "local_views")
    if not isinstance(views, int) or isinstance(views, bool) or views < 0:
        raise ConfigError(
            f"config.data.local_views is {views!r} but must be a non-negative integer, "
            "e.g. --config.data.local_views=2 (0: no local views)"
        )
    check_drop_stopwords_prob(data_option(data_config, "drop_stopwords_prob"))
    threads = data_option(data_config, "read_threads")
    if threads is not None and (not isinstance(threads, int) or threads < 1):
        raise ConfigError(f"config.data.read_threads is {threads!r} but must be a positive integer or None")


def streams(data_config) -> bool:
    """Whether training reads a stream (resampled shards, parquet) rather than a random-access
    source: no global shuffle, no sample ids (`index` is -1)."""
    return data_config.name == "parquet" or (
        data_config.name == "webdataset" and bool(data_option(data_config, "resampled"))
    )


def source_from_config(data_config, split: str, *, seed: int = 0, process_index: int = 0, process_count: int = 1,
                       training: bool = True, num_epochs: int | None = None):  # fmt: skip
    """The records `split` ("train" or an evaluation split) of the config's dataset.

    Random-access sources (len, [i]) for TFDS, folders and indexed webdataset shards; a grain
    `IterDataset` that splits itself over processes and workers for resampled shards and parquet.
    """
    name = data_config.name
    evaluating = split != "train"
    if name in SHARDED_SOURCES:
        urls = data_option(data_config, "eval_urls" if evaluating else "urls")
        if not urls:
            raise ConfigError(
                f"config.data.{'eval_urls' if evaluating else 'urls'} is empty: no shards for {split!r}"
            )
        image_keys = _names(data_option(data_config, "image_keys"))
        caption_key = data_option(data_config, "caption_key") or "txt"
        workers = data_option(data_config, "num_workers") if training else 0
        if name == "parquet":
            return ParquetShards(
                urls, seed=seed, process_index=process_index, process_count=process_count, num_workers=workers,
                num_epochs=num_epochs if evaluating or not training else None, image_keys=image_keys,
                caption_key=caption_key, json_fields=_names(data_option(data_config, "json_fields")),
            )  # fmt: skip
        if data_option(data_config, "resampled") and training and not evaluating:
            return ResampledShards(
                urls, seed=seed, process_index=process_index, process_count=process_count, num_workers=workers,
                image_keys=image_keys, caption_key=caption_key, index_dir=data_option(data_config, "index_dir"),
            )  # fmt: skip
        return WebDatasetSource(
            urls,
            image_keys=image_keys,
            caption_key=caption_key,
            index_dir=data_option(data_config, "index_dir"),
        )
    if name == "folder":
        captions = data_option(data_config, "eval_captions" if evaluating else "captions")
        return ImageTextFolder(data_option(data_config, "folder"), captions, decode=False)
    return load_source(
        name,
        split,
        config=data_config.get("builder_config", None),
        image_key=data_config.get("image_key", None) or "image",
        caption_key=data_option(data_config, "caption_key") or "caption",
    )


@dataclasses.dataclass
class Input:
    """A built input: the grain `dataset` of batches and what it was built from.

    `num_samples` is the source's record count (the range of the batches' `index`), or None for
    a stream; `pixel_mean`/`pixel_std` normalise its uint8 images (`normalize_images`).
    """

    dataset: object
    source: object
    tokenizer: object
    num_samples: int | None
    pixel_mean: object
    pixel_std: object
    layout: dict


def input_from_config(data_config, split: str, *, batch_size: int, seed: int = 0, training: bool | None = None,
                      tokenizer=None, source=None, process_index: int = 0, process_count: int = 1,
                      num_epochs: int | None = None, num_workers: int | None = None) -> Input:  # fmt: skip
    """Batches of `split` as the config describes them, uint8 images (normalise on the device).

    Training (`training`, default `split == "train"`): shuffled with `seed`, endless unless
    `num_epochs`, `data.augment` / `data.flip`, `data.local_views`, `data.drop_stopwords_prob`,
    full batches only, `data.num_workers` worker processes. Evaluation: in order, one pass, the
    centre square, no local views, captions as they are, the last batch kept whole.

    Args:
      data_config: `config.data`.
      split: "train", or the evaluation split ("test" for TFDS; `data.eval_urls` shards).
      batch_size: per process.
      tokenizer: default `make_tokenizer(data_config)`.
      source: records to use instead of the config's (e.g. a zero-shot `EvalSource`); their
        captions may be missing.
      num_workers: overrides `data.num_workers`.
    """
    training = split == "train" if training is None else training
    tokenizer = tokenizer or make_tokenizer(data_config)
    given_source = source is not None
    workers = data_option(data_config, "num_workers") if num_workers is None else num_workers
    workers = workers if training else 0
    if source is None:
        source = source_from_config(
            data_config, split, seed=seed, process_index=process_index, process_count=process_count,
            training=training, num_epochs=None if training else 1,
        )  # fmt: skip
    mean, std = pixel_stats(data_config)
    dataset = make_dataset(
        source,
        tokenizer=tokenizer,
        batch_size=batch_size,
        context_length=data_config.context_length,
        seed=seed,
        shuffle=training,
        num_epochs=num_epochs if num_epochs is not None else (None if training else 1),
        drop_remainder=training,
        image_size=data_config.image_size,
        process_index=process_index,
        process_count=process_count,
        augment=data_option(data_config, "augment") if training else "center",
        flip=bool(data_option(data_config, "flip")) and training,
        normalize=False,
        num_workers=workers,
        read_threads=data_option(data_config, "read_threads"),
        max_pixels=data_option(data_config, "max_pixels"),
        json_fields=_names(data_option(data_config, "json_fields")),
        shuffle_buffer=data_option(data_config, "shuffle_buffer"),
        require_caption=not given_source,  # a given source (zero-shot classification) may have none
        local_views=data_option(data_config, "local_views") if training else 0,
        drop_stopwords_prob=data_option(data_config, "drop_stopwords_prob") if training else 0.0,
    )
    num_samples = None if isinstance(source, grain.IterDataset) else len(source)
    layout = {"num_workers": workers, "process_count": process_count, "batch_size": batch_size}
    return Input(dataset, source, tokenizer, num_samples, mean, std, layout)
