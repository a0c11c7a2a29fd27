"""Memory-efficient pairwise reductions: dense, blockwise (XLA) and a Pallas GPU kernel.

`losses.clip_loss(..., block_size=k, impl=...)` and `losses.siglip_loss(...)` reach these; they
are public so that other losses can reuse them:

* `pairwise_lse`, `pairwise_softplus_sum`: the two reductions of the logit matrix a loss needs,
  differentiable, with the implementation picked by `block_size` / `impl`;
* `similarity`: `x yᵀ` with float32 accumulation, the product every loss scores pairs with;
* `resolve_tiling` → `Tiling`: the dispatch contract itself, for a caller that composes the raw
  forward and backward passes in its own custom VJP (`parallel`'s ring, on each visiting block);
* `pallas_available`, `IMPLS`, `PRECISIONS`: what can be asked for.
"""

from contrastive_jax.tiled._api import (
    IMPLS,
    PRECISIONS,
    pairwise_lse,
    pairwise_softplus_sum,
    pallas_available,
)
from contrastive_jax.tiled._blockwise import similarity
from contrastive_jax.tiled._dispatch import Tiling, resolve_tiling

__all__ = [
    "IMPLS",
    "PRECISIONS",
    "Tiling",
    "pairwise_lse",
    "pairwise_softplus_sum",
    "pallas_available",
    "resolve_tiling",
    "similarity",
]
