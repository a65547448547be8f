// The two servers every interop case runs against, answering the scenario the same way:
//   - the real socket-bridge binary (JWT mode) with a backend on its gRPC API (the
//     conformance suite's Backend): pushes through Push, echoes through Push to the socket,
//     acks through the Events stream's Ack, disconnects through DisconnectSockets;
//   - the stock Node.js Socket.IO 4.8 server with the same behaviour written as handlers.
// Both expose {name, url, disconnectReason(userId, timeoutMs), stop()}.
import http from "node:http";
import crypto from "node:crypto";
import { Server } from "socket.io";
import { startBridge, JWT_SETTINGS, JWT_SECRET, API_KEY } from "../conformance/lib/bridge.mjs";
import { Backend } from "../conformance/lib/backend.mjs";
import { ARGS, DISCONNECT_NOTICE } from "./scenario.mjs";

/** Socket.IO arguments with Buffers → a gRPC Payload (placeholders and attachments). */
function toPayload(args) {
  const attachments = [];
  const replace = (v) => {
    if (Buffer.isBuffer(v)) {
      attachments.push(v);
      return { _placeholder: true, num: attachments.length - 1 };
    }
    if (Array.isArray(v)) return v.map(replace);
    if (v && typeof v === "object") return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, replace(x)]));
    return v;
  };
  return { args_json: JSON.stringify(replace(args)), attachments };
}

/** Resolves with the first value `find()` returns, polling until `timeoutMs`. */
async function waitUntil(find, timeoutMs, what) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = find();
    if (found !== undefined) return found;
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function startBridgeServer() {
  const bridge = await startBridge({
    settings: {
      ...JWT_SETTINGS,
      "socketio.ack_timeout_ms": 5000,
      // The clients send 200 KB binaries; the reference server is given the same limit.
      "socketio.max_payload_bytes": 1000000,
    },
  });
  let backend;
  const onEvent = (ev, b) => {
    const [verb, kind] = ev.event.split(":");
    const fail = (e) => b.errors.push(e);
    if (verb === "push-me") {
      b.push({ target: { user_id: ev.user_id }, namespace: ev.namespace, event: `pushed:${kind}`, payload: toPayload(ARGS[kind]) }).catch(fail);
    } else if (verb === "echo") {
      b.push({ target: { socket_id: ev.socket_id }, namespace: ev.namespace, event: `echo-back:${kind}`, payload: ev.payload }).catch(fail);
    } else if (verb === "ask" && ev.wants_ack) {
      b.ack(ev.id, { args_json: ev.payload.args_json, attachments: ev.payload.attachments });
    } else if (verb === "disconnect-me") {
      b.client.DisconnectSockets(
        { target: { socket_id: ev.socket_id }, namespace: ev.namespace, reason: DISCONNECT_NOTICE },
        b.metadata(),
        { deadline: Date.now() + 5000 },
        (err) => err && fail(err),
      );
    } else {
      return false;
    }
    return true;
  };
  try {
    backend = await Backend.start(bridge.grpc, { apiKey: API_KEY, group: "interop", onEvent });
  } catch (err) {
    await bridge.stop();
    throw err;
  }
  return {
    name: "bridge",
    url: bridge.url,
    bridge,
    backend,
    disconnectReason(userId, timeoutMs) {
      return waitUntil(
        () => backend.records.find((r) => r.kind === "socket_disconnected" && r.value.user_id === userId)?.value.reason,
        timeoutMs,
        `SocketDisconnected for ${userId}`,
      );
    },
    /** Backend-side failures (a Push or Ack the bridge refused), for the report. */
    errors: () => backend.errors.map(String),
    async stop() {
      backend.close();
      await bridge.stop();
    },
  };
}

/** HS256 verification with the bridge's refusal texts for the cases the scenario uses. */
function verifyJwt(token) {
  if (typeof token !== "string" || !token) throw new Error("authentication required: pass the JWT as auth.token");
  const parts = token.split(".");
  if (parts.length !== 3) throw new Error("token is malformed");
  const expected = crypto.createHmac("sha256", JWT_SECRET).update(`${parts[0]}.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], "base64url");
  if (given.length !== expected.length || !crypto.timingSafeEqual(given, expected)) {
    throw new Error("token signature is invalid");
  }
  const claims = JSON.parse(Buffer.from(parts[1], "base64url").toString("utf8"));
  if (typeof claims.exp === "number" && claims.exp * 1000 < Date.now()) throw new Error("token has expired");
  return claims;
}

function redact(auth) {
  const out = { ...(auth || {}) };
  for (const f of ["token", "password", "secret"]) delete out[f];
  return out;
}

export async function startReferenceServer() {
  const httpServer = http.createServer();
  // The bridge's defaults: heartbeat 25 s / 20 s, 1 MB payloads.
  const io = new Server(httpServer, { maxHttpBufferSize: 1000000 });
  const disconnects = [];
  io.use((socket, next) => {
    try {
      socket.data.userId = verifyJwt(socket.handshake.auth?.token).sub;
      next();
    } catch (err) {
      next(err);
    }
  });
  io.on("connection", (socket) => {
    const userId = socket.data.userId;
    socket.join(`user:${userId}`);
    socket.emit("auth", redact(socket.handshake.auth));
    socket.on("disconnect", (reason) => disconnects.push({ userId, reason }));
    socket.onAny((event, ...args) => {
      const [verb, kind] = event.split(":");
      const ack = typeof args[args.length - 1] === "function" ? args.pop() : null;
      if (verb === "push-me") io.to(`user:${userId}`).emit(`pushed:${kind}`, ...ARGS[kind]);
      else if (verb === "echo") socket.emit(`echo-back:${kind}`, ...args);
      else if (verb === "ask" && ack) ack(...args);
      else if (verb === "disconnect-me") {
        socket.emit("bridge:disconnect", { reason: DISCONNECT_NOTICE });
        socket.disconnect(true);
      }
    });
  });
  await new Promise((resolve) => httpServer.listen(0, "127.0.0.1", resolve));
  return {
    name: "reference",
    url: `http://127.0.0.1:${httpServer.address().port}`,
    disconnectReason(userId, timeoutMs) {
      return waitUntil(() => disconnects.find((d) => d.userId === userId)?.reason, timeoutMs, `disconnect of ${userId}`);
    },
    errors: () => [],
    async stop() {
      io.close();
      httpServer.closeAllConnections?.();
      await new Promise((resolve) => httpServer.close(() => resolve()));
    },
  };
}
