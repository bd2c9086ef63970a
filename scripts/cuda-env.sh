# Sourced by scripts/check-cuda.sh and scripts/gpu-check.sh: puts NVIDIA's CUDA 13.4 compiler,
# headers and libraries from PyPI into the ignored directory .cuda/ (~1.2 GB, once), and exports
# the environment candle's build scripts read (CUDA_HOME, PATH, CUDA_COMPUTE_CAP, LIBRARY_PATH).
#
# PyPI carries everything a build needs but the driver library, libcuda.so, which a GPU machine's
# driver installs: links use a stub generated from cudarc's own list of driver functions (with
# the driver's soname, libcuda.so.1), the way the CUDA toolkit's lib64/stubs/libcuda.so is used
# on build machines. At run time the real driver's library is found instead.
PYTHON=${PYTHON:-python3}
CUDA_COMPUTE_CAP=${CUDA_COMPUTE_CAP:-90}
PREFIX=$PWD/.cuda
CUDA=$PREFIX/nvidia/cu13
# cudarc 0.19 (candle 0.11's CUDA bindings) knows CUDA up to 13.4: pin the toolkit to it.
PACKAGES=(
  "nvidia-cuda-nvcc==13.4.*" "nvidia-nvvm==13.4.*" "nvidia-cuda-crt==13.4.*"
  "nvidia-cuda-runtime==13.4.*" "nvidia-cuda-nvrtc==13.4.*" "nvidia-cuda-cccl"
  "nvidia-curand" "nvidia-cublas"
)

if [ ! -x "$CUDA/bin/nvcc" ] || [ ! -f "$PREFIX/.installed" ]; then
  echo "check-cuda: installing the CUDA 13.4 compiler, headers and libraries from PyPI into .cuda/"
  "$PYTHON" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
    --target "$PREFIX" "${PACKAGES[@]}"
  touch "$PREFIX/.installed"
fi

# The wheels carry versioned libraries only (libcublas.so.13); the linker asks for libcublas.so.
for lib in "$CUDA"/lib/lib*.so.*; do
  base=${lib%%.so.*}.so
  [ -e "$base" ] || ln -s "$(basename "$lib")" "$base"
done

# Cargo fetches cudarc (an optional dependency) on the first build; its driver bindings list
# every libcuda function the build can reference.
cargo fetch --locked --quiet
version=$(awk '/^name = "cudarc"$/ { getline; gsub(/"/, "", $3); print $3 }' Cargo.lock)
cudarc=$(ls -d "${CARGO_HOME:-$HOME/.cargo}"/registry/src/*/"cudarc-$version" | head -1)
stubs=$CUDA/lib/stubs
if [ ! -f "$stubs/libcuda.so" ]; then
  mkdir -p "$stubs"
  # The symbols are the `extern "C"` declarations (indented `fn cuXxx(`), not the wrappers.
  grep -rhoE '^\s+fn cu[A-Za-z0-9_]+\(' "$cudarc/src/driver/sys" | sed -E 's/^\s+fn //; s/\($//' | sort -u |
    awk '{ print "void " $1 "(void) {}" }' > "$stubs/libcuda_stub.c"
  gcc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$stubs/libcuda.so" "$stubs/libcuda_stub.c"
  echo "check-cuda: linking against a libcuda stub with $(wc -l < "$stubs/libcuda_stub.c") driver functions"
fi

export CUDA_HOME=$CUDA CUDA_ROOT=$CUDA CUDA_PATH=$CUDA CUDA_COMPUTE_CAP
export PATH=$CUDA/bin:$PATH
export LIBRARY_PATH=$CUDA/lib:$stubs${LIBRARY_PATH:+:$LIBRARY_PATH}
export LD_LIBRARY_PATH=$CUDA/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
