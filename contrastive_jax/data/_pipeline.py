"""The grain input pipeline: records → decoded, augmented, tokenized uint8 batches.

Deterministic (the same seed gives the same batches), resumable (the iterator's state restores
to the next batch exactly), split across processes, and run in worker processes when asked:

    source ─ (random access) shuffle per epoch ─ this process's share ─ repeat ─┐
           └ (streaming: resampled shards, parquet) ───────────────────────────┴─ decode + augment
      + tokenize (threads, or worker processes) ─ drop bad samples, counting them ─ batch (in the
      workers) ─ interleave the workers' batches

A record that cannot make a sample (no image or caption, an undecodable or oversized image, an
unreadable shard) is dropped where it stands, so the other samples keep their order; each batch
carries `skipped: int32[B, len(SKIP_KINDS)]`, how many records of each kind were dropped just
before each sample, so the trainer can count them across workers and processes.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading

import grain
import jax.numpy as jnp
import numpy as np
from absl import flags

from contrastive_jax._errors import ConfigError, did_you_mean
from contrastive_jax.data._images import (
    AUGMENTATIONS,
    DEFAULT_MAX_PIXELS,
    BadImage,
    decodes_at_full_size,
    load_image,
)
from contrastive_jax.data._text_views import local_captions, weak_caption
from contrastive_jax.data._views import local_image_views

log = logging.getLogger(__name__)

# Pixels are scaled to [0, 1], then to [-1, 1]: (x - 0.5) / 0.5.
PIXEL_MEAN, PIXEL_STD = 0.5, 0.5
SKIP_KINDS = ("no_image", "no_caption", "corrupt_image", "too_large", "unreadable", "missing_sample")
SKIP_REASONS = {
    "no_image": "samples without an image",
    "no_caption": "samples without a caption (missing or empty)",
    "corrupt_image": "samples whose image does not decode (corrupt or truncated)",
    "too_large": "samples whose image has more pixels than data.max_pixels",
    "unreadable": "samples that could not be read (I/O error on the shard or file)",
    "missing_sample": "samples a shard's stats promised but its tar does not hold",
}
LABEL_KEYS = ("count", "color", "shape", "label", "has_distractor")


def pixel_stats(data_config) -> tuple:
    """`(mean, std)` of a data config: per-channel lists `data.mean`/`data.std` when it has them
    (a converted pretrained model carries its source's, e.g. OpenAI CLIP's), else 0.5 / 0.5."""
    mean = data_config.get("mean", None)
    std = data_config.get("std", None)
    mean = PIXEL_MEAN if mean is None else np.asarray(mean, np.float32)
    std = PIXEL_STD if std is None else np.asarray(std, np.float32)
    return mean, std


def pixel_table(mean=PIXEL_MEAN, std=PIXEL_STD, channels: int = 3) -> np.ndarray:
    """`f32[256, channels]`: `(level / 255 − mean) / std` for every uint8 level, in float32."""
    levels = np.arange(256, dtype=np.float32)[:, None]
    mean = np.asarray(mean, np.float32).reshape(1, -1)
    std = np.asarray(std, np.float32).reshape(1, -1)
    return np.ascontiguousarray(np.broadcast_to((levels / np.float32(255.0) - mean) / std, (256, channels)))


def normalize_images(images, mean=PIXEL_MEAN, std=PIXEL_STD):
    """`f32[..., C] = (images / 255 − mean) / std` for uint8 pixels (mean/std scalars or per channel).

    Computed as a lookup in `pixel_table` (256 levels per channel): NumPy arrays give NumPy,
    anything else (a jax array, a tracer in the jitted train step) a jax gather, and both equal
    the float32 host arithmetic bit for bit. Arithmetic in XLA would not: it turns the divisions
    into multiplications by reciprocals, off by an ulp for some levels.
    """
    channels = images.shape[-1]
    table = pixel_table(mean, std, channels)
    if isinstance(images, np.ndarray):
        return table[images.astype(np.intp), np.arange(channels)]
    flat = jnp.asarray(table.reshape(-1))
    return flat[images.astype(jnp.int32) * channels + jnp.arange(channels, dtype=jnp.int32)]


@dataclasses.dataclass(frozen=True)
class Skipped:
    """What the preprocessing returns for a record that makes no sample."""

    kind: str
    detail: str = ""


def _skip_kind(error: str) -> str:
    head = error.split(":", 1)[0]
    return head if head in SKIP_KINDS else "unreadable"


@dataclasses.dataclass
class Preprocess:
    """One record → one sample dict (or `Skipped`); runs in the pipeline's threads or workers.

    The record comes as `(epoch, index, record)` from a random-access source (its augmentation
    seeded by `(seed, epoch, index)`) or as a record carrying `"__rng__"` from a streaming one.
    With `local_views` n > 0 the sample also has n local image views and n local captions
    (`_views.py`, `_text_views.py`), drawn from generators of their own, seeded by the same key
    and a suffix, so the global view's draws are those it has without them. With
    `drop_stopwords_prob` p > 0 the global caption loses its stopwords with probability p
    (`weak_caption`, from a generator of its own); local captions start from the original.
    """

    tokenizer: object
    context_length: int
    image_size: int | None
    augment: str = "none"
    flip: bool = False
    seed: int = 0
    max_pixels: int = DEFAULT_MAX_PIXELS
    normalize: bool = False
    mean: object = PIXEL_MEAN
    std: object = PIXEL_STD
    json_fields: tuple = ()
    require_caption: bool = True
    local_views: int = 0
    drop_stopwords_prob: float = 0.0

    def __call__(self, item):
        if isinstance(item, tuple):
            epoch, index, record = item
            rng_key = (self.seed, epoch, index)
        else:
            record, index = item, -1
            rng_key = (self.seed, *record["__rng__"])
        where = f"{record.get('__url__', '')} {record.get('__key__', '')}".strip()
        if record.get("__error__"):
            return Skipped(_skip_kind(record["__error__"]), f"{where}: {record['__error__']}")
        image, caption = record.get("image"), record.get("caption")
        if image is None:
            return Skipped("no_image", where)
        if isinstance(caption, bytes):
            caption = caption.decode("utf-8", "replace")
        if caption is None or not str(caption).strip():
            if self.require_caption:
                return Skipped("no_caption", where)
            caption = ""
        try:
            pixels, local_pixels = self._image_views(image, rng_key)
        except BadImage as err:
            return Skipped(err.kind, f"{where}: {err.detail}")
        global_caption = caption
        if self.drop_stopwords_prob > 0:
            global_caption = weak_caption(
                caption, np.random.default_rng((*rng_key, 3)), self.drop_stopwords_prob
            )
        out = {
            "image": self._pixels(pixels),
            "tokens": self.tokenizer.encode([global_caption], self.context_length)[0],
            "index": np.int32(index),
        }
        if self.local_views:
            # Suffixes 1 and 2, not 0: SeedSequence ignores trailing zeros, so (*key, 0) is key's stream.
            captions = local_captions(
                caption, count=self.local_views, rng=np.random.default_rng((*rng_key, 2))
            )
            out["local_image"] = self._pixels(local_pixels)
            out["local_tokens"] = self.tokenizer.encode(captions, self.context_length)
        meta = record.get("json") or {}
        fields = {**meta, **record}  # shards keep a record's other fields in its .json
        if "counterfactual_caption" in fields:
            counterfactual = fields["counterfactual_caption"]
            out["cf_tokens"] = self.tokenizer.encode([counterfactual], self.context_length)[0]
        for key in LABEL_KEYS:
            if key in fields:
                out[key] = np.int32(fields[key])
        for field in self.json_fields:
            out[f"json/{field}"] = np.asarray(meta.get(field, ""))
        return out

    def _pixels(self, pixels: np.ndarray) -> np.ndarray:
        return normalize_images(pixels, self.mean, self.std) if self.normalize else pixels

    def _image_views(self, image, rng_key) -> tuple[np.ndarray, np.ndarray | None]:
        """`(global view, local views or None)`; raises `BadImage`. The views share one decode
        where that leaves the global view's pixels as they are (`decodes_at_full_size`)."""
        if self.local_views and decodes_at_full_size(image, self.image_size):
            image = load_image(image, size=None, max_pixels=self.max_pixels)
        needs_rng = self.augment in ("rrc", "rrc_local", "inception") or self.flip
        rng = np.random.default_rng(rng_key) if needs_rng else None
        pixels = load_image(
            image, size=self.image_size, augment=self.augment, flip=self.flip, rng=rng,
            max_pixels=self.max_pixels,
        )  # fmt: skip
        if not self.local_views:
            return pixels, None
        local_pixels = local_image_views(
            image, count=self.local_views, size=self.image_size, rng=np.random.default_rng((*rng_key, 1)),
            max_pixels=self.max_pixels,
        )  # fmt: skip
        return pixels, local_pixels


