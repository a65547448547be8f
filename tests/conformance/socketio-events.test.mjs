// Socket.IO v5 events and acknowledgements, plain and binary, in both directions.
// EVENT "2[...]", ACK "3<id>[...]", BINARY_EVENT "5<n>-[...]" and BINARY_ACK "6<n>-<id>[...]"
// followed by n binary attachments referenced by {"_placeholder":true,"num":i}. On the bridge
// every client event goes to the backend over the Events stream; the backend answers an ack
// with the event's own arguments and pushes "echo" back as "echo-back" (like the reference).
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget, TRANSPORTS } from "./lib/harness.mjs";
import { sioConnect, show } from "./lib/eio.mjs";
import { payloadArgs } from "./lib/backend.mjs";

const P0 = '{"_placeholder":true,"num":0}';
const P1 = '{"_placeholder":true,"num":1}';
const BIN0 = Buffer.from([1, 2, 3]);
const BIN1 = Buffer.from([4, 5, 6, 0, 255]);

/** Waits for a text packet matching `head`, then for `count` binary packets after it. */
async function waitBinary(t, head, count) {
  const first = await t.waitFor(head);
  const bins = [];
  while (bins.length < count) {
    const p = await t.waitFor((x) => x !== "2");
    assert.ok(Buffer.isBuffer(p), `expected attachment ${bins.length} after ${first}, got ${show(p)}`);
    bins.push(p);
  }
  return [first, ...bins];
}

forEachTarget("Socket.IO events and acks", (ctx) => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: a plain event without ack reaches the server with its arguments intact (echoed back as an EVENT)`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      t.send('42["echo",1,"2",{"3":[true]},null]');
      assert.equal(await t.waitFor(/^42\["echo-back"/), '42["echo-back",1,"2",{"3":[true]},null]');
    });

    test(`${transport}: a plain event with an ack id is answered with an ACK of the same id carrying the server's arguments`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      t.send('42456["with-ack",1,"2",{"3":[false]}]');
      assert.equal(await t.waitFor(/^43/), '43456[1,"2",{"3":[false]}]');
    });

    test(`${transport}: an event with an ack on /custom is answered with an ACK on /custom`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t, { nsp: "/custom" });
      t.send('42/custom,13["with-ack","bar"]');
      assert.equal(await t.waitFor(/^43/), '43/custom,13["bar"]');
    });

    test(`${transport}: a binary event without ack keeps both attachments (echoed back as a BINARY_EVENT with 2 attachments)`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      t.sendMany([`452-["echo",${P0},{"k":${P1}}]`, BIN0, BIN1]);
      const [head, b0, b1] = await waitBinary(t, /^452-\["echo-back"/, 2);
      assert.equal(head, `452-["echo-back",${P0},{"k":${P1}}]`);
      assert.deepEqual(b0, BIN0);
      assert.deepEqual(b1, BIN1);
    });

    test(`${transport}: a binary event with an ack id is answered with a BINARY_ACK of the same id and the attachments`, async () => {
      const t = await ctx.open(transport);
      await sioConnect(t);
      t.sendMany([`452-789["with-ack",${P0},${P1}]`, BIN0, BIN1]);
      const [head, b0, b1] = await waitBinary(t, /^46/, 2);
      assert.equal(head, `462-789[${P0},${P1}]`);
      assert.deepEqual(b0, BIN0);
      assert.deepEqual(b1, BIN1);
    });
  }
});

