// The dashboard in headless Chromium against the real bridge:
// it loads after login, its connection count follows test clients connecting and
// disconnecting without a reload, a log line produced during the test appears in the
// viewer, an event name and a log message containing <script> render as text, and a
// screenshot is saved as an artifact.
//
// Run with tests/dashboard/run.sh (installs what it needs). Env: SOCKET_BRIDGE_BIN (the
// binary), CHROMIUM_BIN (default /usr/bin/chromium), BRIDGE_LOG=1 (echo the bridge's log),
// DASHBOARD_PAGE_FROM_SOURCE=1 (serve src/http/dashboard.html from disk instead of the copy
// embedded in the binary: for working on the page without rebuilding), DASHBOARD_PAGE_FILE
// (serve that file instead: for checking that the test catches a broken page).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";
import { io } from "socket.io-client";
import { startBridge, repoRoot } from "./bridge.mjs";

const CHROMIUM = process.env.CHROMIUM_BIN || "/usr/bin/chromium";
const USER = "admin";
const PASSWORD = "dash-test-pw-4c9e1b7a";
const BASIC = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString("base64")}`;
const ARTIFACTS = path.join(repoRoot, "tests/artifacts");
const SCREENSHOT = path.join(ARTIFACTS, "dashboard.png");
const SCREENSHOT_LIGHT = path.join(ARTIFACTS, "dashboard-light.png");
const PAGE_SOURCE = path.join(repoRoot, "src/http/dashboard.html");
const PAGE_FILE = process.env.DASHBOARD_PAGE_FILE || (process.env.DASHBOARD_PAGE_FROM_SOURCE === "1" ? PAGE_SOURCE : null);
const XSS_EVENT = "<script>window.__xss=1</script>";
const XSS_PAYLOAD = { note: '<img src=x onerror="window.__xss=2">' };
const XSS_ROOM = '<img src=x onerror="window.__xss=3">';
const LOBBY = "room-lobby";
const WAIT = 10_000; // every wait is bounded by this
const SETTINGS = {
  "log.format": "json",
  "log.level": "debug",
  "log.ring_capacity": 20000,
  "dashboard.password": PASSWORD,
  "shutdown.grace_period_ms": 2000,
  // Clients may join these rooms themselves (bridge:join), so the test can make rooms.
  "socketio.client_room_patterns": JSON.stringify(["room-*", "<*"]),
};

let bridge;
let bridgeLogs = []; // lines of every bridge this file started
let browser;
let context;
let page;
const sockets = [];
const pageErrors = [];
const cspViolations = [];
const requests = []; // {url, type, at}
let mainNavigations = 0;

// ------------------------------------------------------------------ helpers

function within(ms, promise, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`${what}: not within ${ms} ms`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function get(pathname, { auth = BASIC, accept } = {}) {
  const headers = {};
  if (auth) headers.Authorization = auth;
  if (accept) headers.Accept = accept;
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(), WAIT);
  try {
    const res = await fetch(bridge.url + pathname, { headers, signal: ctl.signal });
    // The stream never ends: read only the head of it.
    const body = res.headers.get("content-type")?.startsWith("text/event-stream") ? "" : await res.text();
    ctl.abort();
    return { status: res.status, headers: res.headers, body };
  } finally {
    clearTimeout(timer);
  }
}

function connectClient(userId) {
  const socket = io(bridge.url, {
    auth: { userId },
    transports: ["websocket"],
    reconnection: false,
    forceNew: true,
    timeout: WAIT,
  });
  sockets.push(socket);
  return within(
    WAIT,
    new Promise((resolve, reject) => {
      socket.once("connect", () => resolve(socket));
      socket.once("connect_error", reject);
    }),
    `socket of ${userId} connecting`,
  );
}

async function join(socket, room) {
  const reply = await socket.timeout(WAIT).emitWithAck("bridge:join", room);
  assert.deepEqual(reply, { ok: true }, `joining ${room}`);
}

/** The rooms table as the reader sees it: [[namespace, name, members], ...]. */
function roomRows() {
  return page.$$eval("#rooms tr", (trs) =>
    trs.filter((tr) => tr.children.length === 3).map((tr) => [...tr.children].map((td) => td.textContent.trim())),
  );
}

/** Waits (bounded) until `fn` returns something truthy in the page; returns it. */
async function until(fn, arg, what) {
  try {
    const handle = await page.waitForFunction(fn, arg, { timeout: WAIT, polling: 100 });
    return await handle.jsonValue();
  } catch (err) {
    const state = await page
      .evaluate(() => ({
        live: document.getElementById("live")?.dataset.state,
        connections: document.getElementById("connections")?.textContent,
        logRows: document.getElementById("logs")?.children.length,
        logCount: document.getElementById("log-count")?.textContent,
      }))
      .catch(() => ({}));
    throw new Error(`${what}: not within ${WAIT} ms (page: ${JSON.stringify(state)}): ${err.message}`);
  }
}

const text = (sel) => page.$eval(sel, (e) => e.textContent.trim());

/** Rows of the log viewer as the reader sees them. */
function logRows() {
  return page.$$eval("#logs tr", (trs) =>
    trs
      .filter((tr) => tr.dataset.level)
      .map((tr) => ({
        level: tr.dataset.level,
        seq: Number(tr.dataset.seq),
        text: tr.textContent,
        message: tr.querySelector(".msg")?.textContent ?? "",
        meta: [...tr.querySelectorAll(".kv")].map((kv) => kv.textContent),
      })),
  );
}

async function startPageBridge(opts) {
  const b = await startBridge({ settings: SETTINGS, ...opts });
  bridgeLogs.push(b.lines);
  return b;
}

// ------------------------------------------------------------------ setup

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `no Chromium at ${CHROMIUM} (set CHROMIUM_BIN or install Debian's chromium)`);
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  bridge = await startPageBridge();
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
    timeout: WAIT,
  });
});

