"""clip on an embedded dataset: `--config experiments/configs/clip.py[:shapes_count|digits_captions]`."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    return base_config(loss="clip", dataset=dataset or "shapes_count", model="clip")
