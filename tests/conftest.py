"""Test set-up: 8 fake CPU devices and a persistent compilation cache.

XLA_FLAGS must be set before jax is first imported, so it happens here at import time.
"""

import os

_flags = os.environ.get("XLA_FLAGS", "")
if "xla_force_host_platform_device_count" not in _flags:
    os.environ["XLA_FLAGS"] = (_flags + " --xla_force_host_platform_device_count=8").strip()
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # noqa: E402

_cache_dir = os.environ.get(
    "JAX_COMPILATION_CACHE_DIR", os.path.join(os.path.dirname(os.path.dirname(__file__)), ".jax_cache")
)
jax.config.update("jax_compilation_cache_dir", _cache_dir)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


import pytest  # noqa: E402


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
    """A per-session TFDS directory (the embedded datasets are generated there on first use)."""
    path = str(tmp_path_factory.mktemp("tfds"))
    previous = os.environ.get("CONTRASTIVE_JAX_DATA_DIR")
    os.environ["CONTRASTIVE_JAX_DATA_DIR"] = path
    yield path
    if previous is None:
        os.environ.pop("CONTRASTIVE_JAX_DATA_DIR", None)
    else:
        os.environ["CONTRASTIVE_JAX_DATA_DIR"] = previous
