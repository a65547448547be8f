// The interop scenario: what every client program does, what the servers answer, and what
// each check must observe. The client programs (java/, rust/, go/) implement it from this
// description; each check prints one JSON line, {"check", "observed"} or {"check", "error"}.
//
// Environment of a client run: INTEROP_URL, INTEROP_TRANSPORT (websocket | polling |
// default: the client's own default, polling then upgrade), INTEROP_TOKEN (JWT of the main
// user), INTEROP_TOKEN_BYE (JWT of the second user), INTEROP_BAD_TOKEN (a JWT signed with
// the wrong secret), INTEROP_WAIT_MS (how long each check waits).
//
// In order, on one socket connected with auth {token, locale: "fr", note: NOTE}:
//   connect_auth        wait for connect, then the "auth" event the server sends at once:
//                       observed = its arguments (the auth without its token).
//   push_<kind>         emit "push-me:<kind>" (no arguments); the server pushes
//                       "pushed:<kind>" with ARGS[kind] to the user (the bridge's backend
//                       through gRPC Push): observed = its arguments.
//   emit_<kind>         emit "echo:<kind>" with ARGS[kind]; the server sends it back as
//                       "echo-back:<kind>" (gRPC Push to the socket): observed = arguments.
//   ack_<kind>          emit "ask:<kind>" with ARGS[kind] and an ack callback; the server
//                       (the backend's Ack) answers with the same arguments.
//   server_disconnect   emit "disconnect-me"; the server sends "bridge:disconnect" {reason}
//                       and disconnects the socket (gRPC DisconnectSockets): observed =
//                       {notice: that event's arguments, reason: the client's disconnect reason}.
// Then a second socket (INTEROP_TOKEN_BYE):
//   client_disconnect   wait for connect, disconnect: observed = {reason: the client's reason}.
// Then a third (INTEROP_BAD_TOKEN):
//   connect_refused     wait for the connect error: observed = {message}.
// Every check from push_* to server_disconnect runs on a new main socket (connected, its
// "auth" event not awaited), so that a client bug that breaks or garbles a session shows in
// its own check only. A connection attempt that gets no connect within the wait is retried
// (three attempts); last:
//   connect_retries     observed = how many attempts never connected.
// Binary values are observed as {"$binary": "sha256:<hex>", "length": n}.
import crypto from "node:crypto";

export const TEXT = "héllo ✓";
export const NOTE = "ünïcödé ✓";
export const DISCONNECT_NOTICE = "bye from backend";

/** Byte i is i mod 256: every value, the polling separator 0x1e included. */
export function bytes(n) {
  const b = Buffer.alloc(n);
  for (let i = 0; i < n; i++) b[i] = i & 0xff;
  return b;
}

export const ARGS = {
  text: [TEXT, { n: 42, list: [1, "two", null, true] }],
  binary: [bytes(1000)],
  binary_mixed: ["label", bytes(300), { k: 1 }],
  binary_large: [bytes(200000)],
};

export const PUSH_KINDS = ["text", "binary", "binary_mixed"];
export const EMIT_KINDS = ["text", "binary", "binary_mixed", "binary_large"];
export const ACK_KINDS = ["text", "binary", "binary_mixed"];

/** The transports every client runs on. */
export const TRANSPORTS = ["websocket", "polling", "default"];

/** The clients, each with its library's own disconnect reasons. */
export const CLIENTS = {
  java: {
    library: "io.socket:socket.io-client 2.1.2 (Maven Central)",
    reasons: { server: "io server disconnect", client: "io client disconnect" },
  },
  rust: {
    // rust_socketio reports no reason: its Close callback fires, reported as "close".
    library: "rust_socketio 0.6.0, async (crates.io)",
    reasons: { server: "close", client: "close" },
  },
  go: {
    library: "github.com/zishang520/socket.io/clients/socket/v3 3.0.6 (Go module proxy)",
    reasons: { server: "io server disconnect", client: "io client disconnect" },
  },
};

/** JSON as the clients report it: Buffers become digests. */
export function observable(value) {
  if (Buffer.isBuffer(value)) {
    return { $binary: `sha256:${crypto.createHash("sha256").update(value).digest("hex")}`, length: value.length };
  }
  if (Array.isArray(value)) return value.map(observable);
  if (value && typeof value === "object") {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, observable(v)]));
  }
  return value;
}

/** Every check in the order it runs, with what it must observe for `client`. */
export function expectations(client) {
  const reasons = CLIENTS[client].reasons;
  return [
    ["connect_auth", [{ locale: "fr", note: NOTE }]],
    ...PUSH_KINDS.map((k) => [`push_${k}`, observable(ARGS[k])]),
    ...EMIT_KINDS.map((k) => [`emit_${k}`, observable(ARGS[k])]),
    ...ACK_KINDS.map((k) => [`ack_${k}`, observable(ARGS[k])]),
    ["server_disconnect", { notice: [{ reason: DISCONNECT_NOTICE }], reason: reasons.server }],
    ["client_disconnect", { reason: reasons.client }],
    // Checked by the suite on the server side: the reason the server saw.
    ["client_disconnect_server_reason", "client namespace disconnect"],
    ["connect_refused", { message: "token signature is invalid" }],
    // The main socket is connected again for every check (up to three attempts each):
    // how many attempts never connected.
    ["connect_retries", 0],
  ];
}

