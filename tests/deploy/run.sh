#!/usr/bin/env bash
# Builds and checks every deployment artefact as an operator would use it:
#
#  1. Containerfile: `podman build` of the runtime stage (isolation chroot) on a Debian
#     bookworm base made here with debootstrap, with the release binary built on the host
#     standing in for the build stage (no Rust toolchain image can be pulled here); the
#     image's metadata (user, ports, stop signal, health check, labels, env); then the
#     image's entrypoint run from its exported filesystem (chroot, own network, PID and
#     mount namespaces; containers themselves cannot start here): it refuses to start
#     without secrets, starts with a JWT config, serves a stock socket.io-client (websocket
#     and polling) a gRPC push, answers the image's health check, writes JSON lines on
#     stdout only, and exits 0 on SIGTERM.
#  2. gRPC reflection through stock tools: grpcurl (v1) lists and describes the API, ghz
#     load-tests Push and Status through reflection.
#  3. Helm chart: helm lint and helm template for several values files; every rendered
#     manifest validated strictly against the Kubernetes API schemas (kubernetes-validate,
#     offline) and the Prometheus Operator CRDs; the rendered config and secrets accepted
#     by `socket-bridge --check-config`; unsafe values refused with a precise message.
#  4. systemd unit: systemd-analyze verify prints nothing.
#  5. examples/config/socket-bridge.toml passes --check-config; the chart's copies of
#     examples/observability/ are identical to the originals.
#
# Tools are installed once into a cache (DEPLOY_CACHE, default target/deploy-cache): the
# debootstrap rootfs tarball, helm and ghz (go install, pinned), a Python venv with
# kubernetes-validate (pinned), the Prometheus Operator CRDs (its Go module, pinned), podman's
# image store. Nothing is fetched after that. Needs root (debootstrap, chroot, namespaces)
# and the Debian packages podman, debootstrap, systemd and iproute2 (installed if missing).
#
# Usage: bash tests/deploy/run.sh   (DEPLOY_BRIDGE_BIN=path uses that release binary
# instead of building target/release/socket-bridge)
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$ROOT/tests/deploy"
CACHE="${DEPLOY_CACHE:-$ROOT/target/deploy-cache}"
mkdir -p "$CACHE/bin"
CACHE="$(cd "$CACHE" && pwd)"
WORK="$(mktemp -d /tmp/socket-bridge-deploy.XXXXXX)"
NETNS="socket-bridge-deploy-$$"
START=$(date +%s)

HELM_VERSION=v4.3.2                 # helm.sh/helm/v4/cmd/helm
GHZ_VERSION=v0.120.0                # github.com/bojand/ghz/cmd/ghz
PROMETHEUS_OPERATOR_VERSION=v0.85.0 # its CRDs (example/prometheus-operator-crd/)
DEBIAN_SUITE=bookworm               # the runtime image's Debian release
# The Kubernetes releases the chart supports (Chart.yaml kubeVersion) and the newest one
# the schema package knows.
K8S_VERSIONS=(1.25.0 1.37.0)

passed=0
ok() { passed=$((passed + 1)); printf 'ok   %s\n' "$*"; }
fail() { printf 'FAIL %s\n' "$*" >&2; exit 1; }
step() { printf '\n--> %s (%ss)\n' "$*" "$(($(date +%s) - START))"; }

