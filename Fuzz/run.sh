#!/usr/bin/env bash
# make fuzz: build the libFuzzer target and run it.
#   bash Fuzz/run.sh SECONDS [JOBS]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:-600}
jobs=${2:-1}
swift=${SWIFT:-$(command -v swift || echo /opt/swift/usr/bin/swift)}

"$swift" build -c debug --product FuzzReader --scratch-path .build-fuzz \
    -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING \
    -Xcc -fsanitize=fuzzer-no-link,address

# The working corpus grows as the fuzzer finds new paths; it is kept out of
# git (Fuzz/corpus/). Seeds: every fixture, bad inputs and past regressions.
mkdir -p Fuzz/corpus Fuzz/crashes
cp -n Fixtures/*.onnx Fixtures/bad/*.onnx Fuzz/corpus/ 2>/dev/null || true
cp -n Fuzz/regressions/* Fuzz/corpus/ 2>/dev/null || true

# The Swift backtracer would stall every crash for seconds: libFuzzer and
# ASan report crashes themselves.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0:allocator_may_return_null=1}
.build-fuzz/debug/FuzzReader Fuzz/corpus \
    -max_total_time="$seconds" -jobs="$jobs" -workers="$jobs" \
    -max_len=1048576 -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix=Fuzz/crashes/ -print_final_stats=1
