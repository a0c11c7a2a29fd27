"""Per-device memory of the real train step for the model presets at several FSDP sizes.

For each preset (ViT-B/16 ... ViT-g/14, CLIP) and each `--fsdp` size this builds the trainer's
mesh (data = 1, fsdp = N devices), the train state's layout (`train.abstract_state`, nothing
allocated) and compiles `train.make_train_step` for `--batch-per-device` image-text pairs per
device (default 8).
From the compiled program's `memory_analysis()` it reports per device:

* `state_mib`: parameters + optimizer state as the step receives them (its argument bytes minus
  the batch), the quantity FSDP divides by N;
* `temp_mib`: the step's temporaries (activations, gathered parameters, gradients);
* `peak_mib`: arguments + temporaries (outputs alias the donated arguments).

`--activations` reports instead what the backward pass keeps from the forward pass (VJP
residuals, traced without compiling) for ViT-B/16 with and without `model.remat` and
bfloat16 compute: the memory those two switches trade.

On CPU it fakes `max(--fsdp)` host devices (set before jax is imported). The state bytes follow
from the layout on any backend; temporaries depend on the backend's XLA scheduler (the CPU
compiler has no latency-hiding scheduler), so CPU temporaries say nothing exact about a GPU/TPU.

    python benchmarks/fsdp_memory.py --presets B/16 --fsdp 1 8            # about 2 minutes
    python benchmarks/fsdp_memory.py --compile-up-to 8 --out results/fsdp_memory_cpu.json \
        --md results/fsdp_memory_cpu.md
    python benchmarks/fsdp_memory.py --activations     # remat / bf16: activations kept, B/16
    python benchmarks/fsdp_memory.py --presets B/16 --fsdp 1 --batch-per-device 64 --grad-accum 1 4 16 \
        --out results/grad_accum_memory_cpu.json --md results/grad_accum_memory_cpu.md

`--grad-accum K ...` compiles the step with `config.grad_accum_steps = K` at the same global
batch: K micro-batches contrasted as one batch (exact), one micro-batch of activations at a time.

Each (preset, fsdp) row compiles in a fresh subprocess, so one row's memory never counts in
another's.
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

_RESULT = "FSDP_ROW_RESULT "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)
_MIB = 2**20


def compiled_memory(config, batch_per_device: int = 1, grad_accum_steps: int = 1):
    """`(memory_analysis, state_bytes, batch_bytes)` of one compiled train step of `config`.

    `state_bytes` is what one device stores of the parameters and optimizer state by their
    shardings; `batch_bytes` the per-device batch. Nothing is allocated.
    """
    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from contrastive_jax import parallel, train

    mesh = train.make_mesh(config)
    graphdef, rest, optimizer, state, shardings = train.abstract_state(config, mesh=mesh)
    step = train.make_train_step(
        graphdef, optimizer, config.loss, mesh, shardings, grad_accum_steps=grad_accum_steps
    )
    split = NamedSharding(mesh, P(("data", "fsdp")))
    size, length = config.model.vision.image_size, config.model.text.context_length
    batch_size = batch_per_device * mesh.size
    batch = {
        "image": jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32, sharding=split),
        "tokens": jax.ShapeDtypeStruct((batch_size, length), jnp.int32, sharding=split),
    }
    compiled = step.lower(state["params"], rest, state["opt_state"], state["loss_state"], batch).compile()
    stored = parallel.bytes_per_device({k: state[k] for k in ("params", "opt_state")})
    batch_bytes = sum(int(np.prod(x.shape)) // mesh.size * x.dtype.itemsize for x in batch.values())
    return compiled.memory_analysis(), stored, batch_bytes


def preset_config(preset: str, fsdp: int, dtype: str = "bfloat16"):
    from contrastive_jax import models
    from experiments.configs import vit_b16

    config = vit_b16.get_config()
    with config.unlocked():
        config.model = models.model_config(preset, "clip", dtype=dtype)
        config.mesh.data, config.mesh.fsdp = 1, fsdp
        config.loss.block_size = None
    return config


def run_row(
    preset: str, fsdp: int, dtype: str, batch_per_device: int, compile_step: bool, grad_accum_steps: int = 1
) -> dict:
    from flax import nnx

    from contrastive_jax import models, parallel, train

    config = preset_config(preset, fsdp, dtype)
    started = time.time()
    abstract = nnx.eval_shape(lambda: models.create_model(config.model, rngs=nnx.Rngs(0)))
    row = {
        "preset": preset,
        "fsdp": fsdp,
        "dtype": dtype,
        "batch_per_device": batch_per_device,
        "grad_accum_steps": grad_accum_steps,
        "params_m": round(models.count_params(abstract) / 1e6, 2),
    }
    if not compile_step:  # the layout's bytes only (equal to the compiled arguments in every compiled row)
        *_, state, _ = train.abstract_state(config, mesh=train.make_mesh(config))
        stored = parallel.bytes_per_device({k: state[k] for k in ("params", "opt_state")})
        return dict(row, state_by_sharding_mib=round(stored / _MIB, 1), compiled=False)
    memory, stored, batch_bytes = compiled_memory(config, batch_per_device, grad_accum_steps)
    return dict(
        row,
        compiled=True,
        state_mib=round((memory.argument_size_in_bytes - batch_bytes) / _MIB, 1),
        state_by_sharding_mib=round(stored / _MIB, 1),
        temp_mib=round(memory.temp_size_in_bytes / _MIB, 1),
        peak_mib=round((memory.argument_size_in_bytes + memory.temp_size_in_bytes) / _MIB, 1),
        compile_s=round(time.time() - started, 1),
    )


def activation_bytes(loss_fn, params) -> int:
    """Bytes the backward pass keeps from the forward pass (VJP residuals), parameters excluded.

    Backend-independent (traced, not compiled): what `model.remat` and `model.dtype` change,
    before any XLA scheduling.
    """
    import jax
    import numpy as np

    residuals = jax.eval_shape(lambda p: jax.tree.leaves(jax.vjp(loss_fn, p)[1]), params)
    size = lambda tree: sum(x.size * np.dtype(x.dtype).itemsize for x in jax.tree.leaves(tree))  # noqa: E731
    return size(residuals) - size(params)


def clip_loss_fn(model_config, batch_size: int):
    """`(loss_fn(params), params)`: the CLIP loss of `model_config` on a batch of shapes only."""
    import jax
    import jax.numpy as jnp
    from flax import nnx

    from contrastive_jax import losses, models

    abstract = nnx.eval_shape(lambda: models.create_model(model_config, rngs=nnx.Rngs(0)))
    graphdef, params, rest = nnx.split(abstract, nnx.Param, ...)
    size, length = model_config.vision.image_size, model_config.text.context_length
    images = jax.ShapeDtypeStruct((batch_size, size, size, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((batch_size, length), jnp.int32)

    def loss_fn(params):
        model = nnx.merge(graphdef, params, rest)
        image = jnp.zeros(images.shape, images.dtype)
        text = jnp.ones(tokens.shape, tokens.dtype)
        out = model(image, text)
        return losses.clip_loss(out["image_emb"], out["text_emb"], out["logit_scale"])

    return loss_fn, params


def activation_rows(preset: str = "B/16", batch_size: int = 32) -> list[dict]:
    """Activation memory of `preset` per `batch_size` pairs with remat and the compute dtype."""
    from contrastive_jax import models

    rows = []
    for remat in (False, True):
        for dtype in ("float32", "bfloat16"):
            loss_fn, params = clip_loss_fn(
                models.model_config(preset, "clip", dtype=dtype, remat=remat), batch_size
            )
            kept = activation_bytes(loss_fn, params)
            rows.append(
                dict(preset=preset, batch=batch_size, remat=remat, dtype=dtype, activations_mib=kept / _MIB)
            )
    return rows


def _worker(args, preset: str, fsdp: int, devices: int, k: int) -> None:
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    row = run_row(preset, fsdp, args.dtype, args.batch_per_device, fsdp <= args.compile_up_to, k)
    print(_RESULT + json.dumps(row), flush=True)


def markdown(rows: list[dict]) -> str:
    lines = [
        "| preset | parameters | fsdp | micro-batches | params + optimizer / device | temporaries / device "
        "| peak / device |",
        "|---|---|---|---|---|---|---|",
    ]
    gib = lambda r, key: f"{r[key] / 1024:.2f} GiB" if key in r else "not compiled"  # noqa: E731
    for r in rows:
        state = (
            gib(r, "state_mib") if r["compiled"] else f"{r['state_by_sharding_mib'] / 1024:.2f} GiB (layout)"
        )
        lines.append(
            f"| {r['preset']} | {r['params_m']}M | {r['fsdp']} | {r.get('grad_accum_steps', 1)} | {state} "
            f"| {gib(r, 'temp_mib')} | {gib(r, 'peak_mib')} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--presets", nargs="+", default=["B/16", "L/14", "H/14", "g/14"])
    parser.add_argument("--fsdp", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--dtype", default="bfloat16", choices=["float32", "bfloat16"])
    parser.add_argument("--batch-per-device", type=int, default=8, help="image-text pairs per device")
    parser.add_argument(
        "--compile-up-to",
        type=int,
        default=1 << 30,
        help="compile only rows with fsdp <= this; larger ones report the layout's state bytes "
        "(a 64-device CPU compile of L/14 takes over 10 minutes)",
    )
    parser.add_argument("--out", help="write the rows as JSON here")
    parser.add_argument("--md", help="write a markdown table here")
    parser.add_argument("--activations", action="store_true", help="remat / dtype table (B/16, 32 pairs)")
    parser.add_argument(
        "--grad-accum",
        nargs="+",
        type=int,
        default=[1],
        help="micro-batches per step (config.grad_accum_steps), each row at the same global batch",
    )
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.activations:
        rows = activation_rows()
        print("| preset | pairs | remat | compute dtype | activations kept for backward |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['preset']} | {r['batch']} | {r['remat']} | {r['dtype']} | {r['activations_mib'] / 1024:.2f} GiB |"
            )
        if args.out:
            with open(args.out, "w") as f:
                json.dump({"command": " ".join(sys.argv), "rows": rows}, f, indent=2)
        return
    devices = max(args.fsdp)
    if args.worker:
        preset, fsdp, k = args.worker
        _worker(args, preset, int(fsdp), devices, int(k))
        return
    rows = []
    for preset, fsdp, k in [(p, f, k) for p in args.presets for f in args.fsdp for k in args.grad_accum]:
        command = [sys.executable, os.path.abspath(__file__), "--worker", preset, str(fsdp), str(k)]
        command += ["--fsdp", *map(str, args.fsdp), "--dtype", args.dtype]
        command += [
            "--batch-per-device",
            str(args.batch_per_device),
            "--compile-up-to",
            str(args.compile_up_to),
        ]
        done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
        lines = [line for line in done.stdout.splitlines() if line.startswith(_RESULT)]
        if done.returncode or not lines:
            raise SystemExit(f"{preset} fsdp={fsdp} k={k} failed:\n{done.stderr[-3000:]}")
        row = json.loads(lines[-1][len(_RESULT) :])
        rows.append(row)
        print(json.dumps(row), flush=True)
    table = markdown(rows)
    print(table)
    meta = {
        "date": datetime.date.today().isoformat(),
        "host": platform.node(),
        "backend": "cpu (fake devices)",
        "command": " ".join(sys.argv),
        "batch": f"{args.batch_per_device} image-text pairs per device",
        "optimizer": "AdamW (params + mu + nu, float32)",
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    if args.md:
        with open(args.md, "w") as f:
            f.write(table + "\n")


if __name__ == "__main__":
    main()
