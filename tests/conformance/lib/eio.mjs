// A raw Engine.IO v4 client for the conformance cases, written from the protocol document:
// polling with fetch (GET receives, POST sends, packets separated by \x1e, binary packets
// as "b" + base64), websocket with the `ws` package (one packet per frame, binary frames
// carry the raw bytes). Both transports expose the same interface, so a case can run on
// either: `send(packet)`, `next()`, `waitFor(pred)`, `expectNothing(ms)`, `waitClosed()`.
//
// A packet is a string ("4hello", "2", ...) or a Buffer (a binary message). Every wait is
// bounded; a timeout rejects with the packets seen so far, which makes a failure readable.
import WebSocket from "ws";

export const SEP = "\x1e";
export const EIO_PATH = "/socket.io/";
const DEFAULT_WAIT_MS = 3000;

/** Builds an Engine.IO URL; `base` is http://host:port. */
export function eioUrl(base, query = {}, { ws = false } = {}) {
  const u = new URL(EIO_PATH, base);
  for (const [k, v] of Object.entries(query)) if (v !== undefined) u.searchParams.set(k, String(v));
  if (ws) u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.toString();
}

/** Splits a polling response body into packets (strings, or Buffers for "b..." parts). */
export function decodePayload(body) {
  if (body === "") return [];
  return body.split(SEP).map((p) => (p.startsWith("b") ? Buffer.from(p.slice(1), "base64") : p));
}

/** Joins packets into a polling request body. */
export function encodePayload(packets) {
  return packets.map((p) => (Buffer.isBuffer(p) ? "b" + p.toString("base64") : p)).join(SEP);
}

/** Renders a packet for an error message. */
export function show(p) {
  return Buffer.isBuffer(p) ? `<binary ${p.toString("hex")}>` : JSON.stringify(p);
}

/** Plain HTTP request with a time bound; resolves {status, headers, body}. */
export async function http(url, { method = "GET", body, headers, timeoutMs = DEFAULT_WAIT_MS } = {}) {
  const res = await fetch(url, { method, body, headers, signal: AbortSignal.timeout(timeoutMs) });
  return { status: res.status, headers: res.headers, body: await res.text() };
}

/** Parses an open packet ("0{...}") into its handshake object; throws otherwise. */
export function parseOpen(packet) {
  if (typeof packet !== "string" || !packet.startsWith("0")) {
    throw new Error(`expected an open packet, got ${show(packet)}`);
  }
  return JSON.parse(packet.slice(1));
}

/** Shared queue logic: packets arrive with push(), readers wait with next()/waitFor(). */
class PacketQueue {
  constructor() {
    this.packets = [];
    this.waiters = [];
    this.seen = [];
    this.closed = false;
    this.closeInfo = null;
    this.closeWaiters = [];
  }

  push(p) {
    this.seen.push(p);
    const w = this.waiters.shift();
    if (w) w.resolve(p);
    else this.packets.push(p);
  }

  markClosed(info) {
    if (this.closed) return;
    this.closed = true;
    this.closeInfo = info;
    for (const w of this.closeWaiters.splice(0)) w(info);
    for (const w of this.waiters.splice(0)) w.reject(new Error(`transport closed (${JSON.stringify(info)}) while waiting for a packet; seen: ${this.seen.map(show).join(", ")}`));
  }

