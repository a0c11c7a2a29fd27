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
| Distillation (open_clip's DistillClipLoss term) | `distill_clip_loss` | `_distill.py` |
| MV-InfoNCE, MV-DHEL | `mv_infonce_loss`, `mv_dhel_loss` | `_multiview.py` |
| Counting (Teaching CLIP to Count) | `counting_loss` | `_hard_negatives.py` |
| Extra / MoCHi hard negatives | `infonce_with_negatives`, `mochi_negatives` | `_hard_negatives.py` |
| HCL (hard negative sampling), debiased contrastive loss | `hcl_loss`, `debiased_contrastive_loss` | `_hard_negatives.py` |
| Hard top-K InfoNCE (Wang & Liu) | `hard_topk_infonce_loss` | `_hard_negatives.py` |
| LDR-KL, ALDR-KL (label-distributionally robust) | `ldr_kl_loss`, `aldr_kl_init`, `aldr_kl_loss` | `_robust.py` |
| Comp-sum losses (CE, GCE, MAE, sum-exponential) | `comp_sum_loss`, `comp_sum_clip_loss` | `_robust.py` |
| CWCL | `cwcl_loss` | `_weighted.py` |
| MW loss and AUC | `mw_loss`, `auc` | `_ranking.py` |
| Alignment, uniformity, contrastive gap | `alignment_loss`, `uniformity_loss`, `clip_align_uniform_loss` | `_geometry.py` |
| SBCL (subclass-balancing contrastive learning) | `sbcl_loss`, `sbcl_class_temperatures` | `_long_tail.py` |
| EBV (equiangular basis vectors) | `ebv_loss`, `ebv_basis_objective`, `ebv_basis` | `_prototypes.py` |
| TCM (threshold-consistent margin) | `tcm_regularizer` | `_metric.py` |
| UNPG (unified negative pair generation) | `unpg_loss` | `_metric.py` |
| CACR (contrastive attraction and repulsion) | `cacr_loss`, `cacr_terms` | `_transport.py` |
| GroCo (learning by sorting), odd-even differentiable sort | `groco_loss`, `diffsort_odd_even` | `_sorting.py` |
| CL2L (clip-rocket: CLIP + local-view CLIP terms) | `cl2l_loss` | `_clip_rocket.py` |
| BarLIP (Barlow Twins across modalities) | `barlip_loss` | `_clip_rocket.py` |
| SiamLIP / BYOLIP (cross-modal prediction) | `siamlip_loss` | `_clip_rocket.py` |
| SwALIP, Sinkhorn-Knopp targets | `swalip_loss`, `sinkhorn_knopp` | `_clip_rocket.py` |
"""

from contrastive_jax.losses._clip import clip_loss
from contrastive_jax.losses._clip_rocket import (
    barlip_loss,
    cl2l_loss,
    siamlip_loss,
    sinkhorn_knopp,
    swalip_loss,
)
from contrastive_jax.losses._coca import caption_loss, coca_loss
from contrastive_jax.losses._decoupled import dcl_loss, dclw_loss, dhel_loss
from contrastive_jax.losses._distill import distill_clip_loss
from contrastive_jax.losses._geometry import alignment_loss, clip_align_uniform_loss, uniformity_loss
from contrastive_jax.losses._grouped import grouped_clip_loss
from contrastive_jax.losses._hard_negatives import (
    counting_loss,
    debiased_contrastive_loss,
    hard_topk_infonce_loss,
    hcl_loss,
    infonce_with_negatives,
    mochi_negatives,
)
from contrastive_jax.losses._long_tail import sbcl_class_temperatures, sbcl_loss
from contrastive_jax.losses._metric import tcm_regularizer, unpg_loss
from contrastive_jax.losses._multiview import mv_dhel_loss, mv_infonce_loss
from contrastive_jax.losses._prototypes import ebv_basis, ebv_basis_objective, ebv_loss
from contrastive_jax.losses._ranking import auc, mw_loss
from contrastive_jax.losses._robust import (
    ALDRKLState,
    aldr_kl_init,
    aldr_kl_loss,
    comp_sum_clip_loss,
    comp_sum_loss,
    ldr_kl_loss,
)
from contrastive_jax.losses._siglip import siglip_loss
from contrastive_jax.losses._simclr import nt_xent_loss, supcon_loss
from contrastive_jax.losses._sorting import diffsort_odd_even, groco_loss
from contrastive_jax.losses._temperature import ISogCLRState, isogclr_init, isogclr_loss
from contrastive_jax.losses._transport import cacr_loss, cacr_terms
from contrastive_jax.losses._weighted import cwcl_loss

__all__ = [
    "ALDRKLState",
    "ISogCLRState",
    "aldr_kl_init",
    "aldr_kl_loss",
    "alignment_loss",
    "auc",
    "barlip_loss",
    "cacr_loss",
    "cacr_terms",
    "caption_loss",
    "cl2l_loss",
    "clip_align_uniform_loss",
    "clip_loss",
    "coca_loss",
    "comp_sum_clip_loss",
    "comp_sum_loss",
    "counting_loss",
    "cwcl_loss",
    "dcl_loss",
    "dclw_loss",
    "debiased_contrastive_loss",
    "dhel_loss",
    "diffsort_odd_even",
    "distill_clip_loss",
    "ebv_basis",
    "ebv_basis_objective",
    "ebv_loss",
    "groco_loss",
    "grouped_clip_loss",
    "hard_topk_infonce_loss",
    "hcl_loss",
    "infonce_with_negatives",
    "isogclr_init",
    "isogclr_loss",
    "ldr_kl_loss",
    "mochi_negatives",
    "mv_dhel_loss",
    "mv_infonce_loss",
    "mw_loss",
    "nt_xent_loss",
    "sbcl_class_temperatures",
    "sbcl_loss",
    "siamlip_loss",
    "siglip_loss",
    "sinkhorn_knopp",
    "supcon_loss",
    "swalip_loss",
    "tcm_regularizer",
    "uniformity_loss",
    "unpg_loss",
]