class _DropSkippedIterator(grain.DatasetIterator):
    def __init__(self, parent):
        super().__init__(parent)

    def __next__(self):
        counts = np.zeros(len(SKIP_KINDS), np.int32)
        details: dict[str, str] = {}
        while True:
            element = next(self._parent)
            if not isinstance(element, Skipped):
                element["skipped"] = counts
                element["skip_detail"] = np.asarray("\n".join(f"{k}|{d}" for k, d in details.items()))
                return element
            counts[SKIP_KINDS.index(element.kind)] += 1
            details.setdefault(element.kind, element.detail)
            log.debug("skipped a record (%s): %s", element.kind, element.detail)

    def get_state(self):
        return self._parent.get_state()

    def set_state(self, state):
        self._parent.set_state(state)


class DropSkipped(grain.IterDataset):
    """Drops `Skipped` records and attaches to each sample the counts of those dropped just
    before it (`skipped: int32[K]`, `SKIP_KINDS` order) and, per kind, the first one's location
    and reason (`skip_detail`: lines "kind|detail"). Records dropped after the last sample of
    a finite stream (an evaluation pass) have no sample to carry their count."""

    def __iter__(self):
        return _DropSkippedIterator(self._parent.__iter__())

    def __str__(self):
        return "DropSkipped"


