# shellcheck shell=bash
# The dev credentials of NATS and Redis for tools/run: random passwords made once under a
# directory (.run/credentials/, mode 700, a file per user, mode 600), and the server
# configuration that uses them. Sourced, never run. The users and their permissions are the
# chart's (charts/library/files/nats-users.conf, redis-mypage.acl), so a run refuses what a
# cluster would.

LIB_NATS_USERS=(admin catalog lending mypage)

# lib_credentials <dir>: makes every missing password file (nats-<user>, redis-admin, redis-mypage).
lib_credentials() {
  local dir=$1 name
  mkdir -p "$dir" && chmod 700 "$dir" || return 1
  for name in "${LIB_NATS_USERS[@]/#/nats-}" redis-admin redis-mypage; do
    [[ -s $dir/$name ]] && continue
    (umask 077 && openssl rand -hex 24 >"$dir/$name") || return 1
  done
}

# lib_nats_users_conf <dir> <out>: nats-users.conf with the passwords of <dir> defined at its
# top (nats-server resolves $NATS_<USER>_PASSWORD within the file, or from its environment).
lib_nats_users_conf() {
  local dir=$1 out=$2 user
  (
    umask 077
    {
      printf '# written by tools/run from .run/credentials/ and charts/library/files/nats-users.conf\n'
      for user in "${LIB_NATS_USERS[@]}"; do
        printf 'NATS_%s_PASSWORD: "%s"\n' "${user^^}" "$(<"$dir/nats-$user")"
      done
      cat "$LIB_ROOT/charts/library/files/nats-users.conf"
    } >"$out"
  )
}

# lib_redis_users <dir>: redis.conf lines for the users: the default user (every right:
# Redis 7.0 loads the AOF's transactions as that user) wants the admin password, and mypage
# has its own ACL.
lib_redis_users() {
  local dir=$1 rules
  rules=$(grep -v '^#' "$LIB_ROOT/charts/library/files/redis-mypage.acl")
  printf 'user default on >%s ~* &* +@all\n' "$(<"$dir/redis-admin")"
  printf 'user mypage on >%s %s\n' "$(<"$dir/redis-mypage")" "$rules"
}

# lib_dev_tls <dir> [host...]: a dev CA (ca.pem) and a certificate for NATS on loopback
# (nats.pem, nats.key: 127.0.0.1, localhost and each host given) signed by it, made once; the
# services trust ca.pem.
lib_dev_tls() {
  local dir=$1 names=IP:127.0.0.1,DNS:localhost host
  shift
  for host in "$@"; do names+=",DNS:$host"; done
  [[ -s $dir/ca.pem && -s $dir/nats.pem && -s $dir/nats.key ]] && return 0
  mkdir -p "$dir" && chmod 700 "$dir" || return 1
  (
    cd "$dir" || exit 1
    umask 077
    printf 'subjectAltName=%s\n' "$names" >nats.ext
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
      -subj /CN=library-dev-ca -keyout ca.key -out ca.pem &&
      openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=nats \
        -keyout nats.key -out nats.csr &&
      openssl x509 -req -in nats.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
        -extfile nats.ext -out nats.pem
  ) >"$dir/openssl.log" 2>&1
}

# lib_nats_tls_block <dir>: the tls { } block of a nats.conf serving lib_dev_tls's certificate.
lib_nats_tls_block() {
  printf 'tls { cert_file: "%s/nats.pem", key_file: "%s/nats.key" }\n' "$1" "$1"
}
