#!/usr/bin/env bash
# Build the unitforge runtime image (what compose.yaml runs) without a container registry:
#   1. mmdebstrap a minimal Debian bookworm root filesystem (glibc, libgcc, a font for plots),
#   2. add the release binary, the configs, the corpus, the pipeline script, the published SmolLM2
#      SFT adapter (the default profile starts from it), and the SmolLM2 GGUF when models/ has
#      it (`make model`),
#   3. `docker import` it with the binary as entrypoint.
# Usage: images/unitforge/build-offline.sh TAG BINARY   (needs root, mmdebstrap and docker)
set -euo pipefail
tag=${1:?usage: $0 TAG BINARY}
binary=${2:?usage: $0 TAG BINARY}
repo=$(cd "$(dirname "$0")/../.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$repo/images/ensure-mmdebstrap.sh"

echo "[1/3] staging the binary, configs, corpus and pipeline script"
stage="$work/opt/unitforge"
mkdir -p "$stage/data" "$stage/scripts" "$stage/gguf" "$stage/runs" "$stage/models" \
    "$stage/results/smollm2/sft"
install -m 0755 "$binary" "$work/unitforge"
cp -r "$repo/configs" "$stage/"
cp -r "$repo/data/corpus" "$repo/data/pairs" "$stage/data/"
install -m 0755 "$repo/scripts/pipeline.sh" "$stage/scripts/"
cp "$repo/results/smollm2/sft/adapter_config.json" "$repo/results/smollm2/sft/adapter_model.safetensors" \
    "$stage/results/smollm2/sft/"
if [ -f "$repo/models/SmolLM2-135M-Instruct.Q4_1.gguf" ]; then
    cp "$repo/models/SmolLM2-135M-Instruct.Q4_1.gguf" "$stage/gguf/"
fi

echo "[2/3] building a Debian bookworm root filesystem (mmdebstrap)"
mmdebstrap --quiet --variant=essential --include=libgcc-s1,fonts-dejavu-core --components=main \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="cp '$work/unitforge' \"\$1/usr/local/bin/unitforge\"" \
    --customize-hook="cp -r '$work/opt/unitforge' \"\$1/opt/\"" \
    --customize-hook='rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists"' \
    bookworm "$work/rootfs.tar"

echo "[3/3] importing the root filesystem as $tag"
docker import \
    --change 'WORKDIR /opt/unitforge' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV UNITFORGE_FONT=/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf' \
    --change 'ENTRYPOINT ["/usr/local/bin/unitforge"]' \
    --change 'CMD ["--help"]' \
    --change "LABEL org.unitforge.image=runtime" \
    "$work/rootfs.tar" "$tag" >/dev/null
docker run --rm --network none "$tag" --version