const MAIN_SOCKET_CHECKS = [
  ...PUSH_KINDS.map((k) => `push_${k}`),
  ...EMIT_KINDS.map((k) => `emit_${k}`),
  ...ACK_KINDS.map((k) => `ack_${k}`),
  "server_disconnect",
];

/**
 * Client bugs: checks that fail against the reference Node.js server exactly as they fail
 * against the bridge. They are reported as known client limitations, never counted as
 * passes. A check failing the same way on both servers that is not listed here fails the
 * suite (so this list and the README's "Clients" section stay true), and so does any check
 * whose result on the bridge differs from the reference. `transports` (default: all) and
 * `varies` (the client fails at random, in different ways from run to run, so any failure
 * on either server is this limitation) narrow an entry. README "Clients" has a workaround
 * for each.
 */
export const KNOWN_LIMITATIONS = [
  {
    client: "rust",
    checks: ["push_binary", "push_binary_mixed", "emit_binary", "emit_binary_large"],
    transports: ["websocket", "default"],
    summary: "rust_engineio splits every websocket message at 0x1e bytes, so a binary frame containing one breaks the session (EngineIO Error)",
  },
  {
    client: "rust",
    checks: ["emit_binary_mixed", "ack_binary_mixed", "push_binary_mixed"],
    summary: "the API sends either JSON arguments or one binary, and an incoming event with a binary among other arguments gets a mangled name",
  },
  {
    client: "rust",
    checks: ["ack_binary"],
    summary: "a binary emit with an ack callback goes out as a BINARY_ACK packet, so no server answers it",
  },
  {
    client: "rust",
    checks: ["emit_binary_large"],
    transports: ["polling"],
    varies: true,
    summary:
      "a long-polling response is parsed one network chunk at a time, so a 200 KB binary breaks the session (EngineIO Error) or arrives truncated, depending on where the chunks end",
  },
  {
    client: "rust",
    checks: ["client_disconnect"],
    summary: "disconnect() fires no Close callback",
  },
  {
    client: "go",
    checks: MAIN_SOCKET_CHECKS,
    transports: ["polling"],
    varies: true,
    summary:
      "over long-polling each POST waits until the pending GET returns (up to the 25 s ping interval), so emits time out (the odd one gets through when a GET happens to return)",
  },
  {
    client: "go",
    checks: ["connect_refused"],
    varies: true,
    summary:
      'a connect_error without a "data" field is reported as "missing \'data\' field" instead of its message (and at times not at all)',
  },
  {
    client: "go",
    checks: ["connect_retries"],
    transports: ["polling", "default"],
    varies: true,
    summary:
      "at times a new connection never connects: its CONNECT packet waits behind the long-poll GET like any other POST (a second attempt connects)",
  },
  {
    client: "go",
    checks: ["client_disconnect_server_reason"],
    varies: true,
    summary:
      'Disconnect() closes the transport without waiting for its DISCONNECT packet to go out, so the server sees "client namespace disconnect" or a closed transport, at random',
  },
  {
    client: "go",
    checks: ["server_disconnect"],
    transports: ["websocket", "default"],
    varies: true,
    summary: "on a server disconnect the client at random loses the event sent just before it, or reports \"transport close\"",
  },
];

/**
 * Where the bridge answers differently from the reference and only engineioxide can change
 * it (README "Known differences from the reference server" says what it would need). They
 * fail the suite unless KNOWN_BRIDGE_BUGS=todo, which reports them as todo (never as
 * passes), like the conformance suite. `matches(bridge, reference)` pins the exact
 * difference, so any other result still fails.
 */
export const KNOWN_BRIDGE_DIFFERENCES = [
  {
    client: "go",
    checks: ["client_disconnect_server_reason"],
    transports: ["websocket", "default"],
    summary:
      'a websocket closed without a close frame is "transport error" to the backend (engineioxide reads it as an error), "transport close" on the reference',
    matches: (b, r) => b?.observed === "transport error" && r?.observed === "transport close",
  },
  {
    client: "go",
    checks: ["client_disconnect_server_reason"],
    transports: ["polling"],
    summary:
      "a polling client that goes away is noticed at the heartbeat timeout (45 s), the reference notices its closed poll request at once (\"transport error\")",
    matches: (b, r) => typeof b?.error === "string" && b.error.startsWith("no SocketDisconnected") && r?.observed === "transport error",
  },
];
