# shellcheck shell=bash
# A kubelet and kube-proxy for tools/deploy-smoke, over podman: pods from the chart's
# workloads (tools/deploy/smoke-pods.mjs turns them into plain Pods that `podman kube play`
# runs), the rendered probes (gRPC, HTTP, TCP, exec) run in the pod's network namespace,
# Services as network aliases over the ready pods, preStop, SIGTERM and the grace period on
# stop, restarts on liveness failure. Sourced, never run; needs deploy_images.sh first.
#
# Networks (all --internal: nothing leaves them): KUBE_NET, where every pod is known by its
# own name, and one per Service, "<net>-<service>", which every pod joins (so any pod can
# call any Service). A Service's name is an alias, on its network, of exactly its ready pods
# (kube_endpoints), or of all of them with publishNotReadyAddresses.
#
# State: $KUBE_DIR/pods/<pod>/ (workload, ready, restarts, events; "terminating" stops the
# kubelet loop; a deleted pod's goes to $KUBE_DIR/gone/), $KUBE_DIR/created (every pod,
# volume and network made, for cleanup).

KUBE_NET=library-smoke
KUBE_DIR=""
KUBE_PLAN=""

kube_init() {
  KUBE_DIR=$1
  KUBE_PLAN=$KUBE_DIR/plan
  mkdir -p "$KUBE_DIR/pods" "$KUBE_PLAN"
  : >>"$KUBE_DIR/created"
}

kube_created() { printf '%s %s\n' "$1" "$2" >>"$KUBE_DIR/created"; }

kube_jq() { jq -r "$1" "$KUBE_PLAN/workloads.json"; }
kube_workload_jq() { jq -r --arg w "$1" ".workloads[] | select(.name == \$w) | $2" "$KUBE_PLAN/workloads.json"; }

kube_services() { kube_jq '.workloads[].services[].name' | sort -u; }

kube_networks_create() {
  local service
  podman network create --internal "$KUBE_NET" >/dev/null || lib_die "cannot create network $KUBE_NET"
  kube_created network "$KUBE_NET"
  for service in $(kube_services); do
    podman network create --internal "$KUBE_NET-$service" >/dev/null ||
      lib_die "cannot create network $KUBE_NET-$service"
    kube_created network "$KUBE_NET-$service"
  done
}

# A named volume for a claim, group-owned by the pod's fsGroup as the kubelet would make it.
kube_volume() {
  local name=$1 group=$2 mountpoint
  if ! podman volume exists "$name"; then
    podman volume create "$name" >/dev/null || lib_die "cannot create volume $name"
    kube_created volume "$name"
  fi
  [[ $group == null ]] && return 0
  mountpoint=$(podman volume inspect --format '{{.Mountpoint}}' "$name")
  chgrp "$group" "$mountpoint" && chmod 2775 "$mountpoint"
}

kube_event() { printf '%s %s\n' "$(date +%T.%3N)" "$2" >>"$KUBE_DIR/pods/$1/events"; }
kube_infra() { podman pod inspect --format '{{.InfraContainerID}}' "$1"; }
kube_pod_pid() { cat "$KUBE_DIR/pods/$1/pid"; }
kube_pod_workload() { cat "$KUBE_DIR/pods/$1/workload"; }
kube_ready() { [[ $(cat "$KUBE_DIR/pods/$1/ready" 2>/dev/null) == 1 ]]; }
kube_restarts() { cat "$KUBE_DIR/pods/$1/restarts" 2>/dev/null || echo 0; }