after(async () => {
  for (const s of sockets) s.close();
  await browser?.close().catch(() => {});
  const res = await bridge?.stop();
  const all = bridgeLogs.flat();
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  fs.writeFileSync(path.join(ARTIFACTS, "dashboard-bridge.log"), all.join("\n") + "\n");
  if (res && res.signal === "SIGKILL") process.stderr.write("note: the bridge needed SIGKILL to stop\n");
});

// ------------------------------------------------------------------ tests

test("without admin credentials the page and its data answer 401 with a Basic challenge", { timeout: 30000 }, async () => {
  for (const p of ["/dashboard", "/dashboard/api/snapshot", "/dashboard/api/stream", "/api/v1/logs"]) {
    for (const [auth, label] of [
      [null, "no credentials"],
      [`Basic ${Buffer.from(`${USER}:wrong-password`).toString("base64")}`, "wrong password"],
      [`Basic ${Buffer.from(`not-admin:${PASSWORD}`).toString("base64")}`, "wrong user"],
    ]) {
      const res = await get(p, { auth });
      assert.equal(res.status, 401, `${p} with ${label}`);
      assert.equal(res.headers.get("www-authenticate"), 'Basic realm="socket-bridge"', `${p} with ${label}`);
      assert.ok(!res.body.includes(PASSWORD), "the 401 body does not echo the password");
    }
  }
  // The same in the browser: no login, no page.
  const anon = await browser.newContext();
  try {
    const p = await anon.newPage();
    const answered = p.waitForResponse((r) => r.url() === `${bridge.url}/dashboard`, { timeout: WAIT });
    // Chromium asks for credentials; headless, with none to give, it gives up on the page.
    const nav = await p.goto(`${bridge.url}/dashboard`, { timeout: WAIT }).catch((err) => err);
    const res = await answered;
    assert.equal(res.status(), 401);
    assert.equal(res.headers()["www-authenticate"], 'Basic realm="socket-bridge"');
    if (nav instanceof Error) assert.match(nav.message, /ERR_INVALID_AUTH_CREDENTIALS/);
    // Chromium then shows its error page; whatever document ends up there, it is not ours.
    let dashboardShown;
    for (const deadline = Date.now() + WAIT; Date.now() < deadline; ) {
      try {
        await p.waitForLoadState("load", { timeout: WAIT });
        dashboardShown = await p.evaluate(() => document.getElementById("connections") !== null);
        break;
      } catch (err) {
        if (!/context was destroyed|navigat/i.test(String(err))) throw err;
        await p.waitForTimeout(100);
      }
    }
    assert.equal(dashboardShown, false, "no dashboard markup without login");
  } finally {
    await anon.close();
  }
});

