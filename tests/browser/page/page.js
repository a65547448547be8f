// Test page: keeps stock socket.io-client sockets and records what happens to them so that
// the test (driving the page with playwright-core) can read it, and shows it on screen for
// the screenshot. Binary values cross into the test as {"$binary": [bytes]}.
(function () {
  "use strict";

  function enc(v) {
    if (v instanceof ArrayBuffer) return { $binary: Array.from(new Uint8Array(v)) };
    if (ArrayBuffer.isView(v)) return { $binary: Array.from(new Uint8Array(v.buffer, v.byteOffset, v.byteLength)) };
    if (Array.isArray(v)) return v.map(enc);
    if (v && typeof v === "object") {
      const out = {};
      for (const k of Object.keys(v)) out[k] = enc(v[k]);
      return out;
    }
    return v;
  }

  function dec(v) {
    if (Array.isArray(v)) return v.map(dec);
    if (v && typeof v === "object") {
      if (Array.isArray(v.$binary) && Object.keys(v).length === 1) return new Uint8Array(v.$binary);
      const out = {};
      for (const k of Object.keys(v)) out[k] = dec(v[k]);
      return out;
    }
    return v;
  }

  const logEl = document.getElementById("log");
  const statusEl = document.getElementById("status");
  const errorEl = document.getElementById("error");

  const T = {
    sockets: {},
    records: [],

    record(name, type, data) {
      this.records.push({ name, type, data, at: Date.now() });
      const line = document.createElement("div");
      line.textContent = `${new Date().toISOString().slice(11, 23)} [${name}] ${type} ${JSON.stringify(data)}`;
      logEl.appendChild(line);
    },

    setVariant(label) {
      document.getElementById("variant").textContent = label;
    },

    connect(name, url, options) {
      const s = io(url, options);
      this.sockets[name] = s;
      const hookEngine = () => {
        const engine = s.io.engine;
        if (!engine || engine.__hooked) return;
        engine.__hooked = true;
        engine.on("upgrade", (transport) => this.record(name, "upgrade", { transport: transport.name }));
      };
      hookEngine();
      s.io.on("open", () => {
        hookEngine();
        this.record(name, "engine-open", { transport: s.io.engine.transport.name });
      });
      s.on("connect", () => {
        hookEngine();
        statusEl.textContent = `connected (${s.io.engine.transport.name})`;
        statusEl.className = "connected";
        this.record(name, "connect", { id: s.id, transport: s.io.engine.transport.name });
      });
      s.on("connect_error", (err) => {
        errorEl.textContent = `connect_error: ${err.message}`;
        statusEl.textContent = "connect_error";
        statusEl.className = "disconnected";
        this.record(name, "connect_error", { message: err.message, data: enc(err.data ?? null) });
      });
      s.on("disconnect", (reason) => {
        statusEl.textContent = `disconnected (${reason})`;
        statusEl.className = "disconnected";
        this.record(name, "disconnect", { reason });
      });
      s.onAny((event, ...args) => this.record(name, "event", { event, args: enc(args) }));
      return true;
    },

    transport(name) {
      const s = this.sockets[name];
      return s && s.io.engine ? s.io.engine.transport.name : null;
    },

    emitWithAck(name, event, args, timeoutMs) {
      const s = this.sockets[name];
      return new Promise((resolve) => {
        s.timeout(timeoutMs).emit(event, ...dec(args), (err, ...res) => {
          if (err) resolve({ error: String(err.message || err) });
          else resolve({ args: enc(res) });
        });
      });
    },

    emit(name, event, args) {
      this.sockets[name].emit(event, ...dec(args));
      return true;
    },

    close(name) {
      const s = this.sockets[name];
      if (s) s.close();
      delete this.sockets[name];
      return true;
    },
  };

  window.T = T;
})();
