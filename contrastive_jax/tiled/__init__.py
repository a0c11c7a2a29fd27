"""Memory-efficient pairwise reductions: dense, blockwise (XLA) and fused (Pallas GPU).

`losses.clip_loss(..., block_size=k)` and `losses.siglip_loss(..., block_size=k)` reach these;
they are public so that other losses can reuse them.
"""

from contrastive_jax.tiled._api import IMPLS, fused_available, pairwise_lse, pairwise_softplus_sum

__all__ = ["IMPLS", "fused_available", "pairwise_lse", "pairwise_softplus_sum"]