test("after login the page loads, is self-contained and goes live", { timeout: 30000 }, async () => {
  context = await browser.newContext({
    httpCredentials: { username: USER, password: PASSWORD },
    viewport: { width: 1440, height: 1000 },
    colorScheme: "dark",
  });
  page = await context.newPage();
  page.on("pageerror", (err) => pageErrors.push(String(err)));
  page.on("console", (msg) => {
    if (/Content Security Policy/i.test(msg.text())) cspViolations.push(msg.text());
  });
  page.on("request", (r) => requests.push({ url: r.url(), type: r.resourceType(), at: Date.now() }));
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) mainNavigations++;
  });
  if (PAGE_FILE) {
    await page.route(`${bridge.url}/dashboard`, (route) =>
      route.fulfill({ status: 200, contentType: "text/html; charset=utf-8", body: fs.readFileSync(PAGE_FILE) }),
    );
  }

  const res = await page.goto(`${bridge.url}/dashboard`, { timeout: WAIT, waitUntil: "load" });
  assert.equal(res.status(), 200);
  assert.match(res.headers()["content-type"] ?? "", /^text\/html/);
  if (!PAGE_FILE) {
    // Everything below runs under the policy the bridge sends: no frame, no sniffing, no
    // referrer, and the page's one script allowed by its hash only.
    const headers = res.headers();
    assert.match(headers["content-security-policy"] ?? "", /frame-ancestors 'none'/);
    assert.match(headers["content-security-policy"] ?? "", /script-src 'sha256-[^ ;]+';/);
    assert.equal(headers["x-content-type-options"], "nosniff");
    assert.equal(headers["x-frame-options"], "DENY");
    assert.equal(headers["referrer-policy"], "no-referrer");
    const served = await res.text();
    assert.equal(
      served,
      fs.readFileSync(PAGE_SOURCE, "utf8"),
      "the binary serves src/http/dashboard.html as it is now (rebuild the binary, or set DASHBOARD_PAGE_FROM_SOURCE=1)",
    );
  }

  await until(() => document.getElementById("live")?.dataset.state === "live", null, "#live turns live");
  assert.equal(await text("#live"), "live");

  const snap = JSON.parse((await get("/dashboard/api/snapshot")).body);
  await until((id) => document.getElementById("instance-id").textContent === id, snap.instanceId, "#instance-id shows the instance");
  assert.equal(await text("#version"), snap.version);
  await until(() => document.getElementById("connections").textContent === "0", null, "#connections shows 0");
  for (const id of ["#unique-users", "#room-count", "#uptime", "#memory", "#rate-in", "#rate-out", "#error-rate"]) {
    const t = await text(id);
    assert.ok(t && t !== "—", `${id} shows a value (got ${JSON.stringify(t)})`);
  }
  assert.match(await text("#nodes"), new RegExp(snap.instanceId), "the nodes table lists this instance");
  assert.equal(await page.$$eval("#rooms tr td.empty", (tds) => tds.length), 1, "no rooms yet: one empty-state row");

  // One file: no external script, stylesheet, font or image; nothing fetched elsewhere.
  const external = await page.evaluate(() =>
    [...document.querySelectorAll("script[src], link[rel~=stylesheet], link[href^=http], img[src], iframe")].map((e) => e.outerHTML),
  );
  assert.deepEqual(external, []);
  const origin = new URL(bridge.url).origin;
  const foreign = requests.filter((r) => !r.url.startsWith("data:") && new URL(r.url).origin !== origin);
  assert.deepEqual(foreign, [], "every request goes to the bridge");
  // Server push, not polling: one document, one event stream.
  assert.ok(requests.some((r) => r.type === "eventsource" && r.url.endsWith("/dashboard/api/stream")), "opens the event stream");
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(cspViolations, []);
});

