// Self-test for driver.mjs: runs a stock socket.io 4.8 server on 127.0.0.1,
// spawns the driver, and drives every command end to end.
// Usage: node tests/js/selftest.mjs   (exit code 0 = all passed)
import { createServer } from "node:http";
import { spawn } from "node:child_process";
import { EventEmitter, once } from "node:events";
import { fileURLToPath } from "node:url";
import readline from "node:readline";
import assert from "node:assert/strict";
import { Server } from "socket.io";

const STEP_TIMEOUT_MS = 5000; // any single wait
const TEST_TIMEOUT_MS = 15000; // one test
const TOTAL_TIMEOUT_MS = 90000; // the whole run; a hard stop so it can never hang
setTimeout(() => {
  console.error("selftest: overall timeout, giving up");
  process.exit(2);
}, TOTAL_TIMEOUT_MS).unref();

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
const sleep = (ms) => new Promise((r) => setTimeout(r, ms));
const b64 = (bytes) => Buffer.from(bytes).toString("base64");

// ---- server under which the driver's clients run ----
const httpServer = createServer();
const ioServer = new Server(httpServer);
const serverEvents = new EventEmitter(); // "conn:<auth.name>", "disconnect:<auth.name>"
const serverSockets = new Map(); // auth.name -> latest server-side socket
const manyReceived = []; // args of every "many" event, in arrival order
const notes = []; // args of every "note" event

ioServer.on("connection", (s) => {
  const name = s.handshake.auth?.name ?? "anonymous";
  serverSockets.set(name, s);
  s.on("echo", (...args) => {
    const cb = args.pop();
    cb(...args);
  });
  s.on("many", (i, cb) => {
    manyReceived.push(i);
    if (typeof cb === "function") cb(i * 2);
  });
  s.on("note", (...args) => notes.push(args));
  // "silent" has no handler: its ack is never answered.
  s.on("disconnect", (reason) => serverEvents.emit(`disconnect:${name}`, reason));
  serverEvents.emit(`conn:${name}`, s);
});

// A namespace whose middleware rejects every connection, with extra data.
ioServer.of("/reject").use((socket, next) => {
  const err = new Error("not allowed");
  err.data = { code: 42, token: socket.handshake.auth?.token ?? null };
  next(err);
});

httpServer.listen(0, "127.0.0.1");
await withTimeout(once(httpServer, "listening"), STEP_TIMEOUT_MS, "server listen");
const url = `http://127.0.0.1:${httpServer.address().port}`;

const serverConn = (name) =>
  withTimeout(once(serverEvents, `conn:${name}`).then(([s]) => s), STEP_TIMEOUT_MS, `server connection ${name}`);
const serverDisconnect = (name) =>
  withTimeout(once(serverEvents, `disconnect:${name}`).then(([r]) => r), STEP_TIMEOUT_MS, `server disconnect ${name}`);

// ---- the driver process ----
const driverPath = fileURLToPath(new URL("./driver.mjs", import.meta.url));
const driver = spawn(process.execPath, [driverPath], { stdio: ["pipe", "pipe", "inherit"] });
const driverExit = once(driver, "exit");

const reports = []; // every report, in order
let waiters = []; // { pred, resolve }
let nonJsonLines = 0;
readline.createInterface({ input: driver.stdout }).on("line", (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    nonJsonLines++;
    console.error(`selftest: driver printed a non-JSON line: ${line}`);
    return;
  }
  reports.push(msg);
  waiters = waiters.filter((w) => {
    if (!w.pred(msg)) return true;
    w.resolve(msg);
    return false;
  });
});

function send(cmd) {
  driver.stdin.write((typeof cmd === "string" ? cmd : JSON.stringify(cmd)) + "\n");
}

// Resolves with the next report (from now on) matching `match` (an object
// whose fields must all be deep-equal, or a predicate).
function expect(match, ms = STEP_TIMEOUT_MS) {
  const pred =
    typeof match === "function"
      ? match
      : (m) => Object.entries(match).every(([k, v]) => JSON.stringify(m[k]) === JSON.stringify(v));
  const p = new Promise((resolve) => waiters.push({ pred, resolve }));
  return withTimeout(p, ms, `report ${typeof match === "function" ? match.toString() : JSON.stringify(match)}`);
}

