"""hcl (hard negative sampling, Robinson et al. ICLR'21) on image and text embeddings as two views:
`--config experiments/configs/hcl.py[:dataset]`. τ = 0.5, τ⁺ = 0.1, β = 1.0 are the authors' defaults
(joshr17/HCL, for SimCLR on images); image-text training may want a lower τ (`--config.loss.temperature`)."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    return base_config(loss="hcl", dataset=dataset or "shapes_count", model="clip")
