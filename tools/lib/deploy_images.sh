# shellcheck shell=bash
# Images for tools/deploy-smoke, built here with no registry: a debian:12 base made by
# mmdebstrap from the Debian archive, the three services from their Containerfiles as they
# are, NATS and Redis from Debian's packages (tools/deploy/images/). Sourced, never run.
#
# Cache: each image carries a label with the hash of its inputs (the base's id, its
# Containerfile, the files it copies) and is rebuilt only when that hash changes; with no
# image at all (a fresh machine), everything is built from nothing.

DEPLOY_CONTAINERS_CONF=$LIB_ROOT/tools/deploy/containers.conf
export CONTAINERS_CONF=$DEPLOY_CONTAINERS_CONF
DEPLOY_TAG=smoke
DEPLOY_BASE=localhost/library-debian-base:12
DEPLOY_SERVICES=(catalog lending mypage)
DEPLOY_SUITE=bookworm
DEPLOY_MIRROR=http://deb.debian.org/debian
DEPLOY_KEY_LABEL=org.library.inputs

# What a service image is built from (the Containerfiles' COPY lines; check-deploy keeps
# those in step with the sources).
deploy_service_inputs=(tools/install tools/lib meson.build meson_options.txt proto libshared
  services tools/deploy/runtime-packages)

# Prints a hash of the given words and of the contents of the files under the given paths.
deploy_hash() {
  local words=$1
  shift
  {
    printf '%s\n' "$words"
    (($# == 0)) || find "$@" -type f -print0 | sort -z | xargs -0 sha256sum
  } | sha256sum | cut -c1-16
}

deploy_image_key() {
  podman image inspect --format "{{ index .Labels \"$DEPLOY_KEY_LABEL\" }}" "$1" 2>/dev/null || true
}

# The base: minbase bookworm from the archive, imported (import sets no PATH) and tagged as
# the names the Containerfiles start FROM, so `podman build --pull=never` finds them.
deploy_base() {
  local key tar
  key=$(deploy_hash "mmdebstrap minbase $DEPLOY_SUITE $DEPLOY_MIRROR security updates")
  if [[ $(deploy_image_key "$DEPLOY_BASE") != "$key" ]]; then
    lib_say "base: mmdebstrap --variant=minbase $DEPLOY_SUITE (from the Debian archive)"
    tar=$(mktemp --suffix=.tar)
    if ! mmdebstrap --quiet --variant=minbase "$DEPLOY_SUITE" "$tar" \
      "deb $DEPLOY_MIRROR $DEPLOY_SUITE main" \
      "deb $DEPLOY_MIRROR $DEPLOY_SUITE-updates main" \
      "deb ${DEPLOY_MIRROR}-security $DEPLOY_SUITE-security main" >&2; then
      rm -f "$tar"
      lib_die "mmdebstrap failed"
    fi
    podman import --quiet \
      --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
      --change 'CMD ["bash"]' --change "LABEL $DEPLOY_KEY_LABEL=$key" \
      "$tar" "$DEPLOY_BASE" >/dev/null || { rm -f "$tar"; lib_die "podman import failed"; }
    rm -f "$tar"
  fi
  podman tag "$DEPLOY_BASE" docker.io/library/debian:12 docker.io/library/debian:12-slim
}

# deploy_image <name> <Containerfile> [input paths...]: localhost/library-<name>:smoke
deploy_image() {
  local name=$1 containerfile=$2 image key base_id start=$SECONDS
  shift 2
  image=localhost/library-$name:$DEPLOY_TAG
  base_id=$(podman image inspect --format '{{.Id}}' "$DEPLOY_BASE")
  key=$(deploy_hash "$base_id" "$containerfile" "$@")
  if [[ $(deploy_image_key "$image") == "$key" ]]; then
    lib_say "image $image: inputs unchanged ($key), kept"
    return 0
  fi
  lib_say "image $image: building from $containerfile"
  local log
  log=$(mktemp)
  if ! podman build --pull=never --network=host --label "$DEPLOY_KEY_LABEL=$key" \
    -f "$containerfile" -t "$image" "$LIB_ROOT" >"$log" 2>&1; then
    tail -n 40 "$log" >&2
    rm -f "$log"
    lib_die "podman build of $image failed"
  fi
  rm -f "$log"
  lib_say "image $image: built in $((SECONDS - start)) s"
}

deploy_images() {
  local service
  deploy_base
  for service in "${DEPLOY_SERVICES[@]}"; do
    deploy_image "$service" "services/$service/Containerfile" "${deploy_service_inputs[@]}"
  done
  deploy_image nats tools/deploy/images/nats.Containerfile
  deploy_image redis tools/deploy/images/redis.Containerfile
  deploy_image gateway tools/deploy/images/gateway.Containerfile
  deploy_image toolbox tools/deploy/images/toolbox.Containerfile
}

# Everything deploy_images made, and the build stages' layers, for a build from nothing.
deploy_images_remove() {
  local name
  for name in "${DEPLOY_SERVICES[@]}" nats redis gateway toolbox; do
    podman rmi --force "localhost/library-$name:$DEPLOY_TAG" >/dev/null 2>&1 || true
  done
  podman rmi --force docker.io/library/debian:12 docker.io/library/debian:12-slim \
    "$DEPLOY_BASE" >/dev/null 2>&1 || true
  podman image prune --force >/dev/null 2>&1 || true
}
