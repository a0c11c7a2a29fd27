"""contrastive_jax: contrastive representation learning in JAX.

`from contrastive_jax import losses` gives every loss as a pure function; `parallel` carries
negatives across devices inside `jax.shard_map`; `tiled` holds the memory-efficient blockwise
paths. Models, data, training and evaluation live in their own subpackages and are imported
on first use so that `import contrastive_jax` stays light.
"""

import importlib

from contrastive_jax._normalize import l2_normalize, logit_scale_from_param

__version__ = "0.1.0"

_LAZY_SUBMODULES = ("losses", "parallel", "tiled", "models", "data", "train", "evaluate")


def __getattr__(name):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"contrastive_jax.{name}")
    raise AttributeError(f"module 'contrastive_jax' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_LAZY_SUBMODULES))


__all__ = ["l2_normalize", "logit_scale_from_param", "__version__", *_LAZY_SUBMODULES]