test("the connection count follows clients connecting and disconnecting, without a reload", { timeout: 30000 }, async () => {
  const marker = `marker-${process.pid}-${Date.now()}`;
  await page.evaluate((m) => {
    window.__marker = m;
  }, marker);
  const navigationsBefore = mainNavigations;

  const [a, b, c] = await Promise.all(["user-a", "user-b", "user-c"].map(connectClient));
  await until(
    () => document.getElementById("connections").textContent === "3" && document.getElementById("unique-users").textContent === "3",
    null,
    "#connections and #unique-users show 3",
  );
  // The chart legend follows too.
  assert.equal(await text("#legend-conn"), "3");

  // Rooms with member counts; a room name with markup shows as text.
  for (const s of [a, b, c]) await join(s, LOBBY);
  await join(c, XSS_ROOM);
  await until(
    ({ lobby, xss }) => {
      const rows = [...document.querySelectorAll("#rooms tr")].map((tr) => [...tr.children].map((td) => td.textContent.trim()));
      return rows.some((r) => r[1] === lobby && r[2] === "3") && rows.some((r) => r[1] === xss && r[2] === "1");
    },
    { lobby: LOBBY, xss: XSS_ROOM },
    "the rooms table lists both rooms with their member counts",
  );
  const rooms = await roomRows();
  assert.deepEqual(rooms.map((r) => r[1]).sort(), [LOBBY, XSS_ROOM].sort(), "only the joined rooms: no internal user rooms");
  assert.deepEqual(rooms[0], ["/", LOBBY, "3"], "biggest room first");
  assert.equal(await page.$$eval("#rooms img", (e) => e.length), 0, "the room name is text, not an element");
  assert.equal(await page.evaluate(() => window.__xss), undefined);
  const snapRooms = JSON.parse((await get("/dashboard/api/snapshot")).body).roomCount;
  await until((n) => document.getElementById("room-count").textContent === String(n), snapRooms, "#room-count shows the snapshot's roomCount");

  a.close();
  b.close();
  await until(
    () => document.getElementById("connections").textContent === "1" && document.getElementById("unique-users").textContent === "1",
    null,
    "#connections and #unique-users show 1 after two disconnects",
  );

  await until(
    (lobby) => [...document.querySelectorAll("#rooms tr")].some((tr) => tr.children[1]?.textContent === lobby && tr.children[2]?.textContent.trim() === "1"),
    LOBBY,
    "the lobby's member count drops to 1",
  );

  assert.equal(await page.evaluate(() => window.__marker), marker, "same document: the marker survived");
  assert.equal(mainNavigations, navigationsBefore, "no navigation happened");
  assert.equal(requests.filter((r) => r.type === "document").length, 1, "the page was loaded once");
  assert.ok(c.connected);
});

