// A stock socket.io-client (tests/js's pinned version) for tests/deploy/run.sh: connects as
// USER with an HS256 JWT over websocket and over long-polling, reports each connect as a
// JSON line on stdout, and exits 0 once both sockets received EVENT (1 on error or after
// 30 s). Usage: node client.mjs URL USER JWT_SECRET EVENT
import { createRequire } from "node:module";
import crypto from "node:crypto";

const require = createRequire(new URL("../js/package.json", import.meta.url));
const { io } = require("socket.io-client");

const [url, user, secret, event] = process.argv.slice(2);
const b64url = (text) => Buffer.from(text).toString("base64url");
const now = Math.floor(Date.now() / 1000);
const unsigned = `${b64url(JSON.stringify({ alg: "HS256", typ: "JWT" }))}.${b64url(JSON.stringify({ sub: user, iat: now, exp: now + 600 }))}`;
const token = `${unsigned}.${crypto.createHmac("sha256", secret).update(unsigned).digest("base64url")}`;

const report = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");
const deadline = setTimeout(() => {
  report({ type: "timeout" });
  process.exit(1);
}, 30_000);

let received = 0;
for (const transport of ["websocket", "polling"]) {
  const socket = io(url, { auth: { token }, transports: [transport], reconnection: false });
  socket.on("connect", () => report({ type: "connect", transport, sid: socket.id }));
  socket.on("connect_error", (err) => {
    report({ type: "connect_error", transport, message: err.message });
    process.exit(1);
  });
  socket.on(event, (...args) => {
    report({ type: "event", transport, event, args });
    socket.disconnect();
    if (++received === 2) {
      clearTimeout(deadline);
      process.exit(0);
    }
  });
}
