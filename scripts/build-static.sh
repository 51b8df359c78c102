#!/usr/bin/env bash
# Builds the self-contained release binary that `make install`, `make dist`
# and `make wheel` ship: the Swift standard library and Foundation linked
# statically (--static-swift-stdlib), and so are libprotobuf-c and OpenBLAS
# (with the libgfortran and libquadmath that OpenBLAS's LAPACK part needs).
# What remains dynamic is glibc, libstdc++ and libgcc_s, which every Linux
# system has.
#
# SwiftPM finds libprotobuf-c and OpenBLAS through pkg-config, and the linker
# prefers a .so over a .a in the same directory. So this writes two .pc files
# of its own whose only -L is a directory holding nothing but the static
# archives, and puts them first on PKG_CONFIG_PATH; Package.swift is
# unchanged, and the ordinary builds (`make release`, the tests) still link
# dynamically.
#
# The shipped files go to SCRATCH/ship: bnfold (stripped) and bnfold.1 (the
# man page, made from the binary's --help by scripts/make-manpage.sh).
#
# Usage: scripts/build-static.sh SCRATCH
set -euo pipefail

scratch=${1:-.build-static}
swift=${SWIFT:-swift}
mkdir -p "$scratch"
scratch=$(cd "$scratch" && pwd)
libs="$scratch/static-libs"
pc="$scratch/static-pkgconfig"
mkdir -p "$libs" "$pc"

# Where each archive lives on Debian (the -dev package that ships it).
find_archive() {  # name, -dev package, candidates...
    local name=$1 pkg=$2; shift 2
    for f in "$@"; do
        if [ -n "$f" ] && [ -f "$f" ]; then ln -sfn "$(readlink -f "$f")" "$libs/$name"; return; fi
    done
    echo "error: $name not found; install the Debian package $pkg (scripts/install-deps.sh does)" >&2
    exit 2
}
blas_libdir=$(pkg-config --variable=libdir openblas)
blas_cflags=$(pkg-config --cflags openblas)
pb_cflags=$(pkg-config --cflags libprotobuf-c)
pb_libdir=$(pkg-config --variable=libdir libprotobuf-c)
find_archive libopenblas.a libopenblas-dev "$blas_libdir/libopenblas.a"
find_archive libprotobuf-c.a libprotobuf-c-dev "$pb_libdir/libprotobuf-c.a" /usr/lib/x86_64-linux-gnu/libprotobuf-c.a
find_archive libgfortran.a "libgfortran-$(gcc -dumpversion 2>/dev/null || echo 12)-dev" "$(gcc -print-file-name=libgfortran.a 2>/dev/null || true)"
find_archive libquadmath.a "libgcc-$(gcc -dumpversion 2>/dev/null || echo 12)-dev" "$(gcc -print-file-name=libquadmath.a 2>/dev/null || true)"

cat > "$pc/openblas.pc" <<PC
Name: openblas
Description: OpenBLAS, static (written by scripts/build-static.sh)
Version: $(pkg-config --modversion openblas)
Libs: -L$libs -lopenblas -lgfortran -lquadmath -lm -lpthread
Cflags: $blas_cflags
PC
cat > "$pc/libprotobuf-c.pc" <<PC
Name: libprotobuf-c
Description: protobuf-c, static (written by scripts/build-static.sh)
Version: $(pkg-config --modversion libprotobuf-c)
Libs: -L$libs -lprotobuf-c
Cflags: $pb_cflags
PC

PKG_CONFIG_PATH="$pc${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}" \
    nice "$swift" build -c release --static-swift-stdlib --product bnfold --scratch-path "$scratch"
bin="$scratch/release/bnfold"
if ldd "$bin" | grep -E 'libswift|libFoundation|libprotobuf-c|libopenblas|libgfortran|libquadmath'; then
    echo "error: $bin still links the libraries above dynamically" >&2
    exit 1
fi
ship="$scratch/ship"
mkdir -p "$ship"
if [ ! -f "$ship/bnfold" ] || [ "$bin" -nt "$ship/bnfold" ]; then
    strip -o "$ship/bnfold.tmp" "$bin"
    mv "$ship/bnfold.tmp" "$ship/bnfold"
    bash "$(dirname "$0")/make-manpage.sh" "$ship/bnfold" > "$ship/bnfold.1"
fi
echo "static bnfold $("$ship/bnfold" --version): $ship/bnfold ($(du -m "$ship/bnfold" | cut -f1) MB stripped)"
