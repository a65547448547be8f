// A small backend that talks to the bridge over its real gRPC API, as the Go backend would:
// it holds one `Events` stream (Subscribe with wants_lifecycle), records what arrives, and
// answers by default like the reference server of the conformance cases:
//   - a client event with an ack callback gets its own arguments back (Ack.payload = the
//     event's payload, attachments included), unless a test's `onEvent` hook answers;
//   - an event named "echo" without ack is pushed back to the same socket as "echo-back";
//   - on SocketConnected the handshake auth (as the bridge forwards it, secret fields already
//     removed) is pushed to that socket as event "auth" (when `echoAuth` is on).
// If the stream breaks (bridge restart), it subscribes again until closed.
import grpc from "@grpc/grpc-js";
import protoLoader from "@grpc/proto-loader";
import { protoDir } from "./bridge.mjs";

let servicePromise;
function loadService() {
  servicePromise ??= protoLoader
    .load("socketbridge/v1/bridge.proto", {
      includeDirs: [protoDir],
      keepCase: true,
      longs: String,
      enums: String,
      defaults: true,
      oneofs: true,
    })
    .then((def) => grpc.loadPackageDefinition(def).socketbridge.v1.BridgeService);
  return servicePromise;
}

/** Parses args_json of a Payload ("" means no arguments). */
export function payloadArgs(payload) {
  return payload && payload.args_json ? JSON.parse(payload.args_json) : [];
}

export class Backend {
  /**
   * `grpcAddr` host:port; `apiKey` for JWT deployments; `group` the subscription group.
   * Hooks: `onEvent(ev, backend)` returns true when it handled the event itself;
   * `onConnected(ev, backend)`.
   */
  static async start(grpcAddr, opts = {}) {
    const Service = await loadService();
    const b = new Backend(new Service(grpcAddr, grpc.credentials.createInsecure()), opts);
    await b.subscribe(opts.subscribeTimeoutMs ?? 10000);
    return b;
  }

  constructor(client, { apiKey, group = "conformance", echoAuth = true, onEvent, onConnected, namespaces = [] } = {}) {
    this.client = client;
    this.apiKey = apiKey;
    this.group = group;
    this.echoAuth = echoAuth;
    this.onEvent = onEvent;
    this.onConnected = onConnected;
    this.namespaces = namespaces;
    this.closed = false;
    this.records = []; // every EventsResponse kind received: {kind, value, at}
    this.listeners = new Set();
    this.errors = [];
    this.subscriptions = 0;
  }

  metadata() {
    const md = new grpc.Metadata();
    if (this.apiKey) md.set("authorization", `Bearer ${this.apiKey}`);
    return md;
  }

  /** Opens the Events stream and resolves once Subscribed arrived. */
  subscribe(timeoutMs) {
    return new Promise((resolve, reject) => {
      const deadline = setTimeout(() => reject(new Error(`no Subscribed within ${timeoutMs} ms`)), timeoutMs);
      const stream = this.client.Events(this.metadata());
      this.stream = stream;
      stream.on("data", (msg) => {
        if (msg.kind === "subscribed") {
          clearTimeout(deadline);
          this.subscriptions += 1;
          resolve(msg.subscribed);
          return;
        }
        this.handle(msg.kind, msg[msg.kind]);
      });
      const broken = (err) => {
        if (stream !== this.stream) return;
        clearTimeout(deadline);
        if (err) this.errors.push(err);
        if (!this.closed) {
          // The bridge went away (restart): come back when it does.
          setTimeout(() => {
            if (!this.closed) this.subscribe(timeoutMs).catch((e) => this.errors.push(e));
          }, 200);
        }
      };
      stream.on("error", broken);
      stream.on("end", () => broken(null));
      stream.write({ subscribe: { group: this.group, wants_lifecycle: true, namespaces: this.namespaces } });
    });
  }

  handle(kind, value) {
    const rec = { kind, value, at: Date.now() };
    this.records.push(rec);
    for (const l of this.listeners) l(rec);
    if (kind === "client_event") {
      if (this.onEvent && this.onEvent(value, this)) return;
      if (value.wants_ack) {
        this.ack(value.id, { args_json: value.payload.args_json, attachments: value.payload.attachments });
      } else if (value.event === "echo") {
        this.push({
          target: { socket_id: value.socket_id },
          namespace: value.namespace,
          event: "echo-back",
          payload: value.payload,
        }).catch((e) => this.errors.push(e));
      }
    } else if (kind === "socket_connected") {
      if (this.onConnected) this.onConnected(value, this);
      if (this.echoAuth) {
        const auth = value.handshake.auth_json ? JSON.parse(value.handshake.auth_json) : {};
        this.push({
          target: { socket_id: value.socket_id },
          namespace: value.namespace,
          event: "auth",
          payload: { args_json: JSON.stringify([auth]) },
        }).catch((e) => this.errors.push(e));
      }
    }
  }

  /** Answers a client event: `result` is a Payload ({args_json, attachments}) or {error:{code,message}}. */
  ack(eventId, result) {
    if (result.error) this.stream.write({ ack: { event_id: eventId, error: result.error } });
    else this.stream.write({ ack: { event_id: eventId, payload: result } });
  }

  /** Calls Push; resolves with the PushResponse. */
  push(req, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      this.client.Push(req, this.metadata(), { deadline: Date.now() + timeoutMs }, (err, res) =>
        err ? reject(err) : resolve(res),
      );
    });
  }

  /** Resolves with the first record (already received or future) matching pred. */
  waitFor(pred, timeoutMs = 3000, { from = 0 } = {}) {
    const found = this.records.slice(from).find(pred);
    if (found) return Promise.resolve(found);
    return new Promise((resolve, reject) => {
      const l = (rec) => {
        if (!pred(rec)) return;
        clearTimeout(timer);
        this.listeners.delete(l);
        resolve(rec);
      };
      const timer = setTimeout(() => {
        this.listeners.delete(l);
        reject(new Error(`backend saw no matching record within ${timeoutMs} ms; saw: ${this.records.map((r) => r.kind + (r.value.event ? `(${r.value.event})` : "")).join(", ") || "nothing"}`));
      }, timeoutMs);
      this.listeners.add(l);
    });
  }

  close() {
    this.closed = true;
    try {
      this.stream?.cancel();
    } catch {
      /* already gone */
    }
    this.client.close();
  }
}
