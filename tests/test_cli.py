"""The command line's bad inputs: each ends with one `error:` line naming the problem and the fix,
a non-zero exit status, no traceback (unless `--debug`), and the workdir's files unchanged.

The checks themselves (`validate_config`, `check_workdir`, `check_source`, the override
suggestions) run in-process; the subprocess tests run the real entry points against a real tiny
run's workdir and compare its files byte for byte before and after.
"""

import hashlib
import json
import os
import shutil
import subprocess
import sys

import pytest

from contrastive_jax import data
from contrastive_jax import train as training
from experiments import _cli

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The shrunk config of tests/test_train.py's `shrink`, as command-line overrides.
TINY = [
    "--config.total_steps=2",
    "--config.batch_size=16",
    "--config.log_every=1",
    "--config.checkpoint_every=1",
    "--config.optim.warmup_steps=1",
    "--config.data.builder_config=tiny",
    "--config.model.vision.patch_size=16",
    "--config.model.vision.width=32",
    "--config.model.vision.depth=1",
    "--config.model.vision.num_heads=2",
    "--config.model.text.width=32",
    "--config.model.text.depth=1",
    "--config.model.text.num_heads=2",
    "--config.model.embed_dim=16",
    "--config.eval.batch_size=64",
    "--config.eval.max_examples=64",
]


def clip_config():
    from experiments.configs.clip import get_config

    return get_config("shapes_count")


def with_values(config, **values):
    """`config` with dotted keys ("optim__lr" for optim.lr) set, unlocked."""
    with config.unlocked():
        for key, value in values.items():
            *parents, leaf = key.split("__")
            node = config
            for part in parents:
                node = node[part]
            node[leaf] = value
    return config


# --------------------------------------------------------------------------------------------
# In-process: the checks and their messages.


@pytest.mark.parametrize(
    "values, words",
    [
        (dict(batch_size=-16), ["batch_size", "-16", "positive", "--config.batch_size="]),
        (dict(batch_size=0), ["batch_size", "positive"]),
        (dict(batch_size=12), ["batch_size", "12", "8 devices", "multiple of 8", "--config.batch_size=16"]),
        (dict(total_steps=0), ["total_steps", "positive"]),
        (dict(log_every=-1), ["log_every", "positive"]),
        (dict(checkpoint_every=0), ["checkpoint_every", "positive"]),
        (dict(keep_checkpoints=0), ["keep_checkpoints", "positive integer or None"]),
        (dict(optim__lr=-1e-3), ["optim.lr", "positive"]),
        (dict(optim__b2=1.5), ["optim.b2", "[0, 1)"]),
        (dict(optim__grad_clip=-1.0), ["optim.grad_clip", "or None"]),
        (dict(loss__name="clipp"), ["unknown loss", "'clipp'", "did you mean 'clip'"]),
        (dict(loss__exchange="rng"), ["unknown exchange", "did you mean 'ring'"]),
        (dict(loss__exchange="grouped"), ["unknown exchange", "all_gather", "ring"]),
        (dict(loss__name="nt_xent", loss__exchange="ring"), ["nt_xent", "no ring", "exchange=all_gather"]),
        (dict(loss__name="siglip"), ["siglip", "model", "configs/siglip.py"]),
        (dict(loss__label_smoothing=1.0), ["label_smoothing", "[0, 1)"]),
        (dict(loss__name="isogclr", loss__tau_min=0.1), ["tau_min", "tau_init", "tau_max"]),
        (dict(model__name="vit"), ["unknown model", "clip"]),
        (dict(model__vision__image_size=32), ["vision.image_size=32", "data.image_size=64"]),
        (dict(model__vision__patch_size=7), ["patch_size", "multiple"]),
        (dict(data__tokenizer="vocab.txt"), ["tokenizer", ".model", ".json"]),
        (dict(data__tokenizer="/nonexistent/spm.model"), ["tokenizer", "does not exist"]),
        (dict(data__builder_config="tinny"), ["builder config", "'tinny'", "did you mean 'tiny'"]),
    ],
)
def test_validate_config_names_field_and_fix(data_dir, values, words):
    training.validate_config(clip_config(), 8)  # the unchanged config is valid
    with pytest.raises(training.ConfigError) as info:
        training.validate_config(with_values(clip_config(), **values), 8)
    message = str(info.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)


def test_validate_config_counts_the_data_mesh(data_dir):
    config = with_values(clip_config(), batch_size=12)
    training.validate_config(config, 4)  # 12 splits over 4 devices
    with pytest.raises(training.ConfigError, match="over the 8 devices"):
        training.validate_config(config, 8)
    config = with_values(clip_config(), mesh={"data": 4}, batch_size=12)
    training.validate_config(config, 8)  # the batch splits over mesh.data, not over all devices
    with pytest.raises(training.ConfigError, match="mesh.data"):
        training.validate_config(with_values(clip_config(), mesh={"data": 16}), 8)


