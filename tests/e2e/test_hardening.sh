#!/usr/bin/env bash
# The service binaries are hardened as the images build them (meson.build): PIE, full RELRO
# (GNU_RELRO and BIND_NOW), the stack protector and, in an optimized build without
# sanitizers, _FORTIFY_SOURCE (the checked __*_chk variants of libc calls are imported).
# Ends with `N passed, N failed`.
set -uo pipefail
build=${LIBRARY_BUILD_ROOT:?run me through meson test or tools/test}
passed=0
failed=0
check() {
  local what=$1
  shift
  if "$@" >/dev/null 2>&1; then
    passed=$((passed + 1))
    printf 'ok    %s\n' "$what"
  else
    failed=$((failed + 1))
    printf 'FAIL  %s\n' "$what"
  fi
}

fortified=$(meson introspect "$build" --buildoptions 2>/dev/null |
  jq -r '[.[] | select(.name == "optimization" or .name == "b_sanitize") | .value] |
         if (.[0] != "0" and .[0] != "g") and (index("none") != null) then "yes" else "no" end' 2>/dev/null)
for service in catalog lending mypage; do
  binary=$build/services/$service/$service
  check "$service is PIE" bash -c "readelf -hW '$binary' | grep -q 'Type: *DYN' &&
    readelf -dW '$binary' | grep -q 'FLAGS_1.*PIE'"
  check "$service has full RELRO" bash -c "readelf -lW '$binary' | grep -q GNU_RELRO &&
    readelf -dW '$binary' | grep -Eq 'BIND_NOW|FLAGS_1.* NOW'"
  check "$service has the stack protector" bash -c "readelf --dyn-syms -W '$binary' | grep -q __stack_chk_fail"
  if [ "$fortified" = yes ]; then
    check "$service is built with _FORTIFY_SOURCE" bash -c "readelf --dyn-syms -W '$binary' |
      grep -Eq '__(s|v|vs)?n?printf_chk|__memcpy_chk|__strcpy_chk'"
  fi
done
printf '%d passed, %d failed\n' "$passed" "$failed"
[ "$failed" -eq 0 ]
