"""Regenerates experiments/results/results.md: the papers' claims, measured on the embedded datasets.

    python -m experiments.results                 # all rows, 5 seeds (about 3.5 h on a 2-core CPU)
    python -m experiments.results --smoke         # 1 seed, a few steps: checks the pipeline only
    make results                                  # the same as the first line

    python -m experiments.results --table-only    # re-render results.md from results.json

Every number in the table comes from a training run this script starts (fixed seeds, the same
budget per row within a comparison) and its evaluation on the test split; nothing is typed. Each
claim is judged on the differences paired by seed: "reproduced" when the 95% confidence interval
of the mean difference (Student's t) lies above 0, "contradicted" when it lies below, else
"inconclusive"; secondary claims ("other accuracy holds") pass a non-inferiority test when the
interval's lower end is above −NON_INFERIORITY_MARGIN. Every row records its provenance (commit,
a hash of the library and experiment code, a hash of its resolved config, jax/flax versions, seed,
steps, wall time); a rerun reuses a row only when its code and config hashes still match.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))

# (comparison, row name, config module, dataset, overrides)
EXPERIMENTS = [
    ("models", "CLIP", "clip", "shapes_count", {}),
    ("models", "SigLIP", "siglip", "shapes_count", {}),
    ("models", "CoCa", "coca", "shapes_count", {}),
    ("counting", "CLIP", "clip", "shapes_count", {}),
    ("counting", "CLIP + counting loss", "clip_count", "shapes_count", {}),
    ("long_tail", "CLIP (learned global τ)", "clip", "shapes_count", {"data.builder_config": "long_tail"}),
    (
        "long_tail",
        "CLIP (fixed τ = 0.01)",
        "clip",
        "shapes_count",
        {"data.builder_config": "long_tail", "loss.fixed_temperature": 0.01},
    ),
    ("long_tail", "SogCLR (fixed τ)", "sogclr", "shapes_count", {"data.builder_config": "long_tail"}),
    ("long_tail", "iSogCLR (per-sample τ)", "isogclr", "shapes_count", {"data.builder_config": "long_tail"}),
    ("small_batch", "NT-Xent, batch 16", "nt_xent", "shapes_count", {"batch_size": 16}),
    ("small_batch", "DCL, batch 16", "dcl", "shapes_count", {"batch_size": 16}),
    ("small_batch", "NT-Xent, batch 64", "nt_xent", "shapes_count", {"batch_size": 64}),
    ("small_batch", "DCL, batch 64", "dcl", "shapes_count", {"batch_size": 64}),
]
METRICS = {
    "models": (
        "zero_shot/color",
        "zero_shot/shape",
        "zero_shot/count",
        "image_to_text_r@1",
        "text_to_image_r@1",
    ),
    "counting": ("counting_accuracy", "zero_shot/count", "zero_shot/color", "zero_shot/shape"),
    "long_tail": (
        "zero_shot/color",
        "zero_shot/shape",
        "rare_pairs/color",
        "rare_pairs/shape",
        "image_to_text_r@1",
    ),
    "small_batch": ("zero_shot/color", "zero_shot/shape", "image_to_text_r@1"),
}
CLAIMS = {
    "models": None,
    "counting": ("CLIP + counting loss", "CLIP", "counting_accuracy",
                 "Teaching CLIP to Count: counting improves while other accuracy holds",
                 ("zero_shot/color", "zero_shot/shape")),
    "long_tail": ("iSogCLR (per-sample τ)", "SogCLR (fixed τ)", "rare_pairs/shape",
                  "iSogCLR: individual temperatures help most on rare (long-tail) semantics"),
    "small_batch": ("DCL, batch 16", "NT-Xent, batch 16", "zero_shot/shape",
                    "DCL: removing the positive from the denominator helps at small batch sizes"),
}  # fmt: skip
# A secondary metric "holds" when the 95% interval of its paired difference stays above −margin.
NON_INFERIORITY_MARGIN = 0.02
CONFIDENCE = 0.95


def make_config(module: str, dataset: str, overrides: dict, seed: int, steps: int | None, smoke: bool):
    import importlib

    config = importlib.import_module(f"experiments.configs.{module}").get_config(dataset)
    with config.unlocked():
        config.seed = seed
        for key, value in overrides.items():
            node = config
            *path, leaf = key.split(".")
            for part in path:
                node = node[part]
            node[leaf] = value
        if steps:
            config.total_steps = steps
        config.checkpoint_every = config.total_steps
        if smoke:
            config.total_steps, config.log_every, config.checkpoint_every = 2, 1, 2
            config.data.builder_config = "tiny"
            config.eval.max_examples = 64
    return config


def rare_pair_accuracy(workdir: str) -> dict[str, float]:
    """Zero-shot colour/shape accuracy on test images whose (colour, shape) pair is rare in training."""
    from contrastive_jax import evaluate, train
    from contrastive_jax.data import _shapes

    config, model, _, tokenizer = train.load_run(workdir)
    model = evaluate.Encoders(model)
    emb = evaluate.embed_split(model, config, tokenizer, "test")
    weights = _shapes.combination_weights(long_tail=config.data.builder_config == "long_tail")
    pair = emb["color"] * len(_shapes.SHAPES) + emb["shape"]
    rare = weights[pair] <= np.median(weights)
    out = {}
    for question in ("color", "shape"):
        out[f"rare_pairs/{question}"] = evaluate.zero_shot(
            model, tokenizer, config.data.name, question, config.data.context_length, emb["image_emb"][rare],
            emb[question][rare],
        )  # fmt: skip
    return out


def _git(*args: str) -> str:
    import subprocess

    done = subprocess.run(["git", *args], cwd=os.path.dirname(HERE), capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def code_version() -> str:
    """A hash of the code a row depends on: the library and experiments/ as committed, plus any
    uncommitted change to them (so an edited working tree never reuses a row)."""
    import hashlib

    trees = [_git("rev-parse", f"HEAD:{path}") for path in ("contrastive_jax", "experiments")]
    diff = _git("diff", "HEAD", "--", "contrastive_jax", "experiments")
    return hashlib.sha256("\n".join([*trees, diff]).encode()).hexdigest()[:16]


def config_hash(config) -> str:
    import hashlib

    text = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def run(seeds, steps, smoke: bool, out_dir: str, measured_only: bool = False, previous=()) -> list[dict]:
    """Trains and evaluates every (row, seed); a row of `previous` (results.json) is reused only
    when its code version and config hash equal the current ones."""
    import flax
    import jax

    from contrastive_jax.train import train

    version, commit = code_version(), _git("rev-parse", "--short", "HEAD")
    known = {
        (r["comparison"], r["name"], r["seed"], r.get("code_version"), r.get("config_hash")): r
        for r in previous
    }
    rows = []
    for comparison, name, module, dataset, overrides in EXPERIMENTS:
        for seed in seeds:
            config = make_config(module, dataset, overrides, seed, steps, smoke)
            digest = config_hash(config)
            if (comparison, name, seed, version, digest) in known:
                rows.append(known[(comparison, name, seed, version, digest)])
                continue
            # Named by configuration and code, not comparison: a row shared by two comparisons
            # trains once, and a changed config or code never reads an older run's numbers.
            workdir = os.path.join(out_dir, "runs", f"{module}-seed{seed}-{digest}-{version}")
            started = time.time()
            if os.path.exists(os.path.join(workdir, "eval.json")):
                with open(os.path.join(workdir, "eval.json")) as f:
                    metrics = json.load(f)  # measured by an interrupted invocation of this same code
                with open(os.path.join(workdir, "wall_seconds.json")) as f:
                    seconds = json.load(f)["seconds"]
            elif measured_only:
                continue  # --measured-only: summarise the finished runs, train nothing
            else:
                metrics = train(config, workdir)
                metrics.pop("plots", None)
                seconds = time.time() - started
                with open(os.path.join(workdir, "wall_seconds.json"), "w") as f:
                    json.dump({"seconds": seconds}, f)
            if comparison == "long_tail":
                metrics.update(rare_pair_accuracy(workdir))
            rows.append({"comparison": comparison, "name": name, "seed": seed, "steps": config.total_steps,
                         "batch_size": config.batch_size, "seconds": seconds, "commit": commit,
                         "code_version": version, "config_hash": digest, "jax": jax.__version__,
                         "flax": flax.__version__, **metrics})  # fmt: skip
            print(f"[results] {comparison:12s} {name:28s} seed {seed}: "
                  + ", ".join(f"{k}={metrics[k]:.3f}" for k in METRICS[comparison] if k in metrics), flush=True)  # fmt: skip
            _save(rows, out_dir, smoke)  # commit rows as they land: a stopped job resumes from here
    return rows


def _save(rows, out_dir: str, smoke: bool) -> None:
    os.makedirs(out_dir, exist_ok=True)
    suffix = "_smoke" if smoke else ""
    with open(os.path.join(out_dir, f"results{suffix}.json"), "w") as f:
        json.dump(rows, f, indent=2)


def paired_interval(better: dict[int, float], baseline: dict[int, float]):
    """`(mean, low, high, n)` of `better[seed] − baseline[seed]` over the seeds both have: the mean
    difference and its two-sided `CONFIDENCE` interval (Student's t with n − 1 degrees of freedom;
    no interval below two seeds)."""
    from scipy import stats

    seeds = sorted(better.keys() & baseline.keys())
    diffs = np.array([better[k] - baseline[k] for k in seeds], dtype=float)
    n = diffs.size
    if n < 2:
        mean = float(diffs.mean()) if n else float("nan")
        return mean, float("nan"), float("nan"), n
    half = stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1) * diffs.std(ddof=1) / np.sqrt(n)
    return float(diffs.mean()), float(diffs.mean() - half), float(diffs.mean() + half), n


def verdict(low: float, high: float) -> str:
    if np.isnan(low):
        return "inconclusive (fewer than two paired seeds)"
    return "reproduced" if low > 0 else "contradicted" if high < 0 else "inconclusive (interval contains 0)"


def _by_seed(group, name, metric) -> dict[int, float]:
    return {r["seed"]: float(r[metric]) for r in group if r["name"] == name and metric in r}


def _provenance(group) -> str:
    def values(key):
        found = sorted({str(r.get(key, "unknown")) for r in group})
        return ", ".join(v[:12] for v in found)

    if not any("commit" in r for r in group):
        return (
            "Provenance: not recorded (rows measured before this script recorded it); rerun `make results`."
        )
    seconds = sum(float(r.get("seconds", 0.0)) for r in group)
    return (f"Provenance: commit {values('commit')}; code {values('code_version')}; jax {values('jax')}, "
            f"flax {values('flax')}; {len(group)} runs, {seconds / 60:.0f} min of recorded wall time.")  # fmt: skip


def summarise(rows: list[dict]) -> str:
    """results.md from the rows of results.json (`--table-only` renders exactly this)."""
    lines = ["# Results on the embedded datasets", "",
             "Rendered from results.json by `python -m experiments.results --table-only`. Mean ± std over "
             "seeds; test split; every row of a comparison has the same steps and batch size. Claims: mean "
             f"paired difference (by seed) with its {100 * CONFIDENCE:.0f}% t-interval.", ""]  # fmt: skip
    for comparison, metrics in METRICS.items():
        group = [r for r in rows if r["comparison"] == comparison]
        if not group:
            continue
        names = list(dict.fromkeys(r["name"] for r in group))
        first = group[0]
        lines += [f"## {comparison.replace('_', ' ')}  ({first['steps']} steps, seeds: "
                  f"{sorted({r['seed'] for r in group})})", "",
                  "| row | batch | seeds | " + " | ".join(metrics) + " |", "| --- | ---: | ---: |" + " ---: |" * len(metrics)]  # fmt: skip
        for name in names:
            runs = [r for r in group if r["name"] == name]
            cells = []
            for metric in metrics:
                values = np.array([r[metric] for r in runs if metric in r], dtype=float)
                cells.append(f"{100 * values.mean():.1f} ± {100 * values.std():.1f}" if values.size else "-")
            lines.append(f"| {name} | {runs[0]['batch_size']} | {len(runs)} | " + " | ".join(cells) + " |")
        claim = CLAIMS.get(comparison)
        if claim:
            better, baseline, metric, text, *rest = claim
            mean, low, high, n = paired_interval(
                _by_seed(group, better, metric), _by_seed(group, baseline, metric)
            )
            lines += ["", f"Claim — {text}. {better} − {baseline} on {metric}, {n} paired seeds: "
                          f"{100 * mean:+.1f} points, {100 * CONFIDENCE:.0f}% CI [{100 * low:+.1f}, {100 * high:+.1f}]: "
                          f"**{verdict(low, high)}**."]  # fmt: skip
            for secondary in rest[0] if rest else ():
                mean, low, high, n = paired_interval(
                    _by_seed(group, better, secondary), _by_seed(group, baseline, secondary)
                )
                holds = not np.isnan(low) and low > -NON_INFERIORITY_MARGIN
                lines += ["", f"Non-inferiority on {secondary} (margin {100 * NON_INFERIORITY_MARGIN:.0f} points): "
                             f"{100 * mean:+.1f}, CI [{100 * low:+.1f}, {100 * high:+.1f}]: "
                             f"**{'holds' if holds else 'not shown'}**."]  # fmt: skip
        lines += ["", _provenance(group), ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (same for every row)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--measured-only", action="store_true", help="tabulate finished runs only")
    parser.add_argument("--table-only", action="store_true", help="render results.md from results.json")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    suffix = "_smoke" if args.smoke else ""
    json_path, md_path = (os.path.join(args.out, f"results{suffix}.{ext}") for ext in ("json", "md"))
    previous = []
    if os.path.exists(json_path):
        with open(json_path) as f:
            previous = json.load(f)
    if args.table_only:
        rows = previous
    else:
        seeds = args.seeds[:1] if args.smoke else args.seeds
        rows = run(seeds, args.steps, args.smoke, args.out, args.measured_only, previous)
        _save(rows, args.out, args.smoke)
    table = summarise(rows)
    with open(md_path, "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
