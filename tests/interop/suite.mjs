// Runs every client of the interop suite on every transport against the bridge and the
// reference server (at the same time), compares each check with the scenario's expectation
// and with the reference, prints the per-client, per-transport table, and exits non-zero
// when the bridge differs from the reference or a client fails in a way not listed as a
// known client limitation.
//
// Usage: node suite.mjs   (run.sh builds the clients first)
// Env: INTEROP_CLIENTS (default "java,rust,go"), INTEROP_TRANSPORTS (default all),
//      INTEROP_BIN_JAVA / INTEROP_BIN_RUST / INTEROP_BIN_GO (commands, set by run.sh, JSON
//      arrays), INTEROP_WAIT_MS (default 4000), KNOWN_BRIDGE_BUGS=todo (known bridge
//      differences are reported as todo instead of failing).
import { spawn } from "node:child_process";
import readline from "node:readline";
import { isDeepStrictEqual } from "node:util";
import { signJwt } from "../conformance/lib/jwt.mjs";
import { JWT_SECRET } from "../conformance/lib/bridge.mjs";
import { CLIENTS, TRANSPORTS, KNOWN_LIMITATIONS, KNOWN_BRIDGE_DIFFERENCES, expectations } from "./scenario.mjs";
import { startBridgeServer, startReferenceServer } from "./servers.mjs";

const WAIT_MS = Number(process.env.INTEROP_WAIT_MS || 4000);
/** A client run does 16 checks, each with up to three connection attempts and a wait. */
const RUN_LIMIT_MS = 16 * 4 * WAIT_MS + 30000;
const clients = (process.env.INTEROP_CLIENTS || Object.keys(CLIENTS).join(",")).split(",").filter(Boolean);
const transports = (process.env.INTEROP_TRANSPORTS || TRANSPORTS.join(",")).split(",").filter(Boolean);

function command(client) {
  const raw = process.env[`INTEROP_BIN_${client.toUpperCase()}`];
  if (!raw) throw new Error(`INTEROP_BIN_${client.toUpperCase()} is not set (run the suite through run.sh)`);
  return JSON.parse(raw);
}

/** Runs one client program against one server; resolves with {check: result}. */
function runClient(client, transport, server) {
  const run = `${client}-${transport}`;
  const env = {
    ...process.env,
    INTEROP_URL: server.url,
    INTEROP_TRANSPORT: transport,
    INTEROP_TOKEN: signJwt({ sub: `${run}-main` }, JWT_SECRET),
    INTEROP_TOKEN_BYE: signJwt({ sub: `${run}-bye` }, JWT_SECRET),
    INTEROP_BAD_TOKEN: signJwt({ sub: `${run}-bad` }, "not-the-server-secret-0123456789abcdef"),
    INTEROP_WAIT_MS: String(WAIT_MS),
  };
  const [cmd, ...args] = command(client);
  return new Promise((resolve) => {
    const results = {};
    const stderr = [];
    const child = spawn(cmd, args, { env, stdio: ["ignore", "pipe", "pipe"] });
    const timer = setTimeout(() => child.kill("SIGKILL"), RUN_LIMIT_MS);
    readline.createInterface({ input: child.stdout }).on("line", (line) => {
      let rec;
      try {
        rec = JSON.parse(line);
      } catch {
        return;
      }
      if (rec.check) results[rec.check] = "error" in rec ? { error: rec.error } : { observed: rec.observed };
    });
    // Only the end of a client's stderr is shown, so only the last 64 KB are kept.
    let stderrBytes = 0;
    child.stderr.on("data", (d) => {
      stderr.push(d);
      stderrBytes += d.length;
      while (stderrBytes > 65536 && stderr.length > 1) stderrBytes -= stderr.shift().length;
    });
    child.on("exit", async (code, signal) => {
      clearTimeout(timer);
      // The server's side of client_disconnect: the reason it saw.
      try {
        results.client_disconnect_server_reason = { observed: await server.disconnectReason(`${run}-bye`, WAIT_MS) };
      } catch (err) {
        results.client_disconnect_server_reason = { error: err.message };
      }
      const tail = Buffer.concat(stderr).toString("utf8").trim().split("\n").slice(-5).join("\n");
      resolve({ results, exit: { code, signal }, stderr: tail });
    });
  });
}

const show = (r) => (r === undefined ? "no result (the client stopped before this check)" : JSON.stringify(r));
/**
 * A result as compared between the servers: an error without the list of what the client
 * saw meanwhile (which varies with timing, e.g. a late "auth" event).
 */
const comparable = (r) => (r && typeof r.error === "string" ? { error: r.error.replace(/; got .*$/s, "") } : r);
const short = (r) => {
  const s = show(r);
  return s.length > 300 ? `${s.slice(0, 300)}…` : s;
};

const listed = (list, client, transport, check) =>
  list.find((l) => l.client === client && l.checks.includes(check) && (!l.transports || l.transports.includes(transport)));

/**
 * One check's verdict: "pass"; "limitation" (a listed client bug: fails the same way on
 * both servers, or fails at all for a `varies` entry); "known-bridge-difference" (listed,
 * with KNOWN_BRIDGE_BUGS=todo); "bridge-difference" (the bridge's result differs from the
 * reference's); "unlisted" (fails the same way on both servers but is not listed);
 * "reference-only-failure" (the bridge gives the expected result, the reference does not).
 */