# descendants PID: every process below PID (to end exactly what this script started).
descendants() {
  local kid
  for kid in $(cat /proc/"$1"/task/*/children 2>/dev/null); do
    echo "$kid"
    descendants "$kid"
  done
}
bridge_pid=""
base_job=""
venv_job=""
helm_job=""
ghz_job=""
cleanup() {
  local rc=$?
  # A failure before the base image is ready leaves debootstrap running: end it.
  local job pid
  for job in $base_job $venv_job $helm_job $ghz_job; do
    if kill -0 "$job" 2>/dev/null; then
      for pid in $(descendants "$job") "$job"; do kill "$pid" 2>/dev/null || true; done
    fi
  done
  if [ -n "$bridge_pid" ] && kill -0 "$bridge_pid" 2>/dev/null; then kill -KILL "$bridge_pid" 2>/dev/null || true; fi
  ip netns delete "$NETNS" 2>/dev/null || true
  if [ "$rc" -ne 0 ]; then
    for f in "$WORK"/*.log "$WORK"/*.out "$WORK"/*.err; do
      [ -s "$f" ] && { echo "== $f"; tail -n 40 "$f"; }
    done
  fi
  rm -rf "$WORK"
  exit "$rc"
}
trap cleanup EXIT

# ---- tools ----------------------------------------------------------------------------------
step "tools (cached in $CACHE)"
# shellcheck source=../lib.sh
source "$ROOT/tests/lib.sh"
apt_missing=()
command -v podman >/dev/null || apt_missing+=(podman)
command -v debootstrap >/dev/null || apt_missing+=(debootstrap)
command -v systemd-analyze >/dev/null || apt_missing+=(systemd)
command -v ip >/dev/null || apt_missing+=(iproute2)
apt_install "${apt_missing[@]}"

# The runtime image's base: a Debian rootfs made once by debootstrap (network-bound, so it
# runs while the Go tools compile), kept as a tarball in the cache.
# podman refuses a run root longer than 50 characters (a checkout deep in the file system
# makes one under the cache too long), and its database remembers the run root it was made
# with: a short path fixed for this cache, under /run where podman keeps its own.
PODMAN_RUNROOT="/run/socket-bridge-podman-$(printf '%s' "$CACHE" | sha256sum | cut -c1-12)"
PODMAN=(podman --root "$CACHE/containers/store" --runroot "$PODMAN_RUNROOT" --storage-driver overlay)
# A cache made when the run root lived inside it cannot be opened with another: drop it (it
# holds only images this script rebuilds).
[ -d "$CACHE/containers/run" ] && rm -rf "$CACHE/containers/storage" "$CACHE/containers/run" "$CACHE/containers/base.stamp"
BASE_TAR="$CACHE/debian-$DEBIAN_SUITE-minbase.tar"
BASE_IMAGE="localhost/socket-bridge-test/debian:$DEBIAN_SUITE"
make_base() {
  [ -s "$BASE_TAR" ] && return 0
  echo "debootstrap $DEBIAN_SUITE (minbase) into the cache; once" >&2
  local rootfs="$WORK/debootstrap"
  debootstrap --variant=minbase "$DEBIAN_SUITE" "$rootfs" http://deb.debian.org/debian >"$WORK/debootstrap.log" 2>&1 || return 1
  # What debian:*-slim leaves out too: package caches, documentation, translations.
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/* \
    "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar -C "$rootfs" --numeric-owner -cf "$BASE_TAR.tmp" . && mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$rootfs"
}
make_base &
base_job=$!

# kubernetes-validate and its pinned dependencies, in a venv (downloads while Go compiles).
VENV="$CACHE/venv"
make_venv() {
  if [ ! -x "$VENV/bin/python" ] || ! cmp -s "$HERE/requirements.txt" "$VENV/requirements.txt"; then
    rm -rf "$VENV"
    python3 -m venv "$VENV" &&
      "$VENV/bin/pip" install --quiet --disable-pip-version-check -r "$HERE/requirements.txt" &&
      cp "$HERE/requirements.txt" "$VENV/requirements.txt"
  fi
}
make_venv >"$WORK/venv.log" 2>&1 &
venv_job=$!

# go_tool NAME PACKAGE VERSION: installs into $CACHE/bin unless that version is there.
go_tool() {
  local stamp="$CACHE/bin/.$1.version"
  if [ -x "$CACHE/bin/$1" ] && [ "$(cat "$stamp" 2>/dev/null)" = "$2@$3" ]; then return 0; fi
  echo "installing $2@$3" >&2
  GOBIN="$CACHE/bin" GOFLAGS=-mod=mod go install "$2@$3"
  echo "$2@$3" >"$stamp"
}
go_tool helm helm.sh/helm/v4/cmd/helm "$HELM_VERSION" &
helm_job=$!
go_tool ghz github.com/bojand/ghz/cmd/ghz "$GHZ_VERSION" &
ghz_job=$!
# socket.io-client from tests/js's lockfile.
npm_ci "$ROOT/tests/js"
# grpcurl at the version go-client pins, in go-client/.bin.
# shellcheck source=../../go-client/tools.sh
source "$ROOT/go-client/tools.sh"
go_tools "$GRPCURL"
GRPCURL_BIN="$TOOLS_BIN/grpcurl"
wait "$helm_job" || fail "installing helm"
wait "$ghz_job" || fail "installing ghz"
wait "$venv_job" || fail "installing kubernetes-validate: $(cat "$WORK/venv.log")"
HELM="$CACHE/bin/helm"
GHZ="$CACHE/bin/ghz"

CRD_DIR="$(cd "$WORK" && go mod download -json \
  "github.com/prometheus-operator/prometheus-operator@$PROMETHEUS_OPERATOR_VERSION" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/example/prometheus-operator-crd"
CRDS=("$CRD_DIR/monitoring.coreos.com_servicemonitors.yaml" "$CRD_DIR/monitoring.coreos.com_prometheusrules.yaml")
for crd in "${CRDS[@]}"; do [ -f "$crd" ] || fail "CRD $crd missing from the prometheus-operator module"; done

# ---- the binary -------------------------------------------------------------------------------
if [ -n "${DEPLOY_BRIDGE_BIN:-}" ]; then
  BIN="$DEPLOY_BRIDGE_BIN"
else
  step "cargo build --release"
  cargo build --release --quiet --manifest-path "$ROOT/Cargo.toml" --bin socket-bridge
  BIN="$ROOT/target/release/socket-bridge"
fi
[ -x "$BIN" ] || fail "no release binary at $BIN"

# ---- example config and copies --------------------------------------------------------------
step "example config, chart copies of examples/observability"
"$BIN" --config "$ROOT/examples/config/socket-bridge.toml" --check-config >"$WORK/check.out" 2>&1 ||
  fail "--check-config refused examples/config/socket-bridge.toml: $(cat "$WORK/check.out")"
ok "examples/config/socket-bridge.toml: $(cat "$WORK/check.out")"
for f in alerts.yml grafana-dashboard.json; do
  cmp "$ROOT/examples/observability/$f" "$ROOT/deploy/helm/socket-bridge/files/$f" ||
    fail "deploy/helm/socket-bridge/files/$f differs from examples/observability/$f: copy it over"
done
ok "chart files/ are identical to examples/observability/"

# ---- systemd unit -----------------------------------------------------------------------------
step "systemd-analyze verify deploy/systemd/socket-bridge.service"
# The unit names /usr/local/bin/socket-bridge; verify a copy that names the binary under
# test, since verify checks that ExecStart is executable. Any output (an unknown or
# mistyped directive is only a warning) counts as a failure.
sed "s#/usr/local/bin/socket-bridge#$BIN#g" "$ROOT/deploy/systemd/socket-bridge.service" >"$WORK/socket-bridge.service"
if ! systemd-analyze verify "$WORK/socket-bridge.service" >"$WORK/verify.out" 2>&1 || [ -s "$WORK/verify.out" ]; then
  fail "systemd-analyze verify: $(cat "$WORK/verify.out")"
fi
ok "systemd-analyze verify: no findings"
nofile=$(sed -n 's/^LimitNOFILE=//p' "$ROOT/deploy/systemd/socket-bridge.service")
max_conn=$("$BIN" --print-config | sed -n 's/^max_connections = //p')
[ "$nofile" -ge "$max_conn" ] || fail "LimitNOFILE=$nofile is below socketio.max_connections=$max_conn"
ok "LimitNOFILE=$nofile covers socketio.max_connections=$max_conn"

# ---- Helm chart ---------------------------------------------------------------------------------
step "helm lint, helm template, schema validation"
CHART="$ROOT/deploy/helm/socket-bridge"
for values in minimal cluster existing-secret-rs256; do
  vf="$HERE/values/$values.yaml"
  "$HELM" lint --strict "$CHART" -f "$vf" >"$WORK/lint-$values.out" 2>&1 ||
    fail "helm lint $values: $(cat "$WORK/lint-$values.out")"
  ok "helm lint --strict -f $values.yaml: $(grep -E 'linted' "$WORK/lint-$values.out")"
  "$HELM" template sb "$CHART" -f "$vf" --namespace realtime >"$WORK/$values.yaml" 2>"$WORK/template-$values.err" ||
    fail "helm template $values: $(cat "$WORK/template-$values.err")"
  kinds=$(grep -E '^kind: ' "$WORK/$values.yaml" | sed 's/kind: //' | sort | tr '\n' ' ')
  ok "helm template -f $values.yaml: $kinds"
done
manifests=("$WORK/minimal.yaml" "$WORK/cluster.yaml" "$WORK/existing-secret-rs256.yaml" "$HERE/values/existing-secret.yaml")
k8s_args=()
for v in "${K8S_VERSIONS[@]}"; do k8s_args+=(--k8s-version "$v"); done
crd_args=()
for c in "${CRDS[@]}"; do crd_args+=(--crd "$c"); done
"$VENV/bin/python" "$HERE/validate_manifests.py" "${k8s_args[@]}" "${crd_args[@]}" "${manifests[@]}" >"$WORK/validate.out" 2>&1 ||
  fail "schema validation: $(grep -v '^ok ' "$WORK/validate.out")"
ok "schemas: $(tail -n 1 "$WORK/validate.out") (Kubernetes ${K8S_VERSIONS[*]}, Prometheus Operator CRDs $PROMETHEUS_OPERATOR_VERSION)"

# The validator must catch what the API server would refuse (else it proves nothing).
cat >"$WORK/broken.yaml" <<'EOF'
apiVersion: apps/v1
kind: Deployment
metadata: {name: broken}
spec:
  replica: 2
  selector: {matchLabels: {a: b}}
  template: {metadata: {labels: {a: b}}, spec: {containers: [{name: c, image: i}]}}
---
apiVersion: monitoring.coreos.com/v1
kind: ServiceMonitor
metadata: {name: broken}
spec:
  selector: {}
  endpoints: [{port: http, intervall: 30s}]
---
apiVersion: example.com/v1
kind: Unknown
metadata: {name: broken}
EOF
if "$VENV/bin/python" "$HERE/validate_manifests.py" "${k8s_args[@]}" "${crd_args[@]}" "$WORK/broken.yaml" >"$WORK/broken.txt" 2>&1; then
  fail "the validator accepted misspelled fields: $(cat "$WORK/broken.txt")"
fi
for expected in "Deployment/broken (Kubernetes 1.25.0): spec" "ServiceMonitor/broken (CRD monitoring.coreos.com/v1): spec.endpoints.0" "Unknown/broken: no schema"; do
  grep -qF "$expected" "$WORK/broken.txt" || fail "validator did not report '$expected': $(cat "$WORK/broken.txt")"
done
ok "the validator refuses a misspelled Deployment field, a misspelled ServiceMonitor field and an unknown kind"

for values in minimal cluster existing-secret-rs256; do
  secret_args=()
  [ "$values" = existing-secret-rs256 ] && secret_args=(--secret "$HERE/values/existing-secret.yaml")
  "$VENV/bin/python" "$HERE/chart_config_check.py" "$BIN" "$WORK/$values.yaml" "${secret_args[@]}" >"$WORK/contract-$values.out" 2>&1 ||
    fail "the bridge refused what the chart renders for $values.yaml: $(cat "$WORK/contract-$values.out")"
  ok "chart -f $values.yaml: the bridge accepts the rendered config and secrets ($(cat "$WORK/contract-$values.out"))"
done

# Figures the chart derives: grace period, resources.
"$VENV/bin/python" - "$WORK/minimal.yaml" "$WORK/cluster.yaml" <<'EOF' || fail "derived values"
import sys, yaml
for path, grace, request, limit in ((sys.argv[1], 20, "286Mi", "675Mi"), (sys.argv[2], 35, "794Mi", "1627Mi")):
    (dep,) = [d for d in yaml.safe_load_all(open(path)) if d and d["kind"] == "Deployment"]
    spec = dep["spec"]["template"]["spec"]
    res = spec["containers"][0]["resources"]
    got = (spec["terminationGracePeriodSeconds"], res["requests"]["memory"], res["limits"]["memory"])
    assert got == (grace, request, limit), f"{path}: {got} != {(grace, request, limit)}"
    print(f"ok   {path.rsplit('/', 1)[1]}: terminationGracePeriodSeconds {got[0]}, memory request {got[1]}, limit {got[2]}")
EOF
passed=$((passed + 2))

refuse() { # refuse DESCRIPTION EXPECTED-MESSAGE helm-template-args...
  local what=$1 expected=$2
  shift 2
  if "$HELM" template sb "$CHART" "$@" >"$WORK/refused.out" 2>&1; then fail "the chart rendered $what"; fi
  grep -qF "$expected" "$WORK/refused.out" || fail "refusing $what, the chart said: $(cat "$WORK/refused.out")"
  ok "the chart refuses $what: $expected"
}
refuse "no credentials" "set secrets.apiKeys"
refuse "several replicas without Redis" "replicaCount > 1 needs redis.enabled" -f "$HERE/values/minimal.yaml" --set replicaCount=2
refuse "an API key in the ConfigMap" "config.grpc.api_keys is a secret" -f "$HERE/values/minimal.yaml" --set 'config.grpc.api_keys={deploy-test-api-key-0123456789}'
refuse "dev auth" "config.auth.mode must be jwt" -f "$HERE/values/minimal.yaml" --set config.auth.mode=dev
refuse "a misspelt value (values.schema.json)" "additional properties 'replicas' not allowed" -f "$HERE/values/minimal.yaml" --set replicas=3

# ---- container image ------------------------------------------------------------------------------
step "container image (podman build, runtime stage, Debian $DEBIAN_SUITE base made by debootstrap)"
wait "$base_job" || fail "debootstrap: $(tail -n 5 "$WORK/debootstrap.log")"
if ! "${PODMAN[@]}" image exists "$BASE_IMAGE" ||
  [ "$(cat "$CACHE/containers/base.stamp" 2>/dev/null)" != "$(stat -c %Y-%s "$BASE_TAR")" ]; then
  "${PODMAN[@]}" import --quiet "$BASE_TAR" "$BASE_IMAGE" >/dev/null
  stat -c %Y-%s "$BASE_TAR" >"$CACHE/containers/base.stamp"
fi

# The build stage is replaced by a build context holding the host-built binary at the path
# the stage would produce (/out/socket-bridge); podman then skips the stage.
mkdir -p "$WORK/prebuilt/out"
cp "$BIN" "$WORK/prebuilt/out/socket-bridge"
IMAGE=localhost/socket-bridge:deploy-test
build_start=$(date +%s)
"${PODMAN[@]}" build --isolation chroot --format docker --pull=never \
  --build-arg RUNTIME_IMAGE="$BASE_IMAGE" \
  --build-arg REVISION="$(git -C "$ROOT" rev-parse HEAD 2>/dev/null || echo unknown)" \
  --build-arg CREATED="$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  --build-context build="$WORK/prebuilt" \
  --target runtime -t "$IMAGE" -f "$ROOT/Containerfile" "$ROOT" >"$WORK/build.log" 2>&1 ||
  fail "podman build: $(tail -n 20 "$WORK/build.log")"
grep -q "cargo build" "$WORK/build.log" && fail "the build stage ran (it should have been replaced): $(cat "$WORK/build.log")"
ok "podman build --target runtime ($(($(date +%s) - build_start)) s)"
# Each build leaves the previous test image untagged: drop those, so the cache stays small.
"${PODMAN[@]}" image prune --force >/dev/null

"${PODMAN[@]}" image inspect "$IMAGE" >"$WORK/inspect.json"
"${PODMAN[@]}" image inspect "$BASE_IMAGE" >"$WORK/base-inspect.json"
"$VENV/bin/python" - "$WORK/inspect.json" "$WORK/base-inspect.json" >"$WORK/image.env" <<'EOF' || fail "image metadata"
import json, shlex, sys
(image,) = json.load(open(sys.argv[1]))
(base,) = json.load(open(sys.argv[2]))
c = image["Config"]
def check(cond, what):
    if not cond:
        sys.exit(f"image metadata: {what}: {json.dumps(c, indent=1)}")
user = c.get("User", "")
check(user and user.split(":")[0] not in ("0", "root"), "runs as a non-root user")
check(set(c.get("ExposedPorts", {})) == {"3000/tcp", "50051/tcp"}, "exposes 3000 and 50051")
check(c.get("StopSignal") == "SIGTERM", "STOPSIGNAL SIGTERM")
# podman keeps HEALTHCHECK beside the OCI config (Docker format only), Docker inside it.
hc = (c.get("Healthcheck") or image.get("Healthcheck") or {}).get("Test", [])
check(hc[:1] == ["CMD"] and "--health-check" in hc, "HEALTHCHECK runs --health-check")
labels = c.get("Labels", {})
for key in ("title", "description", "version", "revision", "created", "licenses"):
    check(labels.get(f"org.opencontainers.image.{key}"), f"label org.opencontainers.image.{key}")
env = dict(e.split("=", 1) for e in c.get("Env", []))
check(env.get("SOCKET_BRIDGE_LOG__FORMAT") == "json" and env.get("SOCKET_BRIDGE_LOG_STDOUT") == "true", "JSON logs on stdout")
check(env.get("SOCKET_BRIDGE_CONFIG") == "/etc/socket-bridge/socket-bridge.toml", "config path")
print(f"IMAGE_USER={shlex.quote(user)}")
print(f"IMAGE_ENV=({' '.join(shlex.quote(e) for e in c.get('Env', []))})")
print(f"IMAGE_CMD=({' '.join(shlex.quote(a) for a in (c.get('Entrypoint') or []) + (c.get('Cmd') or []))})")
print(f"IMAGE_HEALTHCHECK=({' '.join(shlex.quote(a) for a in hc[1:])})")
print(f"IMAGE_SIZE={image['Size']}")
print(f"BASE_SIZE={base['Size']}")
print(f"IMAGE_LABELS={shlex.quote(', '.join(f'{k}={v}' for k, v in sorted(labels.items()) if k.startswith('org.opencontainers')))}")
EOF
# shellcheck disable=SC1091
source "$WORK/image.env"
ok "image metadata: user $IMAGE_USER, ports 3000+50051, STOPSIGNAL SIGTERM, HEALTHCHECK ${IMAGE_HEALTHCHECK[*]}, env ${IMAGE_ENV[*]}"
ok "image labels: $IMAGE_LABELS"

# Export the image's filesystem (a container is created, never started).
ROOTFS="$WORK/rootfs"
mkdir -p "$ROOTFS"
ctr=$("${PODMAN[@]}" create --no-healthcheck "$IMAGE")
"${PODMAN[@]}" export "$ctr" | tar -C "$ROOTFS" -x
"${PODMAN[@]}" rm "$ctr" >/dev/null
for compiler in cc gcc c++ rustc cargo ld as; do
  [ -e "$ROOTFS/usr/bin/$compiler" ] || [ -e "$ROOTFS/usr/local/bin/$compiler" ] && fail "the runtime image has a compiler: $compiler"
done
ok "the runtime filesystem has no compiler or linker (cc, gcc, c++, rustc, cargo, ld, as)"
cmp "$BIN" "$ROOTFS/usr/local/bin/socket-bridge" || fail "the image's binary is not the one under test"
[ "$(stat -c %u "$ROOTFS/usr/local/bin/socket-bridge")" = 0 ] || fail "the binary should belong to root, not the service user"

# run_in_image [--config FILE] ENV=VALUE... -- COMMAND...: COMMAND as the image's user, with
# the image's environment plus the given variables, chrooted into the exported filesystem
# in the test's network namespace and in new PID and mount namespaces (so /proc is its
# own), with FILE bind-mounted read-only over the image's config file as `-v` would.
ip netns add "$NETNS"
ip netns exec "$NETNS" ip link set lo up
run_in_image() {
  local config="" env=()
  if [ "$1" = --config ]; then config=$2; shift 2; fi
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  # shellcheck disable=SC2016 # expanded by the inner shell
  ip netns exec "$NETNS" unshare --mount --pid --fork --mount-proc="$ROOTFS/proc" sh -c '
    config=$1 root=$2 user=$3; shift 3
    if [ -n "$config" ]; then
      mount --bind "$config" "$root/etc/socket-bridge/socket-bridge.toml"
      mount -o remount,bind,ro "$root/etc/socket-bridge/socket-bridge.toml"
    fi
    exec chroot --userspec="$user" "$root" "$@"' \
    sh "$config" "$ROOTFS" "$IMAGE_USER" /usr/bin/env -i "${IMAGE_ENV[@]}" "${env[@]}" "$@"
}

step "the image's entrypoint, run from its filesystem"
# Without secrets the image refuses to start, naming what is missing.
if run_in_image -- "${IMAGE_CMD[@]}" >"$WORK/nosecret.out" 2>"$WORK/nosecret.err"; then
  fail "the image started without a JWT secret or API key"
else
  code=$?
fi
[ "$code" = 2 ] || fail "expected exit 2 without secrets, got $code"
grep -q "auth.jwt.secret: required" "$WORK/nosecret.err" && grep -q "grpc.api_keys: at least one API key" "$WORK/nosecret.err" ||
  fail "the refusal does not name the missing settings: $(cat "$WORK/nosecret.err")"
ok "without secrets the image exits 2: $(tr '\n' ' ' <"$WORK/nosecret.err")"
if run_in_image SOCKET_BRIDGE_AUTH__MODE=dev -- "${IMAGE_CMD[@]}" >"$WORK/dev.out" 2>"$WORK/dev.err"; then
  fail "the image started dev auth on 0.0.0.0"
fi
grep -q "http.listen: dev auth lets anyone claim any user id" "$WORK/dev.err" || fail "dev refusal: $(cat "$WORK/dev.err")"
ok "the image refuses dev auth on its public listeners"

API_KEY=deploy-test-api-key-0123456789
JWT_SECRET=deploy-test-jwt-secret-0123456789abcdef
SECRETS=(SOCKET_BRIDGE_AUTH__JWT__SECRET="$JWT_SECRET" "SOCKET_BRIDGE_GRPC__API_KEYS=[\"$API_KEY\"]")
# Configuration as an operator gives it: a mounted file (the image's own, with debug logging
# added) and secrets in the environment.
cp "$ROOTFS/etc/socket-bridge/socket-bridge.toml" "$WORK/mounted.toml"
printf '\n[log]\nlevel = "info,socket_bridge=debug"\n' >>"$WORK/mounted.toml"
chmod 0644 "$WORK/mounted.toml"
run_in_image --config "$WORK/mounted.toml" "${SECRETS[@]}" -- "${IMAGE_CMD[@]}" >"$WORK/bridge.out" 2>"$WORK/bridge.err" &
unshare_pid=$!
# The bridge runs a few processes below (ip netns exec, unshare, then the bridge as PID 1 of
# its namespace); find its host PID, by its executable, to signal it.
for _ in $(seq 1 100); do
  for pid in $(descendants "$unshare_pid"); do
    if [ "$(readlink "/proc/$pid/exe" 2>/dev/null)" = "$ROOTFS/usr/local/bin/socket-bridge" ]; then bridge_pid=$pid; fi
  done
  [ -n "$bridge_pid" ] && break
  sleep 0.1
done
[ -n "$bridge_pid" ] || fail "the bridge process did not appear"
for _ in $(seq 1 300); do
  grep -q '"socket-bridge ready"' "$WORK/bridge.out" && break
  kill -0 "$unshare_pid" 2>/dev/null || fail "the bridge exited: $(cat "$WORK/bridge.err" "$WORK/bridge.out")"
  sleep 0.1
done
grep -q '"socket-bridge ready"' "$WORK/bridge.out" || fail "the bridge did not become ready in 30 s"
ok "the entrypoint started with a JWT config on 0.0.0.0:3000 and 0.0.0.0:50051"

run_in_image "${SECRETS[@]}" -- "${IMAGE_HEALTHCHECK[@]}" >"$WORK/health.out" 2>&1 || fail "health check: $(cat "$WORK/health.out")"
ok "the image's health check: $(cat "$WORK/health.out")"

in_netns() { ip netns exec "$NETNS" "$@"; }
# A stock socket.io-client over websocket and polling, then a gRPC push to its user.
in_netns node "$HERE/client.mjs" http://127.0.0.1:3000 alice "$JWT_SECRET" deploy-hello >"$WORK/client.out" 2>"$WORK/client.err" &
client_pid=$!
for _ in $(seq 1 200); do
  [ "$(grep -c '"type":"connect"' "$WORK/client.out")" = 2 ] && break
  kill -0 "$client_pid" 2>/dev/null || fail "the client exited: $(cat "$WORK/client.out" "$WORK/client.err")"
  sleep 0.1
done
[ "$(grep -c '"type":"connect"' "$WORK/client.out")" = 2 ] || fail "the client did not connect: $(cat "$WORK/client.out")"
export API_KEY
in_netns "$GRPCURL_BIN" -plaintext -expand-headers -H 'authorization: Bearer ${API_KEY}' \
  -d '{"target":{"user_id":"alice"},"event":"deploy-hello","payload":{"args_json":"[{\"from\":\"image\"}]"}}' \
  127.0.0.1:50051 socketbridge.v1.BridgeService/Push >"$WORK/push.out" 2>&1 || fail "grpcurl Push: $(cat "$WORK/push.out")"
grep -q '"socketsReached": 2' "$WORK/push.out" || fail "push did not reach both sockets: $(cat "$WORK/push.out")"
wait "$client_pid" || fail "the client did not receive the push: $(cat "$WORK/client.out")"
ok "socket.io-client (websocket and polling) received the gRPC push: $(grep -c '"type":"event"' "$WORK/client.out") events, $(tr -d ' \n' <"$WORK/push.out")"

step "gRPC reflection through grpcurl (v1) and ghz"
in_netns "$GRPCURL_BIN" -plaintext 127.0.0.1:50051 list >"$WORK/list.out" 2>&1 || fail "grpcurl list: $(cat "$WORK/list.out")"
for svc in grpc.health.v1.Health grpc.reflection.v1.ServerReflection grpc.reflection.v1alpha.ServerReflection socketbridge.v1.BridgeService; do
  grep -qx "$svc" "$WORK/list.out" || fail "grpcurl list lacks $svc: $(cat "$WORK/list.out")"
done
ok "grpcurl list: $(tr '\n' ' ' <"$WORK/list.out")"
in_netns "$GRPCURL_BIN" -plaintext 127.0.0.1:50051 describe socketbridge.v1.BridgeService.Push >"$WORK/describe.out" 2>&1 ||
  fail "grpcurl describe: $(cat "$WORK/describe.out")"
grep -q "rpc Push ( .socketbridge.v1.PushRequest ) returns ( .socketbridge.v1.PushResponse )" "$WORK/describe.out" || fail "describe: $(cat "$WORK/describe.out")"
ok "grpcurl describe socketbridge.v1.BridgeService.Push"
# The README's ghz command (Operations, "Load testing"), exactly as written there.
ghz_cmd=$(awk '/^    ghz /{on=1} on{sub(/^    /, ""); print; if ($0 !~ /\\$/) exit}' "$ROOT/README.md")
[ -n "$ghz_cmd" ] || fail "README.md has no indented ghz command"
in_netns env PATH="$CACHE/bin:$PATH" BRIDGE_GRPC=127.0.0.1:50051 API_KEY="$API_KEY" bash -euo pipefail -c "$ghz_cmd" >"$WORK/ghz.out" 2>&1 ||
  fail "ghz: $(cat "$WORK/ghz.out")"
ghz_n=$(sed -n 's/.* -n \([0-9]*\) .*/\1/p' <<<"$ghz_cmd")
grep -qE "\[OK\] +$ghz_n responses" "$WORK/ghz.out" || fail "ghz: not all $ghz_n calls answered OK: $(cat "$WORK/ghz.out")"
ok "README's ghz command through reflection: $ghz_n Push calls OK ($(grep -E '^ *(Requests/sec|Average|Slowest):' "$WORK/ghz.out" | tr -s ' ' | tr '\n' ';'))"

step "logs and shutdown"
kill -TERM "$bridge_pid"
wait "$unshare_pid" || fail "the bridge did not exit 0 on SIGTERM (status $?)"
bridge_pid=""
ok "SIGTERM: the bridge drained and exited 0"
if run_in_image "${SECRETS[@]}" -- "${IMAGE_HEALTHCHECK[@]}" >"$WORK/health2.out" 2>&1; then fail "health check passed with no bridge running"; fi
ok "the health check fails once the bridge is gone: $(cat "$WORK/health2.out")"
[ ! -s "$WORK/bridge.err" ] || fail "the bridge wrote to stderr in the image (logs belong on stdout): $(head -n 5 "$WORK/bridge.err")"
"$VENV/bin/python" - "$WORK/bridge.out" <<'EOF' || fail "stdout log lines"
import json, sys
lines = open(sys.argv[1], encoding="utf-8").read().splitlines()
assert lines, "no log lines"
for n, line in enumerate(lines, 1):
    assert "\x1b" not in line, f"line {n} has an escape code: {line!r}"
    entry = json.loads(line)
    assert {"timestamp", "level", "message"} <= entry.keys(), f"line {n}: {line}"

EOF
ok "the image logged $(wc -l <"$WORK/bridge.out") JSON lines on stdout, nothing on stderr, no escape codes"
grep -q '"level":"DEBUG"' "$WORK/bridge.out" || fail "the mounted config's log.level did not apply (no DEBUG line)"
ok "the mounted config file applied (log.level with debug: $(grep -c '"level":"DEBUG"' "$WORK/bridge.out") DEBUG lines)"
if grep -qE "$API_KEY|$JWT_SECRET|Bearer " "$WORK/bridge.out"; then fail "a credential appears in the image's logs"; fi
ok "no credential in the image's logs"
mkdir -p "$ROOT/target/test-logs"
cp "$WORK/bridge.out" "$ROOT/target/test-logs/deploy-image-bridge.log"

printf '\nimage %s: %s MB (base %s MB from debootstrap %s minbase); tests/deploy/run.sh took %s s\n' \
  "$IMAGE" "$((IMAGE_SIZE / 1000000))" "$((BASE_SIZE / 1000000))" "$DEBIAN_SUITE" "$(($(date +%s) - START))"
echo "deploy: $passed passed, 0 failed"
