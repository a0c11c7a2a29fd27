"""experiments/results.py: configs per row, and the verdicts it writes from measured numbers."""

import json
import pathlib
import shutil

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
    claim = results.CLAIMS["batch_curve"][0]
    table = results.summarise(
        rows("batch_curve", claim.better, claim.baseline, claim.metric, better, baseline)
    )
    assert f"batch size 8. {claim.better} − {claim.baseline}" in table
    assert verdict in table.split("batch size 8.")[1].split("\n")[0]
    assert f"{100 * sum(better) / 3:.1f} ±" in table


def test_a_claim_without_baseline_tests_the_value_itself():
    """The τ-vs-frequency claim: per-seed correlations 0.3, 0.4, 0.5 → mean 0.4, CI above 0."""
    claim = results.CLAIMS["long_tail"][1]
    assert claim.baseline is None
    group = [{"comparison": "long_tail", "name": claim.better, "seed": k, "steps": 10, "batch_size": 16,
              claim.metric: rho} for k, rho in enumerate((0.3, 0.4, 0.5))]  # fmt: skip
    table = results.summarise(group)
    half = 4.302652729911275 * 0.1 / np.sqrt(3)
    assert f"mean +0.400, 95% CI [{0.4 - half:+.3f}, {0.4 + half:+.3f}]: **reproduced**" in table
    assert "+0.40 ± 0.08" in table  # shown as a correlation, not in points


def test_every_experiment_builds_its_config(tmp_path):
    names = {f"{row.comparison}/{row.name}" for row in results.EXPERIMENTS}
    for row in results.EXPERIMENTS:
        source = str(tmp_path / "pretrained") if row.init_from else None
        config = results.make_config(row, seed=1, smoke=False, init_from=source)
        assert config.seed == 1 and config.total_steps == row.steps, row.name
        assert config.get("init_from") == source
        for key, value in row.overrides.items():
            node = config
            for part in key.split("."):
                node = node[part]
            assert node == value
        assert row.comparison in results.METRICS
        assert row.init_from is None or row.init_from in names
    # The rows a claim compares share steps and batch size (the batch curve: the same examples).
    for comparison, claims in results.CLAIMS.items():
        for claim in claims:
            compared = [r for r in results.EXPERIMENTS if r.comparison == comparison
                        and r.name in (claim.better, claim.baseline)]  # fmt: skip
            assert len(compared) == 1 + (claim.baseline is not None), claim.text
            assert len({(r.steps, r.overrides.get("batch_size")) for r in compared}) == 1, claim.text
    curve = [r for r in results.EXPERIMENTS if r.comparison == "batch_curve"]
    assert {r.steps * r.overrides["batch_size"] for r in curve} == {results.CURVE_EXAMPLES}


def test_reruns_only_what_changed(tmp_path, monkeypatch):
    """A row is reused when code and config hashes match; a changed config trains again; a
    fine-tuned row names the workdir of its pretrained row of the same seed."""
    trained = []

    def fake_train(config, workdir):
        trained.append((config.loss.name, config.get("init_from")))
        metrics = {
            "zero_shot/count": 0.5,
            "counting_accuracy": 0.6,
            "zero_shot/color": 0.7,
            "zero_shot/shape": 0.8,
        }
        pathlib.Path(workdir).mkdir(parents=True)  # a config trains once: its workdir is new
        (pathlib.Path(workdir) / "eval.json").write_text(json.dumps(metrics))  # as train() writes it
        return metrics

    import contrastive_jax.train

    monkeypatch.setattr(contrastive_jax.train, "train", fake_train)
    monkeypatch.setattr(results, "code_version", lambda: "v1")
    first = results.run([0], smoke=True, out_dir=str(tmp_path), only=["counting"])
    assert [r["name"] for r in first] == ["CLIP", "CLIP (pretrained)", "fine-tuned, CLIP loss",
                                          "fine-tuned, + counting loss"]  # fmt: skip
    # models/CLIP and counting's pretrained row are one run; both fine-tunes start from it.
    assert [t[0] for t in trained] == ["clip", "clip", "clip_count"]
    pretrained = trained[0][1]
    assert pretrained is None and trained[1][1] == trained[2][1] and "clip-seed0-" in trained[1][1]
    assert json.loads((tmp_path / "results_smoke.json").read_text()) == first
    trained.clear()
    assert results.run([0], smoke=True, out_dir=str(tmp_path), previous=first, only=["counting"]) == first
    assert trained == []
    # A fresh clone has results.json but not runs/: a fine-tune to redo retrains its source first.
    shutil.rmtree(tmp_path / "runs")
    partial = [r for r in first if r["name"] != "fine-tuned, + counting loss"]
    redone = results.run([0], smoke=True, out_dir=str(tmp_path), previous=partial, only=["counting"])
    assert trained == [("clip", None), ("clip_count", trained[1][1])] and trained[1][1] is not None
    assert redone[:3] == first[:3] and redone[3]["name"] == "fine-tuned, + counting loss"
    trained.clear()
    monkeypatch.setattr(results, "code_version", lambda: "v2")  # changed code: everything reruns
    again = results.run([0], smoke=True, out_dir=str(tmp_path), previous=first, only=["counting"])
    assert len(trained) == 3 and {r["code_version"] for r in again} == {"v2"}


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
    claim = results.CLAIMS["counting"][0]
    measured = {  # per row: zero-shot count accuracy, colour, shape for seeds 0, 1, 2
        claim.better: ((0.97, 0.98, 0.99), (0.90, 0.91, 0.92), (0.50, 0.60, 0.70)),
        claim.baseline: ((0.96, 0.96, 0.97), (0.90, 0.905, 0.915), (0.70, 0.60, 0.50)),
    }
    table = results.summarise(
        [
            {"comparison": "counting", "name": name, "seed": seed, "steps": 10, "batch_size": 16,
             "zero_shot/count": count[seed], "zero_shot/color": color[seed], "zero_shot/shape": shape[seed]}
            for name, (count, color, shape) in measured.items()
            for seed in range(3)
        ]
    )  # fmt: skip
    # colour: differences 0, 0.005, 0.005 — a tight interval above −2 points; shape: ±20 points
    assert "Non-inferiority on zero_shot/color (margin 2 points): +0.3, CI [-0.4, +1.1]: **holds**" in table
    assert "Non-inferiority on zero_shot/shape (margin 2 points): +0.0" in table and "**not shown**" in table
    assert "zero_shot/count, 3 paired seeds: +1.7 points" in table