test("a log line produced during the test appears live, and <script> in an event name and a log message renders as text", { timeout: 30000 }, async () => {
  const client = sockets.find((s) => s.connected);
  assert.ok(client, "a connected test client");

  // Watch the document for anything a successful injection would add.
  const scriptsBefore = await page.evaluate(() => {
    window.__injected = [];
    new MutationObserver((records) => {
      for (const r of records) {
        for (const n of r.addedNodes) {
          if (n.nodeType !== 1) continue;
          for (const e of [n, ...n.querySelectorAll("*")]) {
            if (/^(SCRIPT|IMG|IFRAME|OBJECT|EMBED|SVG|svg)$/.test(e.tagName) || [...e.attributes].some((a) => /^on/i.test(a.name))) {
              window.__injected.push(e.outerHTML.slice(0, 200));
            }
          }
        }
      }
    }).observe(document, { childList: true, subtree: true });
    return document.scripts.length;
  });

  // The level change loads the history at the new level: wait for that answer first.
  const history = page.waitForResponse((r) => r.url().includes("/api/v1/logs?") && new URL(r.url()).searchParams.get("level") === "debug", { timeout: WAIT });
  await page.selectOption("#log-level", "debug");
  await history;
  const emittedAt = Date.now();
  client.emit(XSS_EVENT, XSS_PAYLOAD);

  // The bridge logged it (the API is the reference for what the viewer should show).
  let fromApi = [];
  const deadline = Date.now() + WAIT;
  while (Date.now() < deadline) {
    const res = await get(`/api/v1/logs?level=debug&limit=1000&q=${encodeURIComponent(XSS_EVENT)}`);
    assert.equal(res.status, 200);
    fromApi = JSON.parse(res.body).entries;
    if (fromApi.some((e) => e.meta?.event === XSS_EVENT)) break;
    await new Promise((r) => setTimeout(r, 100));
  }
  const eventLine = fromApi.find((e) => e.meta?.event === XSS_EVENT);
  assert.ok(eventLine, `the bridge logged the client event with its name (got ${JSON.stringify(fromApi).slice(0, 500)})`);
  assert.ok(
    fromApi.some((e) => e.message.includes(XSS_EVENT)),
    "the bridge logged a line whose message contains the literal <script> text (the test needs one)",
  );

  // It reaches the viewer by server push: no search, no reload, no log request since the emit.
  await until(
    ({ seq, name }) =>
      [...document.querySelectorAll("#logs tr")].some(
        (tr) => tr.dataset.seq === String(seq) && [...tr.querySelectorAll(".kv")].some((kv) => kv.textContent === `event=${name}`),
      ),
    { seq: eventLine.seq, name: XSS_EVENT },
    "the client event's log line appears in the viewer",
  );
  const logRequestsSinceEmit = requests.filter((r) => r.at >= emittedAt && r.url.includes("/api/v1/logs"));
  assert.deepEqual(logRequestsSinceEmit, [], "the line came over the stream, not from a request");

  // The search box narrows the viewer to the literal text.
  await page.fill("#log-search", XSS_EVENT);
  await until(
    (needle) => {
      const rows = [...document.querySelectorAll("#logs tr")].filter((tr) => tr.dataset.level);
      return (
        rows.length > 0 &&
        rows.every((tr) => tr.textContent.toLowerCase().includes(needle.toLowerCase())) &&
        rows.some((tr) => tr.querySelector(".msg").textContent.includes(needle))
      );
    },
    XSS_EVENT,
    "the search shows only rows containing the literal text, one of them in its message",
  );
  const rows = await logRows();
  assert.ok(rows.some((r) => r.meta.includes(`event=${XSS_EVENT}`)), "the event name shows as text in the fields");
  assert.ok(rows.some((r) => r.message.includes(XSS_EVENT)), "a message shows the <script> text literally");
  assert.ok(rows.every((r) => r.text.includes(XSS_EVENT)));

  // Rendered as text: escaped in the markup, nothing executed, nothing added.
  const html = await page.$eval("#logs", (e) => e.innerHTML);
  assert.ok(html.includes("&lt;script&gt;"), "the text is escaped in the markup");
  assert.ok(!html.includes("<script>"), "no script element in the viewer");
  await page.waitForTimeout(200); // a quiet window: an injected script would have run by now
  assert.equal(await page.evaluate(() => window.__xss), undefined, "the injected script did not run");
  assert.equal(await page.evaluate(() => document.scripts.length), scriptsBefore, "no script element was added");
  assert.deepEqual(await page.evaluate(() => window.__injected), [], "no element that could run code was added");
  assert.equal(await page.$$eval("#logs script, #logs img", (e) => e.length), 0);
});

