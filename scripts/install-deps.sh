#!/usr/bin/env bash
# Installs the system packages bnfold needs to build, if they are missing.
# Called by `make demo` and `make test`; safe to run again (does nothing
# when everything is there).
set -euo pipefail

# libgfortran-N-dev (N: the system GCC's major version) holds libgfortran.a,
# which the static OpenBLAS of `make install`/`dist`/`wheel` needs; binutils
# strips that binary.
gcc_major=$(gcc -dumpversion 2>/dev/null | cut -d. -f1)
packages=(libprotobuf-c-dev libopenblas-dev pkg-config binutils "libgfortran-${gcc_major:-12}-dev")
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    if [ "$(id -u)" -eq 0 ]; then sudo=""; elif command -v sudo >/dev/null; then sudo="sudo"; else
        echo "error: need root (or sudo) to install ${missing[*]}" >&2; exit 2
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -qq
    $sudo apt-get install -y -qq "${missing[@]}" >/dev/null
fi

if ! command -v swift >/dev/null && [ ! -x /opt/swift/usr/bin/swift ]; then
    echo "error: Swift 6 not found on PATH or at /opt/swift" >&2
    exit 2
fi
