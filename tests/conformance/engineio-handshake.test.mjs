// Engine.IO v4 handshake, over HTTP long-polling and over WebSocket.
// Protocol: GET /socket.io/?EIO=4&transport=polling (or a websocket to the same URL) opens a
// session; the server's first packet is "open" (type 0) with {sid, upgrades, pingInterval,
// pingTimeout, maxPayload}; a missing/unsupported EIO or transport, a handshake that is not a
// GET, or an unknown sid get HTTP 400.
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget } from "./lib/harness.mjs";
import { WsTransport, decodePayload, eioUrl, http, parseOpen } from "./lib/eio.mjs";

const HANDSHAKE_KEYS = ["maxPayload", "pingInterval", "pingTimeout", "sid", "upgrades"];

function assertHandshake(open, config, upgrades) {
  assert.deepEqual(Object.keys(open).sort(), HANDSHAKE_KEYS, "open packet has exactly these fields");
  assert.equal(typeof open.sid, "string");
  assert.ok(open.sid.length > 0, "sid is not empty");
  assert.deepEqual(open.upgrades, upgrades);
  assert.equal(open.pingInterval, config.pingInterval, "pingInterval comes from the server config");
  assert.equal(open.pingTimeout, config.pingTimeout, "pingTimeout comes from the server config");
  assert.equal(open.maxPayload, config.maxPayload, "maxPayload comes from the server config");
}

/**
 * Tries a websocket and says how it went: "refused" when the upgrade is answered with an
 * HTTP 4xx, or when the socket is accepted but closed without ever sending an open packet
 * (how the reference server drops a bad upgrade); "opened" when an open packet arrives.
 */
async function wsOutcome(url) {
  const t = new WsTransport(url, false);
  try {
    await t.opened(3000);
  } catch (err) {
    const m = /HTTP (\d+)/.exec(err.message);
    return m && Number(m[1]) >= 400 && Number(m[1]) < 500 ? "refused" : `error: ${err.message}`;
  }
  try {
    const first = await t.next(2000);
    t.close();
    return `opened, first packet ${JSON.stringify(String(first))}`;
  } catch {
    t.close();
    return t.closed ? "refused" : "accepted and left open without an open packet";
  }
}

forEachTarget("Engine.IO handshake", (ctx) => {
  test("polling: GET without sid answers 200 text/plain with one open packet carrying sid, upgrades [websocket], the configured pingInterval/pingTimeout and maxPayload", async () => {
    const res = await http(eioUrl(ctx.target.url, { EIO: 4, transport: "polling" }));
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") || "", /^text\/plain/);
    const packets = decodePayload(res.body);
    assert.equal(packets.length, 1, `one packet, got ${res.body}`);
    assertHandshake(parseOpen(packets[0]), ctx.target.config, ["websocket"]);
  });

  test("websocket: the first frame is an open packet with sid, upgrades [], the configured pingInterval/pingTimeout and maxPayload", async () => {
    const t = await ctx.open("websocket");
    assertHandshake(t.handshake, ctx.target.config, []);
  });

  test("every handshake gets a new sid", async () => {
    const sids = new Set();
    for (let i = 0; i < 3; i++) {
      sids.add((await ctx.open("polling")).handshake.sid);
      sids.add((await ctx.open("websocket")).handshake.sid);
    }
    assert.equal(sids.size, 6);
  });

  test("polling: a missing or unsupported EIO version is refused with HTTP 400", async () => {
    for (const query of [{ transport: "polling" }, { EIO: "abc", transport: "polling" }, { EIO: 3, transport: "polling" }]) {
      const res = await http(eioUrl(ctx.target.url, query));
      assert.equal(res.status, 400, `query ${JSON.stringify(query)} got ${res.status} ${res.body}`);
    }
  });

  test("polling: a missing or unknown transport is refused with HTTP 400", async () => {
    for (const query of [{ EIO: 4 }, { EIO: 4, transport: "abc" }]) {
      const res = await http(eioUrl(ctx.target.url, query));
      assert.equal(res.status, 400, `query ${JSON.stringify(query)} got ${res.status} ${res.body}`);
    }
  });

  test("websocket: an upgrade with a missing or unsupported EIO, or an unknown transport, is refused", async () => {
    for (const query of [{ transport: "websocket" }, { EIO: "abc", transport: "websocket" }, { EIO: 4, transport: "abc" }]) {
      const outcome = await wsOutcome(eioUrl(ctx.target.url, query, { ws: true }));
      assert.equal(outcome, "refused", `query ${JSON.stringify(query)}: ${outcome}`);
    }
  });

  test("polling: a handshake request that is not a GET (POST or PUT without sid) is refused with HTTP 400", async () => {
    for (const method of ["POST", "PUT"]) {
      const res = await http(eioUrl(ctx.target.url, { EIO: 4, transport: "polling" }), { method, body: "40" });
      assert.equal(res.status, 400, `${method} got ${res.status} ${res.body}`);
    }
  });

  test("polling: GET and POST with an unknown sid are refused with HTTP 400", async () => {
    const url = eioUrl(ctx.target.url, { EIO: 4, transport: "polling", sid: "no-such-session" });
    assert.equal((await http(url)).status, 400);
    assert.equal((await http(url, { method: "POST", body: "40" })).status, 400);
  });

  test("websocket: a websocket naming an unknown sid is refused", async () => {
    const outcome = await wsOutcome(eioUrl(ctx.target.url, { EIO: 4, transport: "websocket", sid: "no-such-session" }, { ws: true }));
    assert.equal(outcome, "refused");
  });
});
