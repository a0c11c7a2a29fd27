"""img2dataset's parquet output (image bytes in a column) as a streaming source.

img2dataset with `--output_format parquet` writes one `00000.parquet` per shard with columns
`key`, `jpg` (the encoded image; null where the download failed), `txt` (the caption) and the
input's metadata (`url`, `width`, ...). Files are read row group by row group with grain's
`ParquetIterDataset`; each epoch visits this reader's files in an order drawn from
`(seed, epoch)`.
"""

from __future__ import annotations

import grain
import numpy as np

from contrastive_jax.data._webdataset import DEFAULT_IMAGE_KEYS, ShardReaders


def _row(row: dict, image_keys, caption_key: str, json_fields) -> dict:
    image = next((row[k] for k in image_keys if k in row and row[k] is not None), None)
    caption = row.get(caption_key, row.get("caption"))
    if isinstance(caption, np.ndarray):
        caption = caption.item() if caption.size == 1 else None
    record = {"image": bytes(image) if image is not None else None, "caption": caption}
    record["__key__"] = str(row.get("key", ""))
    record["json"] = {field: row[field] for field in json_fields if field in row}
    return record


class _ParquetIterator(grain.DatasetIterator):
    def __init__(self, ds: ParquetShards, reader: int):
        super().__init__()
        self._ds, self._reader = ds, reader
        self._mine = ds.mine(reader)
        self._epoch, self._file, self._rows, self._inner = 0, 0, 0, None

    def _order(self) -> list[int]:
        order = np.random.default_rng([self._ds.seed, self._reader, self._epoch]).permutation(len(self._mine))
        return [self._mine[k] for k in order]

    def _open(self, inner_state=None):
        url = self._ds.urls[self._order()[self._file]]
        self._url = url
        self._inner = grain.experimental.ParquetIterDataset(url).__iter__()
        if inner_state is not None:
            self._inner.set_state(inner_state)

    def __next__(self):
        while True:
            if self._ds.num_epochs is not None and self._epoch >= self._ds.num_epochs:
                raise StopIteration
            if self._inner is None:
                self._open()
            try:
                row = next(self._inner)
            except StopIteration:
                self._inner = None
                self._file += 1
                if self._file == len(self._mine):
                    self._epoch, self._file = self._epoch + 1, 0
                continue
            record = _row(row, self._ds.image_keys, self._ds.caption_key, self._ds.json_fields)
            record["__url__"] = self._url
            record["__rng__"] = (self._reader, self._epoch, self._file, self._rows)
            self._rows += 1
            return record

    def get_state(self):
        inner = None if self._inner is None else self._inner.get_state()
        return {"epoch": self._epoch, "file": self._file, "rows": self._rows, "inner": inner}

    def set_state(self, state):
        self._epoch, self._file, self._rows = int(state["epoch"]), int(state["file"]), int(state["rows"])
        self._inner = None
        if state["inner"] is not None:
            self._open(state["inner"])


class ParquetShards(ShardReaders):
    """Rows of parquet files as records `{"image": bytes | None, "caption", "json", "__key__"}`.

    Each reader (see `ShardReaders`) reads its own files, each epoch in the order
    `default_rng([seed, r, epoch])` draws, rows in file order (the pipeline's `shuffle_buffer`
    mixes them). State: epoch, file, rows read and grain's position inside the file.
    `num_epochs=None`: forever.
    """

    def __init__(self, urls, *, seed: int = 0, process_index: int = 0, process_count: int = 1, num_workers: int = 0,
                 num_epochs: int | None = None, image_keys=DEFAULT_IMAGE_KEYS, caption_key: str = "txt",
                 json_fields=()):  # fmt: skip
        super().__init__(
            urls, process_index=process_index, process_count=process_count, num_workers=num_workers,
            what="parquet files",
        )  # fmt: skip
        self.seed, self.num_epochs = seed, num_epochs
        self.image_keys, self.caption_key, self.json_fields = (
            tuple(image_keys),
            caption_key,
            tuple(json_fields),
        )

    def __iter__(self):
        return _ParquetIterator(self, self.reader())

    def __str__(self):
        return f"ParquetShards({len(self.urls)} files, {self.readers} readers)"
