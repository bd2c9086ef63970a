#!/usr/bin/env bash
# Build the sandbox image without a container registry (what CI does here):
#   1. mmdebstrap a minimal Debian bookworm root filesystem with python3 (Debian's packages),
#   2. install the pinned pytest from PyPI wheels into its dist-packages (pure Python), compiled
#      to bytecode by the image's own python3: the runner starts with -B (it never writes .pyc),
#      so without them every worker start compiled pytest again. Hash-based, unchecked .pyc
#      (PEP 552): the root filesystem's tarball clamps file times, which would make
#      timestamp-checked .pyc look stale, and nothing in the image ever changes,
#   3. add the runner and a non-root user (uid 10001),
#   4. `docker import` the tarball with the runner as entrypoint.
# Usage: images/sandbox/build-offline.sh TAG     (needs root, mmdebstrap, pip and docker)
set -euo pipefail
tag=${1:?usage: $0 TAG}
repo=$(cd "$(dirname "$0")/../.." && pwd)
runner="$repo/sandbox/runner/unitforge_runner.py"
requirements="$repo/sandbox/runner/requirements.txt"
pip=${PIP:-python3 -m pip}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

. "$repo/images/ensure-mmdebstrap.sh"

echo "[1/4] downloading the pinned runner requirements (PyPI wheels)"
$pip download --quiet --disable-pip-version-check --only-binary=:all: \
    --python-version 3.11 --implementation cp --platform any \
    -r "$requirements" -d "$work/wheels"

echo "[2/4] building a Debian bookworm root filesystem with python3 (mmdebstrap)"
# Essential packages plus python3: no compilers, no apt, no network tools.
mmdebstrap --quiet --variant=essential --include=python3 --components=main \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --customize-hook="$pip install --quiet --disable-pip-version-check --no-deps --no-compile \
        --target \"\$1/usr/local/lib/python3.11/dist-packages\" $work/wheels/*.whl" \
    --customize-hook='chroot "$1" /usr/bin/python3 -m compileall -q --invalidation-mode unchecked-hash /usr/local/lib/python3.11/dist-packages' \
    --customize-hook="mkdir -p \"\$1/opt/unitforge\" \"\$1/work\" && cp '$runner' \"\$1/opt/unitforge/\"" \
    --customize-hook='echo "sandbox:x:10001:10001:unitforge sandbox:/work:/usr/sbin/nologin" >> "$1/etc/passwd"' \
    --customize-hook='echo "sandbox:x:10001:" >> "$1/etc/group"' \
    --customize-hook='chown 10001:10001 "$1/work" && rm -rf "$1/var/cache/apt" "$1/var/lib/apt/lists"' \
    bookworm "$work/rootfs.tar"

echo "[3/4] importing the root filesystem as $tag"
docker import \
    --change 'USER 10001:10001' \
    --change 'WORKDIR /work' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENTRYPOINT ["/usr/bin/python3", "-I", "-B", "/opt/unitforge/unitforge_runner.py"]' \
    --change 'CMD ["--container", "/work"]' \
    --change "LABEL org.unitforge.image=sandbox" \
    "$work/rootfs.tar" "$tag" >/dev/null

echo "[4/4] checking the image"
docker run --rm --network none --entrypoint /usr/bin/python3 "$tag" -I -c \
    'import pytest, sys; print("python", sys.version.split()[0], "pytest", pytest.__version__)'
