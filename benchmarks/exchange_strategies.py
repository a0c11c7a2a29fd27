"""Communication, memory and time of each negative-exchange strategy, per device and step.

For every loss (CLIP, SigLIP, iSogCLR), exchange ("all_gather", "ring", "grouped" on a
`group × member` mesh) and `block_size` (dense, tiled) this compiles one jitted
`value_and_grad` step of the loss w.r.t. the embeddings (and logit scale / bias) under
`jax.shard_map` over all devices, and reports per device:

* bytes sent per step, (a) counted from the compiled HLO by `hlo_accounting.collective_bytes`
  (every collective XLA kept, loops multiplied by their trip counts, ring-algorithm cost per
  device) and (b) predicted term by term from the algorithm (`hlo_accounting.exchange_bytes`),
  both in benchmarks/hlo_accounting.py;
* collective launches per step (how many latency-bound steps the strategy takes);
* peak memory: the compiled program's `memory_analysis()` (temp + arguments + outputs −
  aliased), and on GPU/TPU also the allocator's `peak_bytes_in_use`;
* time per step: the median of `--repeats` runs after a warm-up, `block_until_ready`.

Each row runs in a fresh subprocess (so allocator peaks and host memory start from zero).
On CPU the script fakes `--devices` (default 8) host devices; on GPU/TPU it uses all local
devices (or `--devices`). CPU "devices" share the host's cores and memory, so CPU times show
the compute each strategy does, not interconnect speed; bytes and memory are per device on any
backend.

    python benchmarks/exchange_strategies.py --quick                       # smoke run, seconds
    python benchmarks/exchange_strategies.py --out results/x.json --md results/x.md
    python benchmarks/exchange_strategies.py --compile-only                # bytes + memory only

See benchmarks/README.md ("Exchange strategies") for the measured table and how to read it.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time

_RESULT = "EXCHANGE_ROW_RESULT "
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:  # `benchmarks.hlo_accounting` (and the library) from a source checkout
    sys.path.insert(0, ROOT)
_MIB = 2**20


@dataclasses.dataclass(frozen=True)
class Row:
    """One benchmark configuration (what a worker subprocess runs)."""

    loss: str
    exchange: str
    groups: int  # > 1 only for "grouped": mesh (groups, devices // groups)
    block_size: int | None
    devices: int
    local_batch: int
    dim: int
    dtype: str
    repeats: int
    compile_only: bool
    memory_limit: float  # bytes of host memory the fake CPU devices may use together; < 0: auto

    @property
    def members(self) -> int:
        return self.devices // self.groups

    @property
    def mesh_label(self) -> str:
        return f"{self.groups}×{self.members}" if self.exchange == "grouped" else f"{self.devices}"


def _set_up_jax(devices: int) -> None:
    """Fakes `devices` CPU devices (harmless on GPU/TPU hosts) before jax is imported."""
    flags = os.environ.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        os.environ["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(devices, 1)}".strip()


def _host_memory_available() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return float("inf")


# ----------------------------------------------------------------------------------------------
# Worker: one row, in its own process.


def _build_step(row: Row):
    """The jitted step, its arguments, and the mesh, for one row."""
    import jax
    import jax.numpy as jnp
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import contrastive_jax as cj
    from contrastive_jax import losses, parallel

    devices = jax.devices()[: row.devices]
    if row.exchange == "grouped":
        names = ("group", "member")
        mesh = parallel.data_mesh(names, shape=(row.groups, row.members), devices=devices)
        axis_name = names
    else:
        names = ("data",)
        mesh = parallel.data_mesh("data", devices=devices)
        axis_name = "data"
    batch = P(names)
    global_batch = row.devices * row.local_batch
    dtype = jnp.dtype(row.dtype)
    keys = jax.random.split(jax.random.key(0), 2)
    image, text = (
        cj.l2_normalize(jax.random.normal(k, (global_batch, row.dim), jnp.float32)).astype(dtype)
        for k in keys
    )
    image, text = parallel.shard_batch((image, text), mesh, names)
    replicated = NamedSharding(mesh, P())
    options = dict(axis_name=axis_name, exchange=row.exchange)

    if row.loss == "clip":
        scale = jax.device_put(jnp.float32(1 / 0.07), replicated)
        fn = lambda x, y, s: losses.clip_loss(x, y, s, block_size=row.block_size, **options)
        sharded = jax.shard_map(fn, mesh=mesh, in_specs=(batch, batch, P()), out_specs=P())
        step = jax.jit(jax.value_and_grad(sharded, (0, 1, 2)))
        args = (image, text, scale)
    elif row.loss == "siglip":
        scale = jax.device_put(jnp.float32(10.0), replicated)
        bias = jax.device_put(jnp.float32(-10.0), replicated)
        fn = lambda x, y, s, b: losses.siglip_loss(x, y, s, b, block_size=row.block_size, **options)
        sharded = jax.shard_map(fn, mesh=mesh, in_specs=(batch, batch, P(), P()), out_specs=P())
        step = jax.jit(jax.value_and_grad(sharded, (0, 1, 2, 3)))
        args = (image, text, scale, bias)
    elif row.loss == "isogclr":
        if row.block_size is not None:
            raise ValueError("isogclr_loss has no block_size")
        state = jax.device_put(losses.isogclr_init(global_batch), replicated)
        ids = jax.device_put(jnp.arange(global_batch, dtype=jnp.int32), NamedSharding(mesh, batch))
        fn = lambda x, y, i, st: losses.isogclr_loss(x, y, i, st, check_indices=False, **options)
        sharded = jax.shard_map(fn, mesh=mesh, in_specs=(batch, batch, batch, P()), out_specs=(P(), P()))
        step = jax.jit(jax.value_and_grad(sharded, (0, 1), has_aux=True))
        args = (image, text, ids, state)
    else:
        raise ValueError(f"unknown loss {row.loss!r}")
    return step, args, devices


def run_row(row: Row) -> dict:
    """Compiles (and unless `compile_only`, times) one row; returns its measurements."""
    import jax
    import numpy as np

    from benchmarks.hlo_accounting import collective_bytes, exchange_bytes

    step, args, devices = _build_step(row)
    start = time.perf_counter()
    compiled = step.lower(*args).compile()
    compile_s = time.perf_counter() - start

    counted = collective_bytes(compiled.as_text())
    analytic = exchange_bytes(
        row.loss,
        row.exchange,
        local_batch=row.local_batch,
        dim=row.dim,
        num_devices=row.devices,
        members=row.members if row.exchange == "grouped" else None,
        itemsize=np.dtype(row.dtype).itemsize,
    )
    mem = compiled.memory_analysis()
    memory = None
    if mem is not None:
        memory = dict(
            temp=mem.temp_size_in_bytes,
            argument=mem.argument_size_in_bytes,
            output=mem.output_size_in_bytes,
            alias=mem.alias_size_in_bytes,
        )
        memory["peak"] = memory["temp"] + memory["argument"] + memory["output"] - memory["alias"]

    result = dict(
        row=dataclasses.asdict(row),
        mesh=row.mesh_label,
        negatives_per_row=(row.members if row.exchange == "grouped" else row.devices) * row.local_batch,
        platform=devices[0].platform,
        device_kind=devices[0].device_kind,
        compile_s=compile_s,
        hlo_bytes=counted["total"],
        hlo_by_kind=counted["by_kind"],
        hlo_collectives=[
            {k: c[k] for k in ("kind", "shape", "group_size", "executions", "bytes_sent", "op_name")}
            for c in counted["collectives"]
        ],
        collective_launches=sum(c["executions"] for c in counted["collectives"] if c["bytes_sent"] > 0),
        while_loops=counted["while_loops"],
        unknown_trip_counts=counted["unknown_trip_counts"],
        analytic_bytes=analytic["total"],
        analytic_forward=analytic["forward"],
        analytic_backward=analytic["backward"],
        analytic_terms=analytic["terms"],
        memory=memory,
        times_s=None,
        time_s=None,
        peak_bytes_in_use=None,
        loss=None,
        skipped=None,
    )
    if row.compile_only:
        return result
    # CPU "devices" share the host's memory: don't run a row that would exhaust it (and disturb
    # everything else on the machine); its bytes and compiled memory are still reported.
    limit = row.memory_limit if row.memory_limit >= 0 else 0.75 * _host_memory_available()
    if devices[0].platform == "cpu" and memory is not None and memory["peak"] * row.devices > limit:
        result["skipped"] = (
            f"not timed: its {row.devices} CPU devices need ~{memory['peak'] * row.devices / 2**30:.1f} GiB "
            f"of host memory together, {limit / 2**30:.1f} GiB allowed (--memory-limit-gib)"
        )
        return result

    out = jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(row.repeats):
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - start)
    value = out[0][0] if row.loss == "isogclr" else out[0]
    result.update(times_s=times, time_s=statistics.median(times), loss=float(value))
    stats = [d.memory_stats() for d in devices]
    if all(s and "peak_bytes_in_use" in s for s in stats):
        result["peak_bytes_in_use"] = max(s["peak_bytes_in_use"] for s in stats)
    return result


def _probe() -> dict:
    import jax

    devices = jax.devices()
    return dict(
        platform=devices[0].platform,
        device_kind=devices[0].device_kind,
        device_count=len(devices),
        jax=jax.__version__,
    )


# ----------------------------------------------------------------------------------------------
# Driver.


def _worker(argv: list[str], devices: int, timeout: float | None) -> dict:
    """Runs this script with `argv` in a fresh Python and returns the JSON it reports."""
    cmd = [sys.executable, os.path.abspath(__file__), *argv]
    env = dict(os.environ)
    _set_up_jax_env(env, devices)
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return dict(error=f"timed out after {timeout} s")
    for line in proc.stdout.splitlines():
        if line.startswith(_RESULT):
            return json.loads(line[len(_RESULT) :])
    tail = (proc.stderr or proc.stdout).strip().splitlines()[-5:]
    return dict(error=f"exit code {proc.returncode}: " + " | ".join(tail))


def _set_up_jax_env(env: dict, devices: int) -> None:
    flags = env.get("XLA_FLAGS", "")
    if "xla_force_host_platform_device_count" not in flags:
        env["XLA_FLAGS"] = f"{flags} --xla_force_host_platform_device_count={max(devices, 8)}".strip()


def _rows(args, devices: int) -> list[Row]:
    strategies = [("all_gather", 1), ("ring", 1)]
    strategies += [("grouped", g) for g in args.groups if 1 < g < devices and devices % g == 0]
    rows = []
    for loss in args.losses:
        for exchange, groups in strategies:
            for block in args.block_sizes:
                if loss == "isogclr" and block is not None:
                    continue
                rows.append(
                    Row(
                        loss=loss,
                        exchange=exchange,
                        groups=groups,
                        block_size=block,
                        devices=devices,
                        local_batch=args.local_batch,
                        dim=args.dim,
                        dtype=args.dtype,
                        repeats=args.repeats,
                        compile_only=args.compile_only,
                        memory_limit=-1.0 if args.memory_limit_gib is None else args.memory_limit_gib * 2**30,
                    )
                )
    return rows


def _unit(results: list[dict]) -> tuple[str, int]:
    """MiB for real sizes, KiB when every number would round to 0.0 MiB (e.g. --quick)."""
    sizes = [r.get("hlo_bytes") or 0 for r in results] + [
        (r.get("memory") or {}).get("peak", 0) for r in results
    ]
    return ("MiB", 2**20) if max(sizes, default=0) >= 2**20 else ("KiB", 2**10)


def _fmt(x, scale: int = _MIB) -> str:
    return "—" if x is None else f"{x / scale:,.1f}"


def markdown_table(results: list[dict]) -> str:
    """The results as a markdown table (one line per row)."""
    gpu = any(r.get("peak_bytes_in_use") is not None for r in results)
    unit, scale = _unit(results)
    head = [
        "loss",
        "exchange",
        "mesh",
        "block",
        "negatives / row",
        f"sent / device / step, HLO ({unit})",
        f"analytic ({unit})",
        "collective launches",
        f"peak memory / device ({unit})",
    ]
    head += [f"allocator peak ({unit})"] if gpu else []
    head += ["time / step (ms)", "loss value"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        row = r["row"]
        if "error" in r and "hlo_bytes" not in r:
            cells = [row["loss"], row["exchange"], "", str(row["block_size"] or "—")]
            lines.append("| " + " | ".join(cells) + f" | error: {r['error']} |")
            continue
        memory = r.get("memory") or {}
        cells = [
            row["loss"],
            row["exchange"],
            r["mesh"],
            str(row["block_size"] or "—"),
            f"{r['negatives_per_row']:,}",
            _fmt(r["hlo_bytes"], scale),
            _fmt(r["analytic_bytes"], scale),
            str(r["collective_launches"]),
            _fmt(memory.get("peak"), scale),
        ]
        cells += [_fmt(r.get("peak_bytes_in_use"), scale)] if gpu else []
        if r.get("time_s") is not None:
            cells += [f"{r['time_s'] * 1e3:,.0f}", f"{r['loss']:.4f}"]
        else:
            cells += ["not run" if not r.get("skipped") else "skipped*", "—"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--local-batch", type=int, default=4096, help="rows per device, b")
    parser.add_argument("--dim", type=int, default=512, help="embedding size D")
    parser.add_argument(
        "--devices", type=int, default=None, help="devices (default: 8 on CPU, all on GPU/TPU)"
    )
    parser.add_argument(
        "--losses", default="clip,siglip,isogclr", help="comma-separated: clip,siglip,isogclr"
    )
    parser.add_argument("--block-sizes", default="none,512", help="comma-separated; 'none' = dense")
    parser.add_argument("--groups", default="2,4", help="group counts for the grouped exchange")
    parser.add_argument("--dtype", default="float32", help="embedding dtype (float32 or bfloat16)")
    parser.add_argument("--repeats", type=int, default=3, help="timed steps per row (median reported)")
    parser.add_argument("--compile-only", action="store_true", help="bytes and compiled memory, no timing")
    parser.add_argument("--quick", action="store_true", help="tiny sizes (b=32, D=16, block 8): a smoke run")
    parser.add_argument("--in-process", action="store_true", help="run rows here, not in subprocesses")
    parser.add_argument("--row-timeout", type=float, default=None, help="seconds per row subprocess")
    parser.add_argument(
        "--memory-limit-gib",
        type=float,
        default=None,
        help="CPU: skip timing rows whose devices together need more host memory (default: 75%% of what is "
        "available when the row starts)",
    )
    parser.add_argument("--out", default=None, help="write all results as JSON here")
    parser.add_argument("--md", default=None, help="write the markdown table (with its command) here")
    parser.add_argument("--_row", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--_probe", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.local_batch, args.dim, args.repeats = 32, 16, 2
        if args.block_sizes == "none,512":
            args.block_sizes = "none,8"
    args.losses = [s.strip() for s in args.losses.split(",") if s.strip()]
    args.block_sizes = [None if s.strip().lower() == "none" else int(s) for s in args.block_sizes.split(",")]
    args.groups = [int(g) for g in args.groups.split(",") if g.strip()]
    return args


def _write_json(path: str, meta: dict, results: list[dict]) -> None:
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(dict(meta=meta, results=results), f, indent=1)


def main(argv=None) -> None:
    args = _parse_args(argv)
    if args._row is not None:  # worker mode
        row = Row(**json.loads(args._row))
        _set_up_jax(row.devices)
        print(_RESULT + json.dumps(run_row(row)), flush=True)
        return
    if args._probe:
        _set_up_jax(args.devices or 8)
        print(_RESULT + json.dumps(_probe()), flush=True)
        return

    command = "python benchmarks/exchange_strategies.py " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.in_process:
        _set_up_jax(args.devices or 8)
        info = _probe()
    else:
        info = _worker(["--_probe"] + (["--devices", str(args.devices)] if args.devices else []), 8, None)
        if "error" in info:
            raise SystemExit(f"could not start jax: {info['error']}")
    devices = args.devices or (8 if info["platform"] == "cpu" else info["device_count"])
    if devices > info["device_count"] and info["platform"] != "cpu":
        raise SystemExit(f"--devices {devices}, but only {info['device_count']} {info['platform']} devices")
    print(
        f"# {info['platform']} ({info['device_kind']}), {devices} devices, jax {info['jax']}; "
        f"local batch {args.local_batch}, D={args.dim}, {args.dtype}",
        flush=True,
    )

    meta = dict(
        command=command,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        platform=info["platform"],
        device_kind=info["device_kind"],
        devices=devices,
        jax=info["jax"],
        host=dict(machine=platform.machine(), cpus=os.cpu_count(), python=platform.python_version()),
        local_batch=args.local_batch,
        dim=args.dim,
        dtype=args.dtype,
        repeats=args.repeats,
        wall_s=None,
    )
    results = []
    start = time.perf_counter()
    for row in _rows(args, devices):
        t0 = time.perf_counter()
        if args.in_process:
            try:
                result = run_row(row)
            except Exception as err:  # keep going: one failing row should not lose the others
                result = dict(error=f"{type(err).__name__}: {err}")
        else:
            spec = json.dumps(dataclasses.asdict(row))
            result = _worker(["--_row", spec], devices, args.row_timeout)
        result.setdefault("row", dataclasses.asdict(row))
        result["wall_s"] = time.perf_counter() - t0
        results.append(result)
        status = (
            result.get("error")
            or result.get("skipped")
            or ("compiled" if result.get("time_s") is None else f"{result['time_s'] * 1e3:,.0f} ms/step")
        )
        print(
            f"  {row.loss:8s} {row.exchange:10s} mesh {row.mesh_label:4s} block {row.block_size!s:5s} "
            f"sent {_fmt(result.get('hlo_bytes'), 1024)} KiB  {status}  ({result['wall_s']:.0f} s)",
            flush=True,
        )
        if args.out:  # after every row, so that an interrupted run keeps what it measured
            _write_json(args.out, meta, results)
    total_s = meta["wall_s"] = time.perf_counter() - start

    table = markdown_table(results)
    print()
    print(table)
    notes = [
        f"\\* {r['row']['loss']} {r['row']['exchange']} {r['mesh']}: {r['skipped']}"
        for r in results
        if r.get("skipped")
    ]
    mismatched = [
        r
        for r in results
        if r.get("hlo_bytes") is not None
        and abs(r["hlo_bytes"] - r["analytic_bytes"]) > 1e-6 * r["hlo_bytes"]
    ]
    for r in mismatched:
        notes.append(
            f"HLO and analytic bytes differ for {r['row']['loss']}/{r['row']['exchange']}/{r['mesh']}: "
            f"{r['hlo_bytes']:.0f} vs {r['analytic_bytes']:.0f} (see hlo_collectives in the JSON)"
        )
    for note in notes:
        print(note)
    print(f"\ntotal wall time {total_s:.0f} s")

    if args.out:
        _write_json(args.out, meta, results)
    if args.md:
        os.makedirs(os.path.dirname(os.path.abspath(args.md)), exist_ok=True)
        with open(args.md, "w") as f:
            f.write(
                f"<!-- {meta['date']}: `{command}` -->\n"
                f"{info['platform']} ({info['device_kind']}; host with {os.cpu_count()} CPU cores), "
                f"{devices} devices, jax {info['jax']}, "
                f"local batch {args.local_batch}, D = {args.dim}, {args.dtype}, median of {args.repeats} "
                f"steps; total wall time {total_s / 60:.0f} min.\n\n{table}\n"
            )
            for note in notes:
                f.write(f"\n{note}\n")


if __name__ == "__main__":
    main()