  /** Resolves with the next packet (skipping nothing). */
  next(timeoutMs = DEFAULT_WAIT_MS) {
    if (this.packets.length) return Promise.resolve(this.packets.shift());
    if (this.closed) return Promise.reject(new Error(`transport closed (${JSON.stringify(this.closeInfo)}); seen: ${this.seen.map(show).join(", ")}`));
    return new Promise((resolve, reject) => {
      const w = {
        resolve: (p) => {
          clearTimeout(timer);
          resolve(p);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
      const timer = setTimeout(() => {
        this.waiters.splice(this.waiters.indexOf(w), 1);
        reject(new Error(`no packet within ${timeoutMs} ms; seen so far: ${this.seen.map(show).join(", ") || "nothing"}`));
      }, timeoutMs);
      this.waiters.push(w);
    });
  }

  /**
   * Resolves with the first packet matching `pred` (a function, a string for equality, or a
   * RegExp), dropping the packets before it. Pings ("2") are dropped silently.
   */
  async waitFor(pred, timeoutMs = DEFAULT_WAIT_MS) {
    const match =
      typeof pred === "function"
        ? pred
        : pred instanceof RegExp
          ? (p) => typeof p === "string" && pred.test(p)
          : (p) => p === pred;
    const deadline = Date.now() + timeoutMs;
    const skipped = [];
    for (;;) {
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no packet matching ${pred} within ${timeoutMs} ms; skipped: ${skipped.map(show).join(", ") || "nothing"}`);
      let p;
      try {
        p = await this.next(left);
      } catch (err) {
        err.message += `; skipped while waiting for ${pred}: ${skipped.map(show).join(", ") || "nothing"}`;
        throw err;
      }
      if (match(p)) return p;
      skipped.push(p);
    }
  }

  /** Resolves with the close info once the transport is closed; rejects after timeoutMs. */
  waitClosed(timeoutMs = DEFAULT_WAIT_MS) {
    if (this.closed) return Promise.resolve(this.closeInfo);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(
        () => reject(new Error(`transport still open after ${timeoutMs} ms; seen: ${this.seen.map(show).join(", ") || "nothing"}`)),
        timeoutMs,
      );
      this.closeWaiters.push((info) => {
        clearTimeout(timer);
        resolve(info);
      });
    });
  }

  /** Waits `ms` and fails if a packet other than a ping arrived or the transport closed. */
  async expectNothing(ms, { allowPings = true } = {}) {
    const before = this.seen.length;
    await new Promise((r) => setTimeout(r, ms));
    const extra = this.seen.slice(before).filter((p) => !(allowPings && p === "2"));
    if (extra.length) throw new Error(`unexpected packets: ${extra.map(show).join(", ")}`);
    if (this.closed) throw new Error(`transport closed unexpectedly (${JSON.stringify(this.closeInfo)})`);
  }
}

/**
 * WebSocket transport. `autoPong` answers each server ping "2" with "3" so that a case is
 * not cut short by the heartbeat (the heartbeat cases turn it off).
 */
export class WsTransport extends PacketQueue {
  static async open(base, { sid, autoPong = true, timeoutMs = DEFAULT_WAIT_MS, headers } = {}) {
    const t = new WsTransport(eioUrl(base, { EIO: 4, transport: "websocket", sid }, { ws: true }), autoPong, headers);
    await t.opened(timeoutMs);
    return t;
  }

  constructor(url, autoPong, headers) {
    super();
    this.name = "websocket";
    this.autoPong = autoPong;
    this.ws = new WebSocket(url, { headers });
    this.ws.on("message", (data, isBinary) => {
      const p = isBinary ? Buffer.from(data) : data.toString("utf8");
      if (this.autoPong && p === "2") this.send("3");
      this.push(p);
    });
    this.ws.on("close", (code, reason) => this.markClosed({ code, reason: reason.toString() }));
    this.ws.on("error", (err) => {
      this.error = err;
    });
  }

  opened(timeoutMs) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`websocket not open within ${timeoutMs} ms`)), timeoutMs);
      this.ws.once("open", () => {
        clearTimeout(timer);
        resolve();
      });
      this.ws.once("unexpected-response", (_req, res) => {
        clearTimeout(timer);
        reject(new Error(`websocket upgrade refused with HTTP ${res.statusCode}`));
      });
      this.ws.once("error", (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }

  send(p) {
    if (this.ws.readyState !== WebSocket.OPEN) return;
    this.ws.send(p, { binary: Buffer.isBuffer(p) });
  }

  sendMany(packets) {
    for (const p of packets) this.send(p);
  }

  close() {
    try {
      this.ws.terminate();
    } catch {
      /* already gone */
    }
  }
}

/**
 * Polling transport: a background loop keeps one GET open (as the protocol requires, never
 * two) and feeds the queue; send() POSTs. The session counts as closed when the server sends
 * a close packet "1" or answers a request with an HTTP error (unknown session).
 */
export class PollingTransport extends PacketQueue {
  static async open(base, { autoPong = true, timeoutMs = DEFAULT_WAIT_MS, query = {}, headers } = {}) {
    const res = await http(eioUrl(base, { EIO: 4, transport: "polling", ...query }), { timeoutMs, headers });
    if (res.status !== 200) throw new Error(`polling handshake failed: HTTP ${res.status} ${res.body}`);
    const packets = decodePayload(res.body);
    const t = new PollingTransport(base, parseOpen(packets[0]).sid, autoPong, headers);
    for (const p of packets) t.push(p);
    t.startLoop();
    return t;
  }

  constructor(base, sid, autoPong, headers) {
    super();
    this.name = "polling";
    this.base = base;
    this.sid = sid;
    this.autoPong = autoPong;
    this.headers = headers;
    this.stopped = false;
    this.pauseOnNoop = false;
    this.paused = false;
    this.controller = new AbortController();
  }

  url() {
    return eioUrl(this.base, { EIO: 4, transport: "polling", sid: this.sid });
  }

  startLoop() {
    this.loop = (async () => {
      while (!this.stopped && !this.closed) {
        let res;
        try {
          res = await fetch(this.url(), { signal: this.controller.signal, headers: this.headers });
        } catch (err) {
          if (!this.stopped) this.markClosed({ error: String(err) });
          return;
        }
        const body = await res.text().catch(() => "");
        if (res.status !== 200) {
          this.markClosed({ status: res.status, body });
          return;
        }
        let paused = false;
        for (const p of decodePayload(body)) {
          if (this.autoPong && p === "2") this.send("3");
          this.push(p);
          if (p === "1") {
            this.markClosed({ closePacket: true });
            return;
          }
          // During an upgrade the server releases the pending GET with a noop; a client
          // that is switching transports stops polling then.
          if (p === "6" && this.pauseOnNoop) paused = true;
        }
        if (paused) {
          this.paused = true;
          return;
        }
      }
    })();
  }

  /** POSTs packets; resolves {status, body}. A failed POST marks the session closed. */
  async post(packets) {
    const res = await http(this.url(), {
      method: "POST",
      body: encodePayload(packets),
      headers: { "content-type": "text/plain;charset=UTF-8", ...this.headers },
    });
    if (res.status !== 200) this.markClosed({ status: res.status, body: res.body, onPost: true });
    return res;
  }

  send(p) {
    this.post([p]).catch(() => {});
  }

  sendMany(packets) {
    this.post(packets).catch(() => {});
  }

  close() {
    this.stopped = true;
    this.controller.abort();
  }
}

/** Opens a transport by name ("polling" or "websocket") and reads its open packet. */
export async function openTransport(name, base, opts = {}) {
  const t = name === "polling" ? await PollingTransport.open(base, opts) : await WsTransport.open(base, opts);
  const open = parseOpen(await t.next());
  t.handshake = open;
  return t;
}

/** Socket.IO packet helpers over an Engine.IO message ("4" prefix). */
export function nsPrefix(nsp) {
  return nsp === "/" ? "" : `${nsp},`;
}

/**
 * Connects a raw transport to a namespace: sends CONNECT (with `auth` if given) and waits for
 * the server's CONNECT with a sid. Returns that Socket.IO sid.
 */
export async function sioConnect(t, { nsp = "/", auth, timeoutMs = DEFAULT_WAIT_MS } = {}) {
  t.send(`40${nsPrefix(nsp)}${auth === undefined ? "" : JSON.stringify(auth)}`);
  const reply = await t.waitFor((p) => typeof p === "string" && p.startsWith(`40${nsPrefix(nsp)}`) || typeof p === "string" && p.startsWith(`44${nsPrefix(nsp)}`), timeoutMs);
  if (reply.startsWith("44")) throw new Error(`connect refused: ${reply}`);
  return JSON.parse(reply.slice(2 + nsPrefix(nsp).length)).sid;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
