#!/usr/bin/env bash
# Builds llama.cpp's `llama-batched-bench` into .llama-cpp/bin, offline but for PyPI: the
# llama.cpp that llama-cpp-python 0.3.36 vendors (its sdist, checked against a pinned sha256),
# compiled for this CPU (GGML_NATIVE) with CMake and Ninja from their PyPI wheels. Used by
# `unitforge bench grpo --llama-cpp .llama-cpp` (docs/performance.md). About 10 minutes on
# 2 cores.
set -euo pipefail

OUT=${1:-.llama-cpp}
VERSION=0.3.36
SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
PYTHON=${PYTHON:-python3}

if [[ -x "$OUT/bin/llama-batched-bench" ]]; then
  echo "$OUT/bin/llama-batched-bench is there"
  exit 0
fi
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
work="$OUT/src"
mkdir -p "$work"

test -x "$OUT/tools/bin/cmake" || {
  "$PYTHON" -m venv "$OUT/tools"
  "$OUT/tools/bin/python" -m pip install --quiet --disable-pip-version-check cmake ninja
}
export PATH="$OUT/tools/bin:$PATH"

sdist="$work/llama_cpp_python-$VERSION.tar.gz"
if ! echo "$SHA256  $sdist" | sha256sum -c --status 2>/dev/null; then
  # The sdist's address, from the package index's simple page.
  url=$(curl -fsSL https://pypi.org/simple/llama-cpp-python/ |
    grep -o "https://[^\"#]*llama_cpp_python-$VERSION.tar.gz" | head -1)
  [[ -n "$url" ]] || { echo "llama-cpp-python $VERSION: no sdist on the index" >&2; exit 1; }
  curl -fsSL -o "$sdist" "$url"
  echo "$SHA256  $sdist" | sha256sum -c --status ||
    { echo "llama-cpp-python $VERSION: the sdist's sha256 is not $SHA256" >&2; exit 1; }
fi
tar -xzf "$sdist" -C "$work"
source_dir="$work/llama_cpp_python-$VERSION/vendor/llama.cpp"

cmake -S "$source_dir" -B "$work/build" -G Ninja -DCMAKE_BUILD_TYPE=Release \
  -DGGML_NATIVE=ON -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
  -DBUILD_SHARED_LIBS=OFF >/dev/null
cmake --build "$work/build" --target llama-batched-bench -j "$(nproc)"
mkdir -p "$OUT/bin"
cp "$work/build/bin/llama-batched-bench" "$OUT/bin/"
echo "built $OUT/bin/llama-batched-bench"
