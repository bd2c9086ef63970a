# Sourced by the image builds: mmdebstrap comes from Debian's packages; install it when we can
# (root with apt), else say in one line what to run.
if ! command -v mmdebstrap >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "mmdebstrap is missing: installing it from Debian's packages (apt-get install mmdebstrap)"
        apt-get update -q >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends mmdebstrap >/dev/null
    else
        echo "error: building the image needs mmdebstrap; install it with 'sudo apt-get install mmdebstrap' and run again" >&2
        exit 1
    fi
fi
