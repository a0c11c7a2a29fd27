"""Evaluate a run's latest checkpoint: `python -m experiments.eval --workdir DIR`.

Reads the config the run saved, restores the newest intact checkpoint, and reports zero-shot
accuracy, retrieval recall@1/5/10 and (on shapes_count) counting accuracy on the test split.
"""

import json
import os

from absl import app, flags

from contrastive_jax.train import evaluate_checkpoint

_WORKDIR = flags.DEFINE_string("workdir", None, "A training run's directory.", required=True)
_SPLIT = flags.DEFINE_string("split", "test", "Split to evaluate on.")


def main(argv):
    del argv
    results = evaluate_checkpoint(_WORKDIR.value, split=_SPLIT.value)
    with open(os.path.join(_WORKDIR.value, f"eval_{_SPLIT.value}.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    app.run(main)
