// Starts the real bridge (JWT mode) and a gRPC backend for the Python client test, and
// serves the test over stdin/stdout with JSON lines:
//   first line out: {"ready": true, "url", "jwt_secret"}
//   in:  {"id", "cmd": "push", "user_id", "event", "args_json", "attachments_b64": [...]}
//        {"id", "cmd": "client_events", "user_id"}   (what the backend received from that user)
//        {"id", "cmd": "exit"}
//   out: {"id", "ok": true, "result"} | {"id", "ok": false, "error"}
// The backend answers every ack with the event's own arguments and pushes "welcome"
// [{"user", "namespace"}] to each socket that connects. Everything stops when stdin closes.
import readline from "node:readline";
import { startBridge, JWT_SETTINGS, JWT_SECRET, API_KEY } from "../conformance/lib/bridge.mjs";
import { Backend } from "../conformance/lib/backend.mjs";

console.log = console.error; // stdout carries the protocol only

// A 5 s ping interval bounds how long a stalled polling request can hang (see the
// bad-token-over-polling case in test_python_client.py).
const bridge = await startBridge({
  settings: { ...JWT_SETTINGS, "socketio.ack_timeout_ms": 2000, "socketio.ping_interval_ms": 5000, "socketio.ping_timeout_ms": 5000 },
});
const backend = await Backend.start(bridge.grpc, {
  apiKey: API_KEY,
  group: "python-client",
  echoAuth: false,
  onConnected: (ev, b) => {
    b.push({
      target: { socket_id: ev.socket_id },
      namespace: ev.namespace,
      event: "welcome",
      payload: { args_json: JSON.stringify([{ user: ev.user_id, namespace: ev.namespace }]) },
    }).catch((e) => process.stderr.write(`welcome push failed: ${e}\n`));
  },
});

let stopping = false;
async function stop(code = 0) {
  if (stopping) return;
  stopping = true;
  backend.close();
  await bridge.stop();
  process.exit(code);
}
process.on("SIGTERM", () => stop(0));
process.on("SIGINT", () => stop(0));

const out = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
out({ ready: true, url: bridge.url, jwt_secret: JWT_SECRET });

const rl = readline.createInterface({ input: process.stdin });
rl.on("close", () => stop(0));
rl.on("line", async (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  try {
    if (msg.cmd === "push") {
      const res = await backend.push({
        target: { user_id: msg.user_id },
        event: msg.event,
        payload: { args_json: msg.args_json, attachments: (msg.attachments_b64 || []).map((b) => Buffer.from(b, "base64")) },
      });
      out({ id: msg.id, ok: true, result: { sockets_reached: res.sockets_reached } });
    } else if (msg.cmd === "client_events") {
      const events = backend.records
        .filter((r) => r.kind === "client_event" && r.value.user_id === msg.user_id)
        .map((r) => ({
          event: r.value.event,
          namespace: r.value.namespace,
          args_json: r.value.payload.args_json,
          attachments_b64: r.value.payload.attachments.map((b) => Buffer.from(b).toString("base64")),
          wants_ack: r.value.wants_ack,
        }));
      out({ id: msg.id, ok: true, result: events });
    } else if (msg.cmd === "exit") {
      out({ id: msg.id, ok: true, result: null });
      await stop(0);
    } else {
      out({ id: msg.id, ok: false, error: `unknown command ${msg.cmd}` });
    }
  } catch (err) {
    out({ id: msg.id, ok: false, error: String(err) });
  }
});
