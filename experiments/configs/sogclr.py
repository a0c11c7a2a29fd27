"""sogclr on an embedded dataset: `--config experiments/configs/sogclr.py[:shapes_count|digits_captions]`."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    return base_config(loss="sogclr", dataset=dataset or "shapes_count", model="clip")
