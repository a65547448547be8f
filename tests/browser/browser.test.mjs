// Browser end-to-end: Debian's Chromium, driven by playwright-core, loads a test page served
// by this test with the stock socket.io-client bundle from npm, and talks to the real bridge
// (JWT mode) with a real gRPC backend on the Events stream. Every case runs three times, with
// the stock client's transports ["websocket"], ["polling"] and the default (polling, then
// upgrade to websocket); the last case checks that the three variants saw the same results.
// A screenshot of the page per variant goes to tests/artifacts/.
import { test, describe, before, after } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { startBridge, JWT_SETTINGS, JWT_SECRET, API_KEY, repoRoot } from "../conformance/lib/bridge.mjs";
import { Backend, payloadArgs } from "../conformance/lib/backend.mjs";
import { signJwt } from "../conformance/lib/jwt.mjs";

const here = path.dirname(fileURLToPath(import.meta.url));
const ARTIFACTS = process.env.ARTIFACTS_DIR || path.join(repoRoot, "tests/artifacts");
const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const WAIT = 10000;

const VARIANTS = [
  { label: "websocket", transports: ["websocket"], connectTransport: "websocket", finalTransport: "websocket" },
  { label: "polling", transports: ["polling"], connectTransport: "polling", finalTransport: "polling" },
  { label: "default", transports: undefined, connectTransport: "polling", finalTransport: "websocket" },
];

const BRIDGE_SETTINGS = {
  ...JWT_SETTINGS,
  "socketio.namespaces": ["/", "/custom"],
  "socketio.ack_timeout_ms": 2000,
  "shutdown.grace_period_ms": 2000,
};

/** The tiny static server for the page and the socket.io-client bundle. */
function startStatic() {
  const files = {
    "/": [path.join(here, "page/index.html"), "text/html; charset=utf-8"],
    "/page.js": [path.join(here, "page/page.js"), "text/javascript; charset=utf-8"],
    "/socket.io.min.js": [path.join(here, "node_modules/socket.io-client/dist/socket.io.min.js"), "text/javascript; charset=utf-8"],
  };
  const server = http.createServer((req, res) => {
    const entry = files[new URL(req.url, "http://x").pathname];
    if (!entry) {
      res.writeHead(404).end();
      return;
    }
    res.writeHead(200, { "content-type": entry[1], "cache-control": "no-store" });
    fs.createReadStream(entry[0]).pipe(res);
  });
  return new Promise((resolve) =>
    server.listen(0, "127.0.0.1", () => resolve({ server, url: `http://127.0.0.1:${server.address().port}/` })),
  );
}

/** Waits until the page recorded at least `n` records of `type` for socket `name`; returns them. */
async function waitRecords(page, name, type, n = 1, timeout = WAIT) {
  try {
    await page.waitForFunction(
      ([nm, ty, k]) => window.T.records.filter((r) => r.name === nm && r.type === ty).length >= k,
      [name, type, n],
      { timeout },
    );
  } catch (err) {
    const records = await page.evaluate(() => window.T.records);
    throw new Error(`page did not record ${n} × ${type} for ${name} within ${timeout} ms; records: ${JSON.stringify(records)}`);
  }
  return page.evaluate(([nm, ty]) => window.T.records.filter((r) => r.name === nm && r.type === ty), [name, type]);
}

async function waitEvent(page, name, event, timeout = WAIT) {
  await page.waitForFunction(
    ([nm, ev]) => window.T.records.some((r) => r.name === nm && r.type === "event" && r.data.event === ev),
    [name, event],
    { timeout },
  ).catch(async () => {
    throw new Error(`no ${event} event on ${name}; records: ${JSON.stringify(await page.evaluate(() => window.T.records))}`);
  });
  const recs = await page.evaluate(([nm, ev]) => window.T.records.filter((r) => r.name === nm && r.type === "event" && r.data.event === ev), [name, event]);
  return recs[recs.length - 1].data.args;
}

const bin = (bytes) => ({ $binary: bytes });

let staticServer;
let browser;
let bridge;
let backend;
const results = {}; // variant label -> what the page observed, compared at the end

async function startBridgeAndBackend(addrs = {}) {
  bridge = await startBridge({ settings: BRIDGE_SETTINGS, httpListen: addrs.http, grpcListen: addrs.grpc });
  backend = await Backend.start(bridge.grpc, { apiKey: API_KEY, group: "browser-e2e", echoAuth: false });
}

before(async () => {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  staticServer = await startStatic();
  await startBridgeAndBackend();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: 30000,
  });
});

