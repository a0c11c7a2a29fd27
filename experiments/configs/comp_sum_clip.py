"""comp_sum_clip (Mao, Mohri & Zhong ICML'23, the comp-sum family Φ^τ applied to CLIP's two
cross-entropies): `--config experiments/configs/comp_sum_clip.py[:dataset]`. τ = 1 is CLIP; this
config trains τ = 1.5 (between the logistic loss and the bounded MAE end of the family, τ = 2),
one of the spec's oracle settings. The temperature is CLIP's learned logit scale."""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    config = base_config(loss="comp_sum_clip", dataset=dataset or "shapes_count", model="clip")
    config.loss.tau = 1.5
    return config
