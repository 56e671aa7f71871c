# shellcheck shell=bash
# Shared helpers for the operator scripts in tools/: repository root, messages, ports.
# Sourced, never run. Every function is prefixed with lib_ so callers read clearly.

# The repository root, whatever the caller's cwd.
LIB_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
export LIB_ROOT

# Messages go to stderr, prefixed by the script's name, so stdout stays for real output.
lib_say() { printf '%s: %s\n' "${0##*/}" "$*" >&2; }
lib_die() {
  lib_say "error: $*"
  exit 1
}

# True when something accepts TCP connections on 127.0.0.1:<port>.
lib_port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

# Where tools/install puts buf.
lib_buf() { printf '%s\n' "$LIB_ROOT/.tools/node_modules/.bin/buf"; }