function verdict(client, transport, check, expected, onBridge, onReference) {
  const ok = (r) => r && "observed" in r && isDeepStrictEqual(r.observed, expected);
  if (ok(onBridge) && ok(onReference)) return { kind: "pass" };
  const difference = listed(KNOWN_BRIDGE_DIFFERENCES, client, transport, check);
  if (difference?.matches(onBridge, onReference)) {
    return process.env.KNOWN_BRIDGE_BUGS === "todo" ? { kind: "known-bridge-difference", known: difference } : { kind: "bridge-difference", known: difference };
  }
  const limitation = listed(KNOWN_LIMITATIONS, client, transport, check);
  if (limitation?.varies) return { kind: "limitation", known: limitation };
  if (ok(onReference)) return { kind: "bridge-difference" };
  if (ok(onBridge)) return { kind: "reference-only-failure" };
  if (!isDeepStrictEqual(comparable(onBridge), comparable(onReference))) return { kind: "bridge-difference" };
  return limitation ? { kind: "limitation", known: limitation } : { kind: "unlisted" };
}

async function main() {
  const started = Date.now();
  const [bridge, reference] = await Promise.all([startBridgeServer(), startReferenceServer()]);
  const rows = [];
  const problems = [];
  const limitations = [];
  const todos = [];
  const usedLimitations = new Set();
  try {
    for (const client of clients) {
      for (const transport of transports) {
        const t0 = Date.now();
        const [b, r] = await Promise.all([runClient(client, transport, bridge), runClient(client, transport, reference)]);
        const row = { client, transport, pass: 0, limitation: 0, todo: 0, failed: 0, total: 0, seconds: (Date.now() - t0) / 1000 };
        for (const [check, expected] of expectations(client)) {
          row.total += 1;
          const v = verdict(client, transport, check, expected, b.results[check], r.results[check]);
          const where = `${client} / ${transport} / ${check}`;
          if (v.kind === "pass") row.pass += 1;
          else if (v.kind === "limitation") {
            row.limitation += 1;
            usedLimitations.add(v.known);
            const seen = isDeepStrictEqual(comparable(b.results[check]), comparable(r.results[check]))
              ? `both servers: ${short(b.results[check])}`
              : `bridge: ${short(b.results[check])}  reference: ${short(r.results[check])}`;
            limitations.push(`${where}: ${v.known.summary}\n      ${seen}`);
          } else if (v.kind === "known-bridge-difference") {
            row.todo += 1;
            todos.push(`${where}: ${v.known.summary}\n      bridge: ${short(b.results[check])}  reference: ${short(r.results[check])}`);
          } else if (v.kind === "reference-only-failure") {
            // The bridge gives the expected result where the reference does not: not a bridge
            // difference worth failing on, but not hidden either.
            row.pass += 1;
            limitations.push(`${where}: passes on the bridge, fails on the reference: ${short(r.results[check])}`);
          } else {
            row.failed += 1;
            problems.push(
              `${where}: ${v.kind === "unlisted" ? "fails on both servers but is not a known client limitation" : "BRIDGE DIFFERS FROM THE REFERENCE"}` +
                `${v.known ? ` (known, upstream: ${v.known.summary}; KNOWN_BRIDGE_BUGS=todo reports it as todo)` : ""}\n` +
                `      expected:  ${short(expected)}\n      bridge:    ${short(b.results[check])}\n      reference: ${short(r.results[check])}`,
            );
          }
        }
        for (const [name, res] of [["bridge", b], ["reference", r]]) {
          if (res.exit.code !== 0 && res.exit.code !== null) {
            problems.push(`${client} / ${transport}: the client exited with ${res.exit.code} against the ${name}: ${res.stderr}`);
          } else if (res.exit.signal) {
            problems.push(`${client} / ${transport}: the client was killed (${res.exit.signal}) against the ${name} after ${RUN_LIMIT_MS} ms`);
          }
        }
        rows.push(row);
        console.log(
          `${client.padEnd(5)} ${transport.padEnd(9)} ${row.pass}/${row.total} pass, ${row.limitation} known client limitation(s), ${row.todo} known bridge difference(s), ${row.failed} failure(s)  (${row.seconds.toFixed(1)} s)`,
        );
      }
    }
  } finally {
    const backendErrors = bridge.errors();
    await Promise.all([bridge.stop(), reference.stop()]);
    if (backendErrors.length) problems.push(`the backend's gRPC calls failed: ${backendErrors.join("; ")}`);
  }

  console.log("\n| client | transport | pass | known client limitations | known bridge differences (todo) | failures |\n|---|---|---|---|---|---|");
  for (const r of rows) {
    console.log(`| ${CLIENTS[r.client].library} | ${r.transport} | ${r.pass}/${r.total} | ${r.limitation} | ${r.todo} | ${r.failed} |`);
  }
  if (limitations.length) {
    console.log(`\nKnown client limitations (fail the same way against the reference server; not counted as passes):`);
    for (const l of limitations) console.log(`  - ${l}`);
  }
  if (todos.length) {
    console.log(`\nKnown bridge differences (todo: only engineioxide can change them; not counted as passes):`);
    for (const t of todos) console.log(`  - ${t}`);
  }
  const stale = KNOWN_LIMITATIONS.filter(
    (l) => clients.includes(l.client) && (!l.transports || l.transports.some((t) => transports.includes(t))) && !usedLimitations.has(l),
  );
  for (const l of stale) console.log(`\nnote: listed limitation did not show in this run: ${l.client}: ${l.summary}`);
  console.log(`\ninterop suite: ${((Date.now() - started) / 1000).toFixed(1)} s`);
  if (problems.length) {
    console.log(`\n${problems.length} problem(s):`);
    for (const p of problems) console.log(`  - ${p}`);
    process.exit(1);
  }
  process.exit(0);
}

main().catch((err) => {
  console.error(err);
  process.exit(1);
});