test("the level filter hides debug rows at warn and brings them back at debug", { timeout: 30000 }, async () => {
  await page.fill("#log-search", "");
  await page.selectOption("#log-level", "debug");
  await until(
    () => [...document.querySelectorAll("#logs tr")].some((tr) => tr.dataset.level === "debug"),
    null,
    "debug rows show at level debug",
  );

  await page.selectOption("#log-level", "warn");
  await until(
    () => {
      const rows = [...document.querySelectorAll("#logs tr")].filter((tr) => tr.dataset.level);
      return rows.length > 0 && rows.every((tr) => ["error", "warn"].includes(tr.dataset.level));
    },
    null,
    "only error and warn rows at level warn",
  );
  const atWarn = await logRows();
  assert.ok(atWarn.length > 0, "warn rows remain (the bridge warns about dev auth at start)");
  assert.ok(atWarn.every((r) => r.level === "warn" || r.level === "error"));
  assert.ok(atWarn.some((r) => /dev auth/i.test(r.message)), "the start-up warning is listed");
  // Lines logged below the level while at warn stay out: a client event logs at debug.
  const client = sockets.find((s) => s.connected);
  const probe = `probe:level-filter-${Date.now()}`;
  client.emit(probe, {});
  let probeLine;
  for (const deadline = Date.now() + WAIT; !probeLine && Date.now() < deadline; ) {
    const res = await get(`/api/v1/logs?level=debug&limit=10&q=${encodeURIComponent(probe)}`);
    probeLine = JSON.parse(res.body).entries.find((e) => e.meta?.event === probe);
    if (!probeLine) await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(probeLine, "the bridge logged the probe event at debug");
  assert.equal(probeLine.level, "debug");
  await page.waitForTimeout(1000); // a quiet window: the stream has delivered the line by now, and it must stay hidden
  const stillAtWarn = await logRows();
  assert.ok(stillAtWarn.every((r) => r.level === "warn" || r.level === "error"), "new debug lines stay hidden");
  assert.ok(!stillAtWarn.some((r) => r.text.includes(probe)), "the probe's debug line is not shown at warn");

  // The search narrows within the level, case-insensitively.
  await page.fill("#log-search", "DEV AUTH");
  await until(
    () => {
      const rows = [...document.querySelectorAll("#logs tr")].filter((tr) => tr.dataset.level);
      return rows.length > 0 && rows.every((tr) => /dev auth/i.test(tr.textContent));
    },
    null,
    "case-insensitive search",
  );
  await page.fill("#log-search", "no-such-text-anywhere-9f8e7d");
  await until(() => document.querySelectorAll("#logs tr[data-level]").length === 0, null, "a search without match empties the viewer");
  await page.fill("#log-search", "");

  await page.selectOption("#log-level", "debug");
  await until(
    (seq) => [...document.querySelectorAll("#logs tr")].some((tr) => tr.dataset.level === "debug" && tr.dataset.seq === String(seq)),
    probeLine.seq,
    "debug rows, the probe's among them, are back at level debug",
  );
  await page.selectOption("#log-level", "info");
  await until(
    () => {
      const rows = [...document.querySelectorAll("#logs tr")].filter((tr) => tr.dataset.level);
      return rows.length > 0 && rows.every((tr) => ["error", "warn", "info"].includes(tr.dataset.level));
    },
    null,
    "no debug rows at level info",
  );
});

test("a screenshot of the live dashboard is saved", { timeout: 30000 }, async () => {
  // Some traffic, so the charts have a shape.
  const client = sockets.find((s) => s.connected);
  const more = await Promise.all(["user-d", "user-e"].map(connectClient));
  for (let i = 0; i < 30; i++) {
    client.emit("chat:message", { text: `hello ${i}` });
    if (i % 3 === 0) more[i % 2].emit("presence:ping", {});
    await new Promise((r) => setTimeout(r, 50));
  }
  await until(() => document.getElementById("rate-in").textContent !== "0", null, "#rate-in shows the traffic");
  await page.waitForTimeout(1100); // pacing: the charts draw the traffic before the screenshot (not an assertion)
  const box = await page.$eval("#chart-messages", (c) => {
    const r = c.getBoundingClientRect();
    return { x: r.x, y: r.y, w: r.width, h: r.height };
  });
  await page.locator("#log-search").blur();
  await page.mouse.move(box.x + box.w - 30, box.y + box.h / 2);

  for (const f of [SCREENSHOT, SCREENSHOT_LIGHT]) fs.rmSync(f, { force: true });
  await page.screenshot({ path: SCREENSHOT, fullPage: true, timeout: WAIT });
  // The light theme too (theme button cycles auto -> dark -> light -> auto).
  await page.click("#theme");
  await page.click("#theme");
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "light");
  await page.mouse.move(0, 0);
  await page.screenshot({ path: SCREENSHOT_LIGHT, fullPage: true, timeout: WAIT });
  await page.click("#theme");
  assert.equal(await page.evaluate(() => document.documentElement.dataset.theme), "auto");

  for (const f of [SCREENSHOT, SCREENSHOT_LIGHT]) {
    const png = fs.readFileSync(f);
    assert.equal(png.subarray(1, 4).toString(), "PNG", `${f} is a PNG`);
    assert.ok(png.length > 20000, `${f} has content (${png.length} bytes)`);
  }
  for (const s of more) s.close();
});