# Pods of a workload that are not terminating, oldest first.
kube_pods_of() {
  local pod_dir
  for pod_dir in "$KUBE_DIR"/pods/*/; do
    [[ -f $pod_dir/workload && $(cat "$pod_dir/workload") == "$1" && ! -e $pod_dir/terminating ]] &&
      printf '%s %s\n' "$(cat "$pod_dir/created")" "$(basename "$pod_dir")"
  done | sort -n | cut -d' ' -f2
}

# kube_run_pod <workload> <pod>: plays the pod and starts its kubelet loop.
kube_run_pod() {
  local workload=$1 pod=$2 dir=$KUBE_DIR/pods/$2 group claim service gated
  local -a networks=(--network "$KUBE_NET:alias=$pod")
  mkdir -p "$dir"
  printf '%s\n' "$workload" >"$dir/workload"
  printf '%s\n' "${EPOCHREALTIME/./}" >"$dir/created"
  echo 0 >"$dir/ready"
  echo 0 >"$dir/restarts"
  group=$(kube_workload_jq "$workload" .fsGroup)
  # (and the memory emptyDirs, which smoke-pods.mjs turns into volumes of the pod's own)
  for claim in $(kube_workload_jq "$workload" '.claimTemplates[], (.template.spec.volumes[]? | select(.emptyDir.medium == "Memory") | .name)'); do
    kube_volume "$claim-$pod" "$group"
  done
  for claim in $(kube_workload_jq "$workload" '.template.spec.volumes[]? | .persistentVolumeClaim.claimName // empty'); do
    kube_volume "$claim" "$group"
  done
  for service in $(kube_services); do
    if kube_workload_jq "$workload" '.services[] | select(.gated | not) | .name' | grep -qxF "$service"; then
      networks+=(--network "$KUBE_NET-$service:alias=$service")
    else
      networks+=(--network "$KUBE_NET-$service")
    fi
  done
  node "$LIB_ROOT/tools/deploy/smoke-pods.mjs" pod "$KUBE_PLAN" "$workload" "$pod" >"$dir/pod.yaml" ||
    lib_die "cannot make the pod $pod"
  kube_created pod "$pod"
  podman kube play --quiet "${networks[@]}" "$dir/pod.yaml" >"$dir/play.log" 2>&1 || {
    cat "$dir/play.log" >&2
    lib_die "podman kube play of $pod failed"
  }
  podman inspect --format '{{.State.Pid}}' "$(kube_infra "$pod")" >"$dir/pid"
  kube_event "$pod" "created"
  kube_kubelet "$pod" </dev/null >>"$dir/kubelet.log" 2>&1 &
  echo $! >"$dir/kubelet.pid"
}

# --- probes ------------------------------------------------------------------------------
# grpc.health.v1.HealthCheckRequest{service} as one gRPC frame.
kube_health_frame() {
  local service=$1 file=$KUBE_DIR/frames/${1:-_}
  if [[ ! -f $file ]]; then
    mkdir -p "$KUBE_DIR/frames"
    if [[ -z $service ]]; then
      printf '\x00\x00\x00\x00\x00' >"$file"
    else
      # (names up to 127 bytes: one-byte lengths)
      printf "\\x00\\x00\\x00\\x00\\x$(printf %02x $((${#service} + 2)))\\x0a\\x$(printf %02x ${#service})%s" \
        "$service" >"$file"
    fi
  fi
  printf '%s\n' "$file"
}

# kube_probe <pod> <container> <probe JSON>: 0 when the probe succeeds, as the kubelet judges.
kube_probe() {
  local pod=$1 container=$2 probe=$3 pid timeout port answer
  pid=$(kube_pod_pid "$pod")
  timeout=$(jq -r '.timeoutSeconds // 1' <<<"$probe")
  if port=$(jq -er '.grpc.port' <<<"$probe"); then
    # SERVING is the response message 08 01 (status = 1) in a 2-byte frame.
    answer=$(nsenter -t "$pid" -n curl -s --http2-prior-knowledge --max-time "$timeout" \
      -H 'content-type: application/grpc' -H 'te: trailers' \
      --data-binary @"$(kube_health_frame "$(jq -r '.grpc.service // ""' <<<"$probe")")" \
      "http://127.0.0.1:$port/grpc.health.v1.Health/Check" -o - 2>/dev/null | od -An -tx1 | tr -d ' \n')
    [[ $answer == 00000000020801 ]]
  elif port=$(jq -er '.httpGet.port' <<<"$probe"); then
    nsenter -t "$pid" -n curl -fs -o /dev/null --max-time "$timeout" \
      "http://127.0.0.1:$port$(jq -r '.httpGet.path // "/"' <<<"$probe")"
  elif port=$(jq -er '.tcpSocket.port' <<<"$probe"); then
    nsenter -t "$pid" -n timeout "$timeout" bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" 2>/dev/null
  else
    local -a command
    mapfile -t command < <(jq -r '.exec.command[]' <<<"$probe")
    timeout "$timeout" podman exec "$pod-$container" "${command[@]}" >/dev/null 2>&1
  fi
}

# --- endpoints (kube-proxy) ----------------------------------------------------------------
# A Service's name resolves (aardvark-dns, podman's DNS) to the pods that carry it as an alias
# on the Service's network. Readiness adds and removes that alias in aardvark's table, under
# the lock netavark takes, and has aardvark reload it: the pod stays on the network, so the
# connections it already has go on, as with kube-proxy; only new ones go elsewhere.
KUBE_DNS_DIR=/run/containers/networks/aardvark-dns

# kube_dns_alias <network> <container id> <alias> <1 add | 0 remove>
kube_dns_alias() {
  local file=$KUBE_DNS_DIR/$1
  [[ -f $file ]] || lib_die "no DNS table for network $1 ($file)"
  flock "$file" bash -c '
    table=$(awk -v id="$2" -v alias="$3" -v add="$4" '\''
      $1 == id {
        count = split($NF, names, ","); kept = ""
        for (i = 1; i <= count; i++) if (names[i] != alias) kept = kept (kept == "" ? "" : ",") names[i]
        if (add) kept = alias "," kept
        # (the fields are "id ipv4 ipv6 names" and ipv6 may be empty: keep the spacing)
        print substr($0, 1, length($0) - length($NF)) kept
        next
      }
      { print }'\'' "$1")
    printf "%s\n" "$table" >"$1"' _ "$file" "$2" "$3" "$4"
  kill -HUP "$(cat "$KUBE_DNS_DIR/aardvark.pid")"
}

kube_endpoints() {
  local pod=$1 state=$2 workload infra service
  workload=$(kube_pod_workload "$pod")
  infra=$(kube_infra "$pod")
  for service in $(kube_workload_jq "$workload" '.services[] | select(.gated) | .name'); do
    kube_dns_alias "$KUBE_NET-$service" "$infra" "$service" "$state"
  done
}

kube_set_ready() {
  local pod=$1 state=$2
  [[ $(cat "$KUBE_DIR/pods/$pod/ready") == "$state" ]] && return 0
  echo "$state" >"$KUBE_DIR/pods/$pod/ready"
  kube_endpoints "$pod" "$state"
  kube_event "$pod" "ready=$state"
}

# --- stopping ------------------------------------------------------------------------------
# kube_kill_container <pod> <container> <grace>: preStop, then SIGTERM and SIGKILL after what
# is left of the grace period. Prints the seconds it took.
kube_kill_container() {
  local pod=$1 container=$2 grace=$3 start=$SECONDS workload left
  local -a prestop
  workload=$(kube_pod_workload "$pod")
  mapfile -t prestop < <(kube_workload_jq "$workload" \
    ".containers[] | select(.name == \"$container\") | .preStop[]?")
  if ((${#prestop[@]})); then
    timeout "$grace" podman exec "$pod-$container" "${prestop[@]}" >/dev/null 2>&1 || true
  fi
  left=$((grace - (SECONDS - start)))
  ((left > 0)) || left=0
  podman stop --time "$left" "$pod-$container" >/dev/null 2>&1 || true
  printf '%s\n' $((SECONDS - start))
}

# kube_delete_pod <pod>: what `kubectl delete pod` does: out of the endpoints, preStop,
# SIGTERM, SIGKILL at the end of the grace period; then the pod is gone.
kube_delete_pod() {
  local pod=$1 dir=$KUBE_DIR/pods/$1 workload grace container took
  touch "$dir/terminating"
  kube_wait_pid "$(cat "$dir/kubelet.pid")"
  workload=$(kube_pod_workload "$pod")
  kube_set_ready "$pod" 0
  grace=$(kube_workload_jq "$workload" .grace)
  for container in $(kube_workload_jq "$workload" '.containers[].name'); do
    took=$(kube_kill_container "$pod" "$container" "$grace")
    kube_event "$pod" "stopped $container in ${took}s (grace ${grace}s), exit $(kube_exit_code "$pod-$container")"
  done
  podman pod rm --force "$pod" >/dev/null 2>&1 || true
  # Its record moves aside, so that a StatefulSet's next pod can take the name again.
  mkdir -p "$KUBE_DIR/gone"
  mv "$dir" "$KUBE_DIR/gone/$pod.$(date +%s%N)"
}

kube_exit_code() { podman inspect --format '{{.State.ExitCode}}' "$1" 2>/dev/null || echo gone; }

kube_wait_pid() {
  local pid=$1
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
}

# --- the kubelet loop ------------------------------------------------------------------------
# One per pod, in the background: startup probe until it passes (restart after its failure
# threshold), then readiness (endpoints follow) and liveness (restart after its threshold);
# a container that exits is started again, except a Job's.
kube_kubelet() {
  local pod=$1 dir=$KUBE_DIR/pods/$1 workload kind container
  workload=$(kube_pod_workload "$pod")
  kind=$(kube_workload_jq "$workload" .kind)
  container=$(kube_workload_jq "$workload" '.containers[0].name')
  local startup readiness liveness started=0 now
  startup=$(kube_workload_jq "$workload" '.containers[0].startup')
  readiness=$(kube_workload_jq "$workload" '.containers[0].readiness')
  liveness=$(kube_workload_jq "$workload" '.containers[0].liveness')
  local -A due=([startup]=0 [readiness]=0 [liveness]=0) failures=([startup]=0 [readiness]=0 [liveness]=0)
  while [[ ! -e $dir/terminating ]]; do
    now=$SECONDS
    if [[ $(podman inspect --format '{{.State.Running}}' "$pod-$container" 2>/dev/null) != true ]]; then
      if [[ $kind == CronJob ]]; then
        kube_event "$pod" "completed, exit $(kube_exit_code "$pod-$container")"
        return 0
      fi
      kube_restart "$pod" "$container" "exited $(kube_exit_code "$pod-$container")"
      started=0
      failures=([startup]=0 [readiness]=0 [liveness]=0)
      continue
    fi
    if ((!started)); then
      if [[ $startup == null ]] || kube_probe_due startup "$startup"; then
        started=1
        kube_event "$pod" "started"
      elif ((failures[startup] >= $(jq -r '.failureThreshold // 3' <<<"$startup"))); then
        kube_restart "$pod" "$container" "startup probe failed"
        failures[startup]=0
      fi
    else
      if [[ $readiness == null ]]; then
        kube_set_ready "$pod" 1
      elif kube_probe_due readiness "$readiness"; then
        kube_set_ready "$pod" 1
      elif ((failures[readiness] >= $(jq -r '.failureThreshold // 3' <<<"$readiness"))); then
        kube_set_ready "$pod" 0
      fi
      if [[ $liveness != null ]] && ! kube_probe_due liveness "$liveness" &&
        ((failures[liveness] >= $(jq -r '.failureThreshold // 3' <<<"$liveness"))); then
        kube_restart "$pod" "$container" "liveness probe failed ${failures[liveness]} times"
        started=0
        failures=([startup]=0 [readiness]=0 [liveness]=0)
        due=([startup]=0 [readiness]=0 [liveness]=0)
      fi
    fi
    ((SECONDS > now)) || sleep 1
  done
}

# Inside kube_kubelet: runs a probe when its period is up; true when it ran and passed. A
# probe not due yet keeps its last result (its failure count is unchanged).
kube_probe_due() {
  local name=$1 probe=$2 period
  if ((SECONDS < due[$name])); then
    ((failures[$name] == 0))
    return
  fi
  period=$(jq -r '.periodSeconds // 10' <<<"$probe")
  due[$name]=$((SECONDS + period))
  if kube_probe "$pod" "$container" "$probe"; then
    failures[$name]=0
    return 0
  fi
  failures[$name]=$((failures[$name] + 1))
  kube_event "$pod" "$name probe failed (${failures[$name]})"
  return 1
}

kube_restart() {
  local pod=$1 container=$2 why=$3 grace
  kube_set_ready "$pod" 0
  grace=$(kube_workload_jq "$(kube_pod_workload "$pod")" .grace)
  kube_kill_container "$pod" "$container" "$grace" >/dev/null
  echo $(($(kube_restarts "$pod") + 1)) >"$KUBE_DIR/pods/$pod/restarts"
  kube_event "$pod" "restart: $why"
  podman start "$pod-$container" >/dev/null 2>&1 || kube_event "$pod" "start failed"
}

# --- controllers -------------------------------------------------------------------------------
kube_new_pod_name() {
  local workload=$1 kind index=0
  kind=$(kube_workload_jq "$workload" .kind)
  if [[ $kind == StatefulSet ]]; then
    while [[ -e $KUBE_DIR/pods/$workload-$index ]]; do index=$((index + 1)); done
    printf '%s-%d\n' "$workload" "$index"
  else
    printf '%s-%s\n' "$workload" "$(tr -dc 'a-z0-9' </dev/urandom | head -c 5)"
  fi
}

# kube_wait_ready <pod> <seconds>
kube_wait_ready() {
  local deadline=$((SECONDS + $2))
  until kube_ready "$1"; do
    ((SECONDS < deadline)) || return 1
    sleep 0.5
  done
}

# kube_scale <workload> <replicas>: new pods (each waited for, as a StatefulSet does) or the
# newest removed, as the ReplicaSet controller picks.
kube_scale() {
  local workload=$1 replicas=$2 pods pod
  mapfile -t pods < <(kube_pods_of "$workload")
  while ((${#pods[@]} < replicas)); do
    pod=$(kube_new_pod_name "$workload")
    kube_run_pod "$workload" "$pod"
    pods+=("$pod")
  done
  for pod in "${pods[@]:replicas}"; do
    kube_delete_pod "$pod"
  done
}

# kube_rollout <workload> <timeout>: maxSurge 1, maxUnavailable 0: a new pod ready (and
# minReadySeconds more) before each old one is deleted.
kube_rollout() {
  local workload=$1 timeout=$2 min_ready old new
  min_ready=$(kube_workload_jq "$workload" .minReadySeconds)
  for old in $(kube_pods_of "$workload"); do
    new=$(kube_new_pod_name "$workload")
    kube_run_pod "$workload" "$new"
    kube_wait_ready "$new" "$timeout" || return 1
    sleep "$min_ready"
    kube_delete_pod "$old"
  done
}

# Everything this run made, even after a failure: kubelet loops, pods, volumes, networks.
kube_cleanup() {
  [[ -n $KUBE_DIR && -f $KUBE_DIR/created ]] || return 0
  local pid_file kind
  for pid_file in "$KUBE_DIR"/pods/*/kubelet.pid "$KUBE_DIR"/gone/*/kubelet.pid; do
    if [[ -f $pid_file ]]; then kill "$(cat "$pid_file")" 2>/dev/null || true; fi
  done
  # Pods first (they hold the volumes and networks), then volumes, then networks.
  for kind in pod volume network; do
    kube_cleanup_kind "$kind"
  done
  return 0
}

kube_cleanup_kind() {
  local kind name
  while read -r kind name; do
    [[ $kind == "$1" ]] || continue
    case $kind in
      pod) podman pod rm --force --time 0 "$name" >/dev/null 2>&1 || true ;;
      volume) podman volume rm --force "$name" >/dev/null 2>&1 || true ;;
      network) podman network rm --force "$name" >/dev/null 2>&1 || true ;;
    esac
  done < <(grep "^$1 " "$KUBE_DIR/created")
}
