# Shared steps of the test suites' run.sh scripts. Source it: `. "$root/tests/lib.sh"`.

# The bridge binary the suites test (built by cargo before they run).
require_bridge_bin() {
  export SOCKET_BRIDGE_BIN="${SOCKET_BRIDGE_BIN:-$root/target/debug/socket-bridge}"
  if [ ! -x "$SOCKET_BRIDGE_BIN" ]; then
    echo "socket-bridge binary not found at $SOCKET_BRIDGE_BIN (build it first, or set SOCKET_BRIDGE_BIN)" >&2
    exit 1
  fi
}

# Chromium from Debian, never a downloaded browser build.
ensure_chromium() {
  export CHROMIUM_BIN="${CHROMIUM_BIN:-/usr/bin/chromium}"
  if [ ! -x "$CHROMIUM_BIN" ]; then
    local sudo_cmd=""
    if [ "$(id -u)" -ne 0 ]; then sudo_cmd="sudo"; fi
    $sudo_cmd apt-get update
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y chromium
  fi
}

# `npm ci` in a folder when its lockfile is newer than what is installed.
npm_ci() {
  if [ ! -f "$1/node_modules/.package-lock.json" ] || [ "$1/package-lock.json" -nt "$1/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$1" --no-audit --no-fund --loglevel=error
  fi
}
