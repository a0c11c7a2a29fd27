"""dcl on image and text embeddings as two views: `--config experiments/configs/dcl.py[:dataset]`."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    return base_config(loss="dcl", dataset=dataset or "shapes_count", model="clip")
