// Engine.IO v4 upgrade from HTTP long-polling to WebSocket, and closing a session.
// Upgrade: with a polling session open, the client opens a websocket naming the same sid,
// sends "2probe", gets "3probe", the server releases the pending GET with a noop ("6"), the
// client sends "5" (upgrade) and from then on everything travels over the websocket; the
// polling transport of that sid is no longer usable and no second websocket can take the
// sid over. Close: a "1" packet from the client ends the session.
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget } from "./lib/harness.mjs";
import { WsTransport, eioUrl, http, sioConnect } from "./lib/eio.mjs";

/** Opens a polling session connected to "/" and upgrades it; returns {polling, ws, sid}. */
async function upgrade(ctx, { sendUpgrade = true } = {}) {
  const polling = await ctx.open("polling");
  polling.pauseOnNoop = true;
  await sioConnect(polling);
  const ws = ctx.track(await WsTransport.open(ctx.target.url, { sid: polling.sid }));
  ws.send("2probe");
  assert.equal(await ws.waitFor((p) => p !== "2", 3000), "3probe", "the probe is answered with 3probe");
  await polling.waitFor("6", 3000);
  if (sendUpgrade) ws.send("5");
  return { polling, ws, sid: polling.sid };
}

forEachTarget("Engine.IO upgrade and close", (ctx) => {
  test("upgrade: 2probe on a websocket with the polling sid is answered 3probe and the pending GET is released with a noop", async () => {
    await upgrade(ctx, { sendUpgrade: false });
  });

  test("upgrade: after 5 the session's Socket.IO traffic (event with ack, server event) flows over the websocket", async () => {
    const { ws, polling } = await upgrade(ctx);
    ws.send('421["upgraded",{"over":"websocket"}]');
    assert.equal(await ws.waitFor(/^43/, 3000), '431[{"over":"websocket"}]');
    ws.send('42["echo","after upgrade"]');
    assert.equal(await ws.waitFor(/^42\["echo-back"/, 3000), '42["echo-back","after upgrade"]');
    // Nothing was delivered to the old transport after the noop.
    const afterNoop = polling.seen.slice(polling.seen.indexOf("6") + 1);
    assert.deepEqual(afterNoop, [], "no packet on the polling transport after the upgrade");
  });

  test("upgrade: after the upgrade a polling GET with the same sid gets HTTP 400", async () => {
    const { ws, sid } = await upgrade(ctx);
    // Let the server handle "5" first (the websocket answers an event once upgraded).
    ws.send('421["sync"]');
    await ws.waitFor(/^431/, 3000);
    const res = await http(eioUrl(ctx.target.url, { EIO: 4, transport: "polling", sid }));
    assert.equal(res.status, 400, `GET after upgrade: ${res.status} ${res.body}`);
  });

  test("upgrade: after the upgrade a second websocket with the same sid is refused", async () => {
    const { ws, sid } = await upgrade(ctx);
    ws.send('421["sync"]');
    await ws.waitFor(/^431/, 3000);
    const second = new WsTransport(eioUrl(ctx.target.url, { EIO: 4, transport: "websocket", sid }, { ws: true }), false);
    ctx.track(second);
    let refused = false;
    try {
      await second.opened(3000);
      second.send("2probe");
      await second.waitClosed(3000);
      refused = !second.seen.includes("3probe");
    } catch {
      refused = true;
    }
    assert.ok(refused, `second websocket was answered: ${second.seen.join(", ")}`);
    // The first websocket is unaffected.
    ws.send('422["still-here"]');
    assert.equal(await ws.waitFor(/^432/, 3000), '432[]');
  });

  test("close: closing the websocket ends the session and its sid gets HTTP 400 afterwards", async () => {
    const t = await ctx.open("websocket");
    await sioConnect(t);
    t.ws.close(1000);
    await t.waitClosed(2000);
    const after = await http(eioUrl(ctx.target.url, { EIO: 4, transport: "polling", sid: t.handshake.sid }));
    assert.equal(after.status, 400, `GET after close: ${after.status} ${after.body}`);
  });

  test("close: a close packet POSTed over polling ends the session and its sid gets HTTP 400 afterwards", async () => {
    const t = await ctx.open("polling");
    await sioConnect(t);
    const res = await t.post(["1"]);
    assert.equal(res.status, 200, `POST of the close packet: ${res.status} ${res.body}`);
    await t.waitClosed(2000);
    const after = await http(eioUrl(ctx.target.url, { EIO: 4, transport: "polling", sid: t.sid }));
    assert.equal(after.status, 400, `GET after close: ${after.status} ${after.body}`);
  });
});

forEachTarget(
  "Engine.IO close seen by the backend",
  (ctx) => {
    for (const transport of ["polling", "websocket"]) {
      test(`${transport}: closing the transport reaches the backend as SocketDisconnected with reason "transport close" and UserOffline`, async () => {
        const t = await ctx.open(transport);
        const sid = await sioConnect(t, { auth: { userId: `closer-${transport}` } });
        await ctx.target.backend.waitFor((r) => r.kind === "socket_connected" && r.value.socket_id === sid);
        if (transport === "polling") t.send("1");
        else t.ws.close(1000);
        const rec = await ctx.target.backend.waitFor((r) => r.kind === "socket_disconnected" && r.value.socket_id === sid, 3000);
        assert.equal(rec.value.reason, "transport close");
        assert.equal(rec.value.user_id, `closer-${transport}`);
        const offline = await ctx.target.backend.waitFor((r) => r.kind === "user_offline" && r.value.user_id === `closer-${transport}`, 3000);
        assert.ok(offline);
      });
    }
  },
  { only: ["bridge"] },
);
