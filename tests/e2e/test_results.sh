#!/usr/bin/env bash
# How tools/test counts a suite (tools/lib/results.sh), checked against what Criterion really
# prints: passes, failures, tests whose teardown fails (Criterion counts them as passing), a
# run of no test, a non-zero exit after all passed, and a script's own count.
# Usage: test_results.sh <criterion_outcomes executable>. Ends with `N passed, N failed`.
set -uo pipefail
root=${LIBRARY_SOURCE_ROOT:?run me through meson test or tools/test}
outcomes=${1:?the criterion_outcomes executable}
# shellcheck source=tools/lib/results.sh
source "$root/tools/lib/results.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
passed=0
failed=0

# expect <what> <passed> <failed> <log> <exit status>
expect() {
  results_count "$4" "$5"
  if ((RESULT_PASSED == $2 && RESULT_FAILED == $3)); then
    passed=$((passed + 1))
    printf 'ok    %s: %d passed, %d failed\n' "$1" "$2" "$3"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s: counted %d passed, %d failed (%s), want %d passed, %d failed\n' \
      "$1" "$RESULT_PASSED" "$RESULT_FAILED" "$RESULT_NOTE" "$2" "$3"
    sed 's/^/      | /' "$4"
  fi
}

# run <filter>: runs the matching outcomes on one worker; sets log and status.
run() {
  log=$work/run-$((++runs)).log
  "$outcomes" --jobs 1 --filter "$1" >"$log" 2>&1 </dev/null
  status=$?
}
runs=0

run 'outcome/passes'
expect "a passing test" 1 0 "$log" "$status"
run 'outcome/fails'
expect "a failing test" 0 1 "$log" "$status"
run 'outcome/*'
expect "all six" 2 4 "$log" "$status"
run 'outcome/passes_then_teardown_fails'
expect "a teardown that fails an assertion" 0 1 "$log" "$status"
run 'outcome/passes_then_teardown_crashes'
expect "a teardown that crashes" 0 1 "$log" "$status"
run 'outcome/passes_then_teardown_exits'
expect "a teardown that exits" 0 1 "$log" "$status"
run 'outcome/passes_then_teardown_*'
expect "three teardowns that fail" 0 3 "$log" "$status"
run 'outcome/nothing_has_this_name'
expect "a run of no test" 0 1 "$log" "$status"
run 'outcome/passes'
expect "all passed, then exit status 3 (a service's exit checked after the last test)" 1 1 "$log" 3

printf 'lint ok\n12 passed, 0 failed\n' >"$work/script.log"
expect "a script's own count" 12 0 "$work/script.log" 0
printf '0 passed, 0 failed\n' >"$work/empty.log"
expect "a script that counted nothing" 0 1 "$work/empty.log" 0
printf '4 passed, 0 failed\n' >"$work/exited.log"
expect "a script that counted no failure but exited 1" 4 1 "$work/exited.log" 1
: >"$work/silent.log"
expect "a program that prints no count and exits 0" 1 0 "$work/silent.log" 0
expect "a program that prints no count and exits 1" 0 1 "$work/silent.log" 1

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
