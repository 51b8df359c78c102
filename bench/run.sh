#!/usr/bin/env bash
# `make bench`: wall time and peak RSS of bnfold on a ~590 MB Conv+BN model,
# next to `cat` (the reference) and onnxruntime's offline optimizer.
#
# Expects the release binary and the cross-check venv (the Makefile target
# builds both first). The model is generated once into bench-out/ (git-ignored)
# and reused while its parameters are unchanged; the outputs are written to
# bench-out/run/ and removed afterwards.
#
# Then the > 2 GiB case: a model whose ~2.2 GB of Conv+BN weights are in an
# external data file (bench/make_huge_model.py, cached in bench-out/ too),
# with `cat` of the .onnx and the .data as the reference and bnfold's outputs
# checked without loading their data (no BatchNormalization left, external
# data consistent, the .onnx part small, a few folded channels against numpy).
# It needs about 2.5 GB of free disk for the outputs, removed afterwards.
#
# Then the reference-runtime section: a ResNet-50-shaped model (bench/
# make_resnet50.py, cached in bench-out/, ~100 MB) folded by bnfold into B;
# ms per inference of the reference runtime (RefRun --time, built here) against
# onnxruntime, and whole-process `bnfold check A B` against
# bench/check_ort.py A B (about 20 s).
#
# Then the graph-core chains (bench/make_chain.py, cached): Conv-BN-Relu
# chains of 4,000 and 64,000 blocks and a 10,000-deep Identity chain, each
# figure beside its reference (--passes none, the 4k run, onnxruntime's
# optimizer), and README's example pass (bench/ExamplePass, built here) on
# the Identity chain; about 3 minutes.
#
# Then the many-initializers case (bench/make_many_initializers.py, cached,
# ~36 MB): a model of 1,000,000 tiny initializers, where bnfold --passes none
# must peak at most 10x the file in RSS; beside it the default fold, `cat` and
# Python's onnx.load of the same file; about a minute.
#
# Environment: BENCH_CHAINS=0 (skip the chains), BENCH_MANY=0 (skip the
# many-initializers case), BENCH_RUNS (measured runs per command, default 3),
# BENCH_WIDTH (VGG-11 width multiplier, default 4), BENCH_NO_ORT=1 (skip the
# onnxruntime reference), BENCH_HUGE=0 (skip the > 2 GiB case),
# BENCH_HUGE_RUNS (its measured runs per command, default BENCH_RUNS),
# BENCH_HUGE_GB (its weights in GB, default 2.2), BENCH_RUNTIME=0 (skip the
# reference-runtime section), BENCH_INFER_RUNS (timed inferences per runtime,
# default 10), BNFOLD (binary), EXAMPLE_PASS (binary; default: built here), REFRUN (binary; default: built with
# `swift build -c release --product RefRun`), BENCH_OUT (scratch directory).
#
# Exits 0 when the benchmark ran, even if a target was missed (the report says
# MISSED); non-zero if something could not run or an output check failed.
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

rc=0
if [ "${BENCH_HUGE:-1}" != 0 ]; then
    echo
    echo "bench: > 2 GiB external-data case (BENCH_HUGE=0 skips it)"
    huge_start=$(date +%s)
    huge_model=$("$python" bench/make_huge_model.py --out-dir "$out" --gb "${BENCH_HUGE_GB:-2.2}")
    echo
    "$python" bench/measure.py huge --model "$huge_model" --bnfold "$bnfold" --scratch "$scratch" \
        --runs "${BENCH_HUGE_RUNS:-$runs}" || rc=$?
    echo "bench: > 2 GiB case done in $(( $(date +%s) - huge_start )) s"
fi

if [ "${BENCH_RUNTIME:-1}" != 0 ]; then
    echo
    echo "bench: reference runtime and \`bnfold check\` on a ResNet-50-shaped model (BENCH_RUNTIME=0 skips it)"
    runtime_start=$(date +%s)
    refrun=${REFRUN:-}
    if [ -z "$refrun" ]; then
        "${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}" build -c release --product RefRun >&2
        refrun=.build/release/RefRun
    fi
    resnet=$("$python" bench/make_resnet50.py --out-dir "$out")
    echo
    "$python" bench/measure.py runtime --model "$resnet" --bnfold "$bnfold" --refrun "$refrun" \
        --scratch "$scratch" --runs "$runs" --infer-runs "${BENCH_INFER_RUNS:-10}" || rc=$?
    echo "bench: reference-runtime section done in $(( $(date +%s) - runtime_start )) s"
fi

if [ "${BENCH_CHAINS:-1}" != 0 ]; then
    echo
    echo "bench: graph-core chains (BENCH_CHAINS=0 skips them)"
    chains_start=$(date +%s)
    c4=$("$python" bench/make_chain.py --out-dir "$out" --blocks 4000)
    c64=$("$python" bench/make_chain.py --out-dir "$out" --blocks 64000)
    cid=$("$python" bench/make_chain.py --out-dir "$out" --kind identity --blocks 10000)
    example=${EXAMPLE_PASS:-}
    if [ -z "$example" ]; then
        "${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}" build -c release --product ExamplePass >&2
        example=.build/release/ExamplePass
    fi
    echo
    "$python" bench/measure.py chains --small "$c4" --large "$c64" --identity "$cid" --bnfold "$bnfold" \
        --example-pass "$example" --scratch "$scratch" --runs "$runs" ${ort_flag[@]+"${ort_flag[@]}"} || rc=$?
    echo "bench: chains done in $(( $(date +%s) - chains_start )) s"
fi

if [ "${BENCH_MANY:-1}" != 0 ]; then
    echo
    echo "bench: many tiny initializers (BENCH_MANY=0 skips them)"
    many_start=$(date +%s)
    many=$("$python" bench/make_many_initializers.py --out-dir "$out")
    echo
    "$python" bench/measure.py many --model "$many" --bnfold "$bnfold" --scratch "$scratch" --runs "$runs" || rc=$?
    echo "bench: many-initializers case done in $(( $(date +%s) - many_start )) s"
fi

echo "bench: done in $(( $(date +%s) - start )) s"
exit "$rc"
