"""Evaluate a run's latest checkpoint: `python -m experiments.eval --workdir DIR`.

Reads the config the run saved, restores the newest intact checkpoint, and reports zero-shot
accuracy, retrieval recall@1/5/10 and (on shapes_count) counting accuracy on the test split.
A workdir without config.json or checkpoints ends with one line `error: ...` on stderr.
"""

import json

from absl import flags

from contrastive_jax.train import RunPaths, check_run_dir, evaluate_checkpoint
from experiments import _cli

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate on.")
flags.declare_key_flag("debug")  # list it in --help


def main(argv):
    del argv
    check_run_dir(_WORKDIR.value)
    results = evaluate_checkpoint(_WORKDIR.value, split=_SPLIT.value)
    with open(RunPaths(_WORKDIR.value).eval_results(_SPLIT.value), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    _cli.run(main)
