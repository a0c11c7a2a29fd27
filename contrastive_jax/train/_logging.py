"""Run outputs: a progress bar, metrics as JSONL and TensorBoard events, and end-of-run plots."""

from __future__ import annotations

import json
import os
import time

import numpy as np

from contrastive_jax import data, evaluate
from contrastive_jax.train._rundir import RunPaths


class MetricWriter:
    """Writes each logged step to `metrics.jsonl`, TensorBoard (if tensorboardX is installed)
    and a tqdm progress bar showing step/s and the loss.

    A resumed run starts at `initial_step`: lines of later steps (logged before the stop but
    after the checkpoint it resumes from) are dropped from metrics.jsonl, and TensorBoard is told
    to discard its events from `initial_step + 1` on (`purge_step`), so every step appears once.
    With `enabled=False` (processes other than 0) nothing is written.
    """

    def __init__(self, workdir: str, *, total_steps: int, initial_step: int = 0, enabled: bool = True):
        self.path = RunPaths(workdir).metrics
        self._enabled = enabled
        self._tb = self._bar = self._file = None
        self._last = (initial_step, time.time())
        if not enabled:
            return
        _truncate_after(self.path, initial_step)
        self._file = open(self.path, "a")
        try:
            from tensorboardX import SummaryWriter

            # Also at step 0: a run killed before its first checkpoint committed starts afresh.
            self._tb = SummaryWriter(RunPaths(workdir).tensorboard, purge_step=initial_step + 1)
        except ImportError:  # pragma: no cover - optional
            self._tb = None
        try:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=initial_step, dynamic_ncols=True, mininterval=1.0)
        except ImportError:  # pragma: no cover - optional
            self._bar = None

    def write(self, step: int, metrics: dict) -> None:
        if not self._enabled:
            return
        last_step, last_time = self._last
        now = time.time()
        values = {k: float(np.asarray(v)) for k, v in metrics.items()}
        values["steps_per_second"] = (step - last_step) / max(now - last_time, 1e-9)
        self._last = (step, now)
        self._file.write(json.dumps({"step": step, **values}) + "\n")
        self._file.flush()
        if self._tb is not None:
            for key, value in values.items():
                self._tb.add_scalar(f"train/{key}", value, step)
        if self._bar is not None:
            self._bar.update(step - self._bar.n)
            self._bar.set_postfix(loss=f"{values['loss']:.4f}", steps_s=f"{values['steps_per_second']:.2f}")

    def flush(self) -> None:
        """Puts every event written so far on disk (the loop calls it with each checkpoint, so a
        killed run loses no TensorBoard event of a step its checkpoint covers)."""
        if self._tb is not None:
            self._tb.flush()

    def close(self) -> None:
        if not self._enabled:
            return
        self._file.close()
        if self._tb is not None:
            self._tb.close()
        if self._bar is not None:
            self._bar.close()


def _truncate_after(path: str, step: int) -> None:
    """Keeps only the metrics.jsonl lines of steps <= `step` (atomically: write, then rename)."""
    if not os.path.exists(path):
        return
    with open(path) as f:
        lines = [line for line in f if line.strip()]
    kept = [line for line in lines if json.loads(line)["step"] <= step]
    if len(kept) == len(lines):
        return
    with open(path + ".tmp", "w") as f:
        f.writelines(kept)
    os.replace(path + ".tmp", path)


def read_metrics(workdir: str) -> list[dict]:
    with open(RunPaths(workdir).metrics) as f:
        return [json.loads(line) for line in f if line.strip()]


def save_plots(workdir: str, model, config, tokenizer, num_pairs: int = 12) -> dict[str, str]:
    """The loss curve and an image–text cosine-similarity matrix of test pairs, as PNGs.

    Drawn on bare `matplotlib.figure.Figure`s: pyplot's backend (a notebook's inline one, say)
    is left as the user set it.
    """
    from matplotlib.figure import Figure  # matplotlib: the train extra, imported when plotting

    paths = {}
    records = read_metrics(workdir)
    fig = Figure(figsize=(5, 3.5))
    ax = fig.subplots()
    ax.plot([r["step"] for r in records], [r["loss"] for r in records])
    ax.set(xlabel="step", ylabel="training loss", title=f"{config.loss.name} on {config.data.name}")
    fig.tight_layout()
    paths["loss_curve"] = os.path.join(workdir, "loss_curve.png")
    fig.savefig(paths["loss_curve"], dpi=120)

    if not data.has_eval_split(config.data):
        return paths
    held_out = data.input_from_config(config.data, "test", batch_size=num_pairs, tokenizer=tokenizer)
    batch = next(iter(held_out.dataset))
    encoders = evaluate.Encoders(model, pixel_mean=held_out.pixel_mean, pixel_std=held_out.pixel_std)
    sim = encoders.encode_image(batch["image"]) @ encoders.encode_text(batch["tokens"]).T
    fig = Figure(figsize=(6, 5))
    ax = fig.subplots()
    im = ax.imshow(sim, cmap="viridis")
    ax.set(xlabel="text", ylabel="image", title="cosine similarity of test pairs (diagonal = matches)")
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    paths["similarity"] = os.path.join(workdir, "similarity.png")
    fig.savefig(paths["similarity"], dpi=120)
    return paths
