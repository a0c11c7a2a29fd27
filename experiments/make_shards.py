"""Write any source the project reads as webdataset tar shards in img2dataset's layout:

    python -m experiments.make_shards --dataset shapes_count --split train --out DIR
    python -m experiments.make_shards --folder photos/ --captions captions.csv --out DIR

`DIR/00000.tar, 00001.tar, ...` hold `KEY.jpg` (or .png), `KEY.txt` and `KEY.json` per sample, with
`00000_stats.json` beside each (img2dataset's counts); the source's other fields (labels, the
counterfactual caption, ...) go into the .json. Train from them with the line it prints:

    --config.data.name=webdataset --config.data.urls='DIR/{00000..00019}.tar'

A dataset is an embedded one or any prepared TFDS image-text dataset (`--builder_config`,
`--split`); a folder is images plus a CSV/TSV (`filename,caption`) or JSONL captions file, whose
files are copied into the shards as they are (no re-encoding).
"""

import json
import os

from absl import flags

from experiments import _cli

_DATASET = flags.DEFINE_string("dataset", None, "An embedded or prepared TFDS dataset.")
_BUILDER_CONFIG = flags.DEFINE_string("builder_config", None, "The dataset's builder config.")
_SPLIT = flags.DEFINE_string("split", "train", "The dataset's split.")
_FOLDER = flags.DEFINE_string("folder", None, "A folder of images (instead of --dataset).")
_CAPTIONS = flags.DEFINE_string(
    "captions", None, "The folder's captions file (CSV/TSV filename,caption or JSONL)."
)
_OUT = flags.DEFINE_string("out", None, "Where the shards go (created).", required=True)
_PER_SHARD = flags.DEFINE_integer("samples_per_shard", 1000, "Samples per tar shard.")
_FORMAT = flags.DEFINE_enum("image_format", "jpg", ["jpg", "png", "webp"], "Encoding of decoded images.")
_QUALITY = flags.DEFINE_integer("quality", 95, "JPEG quality (img2dataset's default: 95).")
_MAX = flags.DEFINE_integer("max_examples", 0, "Write the first N records only (0: all).")
flags.declare_key_flag("debug")


def _records(source, limit: int):
    for i in range(min(len(source), limit) if limit else len(source)):
        record = dict(source[i])
        record.pop("__key__", None)
        record.setdefault("source_index", i)
        yield record


def main(argv):
    del argv
    from contrastive_jax import data
    from contrastive_jax.train import ConfigError

    if bool(_DATASET.value) == bool(_FOLDER.value):
        raise ConfigError("pass either --dataset NAME or --folder DIR --captions FILE")
    if _FOLDER.value:
        if not _CAPTIONS.value:
            raise ConfigError(
                "--folder needs --captions FILE (CSV/TSV with filename,caption columns, or JSONL)"
            )
        source = data.ImageTextFolder(_FOLDER.value, _CAPTIONS.value, decode=False)
    else:
        source = data.load_source(_DATASET.value, _SPLIT.value, config=_BUILDER_CONFIG.value)
    if _PER_SHARD.value < 1:
        raise ConfigError(f"--samples_per_shard is {_PER_SHARD.value} but must be at least 1")
    paths = data.write_shards(
        _records(source, _MAX.value),
        _OUT.value,
        samples_per_shard=_PER_SHARD.value,
        image_format=_FORMAT.value,
        quality=_QUALITY.value,
    )
    last = len(paths) - 1
    pattern = os.path.join(_OUT.value, f"{{00000..{last:05d}}}.tar" if last else "00000.tar")
    samples = min(len(source), _MAX.value) if _MAX.value else len(source)
    print(json.dumps({"shards": len(paths), "samples": samples, "urls": pattern}))
    print(f"Train on them with: --config.data.name=webdataset --config.data.urls='{pattern}'")


if __name__ == "__main__":
    _cli.run(main)
