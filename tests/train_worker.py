"""One training process for the preemption tests: the real `train()` loop on a tiny config.

Usage: python -m tests.train_worker WORKDIR STEPS SLEEP [PROCESS_ID NUM_PROCESSES PORT].
With a process id, runs as one of NUM_PROCESSES `jax.distributed` processes (2 CPU devices
each) on 127.0.0.1:PORT, with parameters and optimizer state split over the devices of all
processes (`fsdp_across_hosts`); alone, as one process with 8 CPU devices (as the test session). SLEEP seconds pass after
each step so that a test can signal the process mid-run. Prints the result as JSON.
"""

import json
import os
import sys
import time

workdir, steps, pause = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
distributed = len(sys.argv) > 4
os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={2 if distributed else 8}"
os.environ["JAX_PLATFORMS"] = "cpu"

import jax  # noqa: E402

if distributed:
    process_id, num_processes, port = (int(a) for a in sys.argv[4:7])
    jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=num_processes, process_id=process_id)
cache = os.environ.get("JAX_COMPILATION_CACHE_DIR")
if cache:
    jax.config.update("jax_compilation_cache_dir", cache)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)

from contrastive_jax import train  # noqa: E402
from tests.train_common import clip_config, fsdp_across_hosts  # noqa: E402

config = clip_config(steps=steps)
if distributed:  # FSDP across the processes: parameters split over all 4 devices of both hosts
    config = fsdp_across_hosts(config)
result = train.train(config, workdir, evaluate=False, on_step=lambda step, metrics: time.sleep(pause))
print("RESULT " + json.dumps(result), flush=True)
if distributed:
    jax.distributed.shutdown()
