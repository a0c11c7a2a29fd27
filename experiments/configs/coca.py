"""coca on an embedded dataset: `--config experiments/configs/coca.py[:shapes_count|digits_captions]`."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    return base_config(loss="coca", dataset=dataset or "shapes_count", model="coca")
