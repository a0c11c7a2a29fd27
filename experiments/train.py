"""Train a model: `python -m experiments.train --config experiments/configs/clip.py --workdir DIR`.

Any config field can be overridden: `--config.total_steps=2000 --config.loss.exchange=ring`.
Running again with the same workdir resumes from its latest intact checkpoint.
A mistake in the flags, the config or the workdir ends with one line `error: ...` on stderr and a
non-zero exit status, the workdir unchanged; `--debug` (or CONTRASTIVE_JAX_DEBUG=1) adds the traceback.
"""

import json

import jax
from absl import flags

from contrastive_jax.train import check_workdir, train, validate_config
from experiments import _cli

_CONFIG = _cli.define_config_file("config", "experiments/configs/clip.py", "Training config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and plots.", required=True
)
flags.declare_key_flag("config")  # list it, and --debug, in --help
flags.declare_key_flag("debug")


def main(argv):
    del argv
    config, workdir = _CONFIG.value, _WORKDIR.value
    validate_config(config, jax.device_count())  # before anything is created or written
    check_workdir(workdir)
    results = train(config, workdir)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _cli.run(main)
