// Malformed Socket.IO packets after a successful CONNECT: an unknown packet type, a payload
// that is not a non-empty array, an ack id that is not a number, or a binary placeholder that
// names no attachment must close the connection (the receiver MUST close it, Socket.IO v5
// "Sending and receiving data"), and nothing of it may reach the backend.
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget, TRANSPORTS, bridgeBug } from "./lib/harness.mjs";
import { sioConnect, show } from "./lib/eio.mjs";

const CASES = [
  { what: "unknown packet type", packets: [["4abc"], ['48["x"]'], ["4"]] },
  { what: "invalid payload format", packets: [["42{}"], ['42"str"'], ["42[]"], ['42["unterminated"']] },
  { what: "invalid ack id", packets: [['42abc["with-ack",1,"2",{"3":[false]}]'], ['42-1["with-ack"]']] },
];

const BINARY_CASE = {
  what: "binary placeholder that names no attachment",
  packets: [
    ['451-["with-ack",{"_placeholder":true,"num":5}]', Buffer.from([1])],
    ['451-["with-ack",{"_placeholder":true,"num":"0"}]', Buffer.from([1])],
  ],
};

forEachTarget("Socket.IO invalid packets", (ctx) => {
  const check = async (transport, packets) => {
    const t = await ctx.open(transport);
    const sid = await sioConnect(t);
    const from = ctx.target.backend?.records.length ?? 0;
    t.sendMany(packets);
    await t.waitClosed(2000).catch((err) => {
      throw new Error(`after ${packets.map(show).join(" + ")}: ${err.message}`);
    });
    if (ctx.target.backend) {
      const forwarded = ctx.target.backend.records.slice(from).filter((r) => r.kind === "client_event" && r.value.socket_id === sid);
      assert.deepEqual(forwarded, [], `nothing forwarded to the backend for ${packets.map(show).join(" + ")}`);
    }
  };
  for (const transport of TRANSPORTS) {
    for (const { what, packets } of CASES) {
      test(`${transport}: ${what} closes the connection`, async () => {
        for (const p of packets) await check(transport, p);
      });
    }
    test(`${transport}: ${BINARY_CASE.what} closes the connection`, bridgeBug(ctx.name, "the bridge leaves the namespace (41) instead of closing the connection: socketioxide has no way to close the transport from an event handler"), async () => {
      for (const p of BINARY_CASE.packets) await check(transport, p);
    });
  }
});