// Sends a command and waits for a report; the waiter is registered first so
// a fast report can not be missed.
function sendAndExpect(cmd, match, ms) {
  const p = expect(match, ms);
  send(cmd);
  return p;
}

// ---- tests ----
const tests = [];
const test = (name, fn) => tests.push({ name, fn });

test("connect over websocket with auth", async () => {
  const conn = serverConn("ws");
  const r = await sendAndExpect(
    { cmd: "connect", id: "ws", url, namespace: "/", auth: { name: "ws", token: "t1" }, transports: ["websocket"] },
    { type: "connect", id: "ws" },
  );
  const s = await conn;
  assert.equal(r.transport, "websocket");
  assert.equal(r.sid, s.id);
  assert.deepEqual(s.handshake.auth, { name: "ws", token: "t1" });
});

test("connect over polling with auth", async () => {
  const conn = serverConn("poll");
  const r = await sendAndExpect(
    { cmd: "connect", id: "poll", url, auth: { name: "poll" }, transports: ["polling"] },
    { type: "connect", id: "poll" },
  );
  const s = await conn;
  assert.equal(r.transport, "polling");
  assert.equal(r.sid, s.id);
  assert.equal(s.conn.transport.name, "polling");
});

test("connect with default transports starts on polling", async () => {
  const conn = serverConn("dflt");
  const r = await sendAndExpect({ cmd: "connect", id: "dflt", url, auth: { name: "dflt" } }, { type: "connect", id: "dflt" });
  const s = await conn;
  // Whether the upgrade finished before the CONNECT packet came back is a race.
  assert.ok(["polling", "websocket"].includes(r.transport), r.transport);
  assert.equal(s.handshake.query.transport, "polling");
  for (let i = 0; s.conn.transport.name !== "websocket" && i < 100; i++) await sleep(20);
  assert.equal(s.conn.transport.name, "websocket", "upgraded to websocket");
});

for (const id of ["ws", "poll"]) {
  test(`server event with ack answered by on_ack_reply (binary, ${id})`, async () => {
    send({ cmd: "on_ack_reply", id, event: "ask", reply: ["ok", { $binary: b64([1, 2, 3]) }, { n: { $binary: "" } }], delay_ms: 50 });
    const s = serverSockets.get(id);
    const ev = expect({ type: "event", id, event: "ask" });
    const started = Date.now();
    // emitWithAck() would only give the first ack argument; use a callback.
    const ack = new Promise((resolve, reject) =>
      s.timeout(STEP_TIMEOUT_MS).emit("ask", 1, Buffer.from([9, 8]), { deep: [Buffer.from("hi")] }, (err, ...res) =>
        err ? reject(err) : resolve(res),
      ),
    );
    const r = await ev;
    assert.deepEqual(r.args, [1, { $binary: b64([9, 8]) }, { deep: [{ $binary: b64(Buffer.from("hi")) }] }]);
    assert.equal(r.has_ack, true);
    const [a, b, c] = await ack;
    assert.ok(Date.now() - started >= 45, "delay_ms respected");
    assert.equal(a, "ok");
    assert.ok(Buffer.isBuffer(b) && b.equals(Buffer.from([1, 2, 3])), `binary reply, got ${b}`);
    assert.ok(Buffer.isBuffer(c.n) && c.n.length === 0, "nested empty binary reply");
  });
}

test("server event without ack, and ack left unanswered without a rule", async () => {
  const s = serverSockets.get("ws");
  let ev = expect({ type: "event", id: "ws", event: "plain" });
  s.emit("plain", "x", { y: null });
  let r = await ev;
  assert.deepEqual(r.args, ["x", { y: null }]);
  assert.equal(r.has_ack, false);

  ev = expect({ type: "event", id: "ws", event: "unruled" });
  await assert.rejects(s.timeout(300).emitWithAck("unruled", 5), /timed out/);
  r = await ev;
  assert.deepEqual(r.args, [5]);
  assert.equal(r.has_ack, true);

  // reply: null removes a rule again
  send({ cmd: "on_ack_reply", id: "ws", event: "ask", reply: null });
  ev = expect({ type: "event", id: "ws", event: "ask" });
  await assert.rejects(s.timeout(300).emitWithAck("ask"), /timed out/);
  await ev;
});

