// Test driver: runs stock socket.io-client sockets on behalf of the Rust
// integration tests. Commands arrive as JSON lines on stdin; reports leave as
// JSON lines on stdout (one object per line, nothing else). Diagnostics go to
// stderr. Sockets are named by a caller-chosen string "id".
//
// Commands ({"cmd": ...}), handled in `commands` below:
//   connect {id, url, namespace="/", auth?, transports?, reconnection=false,
//            reconnection_delay_ms?, raw_packets=false}
//   on_ack_reply {id, event, reply: [...] | null, delay_ms=0}
//   emit {id, event, args, req?, ack=false, timeout_ms?}
//   emit_many {id, event, count, ack=false, timeout_ms?}   (args are [i])
//   disconnect {id} | connect_again {id} | sync {req} | exit
// Reports ({"type": ...}): connect {id, sid, transport}, connect_error {id,
// message, data}, disconnect {id, reason}, event {id, event, args, has_ack},
// ack {id, req, args | error}, emitted {id, req}, emitted_many {id, count},
// packet {id, packet_type, data}, error {message, cmd?, id?}.
// Binary values are {"$binary": "<base64>"} in both directions.
import { io } from "socket.io-client";
import readline from "node:readline";

// Anything a library might console.log must not corrupt the stdout protocol.
console.log = console.error;

const sockets = new Map(); // id -> { socket, ackRules: Map(event -> {reply, delayMs}) }

