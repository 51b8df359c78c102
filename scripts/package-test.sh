#!/usr/bin/env bash
# `make package-test`: builds what bnfold ships — `make install` into a
# temporary prefix, `make dist`, `make wheel` — and checks each the way a user
# without Swift would meet it: with the Swift toolchain hidden behind an empty
# tmpfs in a private mount namespace (unshare; the real toolchain is never
# touched), the installed binary, the unpacked tarball and the wheel
# (installed offline into a fresh venv, then python/tests under pytest) must
# all run. Ends with one line "package-test: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.."
make=${MAKE:-make}
python=${PYTHON:-python3}
swift=${SWIFT:-swift}

passed=0 failed=0
ok() { echo "ok: $1"; passed=$((passed + 1)); }
not_ok() { echo "FAILED: $1"; failed=$((failed + 1)); }
expect() { local what=$1; shift; if "$@"; then ok "$what"; else not_ok "$what"; fi; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

echo "== building: make install PREFIX=$tmp/prefix, make dist, make wheel"
$make --no-print-directory install PREFIX="$tmp/prefix" >"$tmp/build.log" 2>&1 &&
    $make --no-print-directory dist >>"$tmp/build.log" 2>&1 &&
    $make --no-print-directory wheel >>"$tmp/build.log" 2>&1 || {
    tail -40 "$tmp/build.log"
    echo "package-test: 0 passed, 1 failed"
    exit 1
}
grep -E '^(static bnfold|dist/)' "$tmp/build.log"

# The toolchain to hide: the directory holding usr/bin/swift.
toolchain=$(cd "$(dirname "$(readlink -f "$(command -v "$swift")")")/../.." && pwd)
hide=yes
case "$toolchain" in /|/usr|/usr/local) hide=no ;; esac
if [ "$hide" = yes ] && ! unshare --mount sh -c "mount -t tmpfs none '$toolchain'" 2>/dev/null; then hide=no; fi
# Runs a command with the toolchain hidden (or, where that is impossible, as it is).
hidden() {
    if [ "$hide" = yes ]; then
        unshare --mount sh -c 'mount -t tmpfs none "$0" && exec "$@"' "$toolchain" "$@"
    else
        "$@"
    fi
}
if [ "$hide" = yes ]; then
    echo "== running with $toolchain hidden (empty tmpfs in a private mount namespace)"
    expect "the toolchain is hidden inside the namespace" hidden sh -c "[ -z \"\$(ls -A '$toolchain')\" ] && ! command -v swift >/dev/null"
else
    echo "== note: cannot hide $toolchain here (needs root and unshare); running with it visible, ldd checks only"
fi

version=$(.build-static/ship/bnfold --version)
arch=$(uname -m)

# 1. make install
prefix="$tmp/prefix"
bin="$prefix/bin/bnfold"
expect "make install lays down bin/bnfold and its man page, nothing else" \
    test "$(cd "$prefix" && find . -type f | sort | tr '\n' ' ')" = "./bin/bnfold ./share/man/man1/bnfold.1 "
no_swift_libs() { ! ldd "$1" | grep -E 'libswift|libFoundation|libdispatch|libBlocksRuntime|libprotobuf-c|libopenblas|libgfortran|libquadmath|not found'; }
expect "the installed binary links no Swift, protobuf-c or BLAS library dynamically" no_swift_libs "$bin"
expect "the man page is a man page" grep -q '^\.TH BNFOLD 1' "$prefix/share/man/man1/bnfold.1"
expect "installed bnfold --version with the toolchain hidden" \
    test "$(hidden "$bin" --version)" = "$version"
fold_and_check() {  # bin model: fold it, then check the fold against the original
    hidden "$1" "$2" -o "$tmp/fused.onnx" >"$tmp/fold.out" 2>&1 &&
        test -s "$tmp/fused.onnx" &&
        hidden "$1" check "$2" "$tmp/fused.onnx" >"$tmp/check.out" 2>&1 ||
        { cat "$tmp/fold.out" "$tmp/check.out" 2>/dev/null; return 1; }
    rm -f "$tmp/fused.onnx"
}
expect "installed bnfold folds Fixtures/conv2d_bn.onnx and checks it, toolchain hidden" \
    fold_and_check "$bin" Fixtures/conv2d_bn.onnx
expect "installed bnfold folds and checks Fixtures/torch_resnet18.onnx (OpenBLAS), toolchain hidden" \
    fold_and_check "$bin" Fixtures/torch_resnet18.onnx

# 2. make dist
name="bnfold-$version-linux-$arch"
tarball="dist/$name.tar.gz"
expect "make dist wrote $tarball and its .sha256" test -s "$tarball" -a -s "$tarball.sha256"
expect "the tarball's checksum verifies" sh -c "cd dist && sha256sum --quiet -c '$name.tar.gz.sha256'"
mkdir -p "$tmp/unpacked"
expect "the tarball unpacks to $name/{bin/bnfold,share/man/man1/bnfold.1}" sh -c \
    "tar -xzf '$tarball' -C '$tmp/unpacked' && test \"\$(cd '$tmp/unpacked' && find . -type f | sort | tr '\n' ' ')\" = './$name/bin/bnfold ./$name/share/man/man1/bnfold.1 '"
expect "the unpacked bnfold folds and checks a fixture, toolchain hidden" \
    fold_and_check "$tmp/unpacked/$name/bin/bnfold" Fixtures/conv2d_bn.onnx

# 3. make wheel: installed offline into a fresh venv, then pytest in it
wheels=(dist/bnfold-"$version"-*.whl)
wheel=${wheels[0]}
expect "make wheel wrote a platform wheel ($(basename "$wheel"))" \
    sh -c "test -s '$wheel' && case '$wheel' in *-py3-none-linux_$arch.whl) true ;; *) false ;; esac"
expect "the wheel carries the binary, executable" "$python" - "$wheel" <<'PY'
import sys, zipfile
info = zipfile.ZipFile(sys.argv[1]).getinfo("bnfold/_bin/bnfold")
sys.exit(0 if (info.external_attr >> 16) & 0o111 else 1)
PY
venv="$tmp/venv"
"$python" -m venv "$venv"
expect "the wheel installs offline (pip install --no-index --find-links dist/)" \
    env -u PIP_FIND_LINKS "$venv/bin/pip" install -q --disable-pip-version-check --no-index --find-links dist "bnfold==$version"
echo "== installing the test tools (python/tests/requirements.txt) into the venv"
"$venv/bin/pip" install -q --disable-pip-version-check -r python/tests/requirements.txt || not_ok "pip install pytest"
expect "the installed package type-checks (mypy --strict -p bnfold)" \
    sh -c "cd '$tmp' && '$venv/bin/python' -m mypy --strict --no-incremental -p bnfold"
echo "== pytest python/tests in the venv, toolchain hidden"
expect "python/tests pass against the installed wheel, toolchain hidden" \
    hidden env -u BNFOLD_BINARY PATH="$venv/bin:$PATH" "$venv/bin/python" -m pytest -q -p no:cacheprovider python/tests

echo "package-test: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
