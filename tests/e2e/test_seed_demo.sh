#!/usr/bin/env bash
# The seed demo end to end, as a user runs it: tools/run starts an isolated stack (its own
# directory, every port shifted by a free offset) from this build, and tools/demo --check
# drives it through the nginx gateway with buf curl, checking every step; then tools/load runs
# for two seconds against the same stack, so it cannot rot. Ends with `N passed, N failed`.
set -euo pipefail
root=${LIBRARY_SOURCE_ROOT:?run me through meson test or tools/test}
build=${LIBRARY_BUILD_ROOT:?run me through meson test or tools/test}
# shellcheck source=tools/lib/common.sh
source "$root/tools/lib/common.sh"

dir=$(mktemp -d "${TMPDIR:-/tmp}/library-e2e-XXXXXX")
run_pid=""
result=1
finish() {
  if [[ -n $run_pid ]]; then
    kill -TERM "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  if ((result == 0)); then
    rm -rf "$dir"
    printf '1 passed, 0 failed\n'
  else
    printf 'logs kept in %s\n0 passed, 1 failed\n' "$dir"
  fi
  exit "$result"
}
trap finish EXIT

# The stack's ports; an offset shifts all of them.
stack_ports=(8080 4222 8222 6379 50051 50052 50053 9464 9465 9466)

# An offset that leaves every port of the stack free (tools/run refuses busy ports).
ports_free() {
  local port
  for port in "${stack_ports[@]}"; do
    ! lib_port_open $((port + $1)) || return 1
  done
}

# Offsets that put no port of the stack in the kernel's ephemeral range. Outgoing connections
# take their local ports there (connect() prefers even ones, like lending's), and one that sits
# in TIME_WAIT blocks a listener's bind() without showing up as an open port: the suites before
# this one leave a couple of thousand. Default range 32768-60999: offsets 11000-15000.
offsets=()
read -r ephemeral_low ephemeral_high </proc/sys/net/ipv4/ip_local_port_range
for ((candidate = 1000; candidate <= 15000; candidate += 100)); do # tools/run takes 0-15000
  for port in "${stack_ports[@]}"; do
    ((port + candidate < ephemeral_low || port + candidate > ephemeral_high)) || continue 2
  done
  offsets+=("$candidate")
done
((${#offsets[@]})) || lib_die "every port offset puts a port in the ephemeral range $ephemeral_low-$ephemeral_high"

# pick_offset: sets $offset so every port of the stack is free now.
pick_offset() {
  local candidate
  offset=""
  for _ in 1 2 3 4 5 6 7 8; do
    candidate=${offsets[RANDOM % ${#offsets[@]}]}
    if ports_free "$candidate"; then
      offset=$candidate
      return 0
    fi
  done
  lib_die "found no free set of ports"
}

# Up to three tries: a port that was free a moment ago can still be taken when a service
# binds it (another suite may have started a listener there), and tools/run then stops at once.
up=0
for attempt in 1 2 3; do
  pick_offset
  RUN_DIR=$dir/run RUN_PORT_OFFSET=$offset RUN_BUILD_DIR=$build RUN_READY_TIMEOUT=60 \
    "$root/tools/run" >"$dir/run.out" 2>&1 &
  run_pid=$!
  deadline=$((SECONDS + 90))
  until grep -q 'The library backend is up' "$dir/run.out"; do
    if ! kill -0 "$run_pid" 2>/dev/null || ((SECONDS >= deadline)); then
      break
    fi
    sleep 0.2
  done
  if grep -q 'The library backend is up' "$dir/run.out"; then
    up=1
    break
  fi
  cat "$dir/run.out"
  kill -TERM "$run_pid" 2>/dev/null || true
  wait "$run_pid" 2>/dev/null || true
  run_pid=""
  lib_say "tools/run did not bring the stack up (attempt $attempt)"
done
((up)) || lib_die "tools/run did not bring the stack up in three attempts"

endpoint=http://127.0.0.1:$((8080 + offset))
if RUN_DIR=$dir/run "$root/tools/demo" --check --endpoint "$endpoint" &&
  RUN_DIR=$dir/run "$root/tools/load" --duration 2 --clients 1 --endpoint "$endpoint" >"$dir/load.out" 2>&1 &&
  grep -q 'borrows (each returned), 0 failed' "$dir/load.out"; then
  result=0
else
  [[ ! -f $dir/load.out ]] || cat "$dir/load.out"
fi
