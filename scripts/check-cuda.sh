#!/usr/bin/env bash
# Proves that the GPU build (`--features cuda`) compiles and links, on a machine with no GPU and no
# CUDA toolkit: scripts/cuda-env.sh installs the toolkit from PyPI into .cuda/, then the workspace
# is built with candle's CUDA backend for one compute capability (CUDA_COMPUTE_CAP, default 90 =
# Hopper), every target (tests and benches included), in target/cuda. candle's kernels are
# compiled by nvcc (PTX, and the quantized matmul kernels to SASS); binaries link against the real
# cuBLAS, cuRAND and NVRTC. Nothing built here runs without a GPU: scripts/gpu-check.sh runs it.
#
# Usage: scripts/check-cuda.sh   (or `make check-cuda`); CUDA_COMPUTE_CAP=80 for Ampere.
set -euo pipefail
cd "$(dirname "$0")/.."
CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
source scripts/cuda-env.sh
nvcc --version | tail -2
echo "check-cuda: building the workspace with --features cuda for compute capability $CUDA_COMPUTE_CAP"
start=$(date +%s)
cargo build --locked --workspace --all-targets --features cuda --target-dir target/cuda
echo "check-cuda: CUDA build (sm_$CUDA_COMPUTE_CAP) compiled and linked in $(( $(date +%s) - start )) s"