for (const id of ["ws", "poll"]) {
  test(`client emit with ack and binary args (${id})`, async () => {
    const args = ["hi", { $binary: b64([0, 255]) }, { nested: [{ $binary: b64([7]) }], n: 3 }];
    const r = await sendAndExpect({ cmd: "emit", id, event: "echo", args, req: 7, ack: true }, { type: "ack", id, req: 7 });
    assert.deepEqual(r.args, args);
  });
}

test("client emit without ack reports emitted", async () => {
  const before = notes.length;
  const p = expect({ type: "emitted", id: "ws", req: 8 });
  send({ cmd: "emit", id: "ws", event: "note", args: [{ $binary: b64([5]) }, "z"], req: 8, ack: false });
  await p;
  for (let i = 0; notes.length === before && i < 100; i++) await sleep(20);
  const [buf, z] = notes.at(-1);
  assert.ok(Buffer.isBuffer(buf) && buf.equals(Buffer.from([5])));
  assert.equal(z, "z");
  assert.ok(!reports.some((m) => m.type === "emitted" && m.req === 7), "no emitted report for ack emits");
});

test("client emit with timeout_ms reports the timeout error", async () => {
  const r = await sendAndExpect(
    { cmd: "emit", id: "ws", event: "silent", args: [], req: 9, ack: true, timeout_ms: 200 },
    { type: "ack", id: "ws", req: 9 },
  );
  assert.equal(r.error, "operation has timed out");
  const ok = await sendAndExpect(
    { cmd: "emit", id: "ws", event: "echo", args: [1], req: 10, ack: true, timeout_ms: 2000 },
    { type: "ack", id: "ws", req: 10 },
  );
  assert.deepEqual(ok.args, [1]);
});

test("emit_many keeps order (1000, no ack)", async () => {
  manyReceived.length = 0;
  await sendAndExpect({ cmd: "emit_many", id: "ws", event: "many", count: 1000, ack: false }, { type: "emitted_many", id: "ws", count: 1000 });
  for (let i = 0; manyReceived.length < 1000 && i < 250; i++) await sleep(20);
  assert.deepEqual(manyReceived, Array.from({ length: 1000 }, (_, i) => i));
});

test("emit_many with acks (50, over polling)", async () => {
  manyReceived.length = 0;
  const last = expect({ type: "ack", id: "poll", req: 49 });
  send({ cmd: "emit_many", id: "poll", event: "many", count: 50, ack: true });
  await last;
  assert.deepEqual(manyReceived, Array.from({ length: 50 }, (_, i) => i));
  const acks = reports.filter((m) => m.type === "ack" && m.id === "poll" && m.args?.length === 1 && typeof m.args[0] === "number");
  assert.deepEqual(acks.slice(-50).map((m) => [m.req, m.args[0]]), Array.from({ length: 50 }, (_, i) => [i, i * 2]));
  assert.ok(reports.some((m) => m.type === "emitted_many" && m.id === "poll" && m.count === 50));
});

test("raw_packets, re-hooked after a reconnect", async () => {
  const isOpenPacket = (m) => m.type === "packet" && m.id === "raw" && m.packet_type === "open";
  const conn = serverConn("raw");
  const open1 = expect(isOpenPacket);
  const connectPacket = expect((m) => m.type === "packet" && m.id === "raw" && m.packet_type === "message" && m.data.startsWith("0"));
  send({
    cmd: "connect", id: "raw", url, auth: { name: "raw" }, transports: ["websocket"],
    raw_packets: true, reconnection: true, reconnection_delay_ms: 100,
  });
  const s = await conn;
  assert.ok(JSON.parse((await open1).data).sid, "engine.io handshake packet");
  assert.equal(JSON.parse((await connectPacket).data.slice(1)).sid, s.id);

  let p = expect((m) => m.type === "packet" && m.id === "raw" && m.data === '2["hello",1]');
  s.emit("hello", 1);
  await p;

  // A binary event is a text packet with placeholders plus a binary packet.
  const header = expect((m) => m.type === "packet" && m.id === "raw" && typeof m.data === "string" && m.data.startsWith("51-"));
  const attachment = expect((m) => m.type === "packet" && m.id === "raw" && m.data?.$binary === b64([1, 2]));
  s.emit("bin", Buffer.from([1, 2]));
  assert.equal((await header).data, '51-["bin",{"_placeholder":true,"num":0}]');
  await attachment;

  // Kill the transport from the server side: the client reconnects with a new
  // engine, whose packets must be reported too.
  const disc = expect({ type: "disconnect", id: "raw", reason: "transport close" });
  const open2 = expect(isOpenPacket);
  const reconnected = expect({ type: "connect", id: "raw" });
  const conn2 = serverConn("raw");
  s.conn.close();
  await disc;
  await open2;
  const r = await reconnected;
  assert.equal(r.sid, (await conn2).id);
  p = expect((m) => m.type === "packet" && m.id === "raw" && m.data === '2["again"]');
  (await serverSockets.get("raw")).emit("again");
  await p;
});

