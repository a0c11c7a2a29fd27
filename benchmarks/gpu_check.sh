#!/usr/bin/env bash
# One command for a GPU machine (no install, no network): the Pallas kernel's tests compiled
# through Triton and the cuDNN attention test, then the ViT-B/16 train-step table (XLA vs cuDNN
# attention) in benchmarks/results/train_step_gpu.{json,md} and the loss_speed table in
# benchmarks/results/loss_speed_gpu.{json,md}.
#
#   bash benchmarks/gpu_check.sh            # from anywhere; PYTHON=... to pick the interpreter
#   bash benchmarks/gpu_check.sh --no-bench # tests only
#
# open_clip's row runs when `open_clip` imports or benchmarks/vendor/loss.py exists (see
# benchmarks/README.md); Inf-CL's row when `inf_cl` imports. Rows that cannot run say why.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
RESULTS="$ROOT/benchmarks/results"
mkdir -p "$RESULTS"

"$PYTHON" - <<'PY'
import sys
import jax
if jax.default_backend() != "gpu":
    sys.exit(f"gpu_check.sh needs a GPU backend; jax sees {jax.devices()}")
print("jax", jax.__version__, "on", jax.devices()[0].device_kind)
PY
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true

# 1. The kernels compiled (not interpreted) against the float64 references, then the library's
#    tiled tests on the GPU (conftest defaults JAX_PLATFORMS to cpu, so it is set here).
if "$PYTHON" -c "import pytest" 2>/dev/null; then
  JAX_PLATFORMS=cuda CONTRASTIVE_JAX_PALLAS_COMPILED=1 "$PYTHON" -m pytest -q -p no:cacheprovider \
    tests/test_tiled_fused.py 2>&1 | tee "$RESULTS/gpu_check_tests.txt"
  JAX_PLATFORMS=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_tiled.py \
    2>&1 | tee -a "$RESULTS/gpu_check_tests.txt"
  # cuDNN's fused attention (config.model.attention="cudnn") against XLA's, values and gradients.
  JAX_PLATFORMS=cuda "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_model_recipes.py \
    -k test_cudnn_attention_on_gpu 2>&1 | tee -a "$RESULTS/gpu_check_tests.txt"
else
  echo "pytest is not importable: skipping the tests" | tee "$RESULTS/gpu_check_tests.txt"
fi

# 2. A direct check at a realistic size: Pallas vs blockwise, values and gradients.
JAX_PLATFORMS=cuda "$PYTHON" - <<'PY' 2>&1 | tee -a "$RESULTS/gpu_check_tests.txt"
import jax, jax.numpy as jnp
from contrastive_jax import l2_normalize, losses
keys = jax.random.split(jax.random.key(0), 2)
for dtype in (jnp.float32, jnp.bfloat16):
    x = l2_normalize(jax.random.normal(keys[0], (8192, 768))).astype(dtype)
    y = l2_normalize(jax.random.normal(keys[1], (8192, 768))).astype(dtype)
    f = lambda impl, **kw: jax.jit(jax.value_and_grad(
        lambda x, y, s: losses.clip_loss(x, y, s, impl=impl, **kw), (0, 1, 2)))(x, y, jnp.float32(20.0))
    got, want = f("pallas"), f("blockwise", block_size=1024)
    errs = [float(jnp.max(jnp.abs(a.astype(jnp.float32) - b.astype(jnp.float32))))
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want))]
    print(f"pallas vs blockwise, B=8192 D=768 {jnp.dtype(dtype).name}: max abs diff {errs}")
PY

[[ "${1:-}" == "--no-bench" ]] && exit 0

# 3. The ViT-B/16 CLIP train step (bfloat16, 128 pairs per device), XLA vs cuDNN attention.
JAX_PLATFORMS=cuda "$PYTHON" benchmarks/train_step_speed.py --preset B/16 --attention xla cudnn \
  --batch-per-device 128 --out "$RESULTS/train_step_gpu.json" --md "$RESULTS/train_step_gpu.md"
echo "wrote $RESULTS/train_step_gpu.json and $RESULTS/train_step_gpu.md"

# 4. The table: dense, blockwise, Pallas (and open_clip / Inf-CL where importable).
OPEN_CLIP_ARGS=()
if [[ -f benchmarks/vendor/loss.py ]]; then OPEN_CLIP_ARGS=(--open-clip-loss-py benchmarks/vendor/loss.py); fi
JAX_PLATFORMS=cuda "$PYTHON" benchmarks/loss_speed.py \
  --batch 16384 65536 262144 1048576 --dim 512 --dtype float32 bfloat16 \
  --impls jax_dense jax_blockwise jax_pallas open_clip inf_cl --timeout 1800 \
  ${OPEN_CLIP_ARGS[@]+"${OPEN_CLIP_ARGS[@]}"} \
  --out "$RESULTS/loss_speed_gpu.json" --md "$RESULTS/loss_speed_gpu.md"
echo "wrote $RESULTS/loss_speed_gpu.json and $RESULTS/loss_speed_gpu.md"