def test_committed_table_is_the_rendering_of_the_committed_json():
    root = pathlib.Path(results.HERE) / "results"
    rows = json.loads((root / "results.json").read_text())
    table = results.summarise(rows)
    assert (root / "results.md").read_text() == table + "\n"
    # README.md shows the same rendering between its markers, and the plots it links exist.
    readme = pathlib.Path(results.README).read_text()
    start, end = results.README_MARKERS
    assert readme.split(start, 1)[1].split(end, 1)[0].strip("\n") == results.readme_section(table)
    for comparison in results.CLAIMS:
        if any(r["comparison"] == comparison for r in rows):
            assert (root / "plots" / f"{comparison}.png").is_file(), comparison


def test_committed_table_has_every_row_with_five_seeds_and_provenance():
    rows = json.loads((pathlib.Path(results.HERE) / "results" / "results.json").read_text())
    provenance = "commit code_version config_hash jax flax seed steps batch_size seconds".split()
    for row in results.EXPERIMENTS:
        found = [r for r in rows if (r["comparison"], r["name"]) == (row.comparison, row.name)]
        assert len({r["seed"] for r in found}) == len(found) >= 5, (row.comparison, row.name)
        for r in found:
            missing = [k for k in provenance if k not in r]
            assert not missing and r["seconds"] > 0, (row.comparison, row.name, r["seed"], missing)


def test_temperature_vs_frequency_by_hand(tmp_path, monkeypatch):
    """Six samples of three pairs with known frequencies: Spearman's ρ from ranks by hand
    (ties get their mean rank), per-pair mean τ, and only visited samples counted."""
    from contrastive_jax import data, train
    from experiments import measure

    (tmp_path / "config.json").write_text(
        json.dumps({"data": {"name": "shapes_count", "builder_config": "x"}})
    )
    colors, shapes = [0, 0, 1, 1, 2, 5], [0, 0, 1, 1, 2, 2]  # pairs 0, 0, 4, 4, 8, 17 (the last unseen)
    tau = np.array([0.02, 0.03, 0.01, 0.015, 0.005, 0.05], np.float32)
    state = {"tau_image": np.r_[tau, 0.01], "tau_text": np.r_[tau[::-1], 0.01],
             "seen": np.array([1, 1, 1, 1, 1, 0, 0], bool)}  # padded by one entry  # fmt: skip
    table = np.zeros((6, 3))
    table[0, 0], table[1, 1], table[2, 2], table[5, 2] = 0.6, 0.3, 0.05, 0.05
    monkeypatch.setattr(train, "load_loss_state", lambda workdir: (7, state))
    monkeypatch.setattr(data, "pair_frequencies", lambda config: table)
    records = [{"color": c, "shape": s} for c, s in zip(colors, shapes)]
    monkeypatch.setattr(data, "load_source", lambda name, split, config: records)
    out = measure.temperature_vs_frequency(str(tmp_path))

    def ranks(values):
        order = sorted(values)
        return [np.mean([k + 1 for k, v in enumerate(order) if v == x]) for x in values]

    freq = [0.6, 0.6, 0.3, 0.3, 0.05]  # the five visited samples
    for side, values in (("image", tau[:5]), ("text", tau[::-1][:5])):
        rf, rt = np.array(ranks(freq)), np.array(ranks(list(values)))
        expected = ((rf - rf.mean()) * (rt - rt.mean())).sum() / np.sqrt(
            ((rf - rf.mean()) ** 2).sum() * ((rt - rt.mean()) ** 2).sum()
        )
        assert out[f"tau_{side}_vs_frequency"] == pytest.approx(expected, abs=1e-6), side
    assert out["pair_tau_image"][0] == pytest.approx(0.025) and out["pair_tau_image"][4] == pytest.approx(
        0.0125
    )
    assert np.isnan(out["pair_tau_image"][17])  # its only sample was never visited
    assert out["pair_frequency"] == table.ravel().tolist()


