"""Regenerates experiments/results/results.md: the papers' claims, measured on the embedded datasets.

    python -m experiments.results                  # every row, 5 seeds (a few CPU hours)
    python -m experiments.results --only counting  # one comparison (and the rows it fine-tunes from)
    python -m experiments.results --smoke          # 1 seed, 2 steps, tiny data: checks the pipeline
    make results                                   # the same as the first line

    python -m experiments.results --table-only     # re-render results.md and plots/ from results.json
    python -m experiments.results --carry-over     # after a code change: retrain one row per comparison
                                                   # and, if every number comes back, keep the rows

Every number in the table comes from a training run this script starts (fixed seeds, the same
budget for the rows a claim compares) and its evaluation on the test split; nothing is typed.
Each claim is judged on the differences paired by seed: "reproduced" when the 95% confidence
interval of the mean difference (Student's t) lies above 0, "contradicted" when it lies below,
else "inconclusive"; secondary claims ("other accuracy holds") pass a non-inferiority test when
the interval's lower end is above −NON_INFERIORITY_MARGIN. Every row records its provenance
(commit, a hash of the code its numbers depend on, a hash of its resolved config, jax/flax
versions, seed, steps, wall time); a rerun reuses a row only when both hashes still match, and
results.json is rewritten after every row, so an interrupted run resumes where it stopped.

The comparisons:
* models: CLIP, SigLIP and CoCa trained alike;
* counting (Teaching CLIP to Count): the models table's CLIP, fine-tuned from its checkpoint
  (`config.init_from`) with and without the counting loss;
* batch_curve (DCL): DCL and NT-Xent at batch sizes 8 to 64, each seeing the same examples;
* long_tail (iSogCLR): SogCLR, iSogCLR and CLIP on steeply imbalanced colour-shape pairs
  (`long_tail_steep`), with accuracy on the rare pairs and, for iSogCLR, the correlation of its
  learned per-sample τ with the frequency of each sample's pair;
* clip_rocket (Fini et al. 2023): the models table's CLIP, CL2L (CLIP plus CLIP between two
  augmented local views per pair) and BarLIP (CL2L plus Barlow Twins), the same steps and batch.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of a comparison: a config module, its overrides and step budget, trained per seed.

    `init_from` names another row (`"comparison/name"`) whose run of the same seed this one
    fine-tunes (`config.init_from`); `measure` names functions of experiments/measure.py run on
    the finished workdir, whose numbers join the row.
    """

    comparison: str
    name: str
    module: str
    steps: int
    overrides: dict = dataclasses.field(default_factory=dict)
    init_from: str | None = None
    measure: tuple[str, ...] = ()


LONG_TAIL = {"data.builder_config": "long_tail_steep"}
FINE_TUNE = {"optim.lr": 5e-4, "optim.warmup_steps": 10}
PRETRAINED = "models/CLIP"
CURVE_BATCHES = (8, 16, 32, 64)
CURVE_EXAMPLES = 300 * 64  # every point of the batch curve sees the same 19,200 training examples

