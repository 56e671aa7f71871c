# shellcheck shell=bash
# tools/deploy-smoke's scenarios: each prints one line "PASS <name>: ..." or
# "FAIL <name>: ..." and is counted. Sourced after deploy_kube.sh, with the release running.

SMOKE_SCENARIOS=(seed-demo nats-down redeploy rolling-update scale log-level shared-volume rebuild-job prometheus)
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
    printf '%s\n' "$output" >&2
    printf 'tools/demo --check failed: %s' \
      "$(grep -m1 -A4 'error:' <<<"$output" | tr -s ' \n' ' ' | cut -c1-300)"
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

# --- a retrying client of lending while lending's pods change (tools/deploy/smoke-writer) -----
smoke_toolbox() { printf '%s-toolbox\n' "$(kube_pods_of smoke-toolbox | head -n 1)"; }

# smoke_writer_start <name>: the writer runs in the toolbox pod until smoke_writer_stop.
smoke_writer_start() {
  local out=$KUBE_DIR/writer-$1
  rm -rf "$out"
  mkdir -p "$out"
  podman exec -e RUN_DIR="$RUN_DIR" "$(smoke_toolbox)" "$LIB_ROOT/tools/deploy/smoke-writer" "$out" \
    >"$out/stdout" 2>&1 &
  echo $! >"$out/pid"
  # it is writing once the first borrow is acknowledged
  local deadline=$((SECONDS + 60))
  until [[ -s $out/acked ]]; do
    ((SECONDS < deadline)) || { printf 'the writer acknowledged nothing in 60 s: %s' "$(tail -c 300 "$out/stdout" "$out/log" 2>/dev/null)"; return 1; }
    sleep 0.5
  done
}

# smoke_writer_stop <name>: stops it, prints its result; true when nothing failed or was lost.
smoke_writer_stop() {
  local out=$KUBE_DIR/writer-$1 status=0
  touch "$out/stop"
  wait "$(cat "$out/pid")" || status=$?
  if [[ ! -f $out/result ]]; then
    printf 'the writer ended without a result: %s' "$(tail -c 300 "$out/stdout")"
    return 1
  fi
  printf '%s' "$(cat "$out/result")"
  if ((status != 0)); then
    tail -n 5 "$out/log" >&2
    return 1
  fi
}

