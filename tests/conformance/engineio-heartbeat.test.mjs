// Engine.IO v4 heartbeat: the server sends a ping (packet "2") every pingInterval; the
// client answers with a pong ("3") within pingTimeout or the server closes the session.
// Both timings are the ones the server announced in the handshake and come from the
// bridge's config (socketio.ping_interval_ms / ping_timeout_ms).
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget, TRANSPORTS, bridgeBug } from "./lib/harness.mjs";
import { eioUrl, http, sioConnect } from "./lib/eio.mjs";

// Scheduling slack on a loaded 2-core machine. Gaps between pings are the server's own timer
// and get a tighter bound, so a wrong interval (e.g. 500 ms for 300 ms) is caught.
const EARLY = 0.6;
const LATE_MS = 300;
const GAP_EARLY = 0.75;
const GAP_LATE_MS = 150;

forEachTarget("Engine.IO heartbeat", (ctx) => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: the server pings every pingInterval and a client that answers with pong stays connected`, async () => {
      const { pingInterval } = ctx.target.config;
      const t = await ctx.open(transport, { autoPong: true });
      await sioConnect(t); // a namespace, so that the connect timeout does not end the session
      const times = [];
      for (let i = 0; i < 4; i++) {
        await t.waitFor("2", pingInterval + LATE_MS + 500);
        times.push(Date.now());
      }
      for (let i = 1; i < times.length; i++) {
        const gap = times[i] - times[i - 1];
        assert.ok(gap >= pingInterval * GAP_EARLY && gap <= pingInterval + GAP_LATE_MS, `gap between pings ${gap} ms, pingInterval ${pingInterval} ms (all: ${times.map((x) => x - times[0])})`);
      }
      assert.equal(t.closed, false, "still open after four answered pings");
    });

    test(`${transport}: the first ping comes one pingInterval after the handshake, not at once`, bridgeBug(ctx.name, "engineioxide sends the first ping immediately"), async () => {
      const { pingInterval } = ctx.target.config;
      const opened = Date.now();
      const t = await ctx.open(transport, { autoPong: true });
      await t.waitFor("2", pingInterval + LATE_MS + 500);
      const delay = Date.now() - opened;
      assert.ok(delay >= pingInterval * EARLY && delay <= pingInterval + LATE_MS, `first ping after ${delay} ms, pingInterval ${pingInterval} ms`);
    });

    test(`${transport}: a client that does not answer a ping is disconnected pingTimeout later`, async () => {
      const { pingInterval, pingTimeout } = ctx.target.config;
      const t = await ctx.open(transport, { autoPong: false });
      await t.waitFor("2", pingInterval + LATE_MS + 500);
      const pinged = Date.now();
      const info = await t.waitClosed(pingTimeout + LATE_MS + 1000);
      const after = Date.now() - pinged;
      assert.ok(after >= pingTimeout * EARLY && after <= pingTimeout + LATE_MS, `closed ${after} ms after the ping, pingTimeout ${pingTimeout} ms (${JSON.stringify(info)})`);
    });
  }

  test("polling: after a ping timeout the session is gone and its sid gets HTTP 400", async () => {
    const { pingInterval, pingTimeout } = ctx.target.config;
    const t = await ctx.open("polling", { autoPong: false });
    await t.waitClosed(pingInterval + pingTimeout + LATE_MS + 1000);
    const res = await http(eioUrl(ctx.target.url, { EIO: 4, transport: "polling", sid: t.sid }));
    assert.equal(res.status, 400, `GET after timeout: ${res.status} ${res.body}`);
  });
});