test("after a bridge restart the page shows disconnected, then goes live on the new instance by itself", { timeout: 40000 }, async (t) => {
  const marker = await page.evaluate(() => window.__marker);
  const navigationsBefore = mainNavigations;
  const oldId = await text("#instance-id");
  const addr = bridge.http;

  const stopped = await bridge.stop(5000);
  t.diagnostic(`the bridge stopped on ${stopped.signal ?? `exit ${stopped.code}`} after ${stopped.ms} ms with the dashboard's stream open`);
  const disconnectedSince = Date.now();
  assert.notEqual(stopped.signal, "SIGKILL", `the bridge stopped on SIGTERM with the dashboard open (took ${stopped.ms} ms)`);
  await until(() => document.getElementById("live").dataset.state === "disconnected", null, "#live shows disconnected");
  assert.equal(await text("#live"), "disconnected");
  t.diagnostic(`#live showed disconnected ${Date.now() - disconnectedSince} ms after the bridge exited`);
  assert.match(await page.title(), /disconnected/);

  bridge = await startPageBridge({ httpListen: addr });
  const restartedAt = Date.now();
  const snap = JSON.parse((await get("/dashboard/api/snapshot")).body);
  assert.notEqual(snap.instanceId, oldId);
  await until(
    (id) => document.getElementById("live").dataset.state === "live" && document.getElementById("instance-id").textContent === id,
    snap.instanceId,
    "#live is live again, on the new instance",
  );
  t.diagnostic(`live again ${Date.now() - restartedAt} ms after the new bridge was ready`);
  await until(() => document.getElementById("connections").textContent === "0", null, "#connections shows the new instance's 0");
  await until(
    () => [...document.querySelectorAll("#logs tr")].some((tr) => /dev auth/i.test(tr.textContent)),
    null,
    "the new instance's log shows",
  );
  assert.equal(await page.evaluate(() => window.__marker), marker, "same document");
  assert.equal(mainNavigations, navigationsBefore, "no navigation happened");
});

test("the page raised no script error, no CSP violation, and the bridge never logged the password", async () => {
  assert.deepEqual(pageErrors, []);
  assert.deepEqual(cspViolations, []);
  const all = bridgeLogs.flat().join("\n");
  assert.ok(!all.includes(PASSWORD), "password in the bridge log");
  assert.ok(!all.includes(BASIC.slice(6)), "Authorization value in the bridge log");
});