# The Jenkinsfile's redeploy: every lending pod deleted and new ones made (delete and
# recreate), while the writer borrows with retries and one request_id per borrow.
smoke_redeploy() {
  local pod old=() deleting=() replicas
  mapfile -t old < <(kube_pods_of library-lending)
  replicas=${#old[@]}
  smoke_writer_start redeploy || return 1
  sleep 3
  for pod in "${old[@]}"; do
    kube_delete_pod "$pod" &
    deleting+=($!)
  done
  wait "${deleting[@]}"
  kube_scale library-lending "$replicas"
  for pod in $(kube_pods_of library-lending); do
    kube_wait_ready "$pod" 90 || { printf '%s not ready' "$pod"; smoke_writer_stop redeploy >/dev/null; return 1; }
  done
  sleep 5
  printf '%d lending pods deleted and recreated under a retrying writer: ' "$replicas"
  smoke_writer_stop redeploy
}

# Rolling update of lending (maxSurge 1, maxUnavailable 0): a new pod ready before an old one
# goes; the writer's calls, with deadlines and retries, must all succeed.
smoke_rolling_update() {
  local before after
  before=$(kube_pods_of library-lending | tr '\n' ' ')
  smoke_writer_start rollout || return 1
  if ! kube_rollout library-lending 90; then
    printf 'a new pod did not become ready'
    smoke_writer_stop rollout >/dev/null
    return 1
  fi
  sleep 3
  after=$(kube_pods_of library-lending | tr '\n' ' ')
  printf 'rolled %s-> %s: ' "$before" "$after"
  smoke_writer_stop rollout
}

# Scaling lending 2 -> 4 -> 2 under the writer (the HPA's part needs a cluster); the Service
# name resolves to every ready replica.
smoke_scale() {
  local resolved
  smoke_writer_start scale || return 1
  kube_scale library-lending 4
  for pod in $(kube_pods_of library-lending); do
    kube_wait_ready "$pod" 90 || { printf '%s not ready' "$pod"; smoke_writer_stop scale >/dev/null; return 1; }
  done
  sleep 2
  resolved=$(smoke_resolved library-lending)
  kube_scale library-lending 2
  sleep 3
  local after
  after=$(smoke_resolved library-lending)
  printf 'library-lending resolved to %d then %d pods: ' "$resolved" "$after"
  smoke_writer_stop scale || return 1
  ((resolved == 4 && after == 2)) || { printf ' (expected 4 then 2 addresses)'; return 1; }
}

# How many addresses a Service's name has, asked in the toolbox pod (podman's DNS).
smoke_resolved() {
  podman exec "$(smoke_toolbox)" getent ahostsv4 "$1" | awk '{print $1}' | sort -u | wc -l
}

# LOG_LEVEL changed in the ConfigMap reaches running pods without a restart: the kubelet's
# projection of the key (the mounted file) is replaced, the services re-read it.
smoke_log_level() {
  local file=$KUBE_PLAN/volumes/library-lending/config/LOG_LEVEL pod pods restarts_before
  mapfile -t pods < <(kube_pods_of library-lending)
  restarts_before=$(smoke_restart_total "${pods[@]}")
  printf 'debug\n' >"$file.new" && mv "$file.new" "$file"
  for pod in "${pods[@]}"; do
    if ! smoke_wait_log "$pod-lending" 'log level is now debug' 30; then
      printf '%s did not say "log level is now debug" in 30 s' "$pod"
      return 1
    fi
  done
  printf 'info\n' >"$file.new" && mv "$file.new" "$file"
  ((restarts_before == $(smoke_restart_total "${pods[@]}"))) || { printf 'pods restarted'; return 1; }
  printf '%d lending pods logged "log level is now debug" after the ConfigMap key changed, 0 restarts' "${#pods[@]}"
}

smoke_wait_log() {
  local container=$1 text=$2 deadline=$((SECONDS + $3))
  until podman logs "$container" 2>&1 | grep -qF "$text"; do
    ((SECONDS < deadline)) || return 1
    sleep 1
  done
}

# The ReadWriteMany volume: written in one lending pod, read in the other.
smoke_shared_volume() {
  local pods mount text
  mapfile -t pods < <(kube_pods_of library-lending)
  ((${#pods[@]} >= 2)) || { printf 'fewer than 2 lending pods'; return 1; }
  mount=$(yq_mount_path)
  text="written by ${pods[0]} at $(date +%s%N)"
  podman exec "${pods[0]}-lending" sh -c "printf '%s' '$text' > $mount/smoke" ||
    { printf 'cannot write %s/smoke in %s (uid 10001, fsGroup)' "$mount" "${pods[0]}"; return 1; }
  [[ $(podman exec "${pods[1]}-lending" cat "$mount/smoke") == "$text" ]] ||
    { printf '%s does not read what %s wrote' "${pods[1]}" "${pods[0]}"; return 1; }
  printf '%s wrote %s/smoke as uid 10001, %s read it back' "${pods[0]}" "$mount" "${pods[1]}"
}

yq_mount_path() {
  kube_workload_jq library-lending '.template.spec.containers[0].volumeMounts[] | select(.name == "shared") | .mountPath'
}

# The mypage --rebuild Job from the suspended CronJob's template runs to completion.
smoke_rebuild_job() {
  local pod deadline=$((SECONDS + 120)) code container
  pod=library-mypage-rebuild-manual-$(date +%s)
  kube_run_pod library-mypage-rebuild "$pod"
  until grep -q completed "$KUBE_DIR/pods/$pod/events" 2>/dev/null; do
    ((SECONDS < deadline)) || { printf 'the job did not finish in 120 s: %s' "$(smoke_pod_story "$pod")"; return 1; }
    sleep 1
  done
  container=$pod-$(kube_workload_jq library-mypage-rebuild '.containers[0].name')
  code=$(kube_exit_code "$container")
  [[ $code == 0 ]] || { printf 'the job exited %s: %s' "$code" "$(smoke_pod_story "$pod")"; return 1; }
  printf 'job %s completed, exit 0: %s' "$pod" "$(podman logs "$container" 2>&1 | grep -i rebuil | tail -n 1 | cut -c1-160)"
}

# --- Prometheus: the chart's scrape annotations and alert rules, a load seen in the metrics --
# Debian's prometheus runs in the toolbox pod's network namespace (as a Prometheus pod would),
# with tools/deploy/smoke-prometheus.yml: the Kubernetes pod job, its targets written here as
# kubernetes_sd_configs would give them (pod address, annotations, labels), and the rules from
# the rendered alerts ConfigMap.
SMOKE_PROMETHEUS_PID=""

# Every running pod as a kubernetes_sd target (role: pod), in file_sd's JSON.
smoke_prometheus_targets() {
  local workload pod ip
  for workload in $(kube_jq '.workloads[].name'); do
    for pod in $(kube_pods_of "$workload"); do
      ip=$(podman inspect --format "{{(index .NetworkSettings.Networks \"$KUBE_NET\").IPAddress}}" \
        "$(kube_infra "$pod")") || continue
      kube_workload_jq "$workload" '.template.metadata' |
        jq -c --arg ip "$ip" --arg pod "$pod" '
          def meta(prefix; object): object // {} | with_entries(.key |= prefix + gsub("[^a-zA-Z0-9_]"; "_"));
          {targets: [$ip],
           labels: ({__meta_kubernetes_pod_name: $pod, __meta_kubernetes_namespace: "default"}
             + meta("__meta_kubernetes_pod_annotation_"; .annotations)
             + meta("__meta_kubernetes_pod_label_"; .labels))}'
    done
  done | jq -s .
}

smoke_prometheus_query() {
  smoke_in_pod "$(kube_pods_of smoke-toolbox | head -n 1)" curl -fsS --max-time 5 \
    "http://127.0.0.1:9090/api/v1/$1" "${@:2}"
}

# The sum of a PromQL expression's values now (0 when it has none).
smoke_prometheus_value() {
  smoke_prometheus_query query --data-urlencode "query=$1" |
    jq -r '[.data.result[].value[1] | tonumber] | add // 0 | floor'
}

smoke_prometheus_stop() {
  [[ -n $SMOKE_PROMETHEUS_PID ]] || return 0
  kill "$SMOKE_PROMETHEUS_PID" 2>/dev/null || true
  kube_wait_pid "$SMOKE_PROMETHEUS_PID"
  SMOKE_PROMETHEUS_PID=""
}

smoke_prometheus() {
  local status=0
  smoke_prometheus_run || status=$?
  smoke_prometheus_stop
  return "$status"
}

smoke_prometheus_run() {
  local dir=$KUBE_DIR/prometheus deadline expected targets up rules bad before after acked
  command -v prometheus >/dev/null || { printf 'no prometheus (tools/install installs it)'; return 1; }
  rm -rf "$dir"
  mkdir -p "$dir/data"
  cp "$LIB_ROOT/tools/deploy/smoke-prometheus.yml" "$dir/prometheus.yml"
  node -e '
    const YAML = require(process.argv[1]);
    const objects = YAML.parseAllDocuments(require("fs").readFileSync(process.argv[2], "utf8")).map((d) => d.toJS());
    const alerts = objects.find((o) => o && o.kind === "ConfigMap" && /-alerts$/.test(o.metadata.name));
    if (!alerts) { console.error("no alerts ConfigMap in the render"); process.exit(1); }
    process.stdout.write(alerts.data["alerts.yml"]);' \
    "$LIB_ROOT/.tools/node_modules/yaml" "$KUBE_DIR/rendered.yaml" >"$dir/alerts.yml" ||
    { printf 'no alert rules in the render (monitoring.enabled)'; return 1; }
  smoke_prometheus_targets >"$dir/targets.json"
  expected=$(jq '[.[] | select(.labels.__meta_kubernetes_pod_annotation_prometheus_io_scrape == "true")] | length' \
    "$dir/targets.json")
  # (nsenter itself, not smoke_in_pod: a function in the background is a subshell, and its
  # pid is not prometheus's; nsenter -n execs prometheus in its own process)
  nsenter -t "$(kube_pod_pid "$(kube_pods_of smoke-toolbox | head -n 1)")" -n \
    prometheus --config.file="$dir/prometheus.yml" --storage.tsdb.path="$dir/data" \
    --web.listen-address=127.0.0.1:9090 >"$dir/log" 2>&1 &
  SMOKE_PROMETHEUS_PID=$!
  # every annotated pod scraped and up
  deadline=$((SECONDS + 60))
  until targets=$(smoke_prometheus_query targets 2>/dev/null) &&
    up=$(jq '[.data.activeTargets[] | select(.health == "up")] | length' <<<"$targets") &&
    ((up == expected)); do
    ((SECONDS < deadline)) || {
      printf '%s of %d annotated pods up after 60 s: %s' "${up:-none}" "$expected" \
        "$(jq -c '[.data.activeTargets[]? | {pod: .labels.pod, health, lastError}]' <<<"${targets:-{\}}" | cut -c1-300)"
      tail -n 5 "$dir/log" >&2
      return 1
    }
    sleep 1
  done
  # the rules loaded, and every one evaluated without error
  deadline=$((SECONDS + 30))
  until rules=$(smoke_prometheus_query rules) &&
    bad=$(jq -c '[.data.groups[].rules[] | select(.health != "ok") | {name, health, lastError}]' <<<"$rules") &&
    [[ $bad == '[]' ]] && (($(jq '[.data.groups[].rules[]] | length' <<<"$rules") > 0)); do
    ((SECONDS < deadline)) || { printf 'alert rules not all loaded and healthy in 30 s: %s' "$(cut -c1-300 <<<"${bad:-$rules}")"; return 1; }
    sleep 1
  done
  # a load on lending shows in grpc_server_handled_total
  before=$(smoke_prometheus_value 'sum(grpc_server_handled_total{app_kubernetes_io_component="lending"})')
  smoke_writer_start prometheus || return 1
  sleep 10
  smoke_writer_stop prometheus >/dev/null || { printf 'the load failed: %s' "$(cat "$KUBE_DIR/writer-prometheus/result")"; return 1; }
  acked=$(wc -l <"$KUBE_DIR/writer-prometheus/acked")
  deadline=$((SECONDS + 20))
  until after=$(smoke_prometheus_value 'sum(grpc_server_handled_total{app_kubernetes_io_component="lending"})') &&
    ((after - before >= acked)); do
    ((SECONDS < deadline)) || { printf "lending's grpc_server_handled_total rose by %d, fewer than the %d borrows" $((after - before)) "$acked"; return 1; }
    sleep 1
  done
  printf "%d of %d annotated pods scraped up, %d alert rules loaded and healthy; %d borrows raised lending's grpc_server_handled_total by %d" \
    "$up" "$expected" "$(jq '[.data.groups[].rules[]] | length' <<<"$rules")" "$acked" $((after - before))
}