def test_a_stopped_run_is_not_a_row(tmp_path, monkeypatch):
    """SIGTERM makes train() save and return {"stopped_at": step}: the script stops, keeping the
    rows measured before it, and records nothing for the stopped run."""
    import contrastive_jax.train

    calls = []

    def fake_train(config, workdir):
        calls.append(workdir)
        if len(calls) == 2:
            return {"stopped_at": 1}
        pathlib.Path(workdir).mkdir(parents=True)
        (pathlib.Path(workdir) / "eval.json").write_text(json.dumps({"zero_shot/count": 0.5}))
        return {"zero_shot/count": 0.5}

    monkeypatch.setattr(contrastive_jax.train, "train", fake_train)
    monkeypatch.setattr(results, "code_version", lambda: "v1")
    with pytest.raises(results.Interrupted, match="stopped at step 1"):
        results.run([0, 1], smoke=True, out_dir=str(tmp_path), only=["counting"])
    saved = json.loads((tmp_path / "results_smoke.json").read_text())
    assert [(r["name"], r["seed"]) for r in saved] == [("CLIP", 0)]


def test_carry_over_keeps_rows_only_when_one_per_comparison_comes_back_exactly(tmp_path, monkeypatch):
    from experiments import measure

    numbers = {"zero_shot/color": 0.7, "zero_shot/shape": 0.8, "zero_shot/count": 0.5, "counting_accuracy": 0.6,
               "image_to_text_r@1": 0.3, "text_to_image_r@1": 0.4}  # fmt: skip
    trained = []

    def fake_train(config, workdir):
        trained.append(config.loss.name)
        pathlib.Path(workdir).mkdir(parents=True)
        (pathlib.Path(workdir) / "eval.json").write_text(json.dumps(numbers))
        return dict(numbers)

    import contrastive_jax.train

    monkeypatch.setattr(contrastive_jax.train, "train", fake_train)
    for name in ("rare_pair_accuracy", "temperature_vs_frequency"):
        monkeypatch.setattr(measure, name, lambda workdir, name=name: {f"{name}/x": 0.25})
    monkeypatch.setattr(results, "code_version", lambda: "v1")
    stored = results.run([0], smoke=False, out_dir=str(tmp_path / "v1"))
    monkeypatch.setattr(results, "code_version", lambda: "v2")
    trained.clear()
    carried, mismatches = results.carry_over(stored, str(tmp_path / "v2"))
    assert mismatches == [] and len(carried) == len(stored)
    # the five checked rows (and the CLIP the counting fine-tune starts from, once) retrained, no other
    assert sorted(trained) == sorted(["clip", "clip_count", "nt_xent", "isogclr", "barlip"])
    assert {r["code_version"] for r in carried} == {"v2"} and all(
        r["carried"][0]["from_code"] == "v1" for r in carried
    )
    assert (
        all(r["config_hash"] for r in carried)
        and results.run([0], smoke=False, out_dir=str(tmp_path / "v2"), previous=carried) == carried
    )  # reused as they are
    assert "Carried from code v1 at commit" in results.summarise(carried)
    # A comparison not measured yet is not checked: the others carry over without it.
    trained.clear()
    older = [r for r in stored if r["comparison"] != "clip_rocket"]
    carried, mismatches = results.carry_over(older, str(tmp_path / "v2b"))
    assert mismatches == [] and len(carried) == len(older) and "barlip" not in trained
    numbers["zero_shot/shape"] = 0.81  # the new code moves one number: nothing is carried
    monkeypatch.setattr(results, "code_version", lambda: "v3")
    unchanged, mismatches = results.carry_over(stored, str(tmp_path / "v3"))
    assert unchanged is stored and any("zero_shot/shape 0.8 -> 0.81" in m for m in mismatches)
