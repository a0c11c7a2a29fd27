"""Regenerates experiments/results/results.md: the papers' claims, measured on the embedded datasets.

    python -m experiments.results                 # all rows, 3 seeds (about 2 h on a 2-core CPU)
    python -m experiments.results --smoke         # 1 seed, a few steps: checks the pipeline only
    make results                                  # the same as the first line

Every number in the table comes from a training run this script starts (fixed seeds, the same
budget per row within a comparison) and its evaluation on the test split; nothing is typed. The
verdict column compares means against one pooled standard deviation and says plainly when a
claim does not reproduce at this scale.
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
                 "Teaching CLIP to Count: counting improves while other accuracy holds"),
    "long_tail": ("iSogCLR (per-sample τ)", "SogCLR (fixed τ)", "rare_pairs/shape",
                  "iSogCLR: individual temperatures help most on rare (long-tail) semantics"),
    "small_batch": ("DCL, batch 16", "NT-Xent, batch 16", "zero_shot/shape",
                    "DCL: removing the positive from the denominator helps at small batch sizes"),
}  # fmt: skip


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
    model = evaluate._run.Encoders(model)
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


def run(seeds, steps, smoke: bool, out_dir: str, measured_only: bool = False) -> list[dict]:
    from contrastive_jax.train import train

    rows = []
    for comparison, name, module, dataset, overrides in EXPERIMENTS:
        for seed in seeds:
            config = make_config(module, dataset, overrides, seed, steps, smoke)
            # Named by configuration, not comparison: a row shared by two comparisons trains once.
            extra = "".join(f"-{k.split('.')[-1]}{v}" for k, v in sorted(overrides.items())
                            if k not in ("data.builder_config", "batch_size"))  # fmt: skip
            slug = f"{module}-{config.data.builder_config}-b{config.batch_size}-s{config.total_steps}{extra}-seed{seed}"
            workdir = os.path.join(out_dir, "runs", slug)
            started = time.time()
            if os.path.exists(os.path.join(workdir, "eval.json")):
                with open(os.path.join(workdir, "eval.json")) as f:
                    metrics = json.load(f)  # already measured by an earlier (interrupted) invocation
            elif measured_only:
                continue  # --measured-only: summarise the finished runs, train nothing
            else:
                metrics = train(config, workdir)
                metrics.pop("plots", None)
            if comparison == "long_tail":
                metrics.update(rare_pair_accuracy(workdir))
            rows.append({"comparison": comparison, "name": name, "seed": seed, "steps": config.total_steps,
                         "batch_size": config.batch_size, "seconds": time.time() - started, **metrics})  # fmt: skip
            print(f"[results] {comparison:12s} {name:28s} seed {seed}: "
                  + ", ".join(f"{k}={metrics[k]:.3f}" for k in METRICS[comparison] if k in metrics), flush=True)  # fmt: skip
    return rows


def summarise(rows: list[dict]) -> str:
    lines = ["# Results on the embedded datasets", "",
             "Regenerated by `python -m experiments.results` (see its docstring). Mean ± std over seeds; "
             "test split; every row of a comparison has the same steps and batch size.", ""]  # fmt: skip
    for comparison, metrics in METRICS.items():
        group = [r for r in rows if r["comparison"] == comparison]
        if not group:
            continue
        names = list(dict.fromkeys(r["name"] for r in group))
        first = group[0]
        lines += [f"## {comparison.replace('_', ' ')}  ({first['steps']} steps, seeds: "
                  f"{sorted({r['seed'] for r in group})})", "",
                  "| row | batch | seeds | " + " | ".join(metrics) + " |", "| --- | ---: | ---: |" + " ---: |" * len(metrics)]  # fmt: skip
        stats = {}
        for name in names:
            runs = [r for r in group if r["name"] == name]
            cells = []
            for metric in metrics:
                values = np.array([r[metric] for r in runs if metric in r], dtype=float)
                stats[(name, metric)] = values
                cells.append(f"{100 * values.mean():.1f} ± {100 * values.std():.1f}" if values.size else "-")
            lines.append(f"| {name} | {runs[0]['batch_size']} | {len(runs)} | " + " | ".join(cells) + " |")
        claim = CLAIMS.get(comparison)
        if claim:
            better, baseline, metric, text = claim
            a, b = stats.get((better, metric)), stats.get((baseline, metric))
            if a is not None and b is not None and a.size and b.size:
                gap = a.mean() - b.mean()
                noise = np.sqrt((a.var() + b.var()) / 2) + 1e-9
                verdict = ("reproduced" if gap > noise else "not reproduced at this scale" if gap < -noise
                           else "inconclusive (difference within one std)")  # fmt: skip
                lines += ["", f"Claim — {text}. {better} − {baseline} on {metric}: "
                              f"{100 * gap:+.1f} points (std {100 * noise:.1f}): **{verdict}**."]  # fmt: skip
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=300, help="training steps per run (same for every row)")
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--measured-only", action="store_true", help="tabulate finished runs only")
    parser.add_argument("--out", default=os.path.join(HERE, "results"))
    args = parser.parse_args()
    seeds = args.seeds[:1] if args.smoke else args.seeds
    rows = run(seeds, args.steps, args.smoke, args.out, args.measured_only)
    os.makedirs(args.out, exist_ok=True)
    suffix = "_smoke" if args.smoke else ""
    with open(os.path.join(args.out, f"results{suffix}.json"), "w") as f:
        json.dump(rows, f, indent=2)
    table = summarise(rows)
    with open(os.path.join(args.out, f"results{suffix}.md"), "w") as f:
        f.write(table + "\n")
    print(table)


if __name__ == "__main__":
    main()
