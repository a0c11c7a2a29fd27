"""Speed and memory of the CLIP loss's forward + backward: dense, blockwise, Pallas, open_clip, Inf-CL.

One run, one table: for each batch size B and implementation, milliseconds per forward+backward
(median after warm-up; one timed run when a step takes over 5 s), peak device memory and
achieved TFLOP/s counting 6·B²·D (the FLOPs of a dense loss that stores the logits; the
blockwise and Pallas paths execute 8·B²·D, recomputing the logits once in the backward pass).
Each row runs in a fresh subprocess so that peak memory is that row's alone; out-of-memory is
reported as "OOM".

    python benchmarks/loss_speed.py --batch 16384 65536 262144 1048576 --dtype float32 bfloat16 \
        --out benchmarks/results/loss_speed_gpu.json --md benchmarks/results/loss_speed_gpu.md
    python benchmarks/loss_speed.py --smoke          # tiny sizes, any machine (CPU included)

Rows: `jax_dense` (`clip_loss`, materialised logits), `jax_blockwise` (`clip_loss(...,
block_size=--block)`, the XLA loop), `jax_pallas` (`clip_loss(..., impl="pallas")`, GPU only;
with `--smoke` on a machine without GPU it runs in Pallas's interpret mode), `open_clip` (its
`ClipLoss`, from an installed open_clip or `--open-clip-loss-py path/to/loss.py`, which needs
only torch) and `inf_cl` (Inf-CL's `cal_inf_loss`, when the `inf_cl` package is installed).
`benchmarks/gpu_check.sh` runs the whole table on a GPU. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMPLS = ("jax_dense", "jax_blockwise", "jax_pallas", "open_clip", "inf_cl")
# FLOPs each implementation executes per forward + backward, in units of B²·D.
EXECUTED_FLOPS = {"jax_dense": 6, "jax_blockwise": 8, "jax_pallas": 8}


def _timeit(step, repeats: int, sync) -> float:
    step()
    sync()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - start)
        if times[0] > 5.0:  # a big step: one timed run is precise enough
            break
    return sorted(times)[len(times) // 2]


def run_jax(
    impl: str,
    batch: int,
    dim: int,
    dtype: str,
    block: int,
    repeats: int,
    compile_only: bool = False,
    interpret_ok: bool = False,
) -> dict:
    import jax
    import jax.numpy as jnp

    sys.path.insert(0, ROOT)
    from contrastive_jax import l2_normalize, losses, tiled

    options = {"jax_dense": {}, "jax_blockwise": {"block_size": block}, "jax_pallas": {"impl": "pallas"}}[
        impl
    ]
    if impl == "jax_pallas" and not tiled.pallas_available(
        jnp.zeros((1, dim), dtype), jnp.zeros((1, dim), dtype)
    ):
        if not interpret_ok:
            return {"status": "skipped (no GPU Triton backend)"}
        options = {"impl": "pallas_interpret"}
    if compile_only:
        x = y = jax.ShapeDtypeStruct((batch, dim), jnp.dtype(dtype))
        scale = jax.ShapeDtypeStruct((), jnp.float32)
    else:
        keys = jax.random.split(jax.random.key(0), 2)
        x = l2_normalize(jax.random.normal(keys[0], (batch, dim))).astype(dtype)
        y = l2_normalize(jax.random.normal(keys[1], (batch, dim))).astype(dtype)
        scale = jnp.float32(14.0)
    loss = lambda x, y, s: losses.clip_loss(x, y, s, **options)
    step_fn = jax.jit(jax.value_and_grad(loss, (0, 1, 2)))
    compiled = step_fn.lower(x, y, scale).compile()
    analysis = compiled.memory_analysis()
    compiled_bytes = (
        analysis.temp_size_in_bytes + analysis.argument_size_in_bytes + analysis.output_size_in_bytes
    )
    if compile_only:
        return {
            "peak_bytes": compiled_bytes,
            "device": str(jax.devices()[0].device_kind),
            "status": "compiled only",
        }
    seconds = _timeit(lambda: jax.block_until_ready(step_fn(x, y, scale)), repeats, lambda: None)
    stats = jax.devices()[0].memory_stats() or {}
    peak = stats.get("peak_bytes_in_use")
    if peak is None:  # CPU: the compiled program's own accounting
        peak = compiled_bytes
    status = "ok (Pallas interpret mode)" if options.get("impl") == "pallas_interpret" else "ok"
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "device": str(jax.devices()[0].device_kind),
        "status": status,
    }


def run_torch(
    impl: str, batch: int, dim: int, dtype: str, repeats: int, open_clip_loss_py: str | None
) -> dict:
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.nn.functional.normalize(torch.randn(batch, dim, device=device, generator=gen), dim=-1).to(
        torch_dtype
    )
    y = torch.nn.functional.normalize(torch.randn(batch, dim, device=device, generator=gen), dim=-1).to(
        torch_dtype
    )
    x.requires_grad_(True)
    y.requires_grad_(True)
    scale = torch.tensor(14.0, device=device, requires_grad=True)
    if impl == "open_clip":
        if open_clip_loss_py:
            import importlib.util

            spec = importlib.util.spec_from_file_location("open_clip_loss", open_clip_loss_py)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            clip_loss = module.ClipLoss()
        else:
            from open_clip.loss import ClipLoss

            clip_loss = ClipLoss()
        fn = lambda: clip_loss(x, y, scale)
    else:
        from inf_cl import cal_inf_loss

        labels = torch.arange(batch, device=device)
        fn = lambda: (
            0.5
            * (
                cal_inf_loss(x, y, labels=labels, scale=scale)
                + cal_inf_loss(y, x, labels=labels, scale=scale)
            )
        )

    def step():
        x.grad = y.grad = scale.grad = None
        fn().mean().backward()

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = _timeit(step, repeats, sync)
    peak = torch.cuda.max_memory_allocated() if device == "cuda" else None
    return {
        "seconds": seconds,
        "peak_bytes": peak,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
    }


def run_row(args) -> dict:
    """Runs one configuration (called in a child process)."""
    try:
        if args.impl.startswith("jax"):
            result = run_jax(args.impl, args.batch[0], args.dim, args.dtype[0], args.block, args.repeats,
                             args.compile_only, args.smoke)  # fmt: skip
        else:
            result = run_torch(
                args.impl, args.batch[0], args.dim, args.dtype[0], args.repeats, args.open_clip_loss_py
            )
        result.setdefault("status", "ok")
    except ImportError as err:
        result = {"status": f"skipped ({err.name or err} not installed)"}
    except Exception as err:  # noqa: BLE001 - report OOM and failures as rows, keep the table going
        text = f"{type(err).__name__}: {err}"
        oom = "RESOURCE_EXHAUSTED" in text or "out of memory" in text.lower() or "OutOfMemory" in text
        result = {"status": "OOM" if oom else f"error: {text[:300]}"}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[16384, 65536, 262144, 1048576])
    parser.add_argument("--dim", type=int, default=512)
    parser.add_argument(
        "--dtype", nargs="+", default=["float32", "bfloat16"], choices=["float32", "bfloat16"]
    )
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument("--block", type=int, default=1024, help="block_size of the tiled path")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--timeout", type=int, default=900, help="seconds per row")
    parser.add_argument("--open-clip-loss-py", default=None)
    parser.add_argument(
        "--smoke",
        "--quick",
        action="store_true",
        help="B in {256, 512}, D=64: a smoke run anywhere (the Pallas row interpreted without a GPU)",
    )
    parser.add_argument(
        "--compile-only",
        action="store_true",
        help="JAX rows: report the compiled program's memory (XLA's accounting), do not run",
    )
    parser.add_argument("--out", default=None, help="write the rows as JSON here")
    parser.add_argument("--md", default=None, help="write the markdown table here")
    parser.add_argument("--impl", help=argparse.SUPPRESS)  # child mode
    args = parser.parse_args()
    if args.impl:
        print(json.dumps(run_row(args)))
        return
    if args.smoke:
        args.batch, args.dim, args.block, args.repeats = [256, 512], 64, 128, 2

    rows = []
    table = [
        "| impl | dtype | B | D | ms fwd+bwd | peak GB | TFLOP/s (6·B²·D) | TFLOP/s executed | status |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    print("\n".join(table), flush=True)
    for dtype in args.dtype:
        for batch in args.batch:
            for impl in args.impls:
                command = [sys.executable, os.path.abspath(__file__), "--impl", impl, "--batch", str(batch),
                           "--dim", str(args.dim), "--dtype", dtype, "--block", str(args.block),
                           "--repeats", str(args.repeats)] + (["--compile-only"] if args.compile_only else [])  # fmt: skip
                command += ["--smoke"] if args.smoke else []
                if args.open_clip_loss_py:
                    command += ["--open-clip-loss-py", args.open_clip_loss_py]
                try:
                    done = subprocess.run(command, capture_output=True, text=True, timeout=args.timeout)
                    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
                    result = json.loads(lines[-1]) if lines else {"status": f"error: {done.stderr[-300:]}"}
                except subprocess.TimeoutExpired:
                    result = {"status": f"timeout after {args.timeout}s"}
                row = {"impl": impl, "dtype": dtype, "batch": batch, "dim": args.dim, **result}
                if "seconds" in result:
                    row["tflops"] = 6 * batch**2 * args.dim / result["seconds"] / 1e12
                    if impl in EXECUTED_FLOPS:
                        executed = EXECUTED_FLOPS[impl] * batch**2 * args.dim
                        row["executed_tflops"] = executed / result["seconds"] / 1e12
                rows.append(row)
                ms = f"{1e3 * row['seconds']:.1f}" if "seconds" in row else "-"
                gb = f"{row['peak_bytes'] / 1e9:.2f}" if row.get("peak_bytes") else "-"
                tf = f"{row['tflops']:.1f}" if "tflops" in row else "-"
                executed = f"{row['executed_tflops']:.1f}" if "executed_tflops" in row else "-"
                line = f"| {impl} | {dtype} | {batch} | {args.dim} | {ms} | {gb} | {tf} | {executed} | {row['status']} |"
                table.append(line)
                print(line, flush=True)
    for path, text in ((args.out, json.dumps(rows, indent=2)), (args.md, "\n".join(table) + "\n")):
        if path:
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
            with open(path, "w") as f:
                f.write(text)


if __name__ == "__main__":
    main()