def test_unknown_dataset_and_builder_config_list_the_known_names(data_dir):
    with pytest.raises(training.ConfigError) as info:
        data.load_source("shapes_cont", "train")
    message = str(info.value)
    assert "unknown dataset 'shapes_cont'" in message and "did you mean 'shapes_count'" in message
    assert "\n" not in message
    with pytest.raises(training.ConfigError) as info:
        data.load_source("no_such_dataset_xyz", "train")
    assert "digits_captions, shapes_count" in str(info.value) and data_dir in str(info.value)
    with pytest.raises(training.ConfigError, match="did you mean 'long_tail'"):
        data.load_source("shapes_count", "train", config="long_tial")
    with pytest.raises(training.ConfigError, match="not 'validation'"):
        data.load_source("shapes_count", "validation", config="tiny")
    data.check_source("shapes_count", config="tiny")  # known names pass
    data.check_source("mnist")  # a registered TFDS dataset passes (prepared or not)


@pytest.mark.parametrize(
    "path, words",
    [
        ("total_step", ["--config.total_step", "did you mean --config.total_steps?"]),
        ("lr", ["did you mean --config.optim.lr?"]),  # the right name in another section
        ("optim.learning_rate", ["config.optim has no field 'learning_rate'", "lr", "warmup_steps"]),
        ("loss.exchnge", ["did you mean --config.loss.exchange?"]),
        ("optimizer.lr", ["config has no field 'optimizer'", "did you mean --config.optim.lr?"]),
        ("model.vison.width", ["did you mean --config.model.vision.width?"]),
        ("batch_size.x", ["config.batch_size is a value", "not a section"]),
    ],
)
def test_unknown_override_suggests_the_key(path, words):
    message = _cli._unknown_override(clip_config(), "config", path)
    for word in words:
        assert word in message, (word, message)


def test_known_overrides_are_not_flagged():
    config = clip_config()
    for path in ("total_steps", "optim.lr", "model.vision.patch_size", "loss.block_size"):
        assert _cli._unknown_override(config, "config", path) is None


def _is_writable_by_us(path):
    try:
        os.makedirs(os.path.join(path, "probe"))
    except OSError:
        return False
    os.rmdir(os.path.join(path, "probe"))
    return True


def test_check_workdir(tmp_path):
    fresh = tmp_path / "new" / "run"
    training.check_workdir(str(fresh))
    assert fresh.is_dir() and list(fresh.iterdir()) == []  # created; the probe file is gone

    a_file = tmp_path / "file"
    a_file.write_text("keep me")
    with pytest.raises(training.WorkdirError, match="is a file, not a directory"):
        training.check_workdir(str(a_file))
    with pytest.raises(training.WorkdirError, match="lies under .*file, which is a file"):
        training.check_workdir(str(a_file / "run"))
    assert a_file.read_text() == "keep me"

    # Not writable. chmod does not stop root, so as root use a directory the kernel refuses.
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    try:
        candidates = [str(locked)] + (["/sys"] if os.path.isdir("/sys") else [])
        unwritable = next((p for p in candidates if not _is_writable_by_us(p)), None)
        if unwritable is None:
            pytest.skip("every candidate directory is writable here (root without a read-only /sys)")
        with pytest.raises(training.WorkdirError, match="pass a .*you can write to"):
            training.check_workdir(os.path.join(unwritable, "run"))
        if unwritable == str(locked):
            with pytest.raises(training.WorkdirError, match="cannot write to"):
                training.check_workdir(str(locked))
    finally:
        locked.chmod(0o755)


def test_check_run_dir(tmp_path):
    with pytest.raises(training.WorkdirError, match="does not exist"):
        training.check_run_dir(str(tmp_path / "missing"))
    with pytest.raises(training.WorkdirError, match="no config.json"):
        training.check_run_dir(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "checkpoints" / "2.orbax-checkpoint-tmp-1").mkdir(parents=True)  # an unfinished save
    with pytest.raises(training.CheckpointError, match="no checkpoint yet; train first"):
        training.check_run_dir(str(tmp_path))
    (tmp_path / "checkpoints" / "2").mkdir()
    training.check_run_dir(str(tmp_path))


# --------------------------------------------------------------------------------------------
# Subprocesses: the real entry points.


def run_cli(module, *args, env=None):
    environ = {k: v for k, v in os.environ.items() if k != "CONTRASTIVE_JAX_DEBUG"}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *args],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=600,
    )


def snapshot(path):
    """Every file under `path` (or `path` itself) → sha256 of its bytes."""
    if os.path.isfile(path):
        return {path: hashlib.sha256(open(path, "rb").read()).hexdigest()}
    files = {}
    for root, _, names in os.walk(path):
        for name in names:
            full = os.path.join(root, name)
            with open(full, "rb") as f:
                files[os.path.relpath(full, path)] = hashlib.sha256(f.read()).hexdigest()
    return files


def assert_clean_error(result, *words):
    lines = result.stderr.strip().splitlines()
    assert result.returncode != 0, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture(scope="module")
