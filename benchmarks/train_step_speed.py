"""Time of the real CLIP train step (forward, loss, backward, AdamW update) per attention choice.

For each `--attention` implementation (`config.model.attention`: "xla", today's default, and
"cudnn", cuDNN's fused attention) and each `--patch-dropout` rate (FLIP; 0 = off), this builds
experiments/configs/vit_b16.py with the `--preset` model (CLIP ViT-B/16 by default, bfloat16
compute), the trainer's mesh over every local device (data parallel) and `train.make_train_step`,
then times `--steps` steps on a fixed random batch of `--batch-per-device` uint8 images and
token rows per device after `--warmup` steps. Columns: median milliseconds per step, image-text
pairs per second, peak device memory (where the backend reports it) and the compile + warm-up
time. Each row runs in its own subprocess, so a row that fails (e.g. "cudnn" without cuDNN, or
out of memory) reports its error and the table goes on.

    python benchmarks/train_step_speed.py --out benchmarks/results/train_step_gpu.json \
        --md benchmarks/results/train_step_gpu.md        # ViT-B/16, xla vs cudnn (GPU)
    python benchmarks/train_step_speed.py --smoke         # tiny model, 2 steps, any machine

`benchmarks/gpu_check.sh` runs the first command. No number here has been measured on a GPU by
the session that wrote it.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
_RESULT = "STEP_ROW_RESULT "


def step_config(preset: str, attention: str, patch_dropout: float, batch_per_device: int, dtype: str):
    """vit_b16's training config with the `preset` CLIP model and the given attention / dropout."""
    import jax

    from contrastive_jax import models
    from experiments.configs import vit_b16

    config = vit_b16.get_config()
    with config.unlocked():
        config.model = models.model_config(preset, "clip", dtype=dtype)
        config.model.attention = attention
        config.model.vision.patch_dropout = patch_dropout
        config.mesh.data, config.mesh.fsdp = -1, 1
        config.batch_size = batch_per_device * jax.device_count()
        config.data.image_size = config.model.vision.image_size
        config.data.context_length = config.model.text.context_length
    return config


def random_batch(config, mesh):
    """A fixed batch as the input pipeline sends it: uint8 images, CLIP-style token rows."""
    import jax
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    rng = np.random.default_rng(0)
    size, length = config.model.vision.image_size, config.model.text.context_length
    vocab, n = config.model.text.vocab_size, config.batch_size
    tokens = rng.integers(1, vocab - 1, (n, length)).astype(np.int32)
    ends = rng.integers(length // 4, length, n)
    tokens[np.arange(length)[None, :] > ends[:, None]] = 0
    tokens[np.arange(n), ends] = vocab - 1  # the end token, the largest id
    batch = {"image": rng.integers(0, 256, (n, size, size, 3), dtype=np.uint8), "tokens": tokens}
    split = NamedSharding(mesh, P(("data", "fsdp")))
    return {key: jax.device_put(value, split) for key, value in batch.items()}


def run_row(args, attention: str, patch_dropout: float) -> dict:
    import jax
    import numpy as np

    from contrastive_jax import train

    row = dict(preset=args.preset, attention=attention, patch_dropout=patch_dropout, dtype=args.dtype)
    row.update(
        batch_per_device=args.batch_per_device,
        devices=jax.device_count(),
        device=jax.devices()[0].device_kind,
    )
    config = step_config(args.preset, attention, patch_dropout, args.batch_per_device, args.dtype)
    mesh = train.make_mesh(config)
    started = time.perf_counter()
    _, graphdef, rest, optimizer, state, shardings = train.init_state(config, 1, mesh=mesh)
    step = train.make_train_step(graphdef, optimizer, config.loss, mesh, shardings)
    batch = random_batch(config, mesh)
    params, opt_state, loss_state = state["params"], state["opt_state"], state["loss_state"]
    base = jax.random.key(0)
    times = []
    for i in range(args.warmup + args.steps):
        key = jax.random.fold_in(base, i) if patch_dropout > 0 else None
        tic = time.perf_counter()
        params, opt_state, loss_state, metrics = step(params, rest, opt_state, loss_state, batch, key)
        loss = float(jax.block_until_ready(metrics["loss"]))
        if i == args.warmup - 1:
            row["compile_and_warmup_s"] = round(time.perf_counter() - started, 1)
        if i >= args.warmup:
            times.append(time.perf_counter() - tic)
    ms = 1e3 * float(np.median(times))
    row.update(status="ok", step_ms=round(ms, 2), pairs_per_s=round(config.batch_size / ms * 1e3, 1))
    row["final_loss"] = loss
    stats = jax.local_devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        row["peak_gib"] = round(stats["peak_bytes_in_use"] / 2**30, 2)
    return row


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | attention | patch dropout | pairs / device | ms / step | pairs / s | peak memory | status |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms, rate = r.get("step_ms", ""), r.get("pairs_per_s", "")
        peak = f"{r['peak_gib']} GiB" if "peak_gib" in r else ""
        lines.append(
            f"| {r['preset']} | {r['attention']} | {r['patch_dropout']} | {r['batch_per_device']} | "
            f"{ms} | {rate} | {peak} | {r['status']} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--preset", default="B/16")
    parser.add_argument("--attention", nargs="+", default=["xla", "cudnn"], choices=["xla", "cudnn"])
    parser.add_argument("--patch-dropout", nargs="+", type=float, default=[0.0])
    parser.add_argument("--batch-per-device", type=int, default=128, help="image-text pairs per device")
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--steps", type=int, default=10, help="timed steps (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps first (the compile)")
    parser.add_argument("--smoke", action="store_true", help="tiny preset, 4 pairs, 2 steps")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds per row")
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--md", help="write a markdown table here")
    parser.add_argument("--worker", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.smoke:
        args.preset, args.batch_per_device, args.steps, args.warmup = "tiny", 4, 2, 1
    if args.worker:
        attention, rate = args.worker[0], float(args.worker[1])
        try:
            row = run_row(args, attention, rate)
        except Exception as error:  # reported as the row's status: e.g. no cuDNN, out of memory
            message = " ".join(f"{type(error).__name__}: {error}".split())[:300]
            row = dict(
                preset=args.preset, attention=attention, patch_dropout=rate, status=f"error: {message}"
            )
            row.update(batch_per_device=args.batch_per_device)
        print(_RESULT + json.dumps(row), flush=True)
        return
    rows = []
    for rate in args.patch_dropout:
        for attention in args.attention:
            command = [sys.executable, os.path.abspath(__file__), "--worker", attention, str(rate)]
            command += ["--preset", args.preset, "--batch-per-device", str(args.batch_per_device)]
            command += ["--dtype", args.dtype, "--steps", str(args.steps), "--warmup", str(args.warmup)]
            row = dict(preset=args.preset, attention=attention, patch_dropout=rate)
            row.update(batch_per_device=args.batch_per_device)
            try:
                done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=args.timeout)
            except subprocess.TimeoutExpired:
                row["status"] = f"timeout after {args.timeout:.0f} s"
            else:
                lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
                if lines:
                    row = json.loads(lines[-1][len(_RESULT) :])
                else:
                    error = [line for line in done.stderr.strip().splitlines() if line.strip()]
                    row["status"] = "failed: " + (error[-1][:200] if error else f"exit {done.returncode}")
            rows.append(row)
            print(json.dumps(row), flush=True)
    table = markdown(rows)
    print(table)
    meta = {"date": datetime.date.today().isoformat(), "host": platform.node(), "command": " ".join(sys.argv)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
