"""TFDS builders for the embedded datasets, written as array_record (no TensorFlow needed).

Images are stored as PNG bytes encoded with PIL (TFDS would call TensorFlow to encode arrays).
Both datasets generate their data locally, so `download_and_prepare()` needs no network.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

from contrastive_jax.data import _digits, _shapes


@dataclasses.dataclass
class ShapesCountConfig(tfds.core.BuilderConfig):
    num_train: int = 20_000
    num_test: int = 2_000
    zipf: float = 0.0  # training (colour, shape) pairs ∝ 1 / rank^zipf; 0 = uniform


class ShapesCount(tfds.core.GeneratorBasedBuilder):
    """Images of 1–10 identical coloured shapes (plus an optional distractor) with captions.

    Configs: "default" (20,000 / 2,000), "long_tail" and "long_tail_steep" (training colour-shape
    pairs drawn from a Zipf distribution with exponent 1.1, resp. 2.0; balanced test split) and
    "tiny" (256 / 64, for tests). `pair_frequencies(config)` gives the training pairs' probabilities.
    """

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [
        ShapesCountConfig(name="default", description="uniform colour-shape pairs"),
        ShapesCountConfig(
            name="long_tail",
            zipf=_shapes.ZIPF["long_tail"],
            description="Zipf-distributed training pairs (s = 1.1)",
        ),
        ShapesCountConfig(
            name="long_tail_steep",
            zipf=_shapes.ZIPF["long_tail_steep"],
            description="Zipf-distributed training pairs (s = 2.0)",
        ),
        ShapesCountConfig(name="tiny", num_train=256, num_test=64, description="for tests"),
    ]
    SEEDS = {"train": 1, "test": 2}

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            description="Counting benchmark: captions name the number, colour and shape of the objects.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(_shapes.IMAGE_SIZE, _shapes.IMAGE_SIZE, 3)),
                    "caption": tfds.features.Text(),
                    "counterfactual_caption": tfds.features.Text(),
                    "count": tfds.features.Scalar(np.int32),
                    "color": tfds.features.ClassLabel(names=list(_shapes.COLORS)),
                    "shape": tfds.features.ClassLabel(names=list(_shapes.SHAPES)),
                    "has_distractor": tfds.features.Scalar(np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        cfg = self.builder_config
        return {
            "train": self._generate_examples("train", cfg.num_train, cfg.zipf),
            "test": self._generate_examples("test", cfg.num_test, 0.0),
        }

    def _generate_examples(self, split: str, num: int, zipf: float):
        for index in range(num):
            ex = _shapes.example(self.SEEDS[split], index, zipf=zipf)
            ex["image"] = _shapes.png_bytes(ex["image"])
            ex["has_distractor"] = int(ex["has_distractor"])
            yield index, ex


@dataclasses.dataclass
class DigitsCaptionsConfig(tfds.core.BuilderConfig):
    image_size: int = 32


class DigitsCaptions(tfds.core.GeneratorBasedBuilder):
    """scikit-learn's handwritten digits (1,797 real 8×8 scans), upscaled, with templated captions."""

    VERSION = tfds.core.Version("1.0.0")
    BUILDER_CONFIGS = [DigitsCaptionsConfig(name="default", description="32×32 RGB")]

    def _info(self):
        size = self.builder_config.image_size
        return tfds.core.DatasetInfo(
            builder=self,
            description="Handwritten digits with captions such as 'a handwritten digit seven'.",
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Image(shape=(size, size, 3)),
                    "caption": tfds.features.Text(),
                    "label": tfds.features.ClassLabel(names=list(_digits.DIGIT_WORDS)),
                    "source_index": tfds.features.Scalar(np.int32),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        del dl_manager
        return {split: self._generate_examples(split) for split in ("train", "test")}

    def _generate_examples(self, split: str):
        images, labels, source = _digits.load_split(split, self.builder_config.image_size)
        for k, (image, label, origin) in enumerate(zip(images, labels, source)):
            template = int(np.random.default_rng([7, int(origin)]).integers(len(_digits.TEMPLATES)))
            yield (
                k,
                {
                    "image": _shapes.png_bytes(image),
                    "caption": _digits.digit_caption(int(label), template),
                    "label": int(label),
                    "source_index": int(origin),
                },
            )


EMBEDDED = {"shapes_count": ShapesCount, "digits_captions": DigitsCaptions}
