"""Webdataset tar shards (img2dataset's layout) as random-access and resampled sources.

A shard `00000.tar` holds samples as consecutive members that share a key: `KEY.jpg` (or png,
webp), `KEY.txt`, `KEY.json`, ... (webdataset's convention: the key is the member path up to the
first "." of its file name, the rest is the extension). img2dataset writes `00000_stats.json`
beside it, whose "successes" is the shard's sample count.

**Shard index.** Reading a sample at random needs the byte offsets of its members. They are
found once per shard by walking the tar headers (a seek per member on a local disk; one
sequential read of a remote shard) and cached as `00000_index.json` beside the shard, or under
`index_dir` where the shard's folder cannot be written. A cached index records the tar's size
and is rebuilt when the tar changes.

**Modes.** `WebDatasetSource` is a random-access source (`len`, `[i]`): sample `i` of the global
order (shards in URL order, samples in tar order) is the sample id, so the pipeline shuffles
globally, gives every record its id (iSogCLR's per-sample state needs one) and resumes exactly.
`ResampledShards` draws shards with replacement (open_clip's `--dataset-resampled`), for sets
too big to index up front: each reader (process x worker) draws from its own share of the
shards; its position (draw number, sample within the shard) is its state.

URLs are local paths or anything fsspec opens (`gs://`, `s3://`, `file://`, ...; gcsfs/s3fs are
the user's to install); `expand_urls` expands brace ranges (`{00000..00331}`, zero padding
kept), brace lists (`{a,b}`) and joins lists written with "::".
"""

from __future__ import annotations

import bisect
import concurrent.futures
import hashlib
import io
import json
import logging
import os
import re
import tarfile
import threading

import grain
import numpy as np

from contrastive_jax._errors import ConfigError

log = logging.getLogger(__name__)
INDEX_VERSION = 1
DEFAULT_IMAGE_KEYS = ("jpg", "jpeg", "png", "webp")
_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(\d+)\.\.(\d+)$")


