"""barlip (clip-rocket's BarLIP: CL2L plus Barlow Twins between image and text projections, Fini et
al. 2023): `--config experiments/configs/barlip.py[:dataset]`.

The views, the global caption's stopword dropping and the local heads as in `cl2l.py`; the Barlow projectors are clip-rocket's BatchNorm MLPs,
here 256 → 512 for the tiny CPU model (clip-rocket: 3000 → 8192, `model_config`'s default).
λ = 5e-3 and κ = 0.025 are the authors' (`--barlip-lamb`, `--barlip-scale-loss`).
"""

from experiments.configs.common import base_config


def get_config(dataset: str = "shapes_count"):
    c = base_config(loss="barlip", dataset=dataset or "shapes_count", model="barlip")
    c.data.local_views = 2
    c.data.drop_stopwords_prob = 0.8
    c.model.cl2l.local_width = 256
    c.model.barlip.width, c.model.barlip.dim = 256, 512
    return c