def trained(data_dir, tmp_path_factory):
    """A real two-step run's workdir (checkpoints at steps 1 and 2) and its file snapshot."""
    workdir = str(tmp_path_factory.mktemp("cli") / "run")
    result = run_cli("train", *TINY, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(os.listdir(os.path.join(workdir, "checkpoints"))) == ["1", "2"]
    return workdir, snapshot(workdir)


@pytest.mark.parametrize(
    "args, words",
    [
        (
            ["--config=experiments/configs/nope.py"],
            ["config file", "nope.py", "not found", "configs/clip.py"],
        ),
        (["--config=experiments/configs/clp.py"], ["did you mean --config=experiments/configs/clip.py?"]),
        (["--config.total_step=5"], ["unknown config key", "--config.total_step", "--config.total_steps"]),
        (["--config.optim.learning_rate=0.1"], ["--config.optim.learning_rate", "lr"]),
        (["--config.batch_size=-16"], ["batch_size", "-16", "positive"]),
        (["--config.batch_size=0"], ["batch_size", "positive"]),
        (["--config.batch_size=12"], ["batch_size", "8 devices", "--config.batch_size=16"]),
        (["--config.batch_size=abc"], ["--config.batch_size=abc", "int"]),
        (["--config.total_steps=0"], ["total_steps", "positive"]),
        (["--config.log_every=0"], ["log_every", "positive"]),
        (["--config.checkpoint_every=-2"], ["checkpoint_every", "positive"]),
        (["--config.loss.name=clipp"], ["unknown loss", "did you mean 'clip'"]),
        (["--config.loss.exchange=rng"], ["unknown exchange", "did you mean 'ring'"]),
        (["--config.data.name=shapes_cont"], ["unknown dataset", "did you mean 'shapes_count'"]),
        (["--config.data.builder_config=tinny"], ["unknown builder config", "did you mean 'tiny'"]),
    ],
)
def test_train_bad_input_is_one_line_and_keeps_the_run(trained, args, words):
    workdir, before = trained
    # The tiny overrides come first so that each case's flag is the one that is wrong.
    result = run_cli("train", *TINY, *args, f"--workdir={workdir}")
    assert_clean_error(result, *words)
    assert snapshot(workdir) == before


def test_train_bad_workdir_is_one_line_and_keeps_the_file(data_dir, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("precious")
    result = run_cli("train", *TINY, f"--workdir={a_file}")
    assert_clean_error(result, "is a file", "directory")
    result = run_cli("train", *TINY, f"--workdir={a_file}/run")
    assert_clean_error(result, "lies under", "which is a file")
    assert a_file.read_text() == "precious"
    assert_clean_error(run_cli("train", *TINY), "--workdir is required")


def test_debug_shows_the_traceback(trained):
    workdir, before = trained
    for args, env in ((["--debug"], None), ([], {"CONTRASTIVE_JAX_DEBUG": "1"})):
        result = run_cli("train", *TINY, "--config.batch_size=12", *args, f"--workdir={workdir}", env=env)
        assert result.returncode != 0
        assert "Traceback" in result.stderr and "ConfigError" in result.stderr
        assert result.stderr.strip().splitlines()[-1].startswith("error: config.batch_size is 12")
    assert snapshot(workdir) == before


def test_eval_errors_and_quiet_success(trained, tmp_path):
    workdir, before = trained
    result = run_cli("eval", f"--workdir={tmp_path}")
    assert_clean_error(result, "no config.json", "--workdir")
    (tmp_path / "config.json").write_text("{}")
    result = run_cli("eval", f"--workdir={tmp_path}")
    assert_clean_error(result, "no checkpoint yet", "train first")
    assert snapshot(workdir) == before

    copy = str(tmp_path / "copy")  # eval writes eval_test.json: keep the shared run as it was
    shutil.copytree(workdir, copy)
    result = run_cli("eval", f"--workdir={copy}")
    assert result.returncode == 0, result.stderr[-3000:]
    assert '"step": 2' in result.stdout
    info_lines = [line for line in result.stderr.splitlines() if line.startswith("I")]  # absl: I1125 ...
    assert info_lines == [], info_lines[:5]


def test_train_shows_its_progress_lines_once(trained, tmp_path):
    """The library logs progress (not print); the CLI shows it as plain lines on stdout, once."""
    workdir, before = trained
    copy = str(tmp_path / "copy")  # the finished run again: it resumes at its last step
    shutil.copytree(workdir, copy)
    result = run_cli("train", *TINY, f"--workdir={copy}")
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.splitlines()
    assert lines.count(f"Resumed from step 2 in {copy}") == 1, result.stdout[:3000]
    assert "Resumed" not in result.stderr, result.stderr[-3000:]  # not a second time through absl
    assert sum(line.startswith("CLIP model: ") for line in lines) == 1  # the model summary
    assert "zero_shot/color" in json.loads(result.stdout[result.stdout.index("\n{") :])  # the result
    assert snapshot(workdir) == before
