"""Train a model: `python -m experiments.train --config experiments/configs/clip.py --workdir DIR`.

Any config field can be overridden: `--config.total_steps=2000 --config.loss.exchange=ring`.
Running again with the same workdir resumes from its latest intact checkpoint.
"""

import json

from absl import app, flags
from ml_collections import config_flags

from contrastive_jax.train import train

_CONFIG = config_flags.DEFINE_config_file("config", "experiments/configs/clip.py", "Training config file.")
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Directory for checkpoints, metrics and plots.", required=True
)


def main(argv):
    del argv
    results = train(_CONFIG.value, _WORKDIR.value)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
