#!/usr/bin/env bash
# `make test`: every part of the suite in turn, each part's output shown as it
# runs and kept in $TEST_LOGS (default .build/test-logs), then one summary:
# a line per part and a last line `N passed, N failed` over all of them.
# A part that fails does not stop the others; the exit code is 1 if any
# part failed.
#
# The counts are the tests of each part as it reports them: Swift tests
# (swift-testing's "Test run with N tests"), the cross-check and the oracle
# scripts' "N passed, N failed", the conformance suite's cases checked
# against its expected-pass and known-wrong lists, and package-test's checks.
# A part whose count cannot be read (it crashed before printing one) counts
# as one failed test.
set -uo pipefail
cd "$(dirname "$0")/.."

make=${MAKE:-make}
logs=${TEST_LOGS:-.build/test-logs}
mkdir -p "$logs"
parts=(unit-test asan-test crosscheck conformance package-test)
[ $# -gt 0 ] && parts=("$@")

total_pass=0 total_fail=0 any_failed=0 summary=()
start=$(date +%s)
for part in "${parts[@]}"; do
    log="$logs/$part.log"
    part_start=$(date +%s)
    echo "==> make $part"
    "$make" --no-print-directory "$part" 2>&1 | tee "$log"
    rc=${PIPESTATUS[0]}
    # Sum every "N passed, N failed" line (crosscheck's three scripts print one each).
    read -r p f < <(grep -aoE '(^|[^0-9])[0-9]+ passed, [0-9]+ failed' "$log" \
        | awk '{ for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
               END { print p + 0, f + 0 }')
    if [ "$p" = 0 ] && [ "$f" = 0 ]; then
        # swift-testing: "Test run with N tests in M suites passed|failed after …"
        n=$(grep -aoE 'Test run with [0-9]+ tests?' "$log" | grep -oE '[0-9]+' | awk '{ s += $1 } END { print s + 0 }')
        bad=$(grep -acE '^✘ Test .*(failed|recorded an issue)' "$log")
        bad=${bad:-0}
        p=$(( n > bad ? n - bad : 0 )) f=$bad
    fi
    if [ "$rc" != 0 ]; then
        any_failed=1
        [ "$f" = 0 ] && f=1
    fi
    total_pass=$((total_pass + p)) total_fail=$((total_fail + f))
    summary+=("$(printf '%-13s %5d passed, %3d failed  (%s, %d s)' "$part" "$p" "$f" \
        "$([ "$rc" = 0 ] && echo ok || echo "exit $rc")" $(( $(date +%s) - part_start )))")
done

echo
echo "make test: summary (logs in $logs/, $(( $(date +%s) - start )) s)"
for line in "${summary[@]}"; do echo "  $line"; done
echo "$total_pass passed, $total_fail failed"
exit "$any_failed"
