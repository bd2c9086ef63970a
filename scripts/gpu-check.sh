#!/usr/bin/env bash
# On a machine with an NVIDIA GPU and its driver (CUDA 13.4 needs driver 580 or newer): builds the
# trainer with `--features cuda` for the GPU's own compute capability (toolkit from PyPI, see
# scripts/cuda-env.sh), runs the trainer's numerics tests and the CPU-vs-GPU test
# (trainer/tests/gpu.rs: logits, LoRA gradients, greedy generation equal within tolerance) on the
# device, then `unitforge bench train --device cuda`, and prints one summary line.
#
# Usage: scripts/gpu-check.sh [SHAPES]   (SHAPES for bench train, default tiny,smollm2)
set -euo pipefail
cd "$(dirname "$0")/.."
shapes=${1:-tiny,smollm2}

gpu=$(nvidia-smi --query-gpu=name,compute_cap --format=csv,noheader 2>/dev/null | head -1) || true
if [ -z "$gpu" ]; then
  echo "gpu-check: no NVIDIA GPU answers (nvidia-smi); on a machine without one, run make check-cuda" >&2
  exit 1
fi
CUDA_COMPUTE_CAP=$(echo "${gpu##*, }" | tr -d '.')
source scripts/cuda-env.sh
log=target/cuda/gpu-check.log
mkdir -p target/cuda

echo "gpu-check: $gpu; building and testing with --features cuda (log: $log)"
if cargo test --locked --release --features cuda --target-dir target/cuda -p unitforge-trainer \
     --test gpu --test numerics > "$log" 2>&1; then tests=passed; else tests=FAILED; fi
passed=$(awk '/^test result:/ { n += $4 } END { print n + 0 }' "$log")
failed=$(awk '/^test result:/ { n += $6 } END { print n + 0 }' "$log")

cargo build --locked --release --features cuda --target-dir target/cuda >> "$log" 2>&1
bench=target/cuda/gpu-bench.json
target/cuda/release/unitforge bench train --device cuda --shapes "$shapes" --json > "$bench" 2>> "$log"
figures=$(python3 - "$bench" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
parts = ["matmul %.0f GFLOP/s" % report["matmul_peak_gflops"]]
for f in report["candle"]:
    if f.get("error"):
        parts.append("%s %s: error" % (f["shape"], f["mode"]))
    elif f.get("step_s") is not None:
        parts.append("%s %s step %.3f s" % (f["shape"], f["mode"], f["step_s"]))
    elif f.get("gen_tokens_per_s_b8") is not None:
        parts.append("%s generate %.0f/%.0f tok/s (b1/b8)" % (f["shape"], f["gen_tokens_per_s_b1"], f["gen_tokens_per_s_b8"]))
print("; ".join(parts))
PY
)
echo "gpu-check: $gpu | tests $tests ($passed passed, $failed failed; CPU = GPU logits, gradients, generation) | $figures"
[ "$tests" = passed ]
