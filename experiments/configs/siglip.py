"""siglip on an embedded dataset: `--config experiments/configs/siglip.py[:shapes_count|digits_captions]`."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    return base_config(loss="siglip", dataset=dataset or "shapes_count", model="siglip")
