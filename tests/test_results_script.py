"""experiments/results.py: configs per row, and the verdicts it writes from measured numbers."""

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
     ((0.60, 0.62, 0.61), (0.80, 0.82, 0.81), "not reproduced at this scale"),
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