test("disconnect, connect_again, server-side disconnect", async () => {
  const sdisc = serverDisconnect("poll");
  await sendAndExpect({ cmd: "disconnect", id: "poll" }, { type: "disconnect", id: "poll", reason: "io client disconnect" });
  assert.equal(await sdisc, "client namespace disconnect");

  const conn = serverConn("poll");
  const r = await sendAndExpect({ cmd: "connect_again", id: "poll" }, { type: "connect", id: "poll" });
  const s = await conn;
  assert.equal(r.sid, s.id);

  const d = expect({ type: "disconnect", id: "poll", reason: "io server disconnect" });
  s.disconnect(true);
  await d;
});

test("connect_error from a rejecting middleware", async () => {
  const r = await sendAndExpect(
    { cmd: "connect", id: "rej", url, namespace: "/reject", auth: { token: "bad" }, transports: ["websocket"] },
    { type: "connect_error", id: "rej" },
  );
  assert.equal(r.message, "not allowed");
  assert.deepEqual(r.data, { code: 42, token: "bad" });
});

test("connect_error when nothing listens", async () => {
  // Bind then close a port so that the address is (very likely) refused.
  const tmp = createServer().listen(0, "127.0.0.1");
  await once(tmp, "listening");
  const port = tmp.address().port;
  await new Promise((r) => tmp.close(r));
  const r = await sendAndExpect({ cmd: "connect", id: "dead", url: `http://127.0.0.1:${port}` }, { type: "connect_error", id: "dead" });
  assert.equal(typeof r.message, "string");
});

test("bad commands report errors and the driver keeps running", async () => {
  await sendAndExpect("{not json", (m) => m.type === "error" && /bad JSON/.test(m.message));
  await sendAndExpect({ cmd: "frobnicate" }, (m) => m.type === "error" && /unknown command/.test(m.message));
  await sendAndExpect("[1,2]", (m) => m.type === "error");
  await sendAndExpect({ cmd: "emit", id: "nope", event: "x", args: [] }, (m) => m.type === "error" && /unknown socket id/.test(m.message));
  await sendAndExpect({ cmd: "connect", id: "ws", url }, (m) => m.type === "error" && /already exists/.test(m.message));
  await sendAndExpect({ cmd: "on_ack_reply", id: "ws", event: "e", reply: 5 }, (m) => m.type === "error");
  const r = await sendAndExpect({ cmd: "emit", id: "ws", event: "echo", args: ["still alive"], req: 11, ack: true }, { type: "ack", id: "ws", req: 11 });
  assert.deepEqual(r.args, ["still alive"]);
});

test("exit closes sockets and exits 0", async () => {
  const sdisc = serverDisconnect("ws");
  send({ cmd: "exit" });
  const [code] = await withTimeout(driverExit, STEP_TIMEOUT_MS, "driver exit");
  assert.equal(code, 0);
  await sdisc;
  assert.ok(reports.some((m) => m.type === "disconnect" && m.id === "ws" && m.reason === "io client disconnect"));
});

// ---- run ----
let passed = 0;
let failed = 0;
for (const { name, fn } of tests) {
  try {
    await withTimeout(fn(), TEST_TIMEOUT_MS, `test "${name}"`);
    passed++;
    console.log(`ok - ${name}`);
  } catch (err) {
    failed++;
    console.log(`not ok - ${name}\n  ${String(err.stack ?? err).split("\n").join("\n  ")}`);
  }
}
if (nonJsonLines > 0) {
  failed++;
  console.log(`not ok - driver stdout had ${nonJsonLines} non-JSON line(s)`);
}
console.log(`${passed} passed, ${failed} failed`);

if (driver.exitCode === null) driver.kill();
ioServer.close();
process.exit(failed === 0 ? 0 : 1);
