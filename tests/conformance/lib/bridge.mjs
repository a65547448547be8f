// Starts the real socket-bridge binary for a test and stops it again.
//
// The binary is /work/main/target/debug/socket-bridge (relative to this file) unless
// SOCKET_BRIDGE_BIN names another. It listens on 127.0.0.1 port 0 for HTTP and gRPC and
// logs JSON lines on stderr; the line whose message is "socket-bridge ready" carries the
// bound addresses, which is how we learn the ports.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import readline from "node:readline";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../../..");
export const protoDir = path.join(repoRoot, "proto");
export const bridgeBin =
  process.env.SOCKET_BRIDGE_BIN || path.join(repoRoot, "target/debug/socket-bridge");

/**
 * The timings the protocol suites use: 300 ms / 200 ms / 1 s / 1 s, short so that the
 * heartbeat and timeout cases run in a second or two.
 */
export const PROTOCOL_TIMINGS = {
  "socketio.ping_interval_ms": 300,
  "socketio.ping_timeout_ms": 200,
  "socketio.connect_timeout_ms": 1000,
  "socketio.ack_timeout_ms": 1000,
};

/** A JWT secret and an API key long enough for the bridge's validation. */
export const JWT_SECRET = "conformance-jwt-secret-0123456789abcdef";
export const API_KEY = "conformance-api-key-0123456789";

/** Settings for JWT mode: HS256 tokens signed with JWT_SECRET, gRPC needs API_KEY. */
export const JWT_SETTINGS = {
  "auth.mode": "jwt",
  "auth.jwt.secret": JWT_SECRET,
  "grpc.api_keys": `["${API_KEY}"]`,
};

function settingArg(key, value) {
  if (Array.isArray(value)) return `${key}=${JSON.stringify(value)}`;
  return `${key}=${value}`;
}

/**
 * Starts the bridge. `settings` is a map of `--set` keys to values (arrays become TOML
 * arrays). `httpListen` / `grpcListen` default to 127.0.0.1:0 (a restart passes the
 * addresses of the previous run to come back on the same ports). Resolves once the ready
 * line was logged, rejects if the process exits first or after `timeoutMs`.
 */
export async function startBridge({
  settings = {},
  httpListen = "127.0.0.1:0",
  grpcListen = "127.0.0.1:0",
  timeoutMs = 15000,
} = {}) {
  const args = ["--http-listen", httpListen, "--grpc-listen", grpcListen, "--set", "log.format=json"];
  for (const [k, v] of Object.entries(settings)) args.push("--set", settingArg(k, v));
  const child = spawn(bridgeBin, args, { stdio: ["ignore", "ignore", "pipe"] });
  const logs = [];
  const rl = readline.createInterface({ input: child.stderr });
  const exited = new Promise((resolve) => child.once("exit", (code, signal) => resolve({ code, signal })));

  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      reject(new Error(`bridge not ready within ${timeoutMs} ms; log:\n${logs.join("\n")}`));
    }, timeoutMs);
    rl.on("line", (line) => {
      logs.push(line);
      if (logs.length > 2000) logs.shift();
      if (process.env.BRIDGE_LOG) process.stderr.write(`[bridge] ${line}\n`);
      let rec;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (rec.message === "socket-bridge ready") {
        clearTimeout(timer);
        resolve({ http: rec.http, grpc: rec.grpc });
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`bridge exited (code ${code}, signal ${signal}) before ready; log:\n${logs.join("\n")}`));
    });
  });
  let addrs;
  try {
    addrs = await ready;
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }

  return {
    kind: "bridge",
    http: addrs.http,
    grpc: addrs.grpc,
    url: `http://${addrs.http}`,
    settings,
    logs,
    process: child,
    exited,
    /** Stops the bridge: SIGTERM, then SIGKILL if it has not exited within `graceMs`. */
    async stop(graceMs = 5000) {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const res = await exited;
      clearTimeout(timer);
      return res;
    },
    /** Kills the bridge at once (SIGKILL), as a crash would. */
    async kill() {
      if (child.exitCode !== null || child.signalCode !== null) return exited;
      child.kill("SIGKILL");
      return exited;
    },
  };
}
