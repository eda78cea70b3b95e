#!/usr/bin/env bash
# The accelerator benchmarks as one prepared script, a few minutes on one GPU or a TPU
# host: the batch benchmark over every device count up to the machine's (doubling),
# and the step benchmark at 256 and 512 px. Results land in benchmarks/results/ (and
# are copied to $OUT where that is set, as on a lent device machine).
#
#   bash benchmarks/gpu.sh            # PYTHON=... to pick the interpreter
#
# It needs the package's requirements with JAX for the accelerator (for NVIDIA:
# pip install -r requirements.txt "jax[cuda13]"). Without the VGG19 weights (a machine
# that cannot fetch them), the speed benchmarks run on a random VGG19 of the same
# shapes: a step's time does not depend on the weights' values (common.bench_weights).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1

"$PY" - <<'PY'
import jax
print("backend:", jax.default_backend(), "devices:", jax.devices())
PY
if [[ ! -f weights/vgg19_caffe.npz ]] && ! timeout 120 "$PY" -m nst_jax.nets.fetch; then
  echo "no VGG19 weights here: timing a random VGG19 of the same shapes"
  export NST_JAX_BENCH_WEIGHTS=random
fi

n=$("$PY" -c "import jax; print(jax.local_device_count())")
counts=1; d=2
while (( d <= n )); do counts="$counts,$d"; d=$((d * 2)); done

"$PY" benchmarks/batch.py --size 256 --batches 1,2,4,8,16,32 --devices "$counts" --rounds 3
"$PY" benchmarks/step.py --sizes 256,512 --rounds 3
# The whole-process figure: a 512 px run of 500 steps (stopping rule off), with the
# fixed cost part by part in its report; it needs the real weights file.
if [[ -f weights/vgg19_caffe.npz ]]; then
  "$PY" run.py --demo --size 512 --steps 500 --stop_tol 0 --noprogress \
    --output benchmarks/results/gpu_512.png --report benchmarks/results/gpu_512.json
else
  echo "no weights file: the 512 px x 500-step run is skipped"
fi

if [[ -n "${OUT:-}" ]]; then
  cp benchmarks/results/batch.* benchmarks/results/step.* "$OUT"/
  cp benchmarks/results/gpu_512.* "$OUT"/ 2>/dev/null || true
fi
