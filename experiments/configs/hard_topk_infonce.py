"""hard_topk_infonce (each image against its K hardest texts and each text against its K hardest
images): `--config experiments/configs/hard_topk_infonce.py[:dataset]`.

The paper (Wang & Liu, CVPR'21) gives no verified τ or K for this loss, so the loss section has no
defaults for them: this config's τ = 0.07 (CLIP's initial temperature) and K = 8 (of the 127 negatives
at its batch of 128; any K below the global batch works) are this project's choices, not the paper's.
"""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    config = base_config(loss="hard_topk_infonce", dataset=dataset or "shapes_count", model="clip")
    config.loss.temperature, config.loss.num_hard = 0.07, 8
    return config