def _check_options(batch_size, process_index, process_count, augment, num_workers, local_views, image_size):
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if not 0 <= process_index < process_count:
        raise ValueError(f"process_index {process_index} must lie in [0, {process_count})")
    if augment not in AUGMENTATIONS:
        raise ConfigError(f"unknown config.data.augment={augment!r}; {did_you_mean(augment, AUGMENTATIONS)}")
    if not isinstance(num_workers, int) or num_workers < 0:
        raise ConfigError(f"config.data.num_workers is {num_workers!r} but must be 0 (in-process) or more")
    if not isinstance(local_views, int) or isinstance(local_views, bool) or local_views < 0:
        raise ConfigError(f"config.data.local_views is {local_views!r} but must be 0 (none) or more")
    if local_views and not image_size:
        raise ConfigError(
            f"config.data.local_views={local_views} needs config.data.image_size, the views' side"
        )


def check_drop_stopwords_prob(value) -> None:
    """Raises `ConfigError` unless `value` (`data.drop_stopwords_prob`) is a probability."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ConfigError(
            f"config.data.drop_stopwords_prob is {value!r} but must be a probability in [0, 1], e.g. "
            "--config.data.drop_stopwords_prob=0.8 (clip-rocket's weak caption augmentation; 0: never)"
        )


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
    augment: str = "none",
    flip: bool = False,
    normalize: bool = True,
    num_workers: int = 0,
    read_threads: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    json_fields=(),
    shuffle_buffer: int = 0,
    require_caption: bool = True,
    local_views: int = 0,
    drop_stopwords_prob: float = 0.0,
):
    """A grain `IterDataset` of batches; `iter()` of it has `get_state()` / `set_state()`.

    Random-access sources (TFDS, `ImageTextFolder`, `WebDatasetSource`): index every record
    (its position in the source is the sample id, `index`), shuffle globally with `seed`
    (re-shuffled each epoch), keep this process's share (every `process_count`-th record from
    `process_index`, so processes are disjoint), repeat `num_epochs` times (None: forever).
    Streaming sources (a grain `IterDataset` such as `ResampledShards` or `ParquetShards`, which
    split themselves over processes): read as they come, through a window shuffle of
    `shuffle_buffer` records if > 0; `index` is -1. Then decode, crop and resize (`augment`,
    `flip`; randomness from `(seed, epoch, index)`, so reproducible and resumable), tokenize,
    drop bad records (see the module docstring; with `require_caption=False`, e.g. to classify
    images, a record without a caption is kept with an empty one) and batch, in `num_workers` worker processes
    (0: in this process; each process reads a random-access source with `read_threads` threads,
    None: 16 in this process, as grain's default, and 1 per worker, where more only contend).

    Each batch is a dict of NumPy arrays: "image" `uint8[B, S, S, 3]`, or with `normalize`
    `f32[B, S, S, 3]` (`normalize_images` with `pixel_mean`/`pixel_std`; default [-1, 1];
    see `pixel_stats`), "tokens" `int32[B, T]`, "index" `int32[B]`, "skipped" `int32[B, K]`,
    "skip_detail" (text, see `DropSkipped`), where the records have them "cf_tokens" (the counterfactual caption), "count", "color",
    "shape", "label", "has_distractor", and "json/<field>" for each of `json_fields`.

    With `local_views` n > 0 (clip-rocket's CL2L / BarLIP input; Fini et al. 2023) each batch
    also has "local_image" `uint8[B, n, S, S, 3]` (f32 with `normalize`, as "image"): n crops of
    each image, strongly augmented (`_views.py`: "rrc_local" crop, colour jitter, grayscale,
    blur, flip), and "local_tokens" `int32[B, n, T]`: n strongly augmented copies of its caption
    (`_text_views.py`: stopword removal, then an EDA swap or deletion), tokenized as "tokens".
    Their randomness comes from the sample's key with a suffix of its own, so "image", "tokens"
    and "index" are bit-identical to those with `local_views=0`. Needs `image_size`.

    With `drop_stopwords_prob` p > 0 each caption behind "tokens" drops its English stopwords
    with probability p (clip-rocket's weak text augmentation; `_text_views.weak_caption`), from a
    generator of its own: "image", "local_*" and "cf_tokens" are as with p = 0.

    The batches depend on `num_workers` and `process_count` (each worker batches its own
    share); the same values give the same batches.
    """
    _check_options(batch_size, process_index, process_count, augment, num_workers, local_views, image_size)
    check_drop_stopwords_prob(drop_stopwords_prob)
    preprocess = Preprocess(
        tokenizer=tokenizer, context_length=context_length, image_size=image_size, augment=augment, flip=flip,
        seed=seed, max_pixels=max_pixels, normalize=normalize, mean=pixel_mean, std=pixel_std,
        json_fields=tuple(json_fields), require_caption=require_caption, local_views=local_views,
        drop_stopwords_prob=float(drop_stopwords_prob),
    )  # fmt: skip
    if isinstance(source, grain.IterDataset):
        dataset = source
        if shuffle and shuffle_buffer > 0:
            dataset = grain.experimental.WindowShuffleIterDataset(
                dataset, window_size=shuffle_buffer, seed=seed
            )
        dataset = dataset.map(preprocess)
    else:
        num_records = len(source)
        # grain hands map_with_index the position in the repeated, shuffled stream: epoch * N + id.
        dataset = grain.MapDataset.source(source).map_with_index(
            lambda i, record: (i // num_records, i % num_records, record)
        )
        if shuffle:
            dataset = dataset.shuffle(seed=seed)
        dataset = dataset[process_index::process_count]
        if num_epochs != 1:
            dataset = dataset.repeat(num_epochs)
        if read_threads is None:  # grain's 16 threads in-process; one per worker process
            read_threads = 16 if num_workers == 0 else 1
        read_options = grain.ReadOptions(num_threads=read_threads)
        dataset = dataset.map(preprocess).to_iter_dataset(read_options)
    dataset = DropSkipped(dataset).batch(batch_size, drop_remainder=drop_remainder)
    if num_workers > 0:
        # grain's workers read absl flags (its debug options): outside an absl app, e.g. in a
        # notebook, they are still unparsed, and would raise there; their defaults are what we want.
        if not flags.FLAGS.is_parsed():
            flags.FLAGS.mark_as_parsed()
        options = grain.MultiprocessingOptions(num_workers=num_workers, per_worker_buffer_size=2)
        dataset = dataset.mp_prefetch(options, worker_init_fn=_init_worker)
    return dataset


def _init_worker(worker_index: int, worker_count: int) -> None:
    """Keeps a worker's freed buffers for reuse: glibc returns large blocks (a decoded image, a
    batch) to the OS on free and faults fresh pages in on every next allocation, which costs
    more than copying the batch. Raising its mmap and trim thresholds keeps them in the heap."""
    del worker_index, worker_count
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6")
        m_trim_threshold, m_mmap_threshold = -1, -3  # mallopt parameters in glibc's malloc.h
        libc.mallopt(m_mmap_threshold, 512 << 20)
        libc.mallopt(m_trim_threshold, 1 << 30)
    except (OSError, AttributeError):  # not glibc: keep the allocator's defaults
        pass


def host_fields(batch: dict) -> tuple[dict, dict]:
    """`(arrays for the devices, host-side info)`: the skip counts (summed per kind over the
    batch) and any text fields stay on the host."""
    device, host = {}, {}
    for key, value in batch.items():
        if key == "skipped":
            host["skipped"] = np.asarray(value).sum(axis=0)
        elif np.asarray(value).dtype.kind in "USO":
            host[key] = value
        else:
            device[key] = value
    return device, host


class DevicePrefetch:
    """Pulls batches from a grain iterator on a background thread and puts them on the devices.

    `next()` returns `(device_batch, host_info)` (see `host_fields`); `get_state()` is the
    iterator state after the last batch returned (not after the ones prefetched), so a
    checkpoint resumes at the next batch the step will see. A failure in the input thread is
    raised by the `next()` that would have returned its batch.

    Args:
      iterator: a grain dataset iterator.
      put: host batch dict → device batch (e.g. global arrays over a mesh).
      size: batches kept ready on the devices.
    """

    _END = object()

    def __init__(self, iterator, put, size: int = 2):
        self._iterator, self._put = iterator, put
        self._queue: queue.Queue = queue.Queue(maxsize=max(size, 1))
        self._stop = threading.Event()
        self._state = iterator.get_state()
        self._thread = threading.Thread(target=self._run, name="contrastive_jax-device-prefetch", daemon=True)
        self._thread.start()

    def _run(self):
        try:
            while not self._stop.is_set():
                try:
                    batch = next(self._iterator)
                except StopIteration:
                    self._offer(self._END)
                    return
                state = self._iterator.get_state()
                device, host = host_fields(batch)
                self._offer((self._put(device), host, state))
        except BaseException as err:  # noqa: BLE001 - handed to the consumer
            self._offer(err)

    def _offer(self, item):
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def __iter__(self):
        return self

    def __next__(self):
        item = self._queue.get()
        if item is self._END:
            self._queue.put(item)
            raise StopIteration
        if isinstance(item, BaseException):
            raise item
        device, host, self._state = item
        return device, host

    def get_state(self):
        return self._state

    def close(self):
        """Stops the thread and the iterator (its worker processes), and drops the batches held,
        so that their shared memory is released now rather than at interpreter exit."""
        self._stop.set()
        self._thread.join(timeout=30)
        while not self._queue.empty():
            self._queue.get_nowait()
        if self._iterator is not None:
            close = getattr(self._iterator, "close", None)
            if close is not None:
                close()
            self._iterator = None