after(async () => {
  await browser?.close().catch(() => {});
  backend?.close();
  await bridge?.stop();
  await new Promise((r) => (staticServer ? staticServer.server.close(() => r()) : r()));
});

for (const variant of VARIANTS) {
  describe(`browser, transports ${variant.label}`, () => {
    const user = `browser-${variant.label}`;
    const r = (results[variant.label] = {});
    let context;
    let page;
    const connect = (name, extra = {}) =>
      page.evaluate(
        ([nm, url, opts]) => window.T.connect(nm, url, opts),
        [
          name,
          bridge.url + (extra.nsp || ""),
          {
            ...(variant.transports ? { transports: variant.transports } : {}),
            reconnectionDelay: 200,
            reconnectionDelayMax: 500,
            randomizationFactor: 0,
            ...extra.options,
          },
        ],
      );

    before(async () => {
      context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
      page = await context.newPage();
      page.on("pageerror", (err) => process.stderr.write(`[page error] ${err}\n`));
      await page.goto(staticServer.url, { timeout: WAIT });
      await page.evaluate((label) => window.T.setVariant(label), variant.label);
    });

    after(async () => {
      await page?.screenshot({ path: path.join(ARTIFACTS, `browser-${variant.label}.png`), fullPage: true }).catch((e) => process.stderr.write(`screenshot failed: ${e}\n`));
      await context?.close();
    });

    test(`[${variant.label}] connects with a JWT; the backend sees the token's sub as user id and no token in the auth`, async () => {
      const token = signJwt({ sub: user }, JWT_SECRET);
      await connect("main", { options: { auth: { token } } });
      const [rec] = await waitRecords(page, "main", "connect");
      assert.ok(rec.data.id, "socket has an id");
      const [open] = await waitRecords(page, "main", "engine-open");
      assert.equal(open.data.transport, variant.connectTransport, "the connection opened on the expected transport");
      const conn = await backend.waitFor((x) => x.kind === "socket_connected" && x.value.user_id === user, WAIT);
      assert.equal(conn.value.namespace, "/");
      // With the default transports the upgrade may finish before the namespace connect.
      const allowed = variant.label === "default" ? ["polling", "websocket"] : [variant.connectTransport];
      assert.ok(allowed.includes(conn.value.handshake.transport), `handshake transport ${conn.value.handshake.transport}`);
      assert.deepEqual(JSON.parse(conn.value.handshake.auth_json || "{}"), {}, "the token is not forwarded");
      assert.match(conn.value.handshake.user_agent, /Chrome/);
      r.connect = { userIdIsSub: conn.value.user_id === user, namespace: conn.value.namespace, auth: conn.value.handshake.auth_json };
    });

    test(`[${variant.label}] receives a push the backend sends to its user`, async () => {
      const res = await backend.push({ target: { user_id: user }, event: "news", payload: { args_json: '[{"text":"hello"},42,[true,null]]' } });
      assert.equal(res.sockets_reached, 1);
      const args = await waitEvent(page, "main", "news");
      assert.deepEqual(args, [{ text: "hello" }, 42, [true, null]]);
      r.push = args;
    });

    test(`[${variant.label}] an emit with an ack callback is answered by the backend`, async () => {
      const reply = await page.evaluate(() => window.T.emitWithAck("main", "with-ack", [{ a: 1 }, "two"], 5000));
      assert.deepEqual(reply, { args: [{ a: 1 }, "two"] });
      const ev = await backend.waitFor((x) => x.kind === "client_event" && x.value.event === "with-ack" && x.value.user_id === user, WAIT);
      assert.equal(ev.value.wants_ack, true);
      r.ack = reply;
    });

    test(`[${variant.label}] binary travels in both directions (emit with ack echoed, push with an attachment)`, async () => {
      const sent = [bin([1, 2, 3]), { nested: bin([0, 255]) }, "text"];
      const reply = await page.evaluate((args) => window.T.emitWithAck("main", "binary-echo", args, 5000), sent);
      assert.deepEqual(reply, { args: sent }, "the backend's echo brings the same bytes back");
      const ev = await backend.waitFor((x) => x.kind === "client_event" && x.value.event === "binary-echo" && x.value.user_id === user, WAIT);
      assert.deepEqual(ev.value.payload.attachments.map((b) => [...Buffer.from(b)]), [[1, 2, 3], [0, 255]]);
      await backend.push({
        target: { user_id: user },
        event: "file",
        payload: { args_json: '["report.bin",{"_placeholder":true,"num":0}]', attachments: [Buffer.from([9, 8, 7, 0])] },
      });
      const args = await waitEvent(page, "main", "file");
      assert.deepEqual(args, ["report.bin", bin([9, 8, 7, 0])]);
      r.binary = { reply, pushed: args };
    });

    test(`[${variant.label}] transport: ${variant.label === "default" ? "upgrades from polling to websocket" : `stays ${variant.finalTransport}`} and keeps working`, async () => {
      await page.waitForFunction((want) => window.T.transport("main") === want, variant.finalTransport, { timeout: WAIT });
      const upgrades = await page.evaluate(() => window.T.records.filter((x) => x.type === "upgrade"));
      if (variant.label === "default") assert.deepEqual(upgrades.map((u) => u.data.transport), ["websocket"]);
      else {
        // A quiet window: no upgrade may start within it.
        await new Promise((res) => setTimeout(res, 500));
        assert.deepEqual(upgrades, [], "no upgrade");
        assert.equal(await page.evaluate(() => window.T.transport("main")), variant.finalTransport);
      }
      const reply = await page.evaluate(() => window.T.emitWithAck("main", "after-upgrade", ["still here"], 5000));
      assert.deepEqual(reply, { args: ["still here"] });
      r.transport = reply;
    });

    test(`[${variant.label}] reconnects automatically after the bridge restarts and receives pushes again`, async () => {
      const addrs = { http: bridge.http, grpc: bridge.grpc };
      backend.close();
      const stopped = await bridge.stop();
      assert.equal(stopped.code, 0, `bridge exited cleanly on SIGTERM: ${JSON.stringify(stopped)}`);
      const [disc] = await waitRecords(page, "main", "disconnect", 1);
      assert.equal(disc.data.reason, "transport close");
      await startBridgeAndBackend(addrs);
      await waitRecords(page, "main", "connect", 2, 15000);
      await backend.waitFor((x) => x.kind === "socket_connected" && x.value.user_id === user, WAIT);
      const res = await backend.push({ target: { user_id: user }, event: "welcome-back", payload: { args_json: '["again"]' } });
      assert.equal(res.sockets_reached, 1);
      assert.deepEqual(await waitEvent(page, "main", "welcome-back"), ["again"]);
      r.reconnect = { disconnectReason: disc.data.reason, pushed: ["again"] };
    });

    test(`[${variant.label}] a bad token shows connect_error on the page`, async () => {
      await connect("bad", { options: { auth: { token: "not-a-jwt" }, reconnection: false, forceNew: true } });
      const [err] = await waitRecords(page, "bad", "connect_error");
      assert.equal(err.data.message, "token is malformed");
      const forged = signJwt({ sub: "mallory" }, "a-different-secret-of-32-bytes-or-more!");
      await connect("forged", { options: { auth: { token: forged }, reconnection: false, forceNew: true } });
      const [err2] = await waitRecords(page, "forged", "connect_error");
      assert.equal(err2.data.message, "token signature is invalid");
      const shown = await page.textContent("#error");
      assert.match(shown, /connect_error: token signature is invalid/);
      r.connectError = [err.data.message, err2.data.message];
    });

    test(`[${variant.label}] a second namespace on the same connection can be left without breaking the first`, async () => {
      const token = signJwt({ sub: user }, JWT_SECRET);
      await connect("custom", { nsp: "/custom", options: { auth: { token } } });
      await waitRecords(page, "custom", "connect");
      const onCustom = await page.evaluate(() => window.T.emitWithAck("custom", "with-ack", ["on custom"], 3000));
      assert.deepEqual(onCustom, { args: ["on custom"] });
      const ev = await backend.waitFor((x) => x.kind === "client_event" && x.value.event === "with-ack" && x.value.namespace === "/custom" && x.value.user_id === user, WAIT);
      assert.ok(ev);
      await page.evaluate(() => window.T.close("custom"));
      await backend.waitFor((x) => x.kind === "socket_disconnected" && x.value.namespace === "/custom" && x.value.user_id === user, WAIT);
      const onMain = await page.evaluate(() => window.T.emitWithAck("main", "with-ack", ["main after leaving custom"], 3000));
      assert.deepEqual(onMain, { args: ["main after leaving custom"] });
      r.namespaces = [onCustom, onMain];
    });
  });
}

test("the three transport variants saw identical results", () => {
  const [first, ...rest] = VARIANTS.map((v) => results[v.label]);
  for (const [i, other] of rest.entries()) {
    assert.deepEqual(other, first, `${VARIANTS[i + 1].label} differs from ${VARIANTS[0].label}`);
  }
  assert.ok(first.connect && first.push && first.ack && first.binary && first.transport && first.reconnect && first.connectError, `every case recorded a result: ${JSON.stringify(first)}`);
});
