// A "target" is what a conformance case talks to: the real bridge with the gRPC backend of
// backend.mjs (the whole path), or the reference Node.js Socket.IO server (npm socket.io,
// pinned) configured with the same timings and the same behaviour as that backend. The
// cases are written once and run against each target named in CONFORMANCE_TARGETS
// (default "bridge,reference"), so "the client cannot tell the difference" is checked case
// by case. Both expose {name, url, config, backend?, stop()}.
import http from "node:http";
import { Server } from "socket.io";
import { startBridge, PROTOCOL_TIMINGS } from "./bridge.mjs";
import { Backend } from "./backend.mjs";

export const NAMESPACES = ["/", "/custom"];
export const REDACTED_AUTH_FIELDS = ["token", "password", "secret"];

/** The server timings every case expects, taken from the bridge config we start it with. */
export const CONFIG = {
  pingInterval: PROTOCOL_TIMINGS["socketio.ping_interval_ms"],
  pingTimeout: PROTOCOL_TIMINGS["socketio.ping_timeout_ms"],
  connectTimeout: PROTOCOL_TIMINGS["socketio.connect_timeout_ms"],
  ackTimeout: PROTOCOL_TIMINGS["socketio.ack_timeout_ms"],
  maxPayload: 1000000,
};

export function targetNames() {
  return (process.env.CONFORMANCE_TARGETS || "bridge,reference")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
}

/** Starts the bridge (protocol timings, namespaces / and /custom) and a subscribed backend. */
export async function startBridgeTarget({ settings = {}, backend = {} } = {}) {
  const bridge = await startBridge({
    settings: { ...PROTOCOL_TIMINGS, "socketio.namespaces": NAMESPACES, ...settings, ...envJson("BRIDGE_EXTRA_SETTINGS") },
  });
  let be;
  try {
    be = await Backend.start(bridge.grpc, backend);
  } catch (err) {
    await bridge.stop();
    throw err;
  }
  return {
    name: "bridge",
    url: bridge.url,
    config: CONFIG,
    bridge,
    backend: be,
    async stop() {
      be.close();
      await bridge.stop();
    },
  };
}

function redact(auth) {
  const out = { ...(auth || {}) };
  for (const f of REDACTED_AUTH_FIELDS) delete out[f];
  return out;
}

/**
 * Deliberate-break switches, to show that the cases fail when the server misbehaves: the
 * expectations stay CONFIG while the server under test is started differently.
 * BRIDGE_EXTRA_SETTINGS='{"socketio.ping_interval_ms":500}' adds --set flags to the bridge;
 * REFERENCE_OVERRIDES='{"pingInterval":500}' adds options to the reference server.
 */
function envJson(name) {
  const raw = process.env[name];
  return raw ? JSON.parse(raw) : {};
}

/** The reference server, with the options of the bridge's config and the backend's behaviour. */
export async function startReferenceTarget({ overrides = {} } = {}) {
  const httpServer = http.createServer();
  const io = new Server(httpServer, {
    pingInterval: CONFIG.pingInterval,
    pingTimeout: CONFIG.pingTimeout,
    connectTimeout: CONFIG.connectTimeout,
    maxHttpBufferSize: CONFIG.maxPayload,
    ...overrides,
    ...envJson("REFERENCE_OVERRIDES"),
  });
  const onConnection = (socket) => {
    socket.emit("auth", redact(socket.handshake.auth));
    socket.onAny((event, ...args) => {
      const last = args[args.length - 1];
      if (typeof last === "function") {
        const ack = args.pop();
        ack(...args);
      } else if (event === "echo") {
        socket.emit("echo-back", ...args);
      }
    });
  };
  for (const nsp of NAMESPACES) io.of(nsp).on("connection", onConnection);
  await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
  const { port } = httpServer.address();
  return {
    name: "reference",
    url: `http://127.0.0.1:${port}`,
    config: { ...CONFIG, ...overrides },
    io,
    async stop() {
      io.close();
      httpServer.closeAllConnections?.();
      await new Promise((resolve) => httpServer.close(() => resolve()));
    },
  };
}

export function startTarget(name, opts = {}) {
  if (name === "bridge") return startBridgeTarget(opts);
  if (name === "reference") return startReferenceTarget(opts);
  throw new Error(`unknown target ${name}`);
}
