"""Training from webdataset shards through the command line, with worker processes: two runs
agree bit for bit, through a corrupt JPEG and a captionless sample (counted in metrics.jsonl); a
SIGKILL at a random step resumes to the same state; another worker count is refused with the
way on, or continues with a new data order when asked."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from contrastive_jax import data, train
from tests import shards_common as sc

ROOT = pathlib.Path(__file__).resolve().parents[1]
STEPS = 20


@pytest.fixture(scope="module")
def shards(tmp_path_factory):
    out = tmp_path_factory.mktemp("photo_shards")
    data.write_shards(sc.photo_records(64, size=(96, 96)), str(out / "train"), samples_per_shard=8)
    data.write_shards(sc.photo_records(16, size=(96, 96), seed=9), str(out / "eval"), samples_per_shard=8)
    return str(out / "train" / "{00000..00007}.tar"), str(out / "eval" / "{00000..00001}.tar")


def command(shards, workdir, *extra, steps=STEPS, workers=2):
    train_urls, eval_urls = shards
    return [
        sys.executable, "-m", "experiments.train", "--config", "experiments/configs/clip.py", f"--workdir={workdir}",
        f"--config.total_steps={steps}", "--config.batch_size=16", "--config.log_every=1",
        "--config.checkpoint_every=3", "--config.optim.warmup_steps=2", "--config.data.name=webdataset",
        f"--config.data.urls={train_urls}", f"--config.data.eval_urls={eval_urls}", "--config.data.tokenizer=clip_bpe",
        "--config.data.image_size=32", "--config.model.vision.image_size=32", "--config.model.vision.patch_size=16",
        "--config.data.augment=rrc", "--config.data.flip=True", f"--config.data.num_workers={workers}",
        "--config.model.vision.width=32", "--config.model.vision.depth=1", "--config.model.text.width=32",
        "--config.model.text.depth=1", "--config.model.vision.num_heads=2", "--config.model.text.num_heads=2",
        "--config.model.embed_dim=16", "--config.eval.questions=()",
        "--config.eval.batch_size=16", *extra,
    ]  # fmt: skip


def environment():
    env = dict(os.environ, PYTHONPATH=f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    return env


def run(args, **kw):
    return subprocess.run(
        args, cwd=ROOT, env=environment(), capture_output=True, text=True, timeout=600, **kw
    )


def metrics(workdir) -> list[dict]:
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f if line.strip()]


def saved_state(workdir):
    """The newest checkpoint's whole train state, restored for the run's own config.json."""
    config = train.read_run_config(str(workdir))
    *_, state, _ = train.abstract_state(config, 64)
    checkpointer = train.Checkpointer(os.path.join(workdir, "checkpoints"))
    step, restored, _ = checkpointer.restore_latest(state)
    checkpointer.close()
    return step, restored


def assert_same_arrays(a, b):
    import jax

    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


@pytest.fixture(scope="module")
def reference(shards, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("reference")
    done = run(command(shards, workdir))
    assert done.returncode == 0, done.stderr[-3000:]
    return workdir


@pytest.mark.slow
def test_two_runs_agree_and_count_the_skipped_samples(shards, reference, tmp_path):
    again = run(command(shards, tmp_path))
    assert again.returncode == 0, again.stderr[-3000:]
    first, second = metrics(reference), metrics(tmp_path)
    assert [r["step"] for r in first] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in first] == [r["loss"] for r in second]
    assert_same_arrays(saved_state(reference), saved_state(tmp_path))  # params, optimizer state, step, RNG
    # 20 steps x 16 = 320 samples, about 5 epochs over 62 good records: 2 skipped per epoch.
    last = first[-1]
    assert last["data/skipped/corrupt_image"] >= 4 and last["data/skipped/no_caption"] >= 4
    assert last["data/skipped"] == last["data/skipped/corrupt_image"] + last["data/skipped/no_caption"]
    assert [r["data/skipped"] for r in first] == sorted(r["data/skipped"] for r in first)  # a running total
    assert "Skipping samples whose image does not decode" in again.stderr and "000000005" in again.stderr
    evaluation = json.loads((reference / "eval.json").read_text())
    assert evaluation["num_examples"] == 14 and "image_to_text_r@1" in evaluation  # 16 less the 2 bad ones


@pytest.mark.slow
def test_sigkill_at_a_random_step_resumes_to_the_same_state(shards, reference, tmp_path):
    kill_after = int(np.random.default_rng().integers(2, 14))
    victim = subprocess.Popen(command(shards, tmp_path), cwd=ROOT, env=environment(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    log, checkpoints = tmp_path / "metrics.jsonl", tmp_path / "checkpoints"

    def finalized():  # orbax writes a step under a temporary name and renames it when complete
        return checkpoints.is_dir() and any(p.name.isdigit() for p in checkpoints.iterdir())

    try:
        for _ in range(6000):
            if log.exists() and len(log.read_text().splitlines()) >= kill_after and finalized():
                break
            if victim.poll() is not None:
                pytest.fail(f"the run ended before the kill: {victim.stderr.read()[-3000:]}")
            time.sleep(0.02)
        victim.send_signal(signal.SIGKILL)
    finally:
        victim.wait(timeout=60)
    killed_at = len(log.read_text().splitlines())
    assert killed_at < STEPS, "the run finished before the kill"
    saved = train.Checkpointer(str(checkpoints))
    newest = max(saved.steps())
    saved.close()
    resumed = run(command(shards, tmp_path))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"Resumed from step {newest} " in resumed.stdout, f"killed after step {killed_at}"
    assert_same_arrays(saved_state(tmp_path), saved_state(reference))
    assert [r["step"] for r in metrics(tmp_path)] == list(range(1, STEPS + 1))
    assert [r["loss"] for r in metrics(tmp_path)] == [r["loss"] for r in metrics(reference)]
    assert metrics(tmp_path)[-1]["data/skipped"] == metrics(reference)[-1]["data/skipped"]


@pytest.mark.slow
def test_another_worker_count_is_refused_or_reseeded_on_request(shards, tmp_path):
    first = run(command(shards, tmp_path, steps=6))
    assert first.returncode == 0, first.stderr[-3000:]
    before = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()}
    refused = run(command(shards, tmp_path, steps=9, workers=1))
    assert refused.returncode == 1
    message = refused.stderr.strip().splitlines()[-1]
    assert message.startswith("error: the checkpoint at step 6 was written with another data layout")
    assert "data.num_workers 2 -> 1" in message and "--config.data.num_workers=2" in message
    assert "--config.data.reseed_on_layout_change=True" in message
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*") if p.is_file()} == before  # untouched
    reseeded = run(
        command(shards, tmp_path, "--config.data.reseed_on_layout_change=True", steps=9, workers=1)
    )
    assert reseeded.returncode == 0, reseeded.stderr[-3000:]
    assert "new data order" in reseeded.stderr
    assert [r["step"] for r in metrics(tmp_path)] == list(range(1, 10))


@pytest.mark.slow
def test_make_shards_writes_what_the_pipeline_reads_and_the_demo_trains_from_shards(data_dir, tmp_path):
    out = tmp_path / "shapes"
    made = run([sys.executable, "-m", "experiments.make_shards", "--dataset", "shapes_count", "--builder_config",
                "tiny", "--out", str(out), "--samples_per_shard", "100"])  # fmt: skip
    assert made.returncode == 0, made.stderr[-3000:]
    assert "--config.data.urls='" + str(out / "{00000..00002}.tar") + "'" in made.stdout
    written, source = (
        data.WebDatasetSource(str(out / "{00000..00002}.tar")),
        data.load_source("shapes_count", "train", config="tiny"),
    )
    assert len(written) == len(source) == 256
    for i in (0, 99, 100, 255):
        record, original = written[i], source[i]
        assert record["caption"] == original["caption"].decode()
        assert (record["json"]["color"], record["json"]["count"]) == (original["color"], original["count"])
        pixels = data.load_image(record["image"], size=None).astype(float)
        assert np.abs(pixels - original["image"]).mean() < 4  # JPEG at quality 95 of the same image
    both = run([sys.executable, "-m", "experiments.make_shards", "--dataset", "shapes_count", "--folder", "x",
                "--out", str(out)])  # fmt: skip
    assert both.returncode == 1 and both.stderr.strip().splitlines()[-1].startswith(
        "error: pass either --dataset"
    )
    demo = run([sys.executable, "-m", "experiments.demo", "--shards", str(tmp_path / "demo_shards"), "--builder_config",
                "tiny", "--steps", "3", "--workdir", str(tmp_path / "demo")])  # fmt: skip
    assert demo.returncode == 0, demo.stderr[-3000:]
    assert "Trained clip on webdataset for 3 steps" in demo.stdout and "count:" in demo.stdout
