# Shared steps of the test suites' run.sh scripts. Source it: `. "$root/tests/lib.sh"`.

# The bridge binary the suites test (built by cargo before they run).
require_bridge_bin() {
  export SOCKET_BRIDGE_BIN="${SOCKET_BRIDGE_BIN:-$root/target/debug/socket-bridge}"
  if [ ! -x "$SOCKET_BRIDGE_BIN" ]; then
    echo "socket-bridge binary not found at $SOCKET_BRIDGE_BIN (build it first, or set SOCKET_BRIDGE_BIN)" >&2
    exit 1
  fi
}

# Installs the Debian packages named, in one `apt-get update` and one install; does nothing
# when the list is empty. Packages whose install starts a system service (redis-server,
# nginx) must not start it: that fails in a container without systemd and is unwanted
# anywhere (the tests run their own), so a policy-rc.d answering 101 is in place for the
# install unless the machine already has one.
apt_install() {
  [ "$#" -gt 0 ] || return 0
  local sudo_cmd="" policy=/usr/sbin/policy-rc.d own_policy="" rc=0
  if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' | $sudo_cmd tee "$policy" >/dev/null
    $sudo_cmd chmod 755 "$policy"
    own_policy=1
  fi
  { $sudo_cmd apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "$@" >/dev/null; } || rc=$?
  if [ -n "$own_policy" ]; then $sudo_cmd rm -f "$policy"; fi
  [ "$rc" -eq 0 ] || { echo "installing $* failed ($rc)" >&2; return "$rc"; }
}

# Chromium from Debian, never a downloaded browser build.
ensure_chromium() {
  export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
  if [ ! -x "$CHROMIUM_BIN" ]; then apt_install chromium; fi
}

# `npm ci` in a folder when its lockfile is newer than what is installed.
npm_ci() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error
  fi
}