function report(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function reportError(message, extra = {}) {
  report({ type: "error", message: String(message), ...extra });
}

// Server -> JSON: binary values (anywhere, nested) become {"$binary": base64}.
function toJson(value) {
  if (value instanceof ArrayBuffer) return { $binary: Buffer.from(value).toString("base64") };
  if (ArrayBuffer.isView(value)) {
    return { $binary: Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString("base64") };
  }
  if (Array.isArray(value)) return value.map(toJson);
  if (value !== null && typeof value === "object") {
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = toJson(v);
    return out;
  }
  return value;
}

// JSON -> client: an object that is exactly {"$binary": "<base64>"} becomes a Buffer.
function fromJson(value) {
  if (Array.isArray(value)) return value.map(fromJson);
  if (value !== null && typeof value === "object") {
    const keys = Object.keys(value);
    if (keys.length === 1 && keys[0] === "$binary" && typeof value.$binary === "string") {
      return Buffer.from(value.$binary, "base64");
    }
    const out = {};
    for (const [k, v] of Object.entries(value)) out[k] = fromJson(v);
    return out;
  }
  return value;
}

// Report every engine.io packet the engine receives. The Manager creates a new
// engine on each (re)connection attempt, so we wrap manager.open() to hook
// every engine right after it is created: hooking on the Manager's "open"
// event would be too late to see the engine.io handshake ("open") packet.
function hookRawPackets(id, manager) {
  const hook = (engine) => {
    if (!engine || engine.__driverHooked) return;
    engine.__driverHooked = true;
    engine.on("packet", (packet) => {
      const data = typeof packet.data === "string" || packet.data === undefined
        ? packet.data ?? ""
        : toJson(packet.data);
      report({ type: "packet", id, packet_type: packet.type, data });
    });
  };
  hook(manager.engine); // the first engine was created inside io() already
  const open = manager.open;
  manager.open = function (...a) {
    const result = open.apply(this, a);
    hook(this.engine);
    return result;
  };
}

// Emits one event, optionally with an ack callback; used by emit and emit_many.
function emitOne(entry, id, event, args, req, ack, timeoutMs) {
  const { socket } = entry;
  args = fromJson(args ?? []);
  if (!ack) {
    socket.emit(event, ...args);
    return;
  }
  if (timeoutMs !== undefined && timeoutMs !== null) {
    // With .timeout() the callback gets (err, ...args).
    socket.timeout(timeoutMs).emit(event, ...args, (err, ...res) => {
      if (err) report({ type: "ack", id, req, error: err.message });
      else report({ type: "ack", id, req, args: toJson(res) });
    });
  } else {
    socket.emit(event, ...args, (...res) => report({ type: "ack", id, req, args: toJson(res) }));
  }
}

function getEntry(id) {
  const entry = sockets.get(id);
  if (!entry) throw new Error(`unknown socket id ${JSON.stringify(id)}`);
  return entry;
}

const commands = {
  connect(c) {
    if (typeof c.id !== "string") throw new Error("connect needs a string id");
    if (sockets.has(c.id)) throw new Error(`socket id ${JSON.stringify(c.id)} already exists`);
    if (typeof c.url !== "string") throw new Error("connect needs a url");
    const id = c.id;
    const opts = { reconnection: c.reconnection ?? false, forceNew: true, timeout: 5000 };
    // Only set options that were given: engine.io-client merges with
    // Object.assign, so an explicit undefined would wipe out its defaults.
    if (c.auth !== undefined) opts.auth = fromJson(c.auth);
    if (c.transports !== undefined) opts.transports = c.transports;
    // Request headers (Node.js only: browsers set their own), e.g. a session cookie.
    if (c.extra_headers !== undefined) opts.extraHeaders = c.extra_headers;
    if (c.reconnection_delay_ms !== undefined) {
      opts.reconnectionDelay = c.reconnection_delay_ms;
      opts.reconnectionDelayMax = c.reconnection_delay_ms;
    }
    const socket = io(c.url + (c.namespace ?? "/"), opts);
    const entry = { socket, ackRules: new Map() };
    sockets.set(id, entry);

    if (c.raw_packets) hookRawPackets(id, socket.io);

    socket.on("connect", () => {
      report({ type: "connect", id, sid: socket.id, transport: socket.io.engine?.transport?.name });
    });
    socket.on("connect_error", (err) => {
      report({ type: "connect_error", id, message: err.message, data: toJson(err.data ?? null) });
    });
    socket.on("disconnect", (reason) => report({ type: "disconnect", id, reason }));
    socket.onAny((event, ...args) => {
      const cb = typeof args[args.length - 1] === "function" ? args.pop() : null;
      report({ type: "event", id, event, args: toJson(args), has_ack: cb !== null });
      const rule = cb && entry.ackRules.get(event);
      if (!rule) return; // no rule: leave the ack unanswered
      const answer = () => cb(...fromJson(rule.reply));
      if (rule.delayMs > 0) setTimeout(answer, rule.delayMs);
      else answer();
    });
  },

  on_ack_reply(c) {
    const entry = getEntry(c.id);
    if (c.reply === null) entry.ackRules.delete(c.event);
    else if (Array.isArray(c.reply)) entry.ackRules.set(c.event, { reply: c.reply, delayMs: c.delay_ms ?? 0 });
    else throw new Error("on_ack_reply needs reply: array or null");
  },

  emit(c) {
    const entry = getEntry(c.id);
    emitOne(entry, c.id, c.event, c.args, c.req, c.ack, c.timeout_ms);
    if (!c.ack) report({ type: "emitted", id: c.id, req: c.req });
  },

  emit_many(c) {
    const entry = getEntry(c.id);
    const count = c.count ?? 0;
    for (let i = 0; i < count; i++) emitOne(entry, c.id, c.event, [i], i, c.ack, c.timeout_ms);
    report({ type: "emitted_many", id: c.id, count });
  },

  disconnect(c) {
    getEntry(c.id).socket.disconnect();
  },

  connect_again(c) {
    getEntry(c.id).socket.connect();
  },

  // Reports back once every earlier command has been handled, so a test can be sure a
  // rule (on_ack_reply) is in place before the server's event can arrive.
  sync(c) {
    report({ type: "synced", req: c.req });
  },
  exit() {
    shutdown();
  },
};

function shutdown() {
  for (const { socket } of sockets.values()) {
    try {
      socket.disconnect();
    } catch (err) {
      console.error("driver: disconnect failed:", err);
    }
  }
  // stdout is a pipe, which Node writes synchronously on Linux, so every
  // report written above is out before we exit.
  process.exit(0);
}

function handleLine(line) {
  if (line.trim() === "") return;
  let c;
  try {
    c = JSON.parse(line);
  } catch (err) {
    return reportError(`bad JSON: ${err.message}`);
  }
  if (c === null || typeof c !== "object" || !Object.hasOwn(commands, c.cmd)) {
    return reportError(`unknown command ${JSON.stringify(c?.cmd)}`);
  }
  try {
    commands[c.cmd](c);
  } catch (err) {
    reportError(err.message, { cmd: c.cmd, id: c.id });
  }
}

// A throw from inside a socket callback must not take the whole driver down.
process.on("uncaughtException", (err) => reportError(`uncaught: ${err.stack ?? err}`));

const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on("line", handleLine);
rl.on("close", shutdown);
