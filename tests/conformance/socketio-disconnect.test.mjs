// Socket.IO v5 disconnection from a namespace ("1" / "1/nsp,") and several namespaces on
// one connection (multiplexing). A DISCONNECT leaves that namespace only: the connection and
// the client's other namespaces stay usable, and the client may CONNECT again. An event for
// a namespace the client is not connected to closes the connection.
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget, TRANSPORTS, bridgeBug } from "./lib/harness.mjs";
import { sioConnect, sleep } from "./lib/eio.mjs";

// A DISCONNECT has no reply a client could wait for: the next packet waits a moment, so that
// the server has left the namespace when it arrives (the bridge runs its disconnect handler
// first; the socket leaves the namespace once that is done).
const afterDisconnect = () => sleep(100);

forEachTarget("Socket.IO disconnect and namespaces", (ctx) => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: after DISCONNECT from / an event sent to / closes the connection (the namespace was left)`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      t.send("41");
      await afterDisconnect();
      t.send('42["echo","after disconnect"]');
      await t.waitClosed(2000);
      assert.ok(!t.seen.includes('42["echo-back","after disconnect"]'), "the event was not handled");
    });

    test(`${transport}: after DISCONNECT the client can CONNECT to the same namespace again and use it`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t, { nsp: "/custom" });
      t.send("41/custom,");
      await afterDisconnect();
      await sioConnect(t, { nsp: "/custom" });
      t.send('42/custom,7["again"]');
      assert.equal(await t.waitFor(/^43\/custom,7/), "43/custom,7[]");
    });

    test(`${transport}: events on / and /custom over one connection are handled in their own namespace`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      await sioConnect(t, { nsp: "/custom" });
      t.send('42["echo","main"]');
      t.send('42/custom,["echo","custom"]');
      // Two sockets: their answers may come in either order, each in its own namespace.
      const answers = [await t.waitFor(/^42(\/custom,)?\["echo-back"/), await t.waitFor(/^42(\/custom,)?\["echo-back"/)];
      assert.deepEqual(answers.sort(), ['42/custom,["echo-back","custom"]', '42["echo-back","main"]']);
      t.send('421["main-ack"]');
      assert.equal(await t.waitFor(/^43(\/custom,)?1\[/), "431[]");
    });

    test(`${transport}: after DISCONNECT from /custom the main namespace on the same connection still works`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      await sioConnect(t, { nsp: "/custom" });
      t.send("41/custom,");
      await afterDisconnect();
      t.send('425["still-main",1]');
      assert.equal(await t.waitFor(/^43/, 2000), "435[1]");
      t.send('42["echo","still main"]');
      await t.waitFor('42["echo-back","still main"]', 2000);
    });

    test(`${transport}: after DISCONNECT from / the connection stays usable for /custom`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      await sioConnect(t, { nsp: "/custom" });
      t.send("41");
      await afterDisconnect();
      t.send('42/custom,["echo","custom only"]');
      await t.waitFor('42/custom,["echo-back","custom only"]', 2000);
    });
  }
});

forEachTarget(
  "Socket.IO disconnect seen by the backend",
  (ctx) => {
    for (const transport of TRANSPORTS) {
      test(`${transport}: DISCONNECT reaches the backend as SocketDisconnected with reason "client namespace disconnect" and UserOffline`, async () => {
        const user = `leaver-${transport}`;
        const t = await ctx.open(transport);
        const sid = await sioConnect(t, { auth: { userId: user } });
        await ctx.target.backend.waitFor((r) => r.kind === "socket_connected" && r.value.socket_id === sid);
        t.send("41");
        const rec = await ctx.target.backend.waitFor((r) => r.kind === "socket_disconnected" && r.value.socket_id === sid, 3000);
        assert.equal(rec.value.reason, "client namespace disconnect");
        assert.equal(rec.value.namespace, "/");
        await ctx.target.backend.waitFor((r) => r.kind === "user_offline" && r.value.user_id === user, 3000);
      });

      test(`${transport}: closing a connection joined to / and /custom reports both sockets disconnected and the user offline`, async () => {
        const user = `two-ns-${transport}`;
        const b = ctx.target.backend;
        const from = b.records.length;
        const t = await ctx.open(transport);
        await sioConnect(t, { auth: { userId: user } });
        await sioConnect(t, { nsp: "/custom", auth: { userId: user } });
        await b.waitFor((r) => r.kind === "socket_connected" && r.value.user_id === user && r.value.namespace === "/custom", 3000, { from });
        t.close();
        if (transport === "websocket") t.ws.terminate();
        const gone = (nsp) => b.waitFor((r) => r.kind === "socket_disconnected" && r.value.user_id === user && r.value.namespace === nsp, 3000, { from });
        await gone("/");
        await gone("/custom");
        await b.waitFor((r) => r.kind === "user_offline" && r.value.user_id === user, 3000, { from });
      });
    }
  },
  { only: ["bridge"] },
);
