// Starts the real socket-bridge binary for the dashboard test and stops it again.
//
// The binary is target/debug/socket-bridge of this repository unless SOCKET_BRIDGE_BIN
// names another. It listens on loopback (port 0 unless told otherwise) and logs JSON lines
// on stderr; the line whose message is "socket-bridge ready" carries the bound addresses.
import { spawn } from "node:child_process";
import { fileURLToPath } from "node:url";
import path from "node:path";
import readline from "node:readline";

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoRoot = path.resolve(here, "../..");
export const bridgeBin = process.env.SOCKET_BRIDGE_BIN || path.join(repoRoot, "target/debug/socket-bridge");

const running = new Set();
process.on("exit", () => {
  for (const child of running) child.kill("SIGKILL");
});

/**
 * Starts the bridge with `settings` (`--set key=value`), resolves once it logged that it
 * is ready, rejects if it exits first or is not ready within `timeoutMs`.
 */
export async function startBridge({ settings = {}, httpListen = "127.0.0.1:0", timeoutMs = 10000 } = {}) {
  const args = ["--http-listen", httpListen, "--grpc-listen", "127.0.0.1:0"];
  for (const [k, v] of Object.entries(settings)) args.push("--set", `${k}=${v}`);
  const env = { ...process.env };
  delete env.RUST_LOG; // it would override log.level
  for (const k of Object.keys(env)) if (k.startsWith("SOCKET_BRIDGE_") && k !== "SOCKET_BRIDGE_BIN") delete env[k];
  const child = spawn(bridgeBin, args, { stdio: ["ignore", "ignore", "pipe"], env });
  running.add(child);
  const lines = [];
  const exited = new Promise((resolve) =>
    child.once("exit", (code, signal) => {
      running.delete(child);
      resolve({ code, signal });
    }),
  );
  const ready = new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`bridge not ready within ${timeoutMs} ms:\n${lines.join("\n")}`)), timeoutMs);
    readline.createInterface({ input: child.stderr }).on("line", (line) => {
      lines.push(line);
      if (process.env.BRIDGE_LOG) process.stderr.write(`[bridge] ${line}\n`);
      let rec;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (rec.message === "socket-bridge ready") {
        clearTimeout(timer);
        resolve(rec);
      }
    });
    exited.then(({ code, signal }) => {
      clearTimeout(timer);
      reject(new Error(`bridge exited (code ${code}, signal ${signal}) before it was ready:\n${lines.join("\n")}`));
    });
  });
  let rec;
  try {
    rec = await ready;
  } catch (err) {
    child.kill("SIGKILL");
    throw err;
  }
  return {
    http: rec.http,
    url: `http://${rec.http}`,
    lines,
    exited,
    /** SIGTERM, then SIGKILL after `graceMs`; resolves with how it ended and how long it took. */
    async stop(graceMs = 5000) {
      const started = Date.now();
      if (child.exitCode === null && child.signalCode === null) {
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }
      return { ...(await exited), ms: Date.now() - started };
    },
  };
}
