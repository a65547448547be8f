// The Node.js peer for the socket-bridge benchmarks: the Node service socket-bridge replaces
// (Socket.IO 4.8 server + Express HTTP push API + connection manager), reduced to what the
// benchmark exercises, written as a Node team tuning for throughput would run it.
// Websocket transport only.
//
//   node server.js --port 3200 --ping-interval-ms 2000 --ping-timeout-ms 5000 [--forward URL]
//
// - handshake auth {userId}: registered in the connection manager (userId -> sockets),
//   socket joins `user:<userId>` (same as socket-bridge);
// - POST /api/v1/push {userId | roomId, event, payload, options}: that service's PushRequest;
// - POST /api/v1/join {room}: every connected socket joins `room`;
// - client event `bench` with an ack: answered at once with {ok: true} (no backend hop), or,
//   with --forward URL, what the original design does: the event goes to the backend as an
//   HTTP POST (keep-alive connection pool) and the client's ack gets the backend's answer
//   (a JSON array of ack arguments).
//
// Where this differs from a plain `socket.io` + Express server, and why:
// - `bufferutil` is installed: `ws` (Socket.IO's websocket engine) uses it when present to
//   mask and unmask frames natively, as the Socket.IO docs recommend for production (UTF-8
//   validation is already native in Node 18.14+, so `utf-8-validate` would add nothing).
// - The forwarding client is undici's Pool (keep-alive, a fixed number of connections), the
//   fastest HTTP client for Node; the built-in `fetch` is undici too but adds WHATWG stream
//   layers per request.
// - `--expose-gc` and POST /api/v1/gc exist only so the harness can collect garbage before
//   reading RSS (idle memory is then not inflated by garbage).
'use strict';

const http = require('node:http');
const crypto = require('node:crypto');
const express = require('express');
const { Server } = require('socket.io');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}

const port = Number(arg('--port', '3200'));
const host = arg('--host', '127.0.0.1');
const pingInterval = Number(arg('--ping-interval-ms', '25000'));
const pingTimeout = Number(arg('--ping-timeout-ms', '20000'));
const forward = arg('--forward', '');

// Connection manager: socket id -> UserConnection, user id -> sockets.
class ConnectionManager {
  constructor() {
    this.connections = new Map();
    this.users = new Map();
  }
  registerUser(socket, userId) {
    this.connections.set(socket.id, {
      socketId: socket.id,
      userId,
      connectedAt: Date.now(),
      metadata: {
        userAgent: socket.handshake.headers['user-agent'] || '',
        ip: socket.handshake.address,
      },
    });
    let set = this.users.get(userId);
    if (!set) {
      set = new Set();
      this.users.set(userId, set);
    }
    set.add(socket);
  }
  removeUser(socket) {
    const conn = this.connections.get(socket.id);
    if (!conn) return;
    this.connections.delete(socket.id);
    const set = this.users.get(conn.userId);
    if (set) {
      set.delete(socket);
      if (set.size === 0) this.users.delete(conn.userId);
    }
  }
  socketsOf(userId) {
    return this.users.get(userId);
  }
}

// Metrics collector, as plain counters.
const metrics = { messagesIn: 0, messagesOut: 0, errors: 0, connections: 0 };

const app = express();
app.disable('x-powered-by');
app.disable('etag');
app.use(express.json({ limit: '1mb' }));
const server = http.createServer(app);
// Keep-alive connections from the backend stay open between bursts.
server.keepAliveTimeout = 60_000;
const io = new Server(server, {
  transports: ['websocket'],
  pingInterval,
  pingTimeout,
  serveClient: false,
});
const connections = new ConnectionManager();

let backend = null;
if (forward) {
  const { Pool } = require('undici');
  backend = new Pool(forward, { connections: 64, pipelining: 1, keepAliveTimeout: 60_000 });
}

// The backend's answer to a forwarded event, as ack arguments.
async function forwardEvent(socket, userId, event, args) {
  const { statusCode, body } = await backend.request({
    path: '/event',
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ socketId: socket.id, userId, event, args }),
  });
  const answer = await body.json();
  if (statusCode !== 200 || !Array.isArray(answer)) throw new Error(`backend answered ${statusCode}`);
  return answer;
}

io.on('connection', (socket) => {
  const userId = socket.handshake.auth && socket.handshake.auth.userId;
  metrics.connections++;
  if (typeof userId === 'string' && userId.length > 0) {
    connections.registerUser(socket, userId);
    socket.join(`user:${userId}`);
  }
  if (backend) {
    socket.on('bench', (data, ack) => {
      metrics.messagesIn++;
      forwardEvent(socket, userId, 'bench', [data]).then(
        (answer) => {
          if (typeof ack === 'function') ack(...answer);
        },
        (err) => {
          metrics.errors++;
          if (typeof ack === 'function') ack({ error: { code: 'backend_error', message: String(err.message) } });
        },
      );
    });
  } else {
    socket.on('bench', (data, ack) => {
      metrics.messagesIn++;
      if (typeof ack === 'function') ack({ ok: true });
    });
  }
  socket.on('disconnect', () => {
    metrics.connections--;
    connections.removeUser(socket);
  });
});

function validationError(res, field, message) {
  metrics.errors++;
  res.status(400).json({
    error: {
      code: 'VALIDATION_ERROR',
      message: 'invalid push request',
      details: [{ field, message }],
      timestamp: new Date().toISOString(),
      requestId: crypto.randomUUID(),
    },
  });
}

// Push API.
app.post('/api/v1/push', (req, res) => {
  const body = req.body || {};
  if (typeof body.event !== 'string' || body.event.length === 0) return validationError(res, 'event', 'required');
  if (!body.userId && !body.roomId) return validationError(res, 'userId', 'userId or roomId required');
  const messageId = crypto.randomUUID();
  let delivered = 0;
  if (body.userId) {
    const sockets = connections.socketsOf(body.userId);
    if (sockets) {
      for (const socket of sockets) {
        socket.emit(body.event, body.payload);
        delivered++;
      }
    }
  } else {
    const room = io.sockets.adapter.rooms.get(body.roomId);
    delivered = room ? room.size : 0;
    io.to(body.roomId).emit(body.event, body.payload);
  }
  metrics.messagesOut += delivered;
  res.json({ success: true, data: { messageId, delivered } });
});

app.post('/api/v1/join', (req, res) => {
  const room = req.body && req.body.room;
  if (typeof room !== 'string' || room.length === 0) return validationError(res, 'room', 'required');
  io.socketsJoin(room);
  res.json({ success: true, data: { sockets: io.engine.clientsCount } });
});

app.get('/health', (req, res) => res.json({ status: 'ok' }));

// Benchmark only: lets the harness collect garbage before it reads RSS, so Node's idle
// memory is not inflated by garbage (run with --expose-gc).
app.post('/api/v1/gc', (req, res) => {
  if (typeof global.gc === 'function') global.gc();
  res.json({ success: true, gc: typeof global.gc === 'function' });
});

server.listen(port, host, () => {
  process.stdout.write(`node peer listening on ${host}:${port}${forward ? `, forwarding events to ${forward}` : ''}\n`);
});
process.on('SIGTERM', () => process.exit(0));
