"""The trainer's input: batches on the devices ahead of the step, their position in every
checkpoint, and the count of the records the pipeline skipped.

A checkpoint's `meta["data"]` is `{"layout": {...}, "states": [state of process 0, 1, ...]}`:
each process's grain iterator state after the last batch its step consumed (the batches the
prefetch thread holds are read again after a resume), and the layout that wrote it (worker and
process counts, per-process batch). The pipeline's order depends on that layout, so a resume
with another one is refused unless `data.reseed_on_layout_change` asks to continue with a fresh
order drawn from `(seed, step)`.
"""

from __future__ import annotations

import json
import logging

import jax
import numpy as np
from jax.experimental import multihost_utils

from contrastive_jax import data
from contrastive_jax._errors import ConfigError

log = logging.getLogger(__name__)


def _gather_strings(text: str) -> list[str]:
    """`text` of every process, in process order (a collective: all processes call it)."""
    if jax.process_count() == 1:
        return [text]
    raw = np.frombuffer(text.encode("utf-8"), np.uint8)
    lengths = multihost_utils.process_allgather(np.asarray([raw.size], np.int32)).reshape(-1)
    padded = np.zeros(int(lengths.max()), np.uint8)
    padded[: raw.size] = raw
    rows = multihost_utils.process_allgather(padded).reshape(len(lengths), -1)
    return [bytes(row[:n]).decode("utf-8") for row, n in zip(rows, lengths)]


def data_meta(iterator, layout: dict) -> dict:
    """The checkpoint's record of the data position: every process's state and the layout."""
    states = [json.loads(s) for s in _gather_strings(json.dumps(iterator.get_state()))]
    return {"layout": layout, "states": states}


def _layout_change(saved: dict, current: dict) -> str:
    names = {
        "num_workers": "data.num_workers",
        "process_count": "processes",
        "batch_size": "batch per process",
    }
    return ", ".join(
        f"{names[k]} {saved.get(k)} -> {current[k]}" for k in names if saved.get(k) != current[k]
    )


def restore_position(iterator, meta, layout: dict, config, step: int) -> str | None:
    """Puts `iterator` where the checkpoint's data position says, or explains why it cannot.

    Returns None when restored, or "reseed" when the layout changed and the config allows a
    fresh order (the caller rebuilds the pipeline with `reseeded(config, step)`).

    Raises:
      ConfigError: the layout changed (another worker or process count, another batch per
        process): the message names the change and the two ways on.
    """
    if "states" not in meta:  # checkpoints before the layout was recorded: one process, no workers;
        # their state counted batches of `batch_size`, the pipeline's now counts records
        meta = {"layout": dict(layout, num_workers=0, process_count=1),
                "states": [{"next_index": int(meta["next_index"]) * layout["batch_size"]}]}  # fmt: skip
    saved = meta["layout"]
    if _layout_change(saved, layout):
        if config.data.get("reseed_on_layout_change", False):
            log.warning(
                "The data layout changed since step %d (%s): continuing with a new data order seeded by "
                "(seed, step), as data.reseed_on_layout_change asks", step, _layout_change(saved, layout),
            )  # fmt: skip
            return "reseed"
        raise ConfigError(
            f"the checkpoint at step {step} was written with another data layout ({_layout_change(saved, layout)}), "
            "and the pipeline's order depends on it; resume with the saved values "
            f"(--config.data.num_workers={saved.get('num_workers')} on {saved.get('process_count')} process(es), "
            f"per-process batch {saved.get('batch_size')}), or pass --config.data.reseed_on_layout_change=True "
            "to continue with a new data order"
        )
    iterator.set_state(meta["states"][jax.process_index()])
    return None


def reseeded_seed(seed: int, step: int) -> int:
    """The data seed after a layout change at `step`: another order, the same for every rerun."""
    return int(np.random.SeedSequence([seed, step]).generate_state(1)[0] % (2**31))


class SkipCounter:
    """Counts the records the pipeline skipped, per kind, over the whole run (restored from the
    checkpoint); warns once per kind with the first example; `metrics()` sums every process."""

    def __init__(self, totals=None):
        self.totals = np.zeros(len(data.SKIP_KINDS), np.int64)
        if totals is not None:
            self.totals[: len(totals)] = totals
        self._warned: set[str] = set()

    def add(self, host: dict) -> None:
        counts = host.get("skipped")
        if counts is None or not counts.any():
            return
        self.totals += counts
        details = {}
        for text in np.asarray(host.get("skip_detail", [])).reshape(-1):
            for part in str(text).split("\n"):
                kind, _, detail = part.partition("|")
                if kind and kind not in details:
                    details[kind] = detail
        for kind, count in zip(data.SKIP_KINDS, counts):
            if count and kind not in self._warned:
                self._warned.add(kind)
                log.warning(
                    "Skipping %s (first: %s); the counts go to metrics.jsonl as data/skipped/%s",
                    data.SKIP_REASONS[kind], details.get(kind, "?"), kind,
                )  # fmt: skip

    def metrics(self) -> dict[str, int]:
        totals = self.totals
        if jax.process_count() > 1:
            totals = multihost_utils.process_allgather(totals).reshape(jax.process_count(), -1).sum(axis=0)
        out = {"data/skipped": int(totals.sum())}
        out.update({f"data/skipped/{k}": int(n) for k, n in zip(data.SKIP_KINDS, totals) if n})
        return out
