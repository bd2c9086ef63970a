#!/usr/bin/env bash
# Build the runner image (`unitforge runner` as the container's own process: a Kubernetes pod or
# a compose service leases it over TCP, no Docker socket) without a registry: the sandbox image
# (Python, the pinned pytest, user 10001, /work) plus the release binary, committed as a new
# image with `unitforge runner` as its entrypoint.
# Usage: images/runner/build-offline.sh TAG SANDBOX_IMAGE BINARY   (needs docker)
set -euo pipefail
tag=${1:?usage: $0 TAG SANDBOX_IMAGE BINARY}
sandbox=${2:?usage: $0 TAG SANDBOX_IMAGE BINARY}
binary=${3:?usage: $0 TAG SANDBOX_IMAGE BINARY}
container=$(docker create --network none "$sandbox")
trap 'docker rm -f "$container" >/dev/null' EXIT
docker cp "$binary" "$container:/usr/local/bin/unitforge"
docker commit \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /work' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENTRYPOINT ["/usr/local/bin/unitforge", "runner"]' \
    --change 'CMD ["--listen", "0.0.0.0:7070", "--python", "/usr/bin/python3", "--work-dir", "/work"]' \
    --change 'LABEL org.unitforge.image=runner' \
    "$container" "$tag" >/dev/null
docker run --rm --network none --entrypoint /usr/local/bin/unitforge "$tag" --version
echo "$tag"
