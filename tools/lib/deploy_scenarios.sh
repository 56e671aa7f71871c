# shellcheck shell=bash
# tools/deploy-smoke's scenarios: each prints one line "PASS <name>: ..." or
# "FAIL <name>: ..." and is counted. Sourced after deploy_kube.sh, with the release running.

SMOKE_SCENARIOS=(seed-demo nats-down)
smoke_passed=0
smoke_failed=0

# smoke_run <scenario>: runs smoke_<scenario> (which prints its detail on stdout and returns
# its result) and prints the result line with the time it took.
smoke_run() {
  local name=$1 start=$SECONDS detail status=0
  declare -F "smoke_${name//-/_}" >/dev/null || lib_die "no scenario '$name' (${SMOKE_SCENARIOS[*]})"
  detail=$("smoke_${name//-/_}" 2>"$KUBE_DIR/$name.log") || status=$?
  if ((status == 0)); then
    smoke_passed=$((smoke_passed + 1))
    printf 'PASS %s (%d s): %s\n' "$name" $((SECONDS - start)) "$detail"
  else
    smoke_failed=$((smoke_failed + 1))
    printf 'FAIL %s (%d s): %s\n' "$name" $((SECONDS - start)) "$detail"
    sed 's/^/    /' "$KUBE_DIR/$name.log" | tail -n 20
  fi
}

# What happened to a pod, for a failure message.
smoke_pod_story() {
  tail -n 6 "$KUBE_DIR/pods/$1/events" 2>/dev/null | tr '\n' ';'
  podman logs --tail 5 "$1-$(kube_workload_jq "$(kube_pod_workload "$1")" '.containers[0].name')" 2>&1 |
    tr '\n' ';'
}

# smoke_in_pod <pod> <command...>: runs a host command in the pod's network namespace (its
# loopback and its networks; what a sidecar or `kubectl exec` would reach).
smoke_in_pod() {
  local pod=$1
  shift
  nsenter -t "$(kube_pod_pid "$pod")" -n "$@"
}

smoke_gateway_pod() { kube_pods_of smoke-gateway | head -n 1; }

smoke_service_pods() {
  local workload
  for workload in library-catalog library-lending library-mypage; do kube_pods_of "$workload"; done
}

# --- the seed demo through the gateway -------------------------------------------------------
smoke_seed_demo() {
  local output
  if ! output=$(smoke_in_pod "$(smoke_gateway_pod)" ./tools/demo --check \
    --endpoint http://127.0.0.1:8080 2>&1); then
    printf 'tools/demo --check failed: %s' "$(tail -n 3 <<<"$output" | tr '\n' ' ')"
    return 1
  fi
  printf '%s\n' "$output" >&2
  printf 'tools/demo --check through the gateway pod: %s' "$(tail -n 1 <<<"$output")"
}

# --- NATS down: not ready, still alive, no restarts; back: ready ------------------------------
# smoke_all <predicate> <seconds> <pods...>: waits until the predicate holds for every pod.
smoke_all() {
  local predicate=$1 deadline=$((SECONDS + $2)) pod
  shift 2
  while ((SECONDS < deadline)); do
    for pod in "$@"; do
      "$predicate" "$pod" || continue 2
    done
    return 0
  done
  return 1
}
smoke_not_ready() { ! kube_ready "$1"; }
smoke_alive() {
  local probe
  probe=$(kube_workload_jq "$(kube_pod_workload "$1")" '.containers[0].liveness')
  kube_probe "$1" "$(kube_workload_jq "$(kube_pod_workload "$1")" '.containers[0].name')" "$probe"
}
smoke_restart_total() {
  local pod total=0
  for pod in "$@"; do total=$((total + $(kube_restarts "$pod"))); done
  printf '%d\n' "$total"
}

smoke_nats_down() {
  local pods restarts_before down_at pod
  mapfile -t pods < <(smoke_service_pods)
  restarts_before=$(smoke_restart_total "${pods[@]}")
  kube_scale library-nats 0
  down_at=$SECONDS
  if ! smoke_all smoke_not_ready 60 "${pods[@]}"; then
    for pod in "${pods[@]}"; do kube_ready "$pod" && printf 'still ready: %s; ' "$pod"; done
    return 1
  fi
  local not_ready_after=$((SECONDS - down_at))
  for pod in "${pods[@]}"; do
    smoke_alive "$pod" || { printf 'liveness not SERVING on %s while NATS is down' "$pod"; return 1; }
  done
  # Longer than liveness' failure threshold (3 x 10 s): a restart would have happened by now.
  sleep 35
  for pod in "${pods[@]}"; do
    smoke_alive "$pod" || { printf 'liveness not SERVING on %s after 35 s' "$pod"; return 1; }
  done
  local restarts_during
  restarts_during=$(($(smoke_restart_total "${pods[@]}") - restarts_before))
  kube_scale library-nats 1
  kube_wait_ready library-nats-0 60 || { printf 'NATS did not come back'; return 1; }
  local up_at=$SECONDS
  smoke_all kube_ready 90 "${pods[@]}" || {
    for pod in "${pods[@]}"; do kube_ready "$pod" || printf 'not ready again: %s; ' "$pod"; done
    return 1
  }
  ((restarts_during == 0)) || { printf '%d restarts while NATS was down' "$restarts_during"; return 1; }
  printf '%d pods NOT_SERVING %d s after NATS went, liveness SERVING for 35 s more, 0 restarts; ready %d s after NATS was back' \
    "${#pods[@]}" "$not_ready_after" $((SECONDS - up_at))
}