forEachTarget(
  "Socket.IO events through the backend",
  (ctx) => {
    for (const transport of TRANSPORTS) {
      test(`${transport}: the backend receives a client event with its namespace, socket, arguments as args_json and binaries as attachments`, async () => {
        const t = await ctx.open(transport);
        const sid = await sioConnect(t, { auth: { userId: "bob" } });
        const b = ctx.target.backend;
        t.sendMany([`451-["inspect",{"big":12345678901234567890,"z":1,"a":2},${P0}]`, BIN1]);
        const rec = await b.waitFor((r) => r.kind === "client_event" && r.value.socket_id === sid && r.value.event === "inspect");
        assert.equal(rec.value.namespace, "/");
        assert.equal(rec.value.user_id, "bob");
        assert.equal(rec.value.wants_ack, false);
        assert.equal(rec.value.payload.args_json, `[{"big":12345678901234567890,"z":1,"a":2},${P0}]`, "JSON is forwarded as text: big integer and key order survive");
        assert.deepEqual(rec.value.payload.attachments.map((x) => Buffer.from(x)), [BIN1]);
      });

      test(`${transport}: a server event with an ack (Push with ack_timeout) is answered by the client's ACK and BINARY_ACK, returned in PushResponse.acks`, async () => {
        const t = await ctx.open(transport);
        const sid = await sioConnect(t);
        const b = ctx.target.backend;
        const push = (event) =>
          b.push({
            target: { socket_id: sid },
            namespace: "/",
            event,
            payload: { args_json: '["question"]' },
            options: { ack_timeout: { seconds: 2 } },
          });
        const plain = push("ask-plain");
        const asked = await t.waitFor(/^42\d+\["ask-plain"/);
        const id = /^42(\d+)/.exec(asked)[1];
        t.send(`43${id}["answer",42]`);
        const res = await plain;
        assert.equal(res.sockets_reached, 1);
        assert.equal(res.acks.length, 1);
        assert.equal(res.acks[0].status, "ACK_STATUS_ACKED");
        assert.deepEqual(payloadArgs(res.acks[0].payload), ["answer", 42]);

        const binary = push("ask-binary");
        const asked2 = await t.waitFor(/^42\d+\["ask-binary"/);
        const id2 = /^42(\d+)/.exec(asked2)[1];
        t.sendMany([`461-${id2}[${P0}]`, BIN0]);
        const res2 = await binary;
        assert.equal(res2.acks[0].status, "ACK_STATUS_ACKED");
        assert.deepEqual(payloadArgs(res2.acks[0].payload), [JSON.parse(P0)]);
        assert.deepEqual(res2.acks[0].payload.attachments.map((x) => Buffer.from(x)), [BIN0]);
      });

      test(`${transport}: an ack the backend does not answer gets {"error":{"code":"ack_timeout"}} after the configured ack timeout`, async () => {
        const b = ctx.target.backend;
        const previous = b.onEvent;
        b.onEvent = (ev) => ev.event === "never-answered";
        try {
          const t = await ctx.open(transport);
          await sioConnect(t);
          const { ackTimeout } = ctx.target.config;
          const sent = Date.now();
          t.send('429["never-answered"]');
          const reply = await t.waitFor(/^439/, ackTimeout + 2000);
          const after = Date.now() - sent;
          const [arg] = JSON.parse(reply.slice(3));
          assert.equal(arg.error.code, "ack_timeout", reply);
          assert.ok(after >= ackTimeout * 0.8 && after <= ackTimeout + 700, `answered after ${after} ms, ack timeout ${ackTimeout} ms`);
        } finally {
          b.onEvent = previous;
        }
      });

      test(`${transport}: an Ack with an error from the backend reaches the client's callback as {"error":{"code","message"}}`, async () => {
        const b = ctx.target.backend;
        const previous = b.onEvent;
        b.onEvent = (ev, be) => {
          if (ev.event !== "refuse-me") return false;
          be.ack(ev.id, { error: { code: "not_allowed", message: "no, thanks" } });
          return true;
        };
        try {
          const t = await ctx.open(transport);
          await sioConnect(t);
          t.send('4211["refuse-me"]');
          const reply = await t.waitFor(/^4311/);
          assert.deepEqual(JSON.parse(reply.slice(4)), [{ error: { code: "not_allowed", message: "no, thanks" } }]);
        } finally {
          b.onEvent = previous;
        }
      });
    }
  },
  { only: ["bridge"] },
);
