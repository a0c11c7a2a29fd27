"""experiments/results.py: configs per row, and the verdicts it writes from measured numbers."""

import json
import pathlib

import numpy as np
import pytest

from experiments import results


def rows(comparison, better, baseline, metric, better_values, baseline_values):
    out = []
    for name, values in ((better, better_values), (baseline, baseline_values)):
        for seed, value in enumerate(values):
            out.append({"comparison": comparison, "name": name, "seed": seed, "steps": 10, "batch_size": 16,
                        metric: value})  # fmt: skip
    return out


@pytest.mark.parametrize(
    "better, baseline, verdict",
    [((0.80, 0.82, 0.81), (0.60, 0.62, 0.61), "reproduced"),
     ((0.60, 0.62, 0.61), (0.80, 0.82, 0.81), "contradicted"),
     ((0.70, 0.75, 0.65), (0.71, 0.66, 0.74), "inconclusive")],
)  # fmt: skip
def test_verdicts_follow_the_numbers(better, baseline, verdict):
    claim = results.CLAIMS["small_batch"]
    table = results.summarise(rows("small_batch", claim[0], claim[1], claim[2], better, baseline))
    assert verdict in table
    assert f"{100 * sum(better) / 3:.1f} ±" in table


def test_every_experiment_builds_its_config():
    for comparison, name, module, dataset, overrides in results.EXPERIMENTS:
        config = results.make_config(module, dataset, overrides, seed=1, steps=7, smoke=False)
        assert config.seed == 1 and config.total_steps == 7, name
        for key, value in overrides.items():
            node = config
            for part in key.split("."):
                node = node[part]
            assert node == value
        assert comparison in results.METRICS


def test_paired_interval_by_hand():
    """Differences 0.01, 0.03, 0.05 (paired by seed): mean 0.03, sd 0.02, t(0.975, 2) = 4.302653."""
    mean, low, high, n = results.paired_interval(
        {0: 0.51, 1: 0.53, 2: 0.55, 7: 0.9}, {0: 0.5, 1: 0.5, 2: 0.5}
    )
    half = 4.302652729911275 * 0.02 / np.sqrt(3)
    assert n == 3 and mean == pytest.approx(0.03)
    assert (low, high) == (pytest.approx(0.03 - half), pytest.approx(0.03 + half))
    assert results.verdict(low, high).startswith("inconclusive")  # the interval reaches below 0
    assert np.isnan(results.paired_interval({0: 1.0}, {0: 0.0})[1])


def test_secondary_metrics_get_a_non_inferiority_verdict():
    claim = results.CLAIMS["counting"]
    measured = {  # per row: counting accuracy, colour, shape for seeds 0, 1, 2
        claim[0]: ((0.97, 0.98, 0.99), (0.90, 0.91, 0.92), (0.50, 0.60, 0.70)),
        claim[1]: ((0.96, 0.96, 0.97), (0.90, 0.905, 0.915), (0.70, 0.60, 0.50)),
    }
    table = results.summarise(
        [
            {"comparison": "counting", "name": name, "seed": seed, "steps": 10, "batch_size": 16,
             "counting_accuracy": count[seed], "zero_shot/color": color[seed], "zero_shot/shape": shape[seed]}
            for name, (count, color, shape) in measured.items()
            for seed in range(3)
        ]
    )  # fmt: skip
    # colour: differences 0, 0.005, 0.005 — a tight interval above −2 points; shape: ±20 points
    assert "Non-inferiority on zero_shot/color (margin 2 points): +0.3, CI [-0.4, +1.1]: **holds**" in table
    assert "Non-inferiority on zero_shot/shape (margin 2 points): +0.0" in table and "**not shown**" in table
    assert "counting_accuracy, 3 paired seeds: +1.7 points" in table


def test_committed_table_is_the_rendering_of_the_committed_json():
    root = pathlib.Path(results.HERE) / "results"
    rows = json.loads((root / "results.json").read_text())
    assert (root / "results.md").read_text() == results.summarise(rows) + "\n"
