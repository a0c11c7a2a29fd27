"""Contrastive losses as pure functions. Find a loss by its paper's name.

| loss | function | module |
| --- | --- | --- |
| CLIP (symmetric InfoNCE) | `clip_loss` | `_clip.py` |
| SigLIP | `siglip_loss` | `_siglip.py` |
| CoCa | `coca_loss`, `caption_loss` | `_coca.py` |
| M2-Encoder grouped aggregation | `grouped_clip_loss` | `_grouped.py` |
| iSogCLR / SogCLR | `isogclr_init`, `isogclr_loss` | `_temperature.py` |
"""

from contrastive_jax.losses._clip import clip_loss
from contrastive_jax.losses._coca import caption_loss, coca_loss
from contrastive_jax.losses._grouped import grouped_clip_loss
from contrastive_jax.losses._siglip import siglip_loss
from contrastive_jax.losses._temperature import ISogCLRState, isogclr_init, isogclr_loss

__all__ = [
    "ISogCLRState",
    "isogclr_init",
    "isogclr_loss",
    "caption_loss",
    "clip_loss",
    "coca_loss",
    "grouped_clip_loss",
    "siglip_loss",
]