def expand_urls(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """The shard URLs a spec names, in order: "::" joins lists, braces expand (ranges, lists)."""
    if isinstance(spec, (list, tuple)):
        return [url for part in spec for url in expand_urls(part)]
    urls: list[str] = []
    for part in str(spec).split("::"):
        part = part.strip()
        if part:
            urls.extend(_expand_braces(part))
    return urls


def _expand_braces(pattern: str) -> list[str]:
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    body = match.group(1)
    span = _RANGE.match(body)
    if span:
        first, last = span.groups()
        width = len(first) if first.startswith("0") or len(first) == len(last) else 0
        lo, hi = int(first), int(last)
        if hi < lo:
            raise ConfigError(f"the brace range {{{body}}} in {pattern!r} is empty (it counts down)")
        choices = [str(n).zfill(width) for n in range(lo, hi + 1)]
    elif "," in body:
        choices = body.split(",")
    else:
        raise ConfigError(
            f"cannot expand {{{body}}} in {pattern!r}: write a range {{000..099}} or a list {{a,b}}"
        )
    head, tail = pattern[: match.start()], pattern[match.end() :]
    return [url for choice in choices for url in _expand_braces(head + choice + tail)]


def _is_remote(url: str) -> bool:
    return "://" in url and not url.startswith("file://")


def _local_path(url: str) -> str:
    return url[len("file://") :] if url.startswith("file://") else url


def _fs(url: str):
    import fsspec

    return fsspec.core.url_to_fs(url)


def url_size(url: str) -> int:
    """Bytes of the file at `url` (OSError if it cannot be read)."""
    if not _is_remote(url):
        return os.path.getsize(_local_path(url))
    fs, path = _fs(url)
    return int(fs.size(path))


_OPEN_SHARDS: dict[str, int] = {}  # this process's read-only descriptors of local shards
_OPEN_LOCK = threading.Lock()


def _descriptor(path: str) -> int:
    fd = _OPEN_SHARDS.get(path)
    if fd is None:
        with _OPEN_LOCK:
            fd = _OPEN_SHARDS.get(path)
            if fd is None:
                if len(_OPEN_SHARDS) >= 512:  # bounded: close the oldest
                    os.close(_OPEN_SHARDS.pop(next(iter(_OPEN_SHARDS))))
                fd = _OPEN_SHARDS[path] = os.open(path, os.O_RDONLY)
    return fd


def _forget_descriptor(url: str) -> None:
    """Drops this process's descriptor of a local shard (its index is being (re)loaded: the
    file may have been replaced, and an open descriptor would still read the old one)."""
    with _OPEN_LOCK:
        fd = _OPEN_SHARDS.pop(_local_path(url), None)
    if fd is not None:
        os.close(fd)


def read_bytes(url: str, start: int = 0, length: int | None = None) -> bytes:
    """`length` bytes of `url` from `start` (the whole file when `length` is None).

    A local shard's sample reads go through one descriptor kept open per process (`os.pread`:
    no seek, safe from several threads) instead of an open and close per sample."""
    if not _is_remote(url):
        path = _local_path(url)
        if length is None:
            with open(path, "rb") as f:
                f.seek(start)
                return f.read()
        return os.pread(_descriptor(path), length, start)
    fs, path = _fs(url)
    end = None if length is None else start + length
    return fs.cat_file(path, start=start, end=end)


def _read_text(url: str) -> str | None:
    try:
        return read_bytes(url).decode("utf-8")
    except (OSError, FileNotFoundError, ValueError):
        return None


def _write_text(url: str, text: str) -> bool:
    """Writes atomically where possible; False if the location cannot be written."""
    try:
        if not _is_remote(url):
            path = _local_path(url)
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            tmp = f"{path}.tmp-{os.getpid()}-{threading.get_ident()}"
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        else:
            fs, path = _fs(url)
            fs.pipe_file(path, text.encode("utf-8"))
        return True
    except (OSError, PermissionError, NotImplementedError, ValueError):
        return False


def _stem(url: str) -> str:
    return url[: -len(".tar")] if url.endswith(".tar") else url


def split_key(name: str) -> tuple[str, str]:
    """webdataset's `(key, extension)` of a member path: the key ends at the file name's first '.'."""
    folder, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{folder}/{stem}" if folder else stem), (ext.lower() if dot else "")


class ShardIndex:
    """Where each sample's members lie in one tar: `keys[i]`, and per extension the offsets and
    sizes of its data (-1 where sample `i` lacks that member)."""

    def __init__(self, keys: list[str], members: dict[str, tuple[list[int], list[int]]], tar_size: int,
                 truncated: bool = False):  # fmt: skip
        self.keys, self.tar_size, self.truncated = keys, tar_size, truncated
        self.members = {
            ext: (np.asarray(o, np.int64), np.asarray(s, np.int64)) for ext, (o, s) in members.items()
        }

    def __len__(self) -> int:
        return len(self.keys)

    def to_json(self) -> str:
        members = {ext: [o.tolist(), s.tolist()] for ext, (o, s) in self.members.items()}
        return json.dumps({"version": INDEX_VERSION, "tar_size": self.tar_size, "count": len(self.keys),
                           "truncated": self.truncated, "keys": self.keys, "members": members})  # fmt: skip

    @classmethod
    def from_json(cls, text: str) -> ShardIndex | None:
        try:
            data = json.loads(text)
            if data.get("version") != INDEX_VERSION:
                return None
            members = {ext: (o, s) for ext, (o, s) in data["members"].items()}
            return cls(data["keys"], members, int(data["tar_size"]), bool(data.get("truncated", False)))
        except (ValueError, KeyError, TypeError):
            return None

    def span(self, i: int, extensions) -> tuple[int, int] | None:
        """`(start, end)` bytes covering the wanted members of sample `i` (one read), or None."""
        starts, ends = [], []
        for ext in extensions:
            if ext in self.members:
                offset, size = self.members[ext][0][i], self.members[ext][1][i]
                if offset >= 0:
                    starts.append(offset)
                    ends.append(offset + size)
        return (min(starts), max(ends)) if starts else None


def scan_tar(fileobj, tar_size: int) -> ShardIndex:
    """Walks the headers of a tar (seeking over the data) and groups members into samples.

    Consecutive members with the same key form a sample, as webdataset groups them; webdataset's
    metadata members (`__name__`) are skipped. A member whose data runs past the end of a
    truncated file is dropped and the index marked `truncated`.
    """
    keys: list[str] = []
    members: dict[str, tuple[list[int], list[int]]] = {}
    truncated = False
    try:
        with tarfile.open(fileobj=fileobj, mode="r:") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                if member.offset_data + member.size > tar_size:
                    truncated = True
                    break
                key, ext = split_key(member.name)
                if os.path.basename(member.name).startswith("__"):
                    continue
                if not keys or keys[-1] != key:
                    keys.append(key)
                column = members.setdefault(ext, ([], []))
                missing = len(keys) - 1 - len(column[0])
                column[0].extend([-1] * missing)
                column[1].extend([0] * missing)
                if len(column[0]) == len(keys):  # a repeated extension within a sample: keep the first
                    continue
                column[0].append(member.offset_data)
                column[1].append(member.size)
    except tarfile.TarError as err:
        if not keys:
            raise OSError(f"not a readable tar archive ({err})") from err
        truncated = True
    for offsets, sizes in members.values():
        offsets.extend([-1] * (len(keys) - len(offsets)))
        sizes.extend([0] * (len(keys) - len(sizes)))
    return ShardIndex(keys, members, tar_size, truncated)


def _cache_urls(url: str, index_dir: str | None) -> list[str]:
    """Where a shard's index may be cached: beside the shard, then under `index_dir`."""
    beside = _stem(url) + "_index.json"
    digest = hashlib.sha1(url.encode()).hexdigest()[:20]
    fallback = os.path.join(index_dir or _default_index_dir(), f"{digest}_index.json")
    return [beside, fallback]


def _default_index_dir() -> str:
    return os.environ.get(
        "CONTRASTIVE_JAX_INDEX_DIR",
        os.path.join(os.path.expanduser("~"), ".cache", "contrastive_jax", "wds_index"),
    )


def load_index(url: str, index_dir: str | None = None, *, tar_size: int | None = None, build: bool = True):
    """The shard's `ShardIndex`: a cached one whose tar size still matches, else built and cached.

    Raises OSError when the shard cannot be read (with `build`); returns None when nothing is
    cached and `build` is False.
    """
    tar_size = url_size(url) if tar_size is None else tar_size
    if not _is_remote(url):
        _forget_descriptor(url)
    for cached in _cache_urls(url, index_dir):
        text = _read_text(cached)
        index = ShardIndex.from_json(text) if text else None
        if index is not None and index.tar_size == tar_size:
            return index
    if not build:
        return None
    index = build_index(url, tar_size)
    text = index.to_json()
    for cached in _cache_urls(url, index_dir):
        if _write_text(cached, text):
            break
    return index


def build_index(url: str, tar_size: int | None = None, data: bytes | None = None) -> ShardIndex:
    """Scans a shard's headers (from `data` when its bytes are already in memory)."""
    if data is not None:
        return scan_tar(io.BytesIO(data), len(data))
    tar_size = url_size(url) if tar_size is None else tar_size
    if not _is_remote(url):
        with open(_local_path(url), "rb") as f:
            return scan_tar(f, tar_size)
    return scan_tar(io.BytesIO(read_bytes(url)), tar_size)  # one sequential read, not many small ones


def stats_count(url: str) -> int | None:
    """img2dataset's sample count of a shard (`successes` in `{shard}_stats.json`), if present."""
    text = _read_text(_stem(url) + "_stats.json")
    try:
        return int(json.loads(text)["successes"]) if text else None
    except (ValueError, KeyError, TypeError):
        return None


def _map_threads(fn, items, threads: int = 32) -> list:
    with concurrent.futures.ThreadPoolExecutor(max(1, min(threads, len(items)))) as pool:
        return list(pool.map(fn, items))


def check_shards(urls: list[str], spec: str) -> list[int]:
    """The shards' sizes in bytes; a one-line `ConfigError` for no shard or an unreadable one."""
    if not urls:
        raise ConfigError(
            f"config.data.urls={spec!r} names no shard; e.g. --config.data.urls='DIR/{{00000..00009}}.tar'"
        )

    def size(url):
        try:
            return url_size(url)
        except (OSError, ValueError) as err:
            return err

    sizes = _map_threads(size, urls)
    bad = [(u, s) for u, s in zip(urls, sizes) if isinstance(s, Exception) or s == 0]
    if bad:
        url, reason = bad[0]
        reason = "it is empty" if reason == 0 else f"{type(reason).__name__}: {reason}"
        more = f" (and {len(bad) - 1} more of the {len(urls)} shards)" if len(bad) > 1 else ""
        raise ConfigError(f"cannot read shard {url} ({reason}){more}; check config.data.urls={spec!r}")
    return sizes


def shard_counts(urls: list[str], sizes: list[int], index_dir: str | None = None) -> list[int]:
    """Samples per shard: a cached index's count, else img2dataset's stats, else an index built now."""

    def count(args):
        url, size = args
        index = load_index(url, index_dir, tar_size=size, build=False)
        if index is not None:
            return len(index)
        counted = stats_count(url)
        if counted is not None:
            return counted
        try:
            return len(load_index(url, index_dir, tar_size=size))
        except OSError as err:
            raise ConfigError(f"cannot read shard {url} ({err})") from err

    return _map_threads(count, list(zip(urls, sizes)))


def decode_members(raw: bytes, base: int, index: ShardIndex, i: int, keys: dict) -> dict:
    """The record of sample `i` from the bytes `raw` read at offset `base` of its shard."""

    def member(ext):
        if ext not in index.members:
            return None
        offset, size = index.members[ext][0][i], index.members[ext][1][i]
        return None if offset < 0 else raw[offset - base : offset - base + size]

    image = next((data for data in map(member, keys["image"]) if data is not None), None)
    caption = member(keys["caption"])
    meta = member(keys["json"]) if keys["json"] else None
    record = {"image": image, "caption": None if caption is None else caption.decode("utf-8", "replace")}
    if meta is not None:
        try:
            record["json"] = json.loads(meta)
        except ValueError:
            record["json"] = None
    record["__key__"] = index.keys[i]
    return record


class _ShardCache:
    """Per-process LRU of loaded shard indexes (and, for remote resampled reads, shard bytes)."""

    def __init__(self, capacity: int):
        self.capacity, self._items, self._lock = capacity, {}, threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._items:
                self._items[key] = self._items.pop(key)  # most recent last
                return self._items[key]
        value = make()
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.capacity:
                self._items.pop(next(iter(self._items)))
        return value


class WebDatasetSource:
    """Random access to the samples of webdataset shards: `len()`, `[i]` → a record.

    A record is `{"image": bytes | None, "caption": str | None, "json": dict | None (with
    `json_key`), "__key__": str, "__url__": str}`; `None` marks a member the sample lacks (the
    pipeline skips it and counts why). Sample `i` is the `i`-th of the shards' samples in URL
    order; counts come from `shard_counts` (cached index, img2dataset stats, or a scan).

    Args:
      urls: a spec for `expand_urls` or a list of URLs.
      image_keys: extensions tried in order for the image.
      caption_key, json_key: extensions of the caption and of the metadata ("" for none).
      index_dir: where shard indexes are cached when the shards' folder is not writable.
    """

    def __init__(self, urls, *, image_keys=DEFAULT_IMAGE_KEYS, caption_key: str = "txt", json_key: str = "json",
                 index_dir: str | None = None):  # fmt: skip
        self.spec = urls if isinstance(urls, str) else "::".join(urls)
        self.urls = expand_urls(urls)
        self.sizes = check_shards(self.urls, self.spec)
        self.index_dir = index_dir
        self.counts = shard_counts(self.urls, self.sizes, index_dir)
        self.starts = np.concatenate([[0], np.cumsum(self.counts)]).astype(np.int64).tolist()
        self.keys = {"image": tuple(image_keys), "caption": caption_key, "json": json_key}
        self._cache = _ShardCache(256)
        self._mismatch_warned: set[int] = set()

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = None
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._cache = _ShardCache(256)

    def __len__(self) -> int:
        return self.starts[-1]

    def locate(self, i: int) -> tuple[int, int]:
        """`(shard number, sample within that shard)` of sample `i`."""
        shard = bisect.bisect_right(self.starts, i) - 1
        return shard, i - self.starts[shard]

    def _index(self, shard: int) -> ShardIndex:
        url = self.urls[shard]
        return self._cache.get(shard, lambda: load_index(url, self.index_dir, tar_size=self.sizes[shard]))

    def __getitem__(self, i: int) -> dict:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range [0, {len(self)})")
        shard, j = self.locate(i)
        url = self.urls[shard]
        try:
            index = self._index(shard)
        except OSError as err:
            return {
                "image": None,
                "caption": None,
                "__key__": "",
                "__url__": url,
                "__error__": f"unreadable_shard: {err}",
            }
        if j >= len(index):
            if shard not in self._mismatch_warned:
                self._mismatch_warned.add(shard)
                log.warning(
                    "shard %s holds %d samples, its stats say %d: the rest are skipped",
                    url,
                    len(index),
                    self.counts[shard],
                )
            return {
                "image": None,
                "caption": None,
                "__key__": "",
                "__url__": url,
                "__error__": "missing_sample",
            }
        wanted = [*self.keys["image"], self.keys["caption"], self.keys["json"]]
        span = index.span(j, [e for e in wanted if e])
        if span is None:
            return {"image": None, "caption": None, "__key__": index.keys[j], "__url__": url}
        try:
            raw = read_bytes(url, span[0], span[1] - span[0])
        except OSError as err:
            return {"image": None, "caption": None, "__key__": index.keys[j], "__url__": url,
                    "__error__": f"unreadable_shard: {err}"}  # fmt: skip
        record = decode_members(raw, span[0], index, j, self.keys)
        record["__url__"] = url
        return record


class _OpenShard:
    """One shard opened for sequential reading: its index and a way to read sample `j`."""

    def __init__(self, url: str, size: int, index_dir: str | None, keys: dict):
        self.url, self.keys = url, keys
        if _is_remote(url):  # one sequential read, then samples from memory
            self._data = read_bytes(url)
            self.index = build_index(url, data=self._data)
        else:
            self._data = None
            self.index = load_index(url, index_dir, tar_size=size)

    def __len__(self) -> int:
        return len(self.index)

    def record(self, j: int) -> dict:
        wanted = [e for e in (*self.keys["image"], self.keys["caption"], self.keys["json"]) if e]
        span = self.index.span(j, wanted)
        if span is None:
            return {"image": None, "caption": None, "__key__": self.index.keys[j], "__url__": self.url}
        if self._data is not None:
            raw = self._data[span[0] : span[1]]
        else:
            raw = read_bytes(self.url, span[0], span[1] - span[0])
        record = decode_members(raw, span[0], self.index, j, self.keys)
        record["__url__"] = self.url
        return record


class ShardReaders(grain.IterDataset):
    """A stream split into readers: reader `r = process_index * W + worker` of `R = process_count
    * W` (W = `max(num_workers, 1)`) reads only the files `urls[r::R]`, so hosts and workers never
    read the same file; grain's `mp_prefetch` tells each worker copy its index through
    `set_slice`. Subclasses give `__iter__` (`self.reader()` is this copy's reader number).

    Raises:
      ConfigError: no file, an unreadable one, or fewer files than readers (open_clip asserts
        the same).
    """

    def __init__(
        self, urls, *, process_index: int, process_count: int, num_workers: int, what: str = "shards"
    ):
        super().__init__()
        spec = urls if isinstance(urls, str) else "::".join(urls)
        self.urls = expand_urls(urls)
        self.sizes = check_shards(self.urls, spec)
        self.workers = max(num_workers, 1)
        self.process_index, self.readers = process_index, process_count * self.workers
        if len(self.urls) < self.readers:
            fewer = max(len(self.urls) // process_count, 1) if len(self.urls) >= process_count else 0
            raise ConfigError(
                f"config.data.urls names {len(self.urls)} {what} but {process_count} processes x {self.workers} "
                f"workers = {self.readers} readers each need {what} of their own; use more {what} or "
                f"--config.data.num_workers={fewer}"
            )
        self._worker = 0

    def set_slice(self, sl: slice, sequential_slice: bool = False) -> None:
        del sequential_slice
        self._worker = sl.start or 0

    def reader(self) -> int:
        return self.process_index * self.workers + self._worker

    def mine(self, reader: int) -> list[int]:
        """The file numbers reader `reader` reads."""
        return list(range(reader, len(self.urls), self.readers))


class _ResampledIterator(grain.DatasetIterator):
    def __init__(self, ds: ResampledShards, reader: int):
        super().__init__()
        self._ds, self._reader = ds, reader
        self._mine = ds.mine(reader)
        self._draw, self._position, self._shard = 0, 0, None

    def _open(self):
        if self._shard is None:
            pick = np.random.default_rng([self._ds.seed, self._reader, self._draw]).integers(len(self._mine))
            shard = self._mine[int(pick)]
            try:
                self._shard = _OpenShard(
                    self._ds.urls[shard], self._ds.sizes[shard], self._ds.index_dir, self._ds.keys
                )
            except OSError as err:
                self._shard = err
        return self._shard

    def __next__(self):
        while True:
            shard = self._open()
            rng_key = (self._reader, self._draw, self._position)
            if isinstance(shard, OSError):
                self._draw, self._position, self._shard = self._draw + 1, 0, None
                return {"image": None, "caption": None, "__key__": "", "__url__": "",
                        "__error__": f"unreadable_shard: {shard}", "__rng__": rng_key}  # fmt: skip
            if self._position < len(shard):
                record = shard.record(self._position)
                record["__rng__"] = rng_key
                self._position += 1
                return record
            self._draw, self._position, self._shard = self._draw + 1, 0, None

    def get_state(self):
        return {"draw": self._draw, "position": self._position}

    def set_state(self, state):
        self._draw, self._position, self._shard = int(state["draw"]), int(state["position"]), None


class ResampledShards(ShardReaders):
    """An endless stream of records drawn shard by shard with replacement (open_clip's
    `--dataset-resampled`), for sets too big to index up front.

    Each reader (see `ShardReaders`) draws from its own shards; its `k`-th draw is chosen by
    `default_rng([seed, r, k])` and read in tar order. Its state is `{"draw": k, "position": j}`:
    a resume reopens draw `k` at sample `j`. Records carry `"__rng__": (r, k, j)`, from which
    their augmentation is seeded.
    """

    def __init__(self, urls, *, seed: int, process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                 image_keys=DEFAULT_IMAGE_KEYS, caption_key: str = "txt", json_key: str = "json",
                 index_dir: str | None = None):  # fmt: skip
        super().__init__(
            urls, process_index=process_index, process_count=process_count, num_workers=num_workers
        )
        self.seed, self.index_dir = seed, index_dir
        self.keys = {"image": tuple(image_keys), "caption": caption_key, "json": json_key}

    def __iter__(self):
        return _ResampledIterator(self, self.reader())

    def __str__(self):
        return f"ResampledShards({len(self.urls)} shards, {self.readers} readers)"


def _encode_image(image, image_format: str, quality: int) -> bytes:
    from PIL import Image

    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    array = np.asarray(image)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    buffer = io.BytesIO()
    if image_format == "jpg":
        Image.fromarray(array).convert("RGB").save(buffer, "JPEG", quality=quality)
    else:
        Image.fromarray(array).save(buffer, image_format.upper())
    return buffer.getvalue()


def _json_value(value):
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o444, 0  # fixed metadata: identical bytes on every run
    tar.addfile(info, io.BytesIO(data))


def write_shards(records, out_dir: str, *, samples_per_shard: int = 1000, image_format: str = "jpg",
                 quality: int = 95, caption_key: str = "caption") -> list[str]:  # fmt: skip
    """Writes records as webdataset tar shards in img2dataset's layout; returns the tar paths.

    `out_dir/00000.tar` holds `KEY.jpg` (or .png), `KEY.txt` and `KEY.json` per sample, with
    9-digit keys (shard number, then the sample's place in the shard); `00000_stats.json` beside
    it gives img2dataset's counts. A record is a dict with "image" (encoded bytes, written as
    they are, or uint8 pixels, encoded as `image_format`; None: no image member) and
    `caption_key` (None: no caption member); every other field with a JSON value goes into the
    sample's .json (bytes as text), as img2dataset stores its metadata there.
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    if image_format not in ("jpg", "png", "webp"):
        raise ValueError(f"image_format must be jpg, png or webp, got {image_format!r}")
    os.makedirs(out_dir, exist_ok=True)
    paths, tar, shard, written = [], None, -1, 0

    def close():
        if tar is None:
            return
        tar.close()
        stats = {"count": written, "successes": written, "failed_to_download": 0, "failed_to_resize": 0}
        with open(os.path.join(out_dir, f"{shard:05d}_stats.json"), "w") as f:
            json.dump(stats, f)

    for i, record in enumerate(records):
        if i % samples_per_shard == 0:
            close()
            shard, written = shard + 1, 0
            paths.append(os.path.join(out_dir, f"{shard:05d}.tar"))
            tar = tarfile.open(paths[-1], "w", format=tarfile.USTAR_FORMAT)
        key = f"{shard:05d}{i % samples_per_shard:04d}"
        image, caption = record.get("image"), record.get(caption_key)
        meta = {"key": key}
        if image is not None:
            ext = (
                image_format if not isinstance(image, (bytes, bytearray)) else _sniff_extension(bytes(image))
            )
            _add_member(tar, f"{key}.{ext}", _encode_image(image, image_format, quality))
        if caption is not None:
            text = caption.decode("utf-8") if isinstance(caption, bytes) else str(caption)
            _add_member(tar, f"{key}.txt", text.encode("utf-8"))
            meta["caption"] = text
        for name, value in record.items():
            if name not in ("image", caption_key):
                value = _json_value(value)
                if isinstance(value, (str, int, float, bool, list, dict)) or value is None:
                    meta[name] = value
        _add_member(tar, f"{key}.json", json.dumps(meta).encode("utf-8"))
        written += 1
    close()
    return paths


def _sniff_extension(data: bytes) -> str:
    if data[:3] == b"\xff\xd8\xff":
        return "jpg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return "jpg"  # unknown bytes (e.g. a corrupt image) keep the default image member name
