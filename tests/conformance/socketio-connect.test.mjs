// Socket.IO v5 connection to a namespace. The client's first Socket.IO packet must be a
// CONNECT ("0", optionally "/nsp," and an auth object); the server answers CONNECT with
// {sid} or CONNECT_ERROR ("4") with {message}. A first packet that is not a valid CONNECT
// closes the connection, and so does the absence of any CONNECT within the connect timeout
// (socketio.connect_timeout_ms). The backend (or the reference server) emits the handshake
// auth back as event "auth", minus the secret fields token/password/secret: that is how
// these cases see what the server received.
import { test } from "node:test";
import assert from "node:assert/strict";
import { forEachTarget, TRANSPORTS, bridgeBug } from "./lib/harness.mjs";
import { sioConnect } from "./lib/eio.mjs";

const AUTH = { userId: "alice", token: "t0k3n", password: "pw", secret: "s3cr3t", extra: { n: [1, 2], s: "x" } };
const AUTH_SEEN = { userId: "alice", extra: { n: [1, 2], s: "x" } };

function connectReply(nsp) {
  const prefix = nsp === "/" ? "40" : `40${nsp},`;
  return (p) => typeof p === "string" && (p.startsWith(prefix) || p.startsWith(prefix.replace(/^40/, "44")));
}

function parseSid(packet, nsp) {
  const prefix = nsp === "/" ? "40" : `40${nsp},`;
  assert.ok(packet.startsWith(prefix), `CONNECT answered with ${packet}`);
  const data = JSON.parse(packet.slice(prefix.length));
  assert.deepEqual(Object.keys(data), ["sid"], "the CONNECT answer carries exactly {sid}");
  assert.equal(typeof data.sid, "string");
  assert.ok(data.sid.length > 0);
  return data.sid;
}

forEachTarget("Socket.IO connect", (ctx) => {
  for (const transport of TRANSPORTS) {
    test(`${transport}: CONNECT to / without payload is answered with CONNECT {sid} and the server sees an empty auth`, async () => {
      const t = await ctx.open(transport);
      t.send("40");
      parseSid(await t.waitFor(connectReply("/")), "/");
      assert.equal(await t.waitFor(/^42\["auth"/), '42["auth",{}]');
    });

    test(`${transport}: CONNECT to / with an auth payload is answered with CONNECT {sid} and the server sees the payload minus token/password/secret`, async () => {
      const t = await ctx.open(transport);
      t.send(`40${JSON.stringify(AUTH)}`);
      parseSid(await t.waitFor(connectReply("/")), "/");
      const echo = await t.waitFor(/^42\["auth"/);
      assert.deepEqual(JSON.parse(echo.slice(2)), ["auth", AUTH_SEEN]);
    });

    test(`${transport}: CONNECT to the second namespace /custom without payload is answered with CONNECT /custom,{sid}`, async () => {
      const t = await ctx.open(transport);
      t.send("40/custom,");
      parseSid(await t.waitFor(connectReply("/custom")), "/custom");
      assert.equal(await t.waitFor(/^42\/custom,\["auth"/), '42/custom,["auth",{}]');
    });

    test(`${transport}: CONNECT to /custom with an auth payload is answered with CONNECT /custom,{sid} and the server sees the payload minus secrets`, async () => {
      const t = await ctx.open(transport);
      t.send(`40/custom,${JSON.stringify(AUTH)}`);
      parseSid(await t.waitFor(connectReply("/custom")), "/custom");
      const echo = await t.waitFor(/^42\/custom,\["auth"/);
      assert.deepEqual(JSON.parse(echo.slice("42/custom,".length)), ["auth", AUTH_SEEN]);
    });

    test(`${transport}: CONNECT to an unknown namespace gets CONNECT_ERROR "Invalid namespace" and the connection stays usable`, async () => {
      const t = await ctx.open(transport);
      t.send("40/random,");
      assert.equal(await t.waitFor(/^4[04]\/random,/), '44/random,{"message":"Invalid namespace"}');
      t.send("40");
      parseSid(await t.waitFor(connectReply("/")), "/");
    });

    test(`${transport}: invalid handshake: a first Socket.IO packet that is not a CONNECT closes the connection`, async () => {
      for (const first of ["4abc", '42["hello"]', "41"]) {
        const t = await ctx.open(transport);
        t.send(first);
        await t.waitClosed(2000).catch((err) => {
          throw new Error(`after ${JSON.stringify(first)}: ${err.message}`);
        });
        assert.ok(!t.seen.some((p) => typeof p === "string" && p.startsWith("40")), `no CONNECT answer after ${first}`);
      }
    });

    test(`${transport}: invalid handshake: a CONNECT whose payload is not an object closes the connection`, async () => {
      for (const first of ['40"abc"', "40[1]", '40/custom,"x"']) {
        const t = await ctx.open(transport);
        t.send(first);
        await t.waitClosed(2000).catch((err) => {
          throw new Error(`after ${JSON.stringify(first)}: ${err.message}`);
        });
        assert.ok(!t.seen.some((p) => typeof p === "string" && p.startsWith("40")), `no CONNECT answer after ${first}; seen ${t.seen.join(", ")}`);
      }
    });

    test(`${transport}: no CONNECT within the configured connect timeout closes the connection, not earlier`, async () => {
      const { connectTimeout } = ctx.target.config;
      const opened = Date.now();
      const t = await ctx.open(transport, { autoPong: true });
      await t.waitClosed(connectTimeout + 1500);
      const after = Date.now() - opened;
      assert.ok(after >= connectTimeout * 0.8 && after <= connectTimeout + 700, `closed after ${after} ms, connect timeout ${connectTimeout} ms`);
    });

    test(`${transport}: the Socket.IO sid differs from the Engine.IO sid and from the sid of another namespace on the same connection`, bridgeBug(ctx.name, "socket id is the Engine.IO sid"), async () => {
      const t = await ctx.open(transport);
      const main = await sioConnect(t);
      const custom = await sioConnect(t, { nsp: "/custom" });
      assert.notEqual(main, t.handshake.sid, "Socket.IO sid of / is not the Engine.IO sid (it would let anyone who learns a socket id drive that client's polling session)");
      assert.notEqual(custom, t.handshake.sid, "Socket.IO sid of /custom is not the Engine.IO sid");
      assert.notEqual(main, custom, "each namespace's socket has its own sid");
    });
  }
});

forEachTarget(
  "Socket.IO connect seen by the backend",
  (ctx) => {
    for (const transport of TRANSPORTS) {
      test(`${transport}: SocketConnected carries the namespace, the user id, the transport and the handshake auth without token/password/secret`, async () => {
        const t = await ctx.open(transport);
        const sid = await sioConnect(t, { nsp: "/custom", auth: AUTH });
        const rec = await ctx.target.backend.waitFor((r) => r.kind === "socket_connected" && r.value.socket_id === sid && r.value.namespace === "/custom");
        assert.equal(rec.value.user_id, "alice");
        assert.equal(rec.value.handshake.transport, transport);
        assert.deepEqual(JSON.parse(rec.value.handshake.auth_json), AUTH_SEEN);
        assert.ok(!rec.value.handshake.auth_json.includes("t0k3n") && !rec.value.handshake.auth_json.includes("s3cr3t"), "no secret in auth_json");
      });
    }
  },
  { only: ["bridge"] },
);
