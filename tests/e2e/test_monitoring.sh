#!/usr/bin/env bash
# The monitoring files the chart ships (charts/library/files/monitoring): Prometheus config
# and alert rules pass promtool, the alert unit tests pass, the Grafana dashboard is valid
# JSON, and every metric they use is one the services export (or Kubernetes' own).
# Ends with `N passed, N failed`.
set -uo pipefail
root=${LIBRARY_SOURCE_ROOT:?run me through meson test or tools/test}
dir=$root/charts/library/files/monitoring
passed=0
failed=0
check() {
  local what=$1
  shift
  if output=$("$@" 2>&1); then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$what"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s\n%s\n' "$what" "$output"
  fi
}

check "promtool check config prometheus.yml" promtool check config "$dir/prometheus.yml"
check "promtool check rules alerts.yml" promtool check rules "$dir/alerts.yml"
check "promtool test rules alerts_test.yml" bash -c "cd '$dir' && promtool test rules alerts_test.yml"
check "dashboard.json is a Grafana dashboard" \
  jq -e '.uid and .title and (.panels | length > 0) and ([.panels[] | select(.type != "row") | .targets[].expr] | length > 0)' \
  "$dir/dashboard.json"

# Metric names used by the rules and the dashboard (not recording rules, which contain ':'),
# without histogram suffixes; and the names the C code registers (string literals).
metric_names() { grep -oE '(^|[^:a-z_])(grpc_server|library)_[a-z_]+' | sed -E 's/^[^a-z]//'; }
used=$({ metric_names <"$dir/alerts.yml"
  jq -r '.panels[] | select(.targets) | .targets[].expr' "$dir/dashboard.json" | metric_names; } |
  sed -E 's/_(bucket|sum|count)$//' | sort -u)
exported=$(cat "$root"/libshared/*.c "$root"/services/*/*.c | grep -oE '"(grpc_server|library)_[a-z_]+"' |
  tr -d '"' | sort -u)
comm -23 <(printf '%s\n' "$used") <(printf '%s\n' "$exported") >"${TMPDIR:-/tmp}/library-missing-metrics.$$"
check "every metric in the rules and dashboard is exported by a service ($(wc -l <<<"$used") names)" \
  bash -c '! grep . "$1" && rm -f "$1"' _ "${TMPDIR:-/tmp}/library-missing-metrics.$$"

printf '%d passed, %d failed\n' "$passed" "$failed"
((failed == 0))
