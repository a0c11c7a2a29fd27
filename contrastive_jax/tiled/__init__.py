"""Memory-efficient pairwise reductions: dense, blockwise (XLA) and a Pallas GPU kernel.

`losses.clip_loss(..., block_size=k, impl=...)` and `losses.siglip_loss(...)` reach these; they
are public so that other losses can reuse them.
"""

from contrastive_jax.tiled._api import (
    IMPLS,
    PRECISIONS,
    pairwise_lse,
    pairwise_softplus_sum,
    pallas_available,
)

__all__ = ["IMPLS", "PRECISIONS", "pairwise_lse", "pairwise_softplus_sum", "pallas_available"]
