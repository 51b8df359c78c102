#!/usr/bin/env bash
# Writes dist/bnfold-VERSION-linux-ARCH.tar.gz, the tree `make install` lays
# down (bin/bnfold, share/man/man1/bnfold.1) under one top-level folder, and
# a .sha256 beside it in the format `sha256sum -c` reads. VERSION is what the
# binary's --version prints. The archive depends only on the files in it and
# the last commit's time (sorted names, owner 0, that time as every mtime).
#
# Usage: scripts/make-dist.sh SHIP_DIR OUT_DIR
set -euo pipefail
ship=$1 out=$2
version=$("$ship/bnfold" --version)
name="bnfold-$version-linux-$(uname -m)"
stage=$(mktemp -d)
trap 'rm -rf "$stage"' EXIT

install -d "$stage/$name/bin" "$stage/$name/share/man/man1"
install -m 0755 "$ship/bnfold" "$stage/$name/bin/bnfold"
install -m 0644 "$ship/bnfold.1" "$stage/$name/share/man/man1/bnfold.1"

mtime=$(git log -1 --format=%ct 2>/dev/null || date +%s)
mkdir -p "$out"
tar -C "$stage" --sort=name --owner=0 --group=0 --numeric-owner --mtime="@$mtime" \
    -cf - "$name" | gzip -n -6 > "$out/$name.tar.gz.tmp"
mv "$out/$name.tar.gz.tmp" "$out/$name.tar.gz"
(cd "$out" && sha256sum "$name.tar.gz" > "$name.tar.gz.sha256")
echo "$out/$name.tar.gz ($(du -m "$out/$name.tar.gz" | cut -f1) MB), $out/$name.tar.gz.sha256"