# In the order they run: counting first (its pretrained CLIP is the models table's CLIP row).
EXPERIMENTS = [
    Row("models", "CLIP", "clip", 300),
    Row("counting", "CLIP (pretrained)", "clip", 300),  # the same run as models/CLIP
    Row("counting", "fine-tuned, CLIP loss", "clip", 150, FINE_TUNE, init_from=PRETRAINED),
    Row("counting", "fine-tuned, + counting loss", "clip_count", 150, FINE_TUNE, init_from=PRETRAINED),
    *(Row("batch_curve", f"{label}, batch {b}", module, CURVE_EXAMPLES // b, {"batch_size": b})
      for b in CURVE_BATCHES for label, module in (("NT-Xent", "nt_xent"), ("DCL", "dcl"))),
    Row("long_tail", "CLIP (learned global τ)", "clip", 600, LONG_TAIL, measure=("rare_pair_accuracy",)),
    Row("long_tail", "SogCLR (fixed τ)", "sogclr", 600, LONG_TAIL, measure=("rare_pair_accuracy",)),
    Row("long_tail", "iSogCLR (per-sample τ)", "isogclr", 600, LONG_TAIL,
        measure=("rare_pair_accuracy", "temperature_vs_frequency")),
    Row("models", "SigLIP", "siglip", 300),
    Row("models", "CoCa", "coca", 300),
    Row("clip_rocket", "CLIP", "clip", 300),  # the same run as models/CLIP
    Row("clip_rocket", "CL2L (2 local views)", "cl2l", 300),
    Row("clip_rocket", "BarLIP", "barlip", 300),
]  # fmt: skip
METRICS = {
    "models": ("zero_shot/color", "zero_shot/shape", "zero_shot/count", "image_to_text_r@1",
               "text_to_image_r@1"),
    "counting": ("zero_shot/count", "counting_accuracy", "zero_shot/color", "zero_shot/shape"),
    "batch_curve": ("zero_shot/color", "zero_shot/shape", "image_to_text_r@1"),
    "long_tail": ("zero_shot/color", "zero_shot/shape", "rare_pairs/color", "rare_pairs/shape",
                  "tau_image_vs_frequency"),
    "clip_rocket": ("zero_shot/color", "zero_shot/shape", "zero_shot/count", "image_to_text_r@1",
                    "text_to_image_r@1"),
}  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Claim:
    """`better − baseline` on `metric` (paired by seed) should be > 0; with `baseline=None`, the
    metric itself should be > 0 (e.g. a correlation). `secondary` metrics should not get worse
    by more than NON_INFERIORITY_MARGIN."""

    text: str
    better: str
    baseline: str | None
    metric: str
    secondary: tuple[str, ...] = ()


CLAIMS = {
    "counting": [
        Claim("Teaching CLIP to Count: fine-tuning with the counting loss improves zero-shot counting "
              "while other accuracy holds", "fine-tuned, + counting loss", "fine-tuned, CLIP loss",
              "zero_shot/count", ("zero_shot/color", "zero_shot/shape")),
        Claim("Teaching CLIP to Count: the true caption beats its wrong-count counterfactual more often",
              "fine-tuned, + counting loss", "fine-tuned, CLIP loss", "counting_accuracy"),
    ],
    "batch_curve": [
        Claim(f"DCL: removing the positive from the denominator helps at batch size {b}",
              f"DCL, batch {b}", f"NT-Xent, batch {b}", "zero_shot/shape")
        for b in CURVE_BATCHES
    ],
    "long_tail": [
        Claim("iSogCLR: individual temperatures help most on rare (long-tail) semantics",
              "iSogCLR (per-sample τ)", "SogCLR (fixed τ)", "rare_pairs/shape",
              ("zero_shot/color", "zero_shot/shape")),
        Claim("iSogCLR: samples with frequent semantics learn larger temperatures, rare ones smaller "
              "(the paper's abstract, arXiv:2305.11965; here Spearman ρ of τ_i and the frequency of "
              "sample i's colour-shape pair > 0)", "iSogCLR (per-sample τ)", None,
              "tau_image_vs_frequency"),
    ],
    "clip_rocket": [
        Claim("clip-rocket: contrasting augmented local views beside the global pairs (CL2L) improves "
              "zero-shot classification over CLIP", "CL2L (2 local views)", "CLIP", "zero_shot/shape",
              ("zero_shot/color",)),
        Claim("clip-rocket: BarLIP's Barlow Twins term between the modalities improves on CL2L",
              "BarLIP", "CL2L (2 local views)", "zero_shot/shape"),
    ],
}  # fmt: skip
# A secondary metric "holds" when the 95% interval of its paired difference stays above −margin.
NON_INFERIORITY_MARGIN = 0.02
CONFIDENCE = 0.95
# What a row's numbers depend on besides its config: hashed into its code version. The rendering
# and statistics in this file are not, so re-rendering never retrains.
CODE_PATHS = ("contrastive_jax", "experiments/configs", "experiments/measure.py")


def make_config(row: Row, seed: int, smoke: bool, init_from: str | None = None):
    """The resolved training config of `row` for `seed` (`init_from`: the workdir it fine-tunes)."""
    import importlib

    config = importlib.import_module(f"experiments.configs.{row.module}").get_config("shapes_count")
    with config.unlocked():
        config.seed = seed
        config.total_steps = row.steps
        for key, value in row.overrides.items():
            node = config
            *path, leaf = key.split(".")
            for part in path:
                node = node[part]
            node[leaf] = value
        if init_from is not None:
            config.init_from = init_from
        config.checkpoint_every = config.total_steps
        if smoke:
            config.total_steps, config.log_every, config.checkpoint_every = 2, 1, 2
            config.data.builder_config = "tiny"
            config.eval.max_examples = 64
    return config


def _git(*args: str) -> str:
    import subprocess

    done = subprocess.run(["git", *args], cwd=os.path.dirname(HERE), capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "unknown"


def code_version() -> str:
    """A hash of the code the rows' numbers depend on (CODE_PATHS) as committed, plus any
    uncommitted change to it (so an edited working tree never reuses a row)."""
    import hashlib

    trees = [_git("rev-parse", f"HEAD:{path}") for path in CODE_PATHS]
    diff = _git("diff", "HEAD", "--", *CODE_PATHS)
    return hashlib.sha256("\n".join([*trees, diff]).encode()).hexdigest()[:16]


def config_hash(config) -> str:
    import hashlib

    text = json.dumps(json.loads(config.to_json_best_effort()), sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


class Interrupted(Exception):
    """A training run was stopped by a signal before its last step."""


def _train_once(config, workdir: str, measured_only: bool):
    """`(metrics, seconds)` of the run in `workdir`: read back when this code already finished it
    there (e.g. before an interruption, or for another row with the same config), else trained."""
    from contrastive_jax.train import RunPaths, train

    done = RunPaths(workdir).eval_results()
    if os.path.exists(done) and os.path.exists(os.path.join(workdir, "wall_seconds.json")):
        with open(done) as f:
            metrics = json.load(f)
        with open(os.path.join(workdir, "wall_seconds.json")) as f:
            return metrics, json.load(f)["seconds"]
    if measured_only:
        return None, None
    started = time.time()
    metrics = train(config, workdir)
    if "stopped_at" in metrics:  # SIGTERM/SIGINT: the run saved a checkpoint; record nothing
        raise Interrupted(f"stopped at step {metrics['stopped_at']} of {config.total_steps} in {workdir}")
    metrics.pop("plots", None)
    seconds = time.time() - started
    with open(os.path.join(workdir, "wall_seconds.json"), "w") as f:
        json.dump({"seconds": seconds}, f)
    return metrics, seconds


def _plan(seeds, smoke: bool, out_dir: str, version: str, only=None):
    """`(row, seed, config, config hash, workdir, (its source's config, workdir))` for every
    (row, seed) in EXPERIMENTS order (rows of `only` comparisons and those they fine-tune from)."""
    runs: dict[tuple[str, int], tuple] = {}  # ("comparison/name", seed) -> (config, workdir)
    for row in EXPERIMENTS:
        wanted = not only or row.comparison in only
        feeds = any(
            r.init_from == f"{row.comparison}/{row.name}"
            for r in EXPERIMENTS
            if not only or r.comparison in only
        )
        if not (wanted or feeds):
            continue
        for seed in seeds:
            source = runs[(row.init_from, seed)] if row.init_from else (None, None)
            config = make_config(row, seed, smoke, init_from=source[1])
            digest = config_hash(config)
            # Named by configuration and code, not by row: rows with one config train once, and
            # a changed config or code never reads an older run's numbers.
            workdir = os.path.join(out_dir, "runs", f"{row.module}-seed{seed}-{digest}-{version}")
            runs[(f"{row.comparison}/{row.name}", seed)] = (config, workdir)
            yield row, seed, config, digest, workdir, source


# One row per comparison, retrained by `--carry-over` (with the runs they fine-tune from).
CARRY_CHECKS = ("models/CLIP", "counting/fine-tuned, + counting loss", "batch_curve/NT-Xent, batch 64",
                "long_tail/iSogCLR (per-sample τ)", "clip_rocket/BarLIP")  # fmt: skip


def carry_over(previous: list[dict], out_dir: str, seed: int = 0) -> tuple[list[dict], list[str]]:
    """Carries stored rows over to the current code when it reproduces them exactly.

    Retrains the rows of `CARRY_CHECKS` (one per comparison, and the run a fine-tuned one starts
    from) for `seed` with the current code and config, and compares every stored number of each
    (metrics and measurements) for equality. If all are equal, every stored row takes the current
    code version and config hash (so later runs reuse it) and records the check in its provenance
    (`carried`: the earlier code version, the commit that checked, the rows retrained); else the
    rows are returned unchanged. A check whose row is not stored (a new comparison) is skipped.
    Returns `(rows, mismatches)`.
    """
    from experiments import measure

    version, commit = code_version(), _git("rev-parse", "--short", "HEAD")
    stored = {(r["comparison"], r["name"], r["seed"]): r for r in previous}
    plan = list(_plan([seed], False, out_dir, version))
    mismatches = []
    for row, _, config, _, workdir, (source_config, source) in plan:
        if (
            f"{row.comparison}/{row.name}" not in CARRY_CHECKS
            or (row.comparison, row.name, seed) not in stored
        ):
            continue  # not a check, or a comparison not measured yet (nothing to carry)
        if source is not None:
            _train_once(source_config, source, False)
        metrics, _ = _train_once(config, workdir, False)
        for name in row.measure:
            metrics.update(getattr(measure, name)(workdir))
        old = stored[(row.comparison, row.name, seed)]
        for key, value in old.items():
            if key in metrics and isinstance(value, (int, float)) and key not in ("seconds", "eval_seconds"):
                if metrics[key] != value and not (
                    value != value and metrics[key] != metrics[key]
                ):  # NaN = NaN
                    mismatches.append(
                        f"{row.comparison}/{row.name} seed {seed}: {key} {value!r} -> {metrics[key]!r}"
                    )
    if mismatches:
        return previous, mismatches
    digests = {}
    for row, row_seed, _, digest, _, _ in _plan(
        sorted({r["seed"] for r in previous}), False, out_dir, version
    ):
        digests[(row.comparison, row.name, row_seed)] = digest
    carried = []
    for r in previous:
        r = dict(r)
        r["carried"] = list(r.get("carried", [])) + [{"from_code": r.get("code_version"), "commit": commit,
                                                      "checked": list(CARRY_CHECKS), "seed": seed}]  # fmt: skip
        r["code_version"], r["config_hash"] = version, digests[(r["comparison"], r["name"], r["seed"])]
        carried.append(r)
    return carried, []


def run(seeds, smoke: bool, out_dir: str, measured_only: bool = False, previous=(), only=None) -> list[dict]:
    """Trains and evaluates every (row, seed) in EXPERIMENTS order (rows of `only` comparisons,
    if given); a row of `previous` (results.json) is reused only when its code version and
    config hash equal the current ones. Rows are saved to results.json as they land."""
    import flax
    import jax

    from experiments import measure

    version, commit = code_version(), _git("rev-parse", "--short", "HEAD")
    known = {(r["comparison"], r["name"], r["seed"], r.get("code_version"), r.get("config_hash")): r
             for r in previous}  # fmt: skip
    rows = []
    for row, seed, config, digest, workdir, (source_config, source) in _plan(
        seeds, smoke, out_dir, version, only
    ):
        key = (row.comparison, row.name, seed, version, digest)
        if key in known:
            rows.append(known[key])
            continue
        # The run it fine-tunes may be a reused row whose workdir is gone (runs/ is not
        # committed): train that again (same config and code: the same model).
        if source is not None and _train_once(source_config, source, measured_only)[0] is None:
            continue  # --measured-only, and the pretrained run is not there
        metrics, seconds = _train_once(config, workdir, measured_only)
        if metrics is None:
            continue  # --measured-only: summarise the finished runs, train nothing
        for name in row.measure:
            metrics.update(getattr(measure, name)(workdir))
        rows.append({"comparison": row.comparison, "name": row.name, "seed": seed,
                     "steps": config.total_steps, "batch_size": config.batch_size, "seconds": seconds,
                     "init_from": row.init_from, "commit": commit, "code_version": version,
                     "config_hash": digest, "jax": jax.__version__, "flax": flax.__version__, **metrics})  # fmt: skip
        print(f"[results] {row.comparison:12s} {row.name:28s} seed {seed}: "
              + ", ".join(f"{k}={metrics[k]:.3f}" for k in METRICS[row.comparison] if k in metrics), flush=True)  # fmt: skip
        _save(_with_others(rows, previous, only), out_dir, smoke)  # a stopped job resumes from here
    return _with_others(rows, previous, only)


def _with_others(rows, previous, only):
    """`rows` plus, when only some comparisons ran, the previous rows of the others."""
    if not only:
        return rows
    produced = {(r["comparison"], r["name"], r["seed"]) for r in rows}
    return rows + [r for r in previous if r["comparison"] not in only
                   and (r["comparison"], r["name"], r["seed"]) not in produced]  # fmt: skip


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


def non_inferiority(low: float) -> str:
    """A secondary metric's verdict from the lower end of its paired difference's interval."""
    return "holds" if not np.isnan(low) and low > -NON_INFERIORITY_MARGIN else "not shown"


def _by_seed(group, name, metric) -> dict[int, float]:
    return {r["seed"]: float(r[metric]) for r in group if r["name"] == name and metric in r}


def _differences(group, claim: Claim, metric: str) -> dict[int, float]:
    """Per seed: better − baseline on `metric` (or the better row's value when there is no baseline)."""
    better = _by_seed(group, claim.better, metric)
    if claim.baseline is None:
        return better
    baseline = _by_seed(group, claim.baseline, metric)
    return {seed: better[seed] - baseline[seed] for seed in sorted(better.keys() & baseline.keys())}


def _interval(diffs: dict[int, float]):
    return paired_interval(diffs, dict.fromkeys(diffs, 0.0))


def _provenance(group) -> str:
    def values(key):
        found = sorted({str(r.get(key, "unknown")) for r in group})
        return ", ".join(v[:12] for v in found)

    if not any("commit" in r for r in group):
        return (
            "Provenance: not recorded (rows measured before this script recorded it); rerun `make results`."
        )
    # Rows with one config and seed are one run (e.g. the pretrained CLIP of two tables): count it once.
    runs = {(r.get("config_hash"), r["seed"]): float(r.get("seconds", 0.0)) for r in group}
    carried = sorted({(c["from_code"][:12], c["commit"]) for r in group for c in r.get("carried", [])})
    note = "".join(f" Carried from code {code} at commit {at}, where one row per comparison, retrained, gave"
                   " the same numbers exactly." for code, at in carried)  # fmt: skip
    return (f"Provenance: commit {values('commit')}; code {values('code_version')}; jax {values('jax')}, "
            f"flax {values('flax')}; {len(runs)} runs, {sum(runs.values()) / 60:.0f} min of recorded wall time."
            + note)  # fmt: skip


def _points(value: float) -> str:
    return f"{100 * value:+.1f}"


def _claim_lines(group, claim: Claim) -> list[str]:
    mean, low, high, n = _interval(_differences(group, claim, claim.metric))
    if claim.baseline is None:
        what = f"{claim.better}: {claim.metric} over {n} seeds: mean {mean:+.3f}, {100 * CONFIDENCE:.0f}% CI [{low:+.3f}, {high:+.3f}]"
    else:
        what = (f"{claim.better} − {claim.baseline} on {claim.metric}, {n} paired seeds: {_points(mean)} points, "
                f"{100 * CONFIDENCE:.0f}% CI [{_points(low)}, {_points(high)}]")  # fmt: skip
    lines = ["", f"Claim — {claim.text}. {what}: **{verdict(low, high)}**."]
    for secondary in claim.secondary:
        mean, low, high, n = _interval(_differences(group, claim, secondary))
        lines += ["", f"Non-inferiority on {secondary} (margin {100 * NON_INFERIORITY_MARGIN:.0f} points): "
                      f"{_points(mean)}, CI [{_points(low)}, {_points(high)}]: **{non_inferiority(low)}**."]  # fmt: skip
    return lines


def _cell(metric: str, values: np.ndarray) -> str:
    if not values.size:
        return "-"
    if metric.startswith("tau_"):  # a correlation, not an accuracy
        return f"{values.mean():+.2f} ± {values.std():.2f}"
    return f"{100 * values.mean():.1f} ± {100 * values.std():.1f}"


def summarise(rows: list[dict]) -> str:
    """results.md from the rows of results.json (`--table-only` renders exactly this)."""
    lines = ["# Results on the embedded datasets", "",
             "Rendered from results.json by `python -m experiments.results --table-only`. Mean ± std over "
             "seeds, in points (correlations as they are); test split; rows compared in a claim have the "
             "same steps and batch size. Claims: mean difference paired by seed, with its "
             f"{100 * CONFIDENCE:.0f}% t-interval.", ""]  # fmt: skip
    for comparison, metrics in METRICS.items():
        group = [r for r in rows if r["comparison"] == comparison]
        if not group:
            continue
        names = list(dict.fromkeys(r["name"] for r in group))
        lines += [f"## {comparison.replace('_', ' ')}  (seeds: {sorted({r['seed'] for r in group})})", "",
                  "| row | steps | batch | seeds | " + " | ".join(metrics) + " |",
                  "| --- | ---: | ---: | ---: |" + " ---: |" * len(metrics)]  # fmt: skip
        for name in names:
            runs = [r for r in group if r["name"] == name]
            cells = [_cell(m, np.array([r[m] for r in runs if m in r], dtype=float)) for m in metrics]
            lines.append(f"| {name} | {runs[0]['steps']} | {runs[0]['batch_size']} | {len(runs)} | "
                         + " | ".join(cells) + " |")  # fmt: skip
        for claim in CLAIMS.get(comparison, ()):
            lines += _claim_lines(group, claim)
        if comparison in CLAIMS:  # plot() draws it beside results.md
            lines += ["", f"![{comparison}](plots/{comparison}.png)"]
        lines += ["", _provenance(group), ""]
    return "\n".join(lines)


def plot(rows: list[dict], out_dir: str) -> list[str]:
    """PNGs in `out_dir`/plots: per comparison, each claim's per-seed differences with their mean
    and interval (and the batch curve, the τ-vs-frequency scatter). Returns the paths written."""
    from matplotlib.figure import Figure

    os.makedirs(os.path.join(out_dir, "plots"), exist_ok=True)
    written = []
    for comparison, claims in CLAIMS.items():
        group = [r for r in rows if r["comparison"] == comparison]
        if not group:
            continue
        panels = [(claim, metric) for claim in claims for metric in (claim.metric, *claim.secondary)]
        extra = comparison in ("batch_curve", "long_tail")
        fig = Figure(figsize=(4.2 * (len(panels) + extra), 3.4), layout="constrained")
        axes = fig.subplots(1, len(panels) + extra, squeeze=False)[0]
        for ax, (claim, metric) in zip(axes, panels):
            diffs = _differences(group, claim, metric)
            mean, low, high, n = _interval(diffs)
            scale = 1.0 if metric.startswith("tau_") else 100.0
            ax.axhline(0.0, color="black", lw=0.8)
            if metric != claim.metric:
                ax.axhline(-100 * NON_INFERIORITY_MARGIN, color="tab:red", ls="--", lw=0.8, label="margin")
                ax.legend(fontsize=7, loc="lower right")
            ax.scatter(np.zeros(len(diffs)) + np.linspace(-0.1, 0.1, len(diffs)), scale * np.array(list(diffs.values())),
                       color="tab:gray", s=14, label="seeds")  # fmt: skip
            if n >= 2:
                ax.errorbar([0.35], [scale * mean], yerr=[[scale * (mean - low)], [scale * (high - mean)]],
                            fmt="o", color="tab:blue", capsize=4)  # fmt: skip
            ax.set_xlim(-0.5, 0.8)
            ax.set_xticks([])
            unit = "" if scale == 1.0 else " (points)"
            label = metric if claim.baseline is None else f"Δ {metric}{unit}"
            ax.set_ylabel(label, fontsize=8)
            outcome = verdict(low, high).split(" (")[0] if metric == claim.metric else non_inferiority(low)
            title = claim.better if claim.baseline is None else f"{claim.better}\n− {claim.baseline}"
            ax.set_title(f"{title}\n{metric}: {outcome}", fontsize=8)
        if comparison == "batch_curve":
            _plot_batch_curve(axes[-1], group)
        if comparison == "long_tail":
            _plot_tau_scatter(axes[-1], group)
        path = os.path.join(out_dir, "plots", f"{comparison}.png")
        fig.savefig(path, dpi=110)
        written.append(path)
    return written


def _plot_batch_curve(ax, group) -> None:
    metric = CLAIMS["batch_curve"][0].metric
    for label, color in (("NT-Xent", "tab:orange"), ("DCL", "tab:blue")):
        xs, means, errs = [], [], []
        for b in CURVE_BATCHES:
            values = np.array(list(_by_seed(group, f"{label}, batch {b}", metric).values()))
            if values.size:
                xs.append(b)
                means.append(100 * values.mean())
                errs.append(100 * values.std(ddof=1) if values.size > 1 else 0.0)
        ax.errorbar(xs, means, yerr=errs, marker="o", capsize=3, color=color, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size (same examples seen)", fontsize=8)
    ax.set_ylabel(f"{metric} (points, ± sd)", fontsize=8)
    ax.legend(fontsize=7)


def _plot_tau_scatter(ax, group) -> None:
    runs = [r for r in group if "pair_tau_image" in r]
    for r in runs:
        ax.scatter(r["pair_frequency"], r["pair_tau_image"], s=12, alpha=0.7, label=f"seed {r['seed']}")
    ax.set_xscale("log")
    ax.set_xlabel("training frequency of the colour-shape pair", fontsize=8)
    ax.set_ylabel("mean learned τ (image side)", fontsize=8)
    ax.set_title("iSogCLR: τ vs. frequency", fontsize=8)
    if runs:
        ax.legend(fontsize=6)


README = os.path.join(os.path.dirname(HERE), "README.md")
README_MARKERS = ("<!-- results: rendered by `python -m experiments.results --table-only` -->",
                  "<!-- results: end -->")  # fmt: skip


def readme_section(table: str) -> str:
    """results.md as it appears in README.md: headings two levels down, links from the root."""
    lines = []
    for line in table.split("\n"):
        if line.startswith("#"):
            line = "##" + line
        lines.append(line.replace("](plots/", "](experiments/results/plots/"))
    return "\n".join(lines).strip("\n")


def update_readme(table: str, path: str = README) -> None:
    """Replaces the text between README_MARKERS in README.md with `readme_section(table)`."""
    with open(path) as f:
        text = f.read()
    start, end = README_MARKERS
    if start not in text or end not in text:
        raise SystemExit(f"{path} lacks the markers {start!r} ... {end!r} of the results section")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with open(path, "w") as f:
        f.write(f"{head}{start}\n{readme_section(table)}\n{end}{tail}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", nargs="+", choices=sorted(METRICS), help="run only these comparisons")
    parser.add_argument(
        "--smoke", action="store_true", help="1 seed, 2 steps, tiny data: checks the pipeline"
    )
    parser.add_argument("--measured-only", action="store_true", help="tabulate finished runs only")
    parser.add_argument(
        "--table-only", action="store_true", help="render results.md and plots from results.json"
    )
    parser.add_argument(
        "--carry-over", action="store_true",
        help="retrain one row per comparison; if the stored numbers come back exactly, carry every row to this code",
    )  # fmt: skip
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
    elif args.carry_over:
        rows, mismatches = carry_over(previous, args.out)
        if mismatches:
            raise SystemExit("experiments.results: the current code does not reproduce the stored rows, so "
                             "nothing was carried over; run `make results`:\n  " + "\n  ".join(mismatches))  # fmt: skip
        _save(rows, args.out, False)
    else:
        seeds = args.seeds[:1] if args.smoke else args.seeds
        try:
            rows = run(seeds, args.smoke, args.out, args.measured_only, previous, only=args.only)
        except Interrupted as stop:  # the rows so far are in results.json; a rerun resumes there
            raise SystemExit(f"experiments.results: {stop}; run the same command again to resume") from None
        _save(rows, args.out, args.smoke)
    if not args.smoke:
        plot(rows, args.out)
    table = summarise(rows)
    with open(md_path, "w") as f:
        f.write(table + "\n")
    if not args.smoke and os.path.abspath(args.out) == os.path.join(HERE, "results"):
        update_readme(table)
    print(table)


if __name__ == "__main__":
    main()
