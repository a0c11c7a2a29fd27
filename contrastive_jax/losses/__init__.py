"""Contrastive losses as pure functions. Find a loss by its paper's name.

| loss | function | module |
| --- | --- | --- |
| CLIP (symmetric InfoNCE) | `clip_loss` | `_clip.py` |
| SigLIP | `siglip_loss` | `_siglip.py` |
| CoCa | `coca_loss`, `caption_loss` | `_coca.py` |
| M2-Encoder grouped aggregation | `grouped_clip_loss` | `_grouped.py` |
| iSogCLR / SogCLR | `isogclr_init`, `isogclr_loss` | `_temperature.py` |
| NT-Xent (SimCLR) | `nt_xent_loss` | `_simclr.py` |
| SupCon | `supcon_loss` | `_simclr.py` |
| DCL, DCLW, DHEL | `dcl_loss`, `dclw_loss`, `dhel_loss` | `_decoupled.py` |
| MV-InfoNCE, MV-DHEL | `mv_infonce_loss`, `mv_dhel_loss` | `_multiview.py` |
| Counting (Teaching CLIP to Count) | `counting_loss` | `_hard_negatives.py` |
| Extra / MoCHi hard negatives | `infonce_with_negatives`, `mochi_negatives` | `_hard_negatives.py` |
| CWCL | `cwcl_loss` | `_weighted.py` |
| MW loss and AUC | `mw_loss`, `auc` | `_ranking.py` |
| Alignment, uniformity, contrastive gap | `alignment_loss`, `uniformity_loss`, `clip_align_uniform_loss` | `_geometry.py` |
"""

from contrastive_jax.losses._clip import clip_loss
from contrastive_jax.losses._coca import caption_loss, coca_loss
from contrastive_jax.losses._decoupled import dcl_loss, dclw_loss, dhel_loss
from contrastive_jax.losses._geometry import alignment_loss, clip_align_uniform_loss, uniformity_loss
from contrastive_jax.losses._grouped import grouped_clip_loss
from contrastive_jax.losses._hard_negatives import counting_loss, infonce_with_negatives, mochi_negatives
from contrastive_jax.losses._multiview import mv_dhel_loss, mv_infonce_loss
from contrastive_jax.losses._ranking import auc, mw_loss
from contrastive_jax.losses._siglip import siglip_loss
from contrastive_jax.losses._simclr import nt_xent_loss, supcon_loss
from contrastive_jax.losses._temperature import ISogCLRState, isogclr_init, isogclr_loss
from contrastive_jax.losses._weighted import cwcl_loss

__all__ = [
    "ISogCLRState",
    "alignment_loss",
    "auc",
    "caption_loss",
    "clip_align_uniform_loss",
    "clip_loss",
    "coca_loss",
    "counting_loss",
    "cwcl_loss",
    "dcl_loss",
    "dclw_loss",
    "dhel_loss",
    "grouped_clip_loss",
    "infonce_with_negatives",
    "isogclr_init",
    "isogclr_loss",
    "mochi_negatives",
    "mv_dhel_loss",
    "mv_infonce_loss",
    "mw_loss",
    "nt_xent_loss",
    "siglip_loss",
    "supcon_loss",
    "uniformity_loss",
]
