"""cl2l (clip-rocket's CLIP recipe: CLIP plus CLIP between augmented local views, Fini et al. 2023):
`--config experiments/configs/cl2l.py[:dataset]`.

Two views per sample (`data.local_views=2`, clip-rocket's `--num-augs 2`): random-resized crops
with colour jitter, grayscale, blur and flip, and EDA-augmented captions (see
`contrastive_jax/data`). The global caption drops its stopwords with probability 0.8
(`data.drop_stopwords_prob`, clip-rocket's weak text augmentation). Label smoothing 0.1 on the
local terms, as every reported run. The local heads are clip-rocket's BatchNorm MLPs, here 256 wide for the tiny CPU model (clip-rocket: 4096,
`model_config`'s default; `--config.model.cl2l.local_width=4096`).
"""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    c = base_config(loss="cl2l", dataset=dataset or "shapes_count", model="cl2l")
    c.data.local_views = 2
    c.data.drop_stopwords_prob = 0.8
    c.model.cl2l.local_width = 256
    return c
