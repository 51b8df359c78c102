#!/usr/bin/env bash
# `make bench`: wall time and peak RSS of bnfold on a ~590 MB Conv+BN model,
# next to `cat` (the reference) and onnxruntime's offline optimizer.
#
# Expects the release binary and the cross-check venv (the Makefile target
# builds both first). The model is generated once into bench-out/ (git-ignored)
# and reused while its parameters are unchanged; the outputs are written to
# bench-out/run/ and removed afterwards.
#
# Environment: BENCH_RUNS (measured runs per command, default 3),
# BENCH_WIDTH (VGG-11 width multiplier, default 4), BENCH_NO_ORT=1 (skip the
# onnxruntime reference), BNFOLD (binary), BENCH_OUT (scratch directory).
#
# Exits 0 when the benchmark ran, even if a target was missed (the report says
# MISSED); non-zero only if something could not run.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

python=${PYTHON_BENCH:-.venv-crosscheck/bin/python}
bnfold=${BNFOLD:-.build/release/bnfold}
out=${BENCH_OUT:-bench-out}
runs=${BENCH_RUNS:-3}
width=${BENCH_WIDTH:-4}

if [ ! -x "$python" ]; then
    echo "bench: $python not found; run 'make venv' (or 'make bench')" >&2
    exit 2
fi
if [ ! -x "$bnfold" ]; then
    echo "bench: $bnfold not found; run 'make release' (or 'make bench')" >&2
    exit 2
fi

start=$(date +%s)
mkdir -p "$out"
model=$("$python" bench/make_model.py --out-dir "$out" --width "$width")

scratch="$out/run"
rm -rf "$scratch"
mkdir -p "$scratch"
trap 'rm -rf "$scratch"' EXIT

ort_flag=()
[ "${BENCH_NO_ORT:-0}" = 1 ] && ort_flag=(--no-ort)

echo
"$python" bench/measure.py bench --model "$model" --bnfold "$bnfold" --scratch "$scratch" \
    --runs "$runs" ${ort_flag[@]+"${ort_flag[@]}"}

echo "bench: done in $(( $(date +%s) - start )) s"
