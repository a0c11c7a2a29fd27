"""One process of the 2-process test (tests/test_multihost.py): a data-parallel loss + SGD step.

Usage: python -m tests.multihost_worker PROCESS_ID PORT OUT_JSON. Each process owns 2 CPU
devices; the global batch is split across the 4 devices of both processes.
"""

import json
import os
import sys

process_id, port, out_path = int(sys.argv[1]), sys.argv[2], sys.argv[3]
os.environ["XLA_FLAGS"] = "--xla_force_host_platform_device_count=2"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402
import numpy as np  # noqa: E402
from jax.experimental import multihost_utils  # noqa: E402
from jax.sharding import NamedSharding  # noqa: E402
from jax.sharding import PartitionSpec as P  # noqa: E402

from tests.multihost_common import global_batch, train_step  # noqa: E402

jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=process_id)
try:
    from contrastive_jax import parallel

    mesh = parallel.data_mesh("data")
    assert jax.device_count() == 4 and jax.local_device_count() == 2
    images, texts, params = global_batch()
    rows = images.shape[0] // 2
    local = slice(process_id * rows, (process_id + 1) * rows)  # this process's share of the batch
    sharding = NamedSharding(mesh, P("data"))
    images = jax.make_array_from_process_local_data(sharding, images[local])
    texts = jax.make_array_from_process_local_data(sharding, texts[local])
    results = {}
    for exchange in ("all_gather", "ring"):
        loss, new_params = train_step(params, images, texts, mesh=mesh, exchange=exchange)
        new_params = multihost_utils.process_allgather(new_params, tiled=True)
        results[exchange] = {"loss": float(loss), "params": np.asarray(new_params).tolist()}
    if process_id == 0:
        with open(out_path, "w") as f:
            json.dump(results, f)
finally:
    jax.distributed.shutdown()
