# shellcheck shell=bash
# How tools/test counts a suite's result from its log and exit status. Sourced, never run;
# tests/e2e/test_results.sh checks it against real Criterion output.
#
#   results_count <log> <exit status>
# sets RESULT_PASSED, RESULT_FAILED and RESULT_NOTE ("" or why it failed without a count).
# A suite passes only when it ran at least one test, counted no failure and exited 0.

results_strip_colors() { sed 's/\x1b\[[0-9;]*[A-Za-z]//g'; }

# Reads a Criterion log; prints how many tests failed in their setup or teardown, which
# Criterion still counts as passing: a crash or exit there (it warns), or a failed assertion
# there (a block of "Assertion Failed" that no "[FAIL] suite::test" line follows: a test's
# own failed assertions are printed before its [FAIL] line, a teardown's after it).
results_teardown_failures() {
  awk '
    / crashed during its setup or teardown| exited during its setup or teardown/ { failures++ }
    /Assertion Failed/ { unclaimed = 1 }
    /^\[FAIL\] / { unclaimed = 0 }
    /Synthesis: Tested:/ { failures += unclaimed; unclaimed = 0 }
    END { print failures + 0 }'
}

results_count() {
  local log=$1 status=$2 summary teardown
  RESULT_PASSED=0
  RESULT_FAILED=0
  RESULT_NOTE=""
  # Criterion: "[====] Synthesis: Tested: N | Passing: N | Failing: N | Crashing: N"
  # (Failing includes Crashing; skipped tests are not in Tested).
  summary=$(results_strip_colors <"$log" | grep -E 'Synthesis: Tested: [0-9]+' | tail -n 1 || true)
  if [[ $summary =~ Passing:\ ([0-9]+)\ \|\ Failing:\ ([0-9]+) ]]; then
    RESULT_PASSED=${BASH_REMATCH[1]}
    RESULT_FAILED=${BASH_REMATCH[2]}
    teardown=$(results_strip_colors <"$log" | results_teardown_failures)
    ((teardown <= RESULT_PASSED)) || teardown=$RESULT_PASSED
    RESULT_PASSED=$((RESULT_PASSED - teardown))
    RESULT_FAILED=$((RESULT_FAILED + teardown))
    ((teardown == 0)) || RESULT_NOTE="$teardown failed in setup or teardown"
  elif summary=$(results_strip_colors <"$log" | grep -E '^[0-9]+ passed, [0-9]+ failed$' | tail -n 1) &&
    [[ $summary =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
    # a script's own count (tests/e2e, tools/check-deploy, tools/fuzz, tools/chaos)
    RESULT_PASSED=${BASH_REMATCH[1]}
    RESULT_FAILED=${BASH_REMATCH[2]}
  elif ((status == 0)); then
    RESULT_PASSED=1 # counted nothing: its exit status is the result
  else
    RESULT_FAILED=1
  fi
  if ((RESULT_PASSED + RESULT_FAILED == 0)); then
    RESULT_FAILED=1
    RESULT_NOTE="ran no test"
  fi
  if ((status != 0 && RESULT_FAILED == 0)); then
    RESULT_FAILED=1 # e.g. a leak report or sanitizer abort after the last test
  fi
  return 0
}
