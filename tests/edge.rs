//! Holding the edge: what an anonymous outsider can make the bridge hold (descriptors,
//! sessions, log lines, admin guesses) is bounded, and what it can read across origins or
//! through a stolen socket id is nothing. Every test runs the real binary on loopback,
//! bounded in time and load, and prints the figures RELIABILITY.md quotes.
//! `EDGE_BRIDGE_BIN=path` runs the tests that start the bridge through `bridge_via`
//! against another build (the release binary, for release figures).

mod common;

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::process::Command;
use tokio_tungstenite::tungstenite::Message;

const BIN: &str = env!("CARGO_BIN_EXE_socket-bridge");

fn set(pairs: &[&str]) -> Vec<String> {
    pairs.iter().flat_map(|p| ["--set".to_string(), p.to_string()]).collect()
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

async fn errors(bridge: &Bridge, kind: &str) -> f64 {
    bridge.metric(&format!("socket_bridge_errors_total{{kind=\"{kind}\"}}")).await
}

/// The bridge's resident memory, from its own status report.
async fn rss(client: &mut Client) -> u64 {
    client.status(proto::StatusRequest {}).await.unwrap().into_inner().rss_bytes
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

fn bin() -> String {
    std::env::var("EDGE_BRIDGE_BIN").unwrap_or_else(|_| BIN.to_owned())
}

/// A bridge started through another command (prlimit, env), with the usual flags.
async fn bridge_via(prefix: &[&str], extra: &[String]) -> Bridge {
    let mut cmd = Command::new(prefix[0]);
    cmd.args(&prefix[1..]).arg(bin());
    cmd.args(["--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--set", "log.format=json"]);
    cmd.args(extra);
    Bridge::spawn(cmd).await
}

/// Waits until `cond` holds, up to `limit`; false if it never did.
async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads until the peer closes (EOF or reset); how long that took, None if not within `limit`.
async fn closed_after(stream: &mut TcpStream, limit: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(limit, async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return started.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

/// A TCP connection from a chosen loopback source address.
async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// An HTTP client whose connections leave from `source`.
fn http_from(source: IpAddr) -> reqwest::Client {
    reqwest::Client::builder().local_address(source).timeout(Duration::from_secs(10)).build().unwrap()
}

// ---- HTTP/2 by hand ---------------------------------------------------------------------------

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut f = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    f.extend_from_slice(&stream.to_be_bytes());
    f.extend_from_slice(payload);
    f
}

/// HPACK literal header with incremental indexing, name from the static table.
fn hpack_indexed_name(index: u8, value: &str) -> Vec<u8> {
    let mut h = vec![0x40 | index, value.len() as u8];
    h.extend_from_slice(value.as_bytes());
    h
}

/// One request on stream 1 over a fresh h2c connection: `GET path`, or a gRPC call to
/// `path` with an empty message when `grpc`.
fn h2_request(path: &str, grpc: bool) -> Vec<u8> {
    let mut block = vec![if grpc { 0x83 } else { 0x82 }, 0x86];
    block.extend(hpack_indexed_name(4, path));
    block.extend(hpack_indexed_name(1, "localhost"));
    let mut bytes = PREFACE.to_vec();
    bytes.extend(frame(4, 0, 0, &[]));
    if grpc {
        block.extend(hpack_indexed_name(31, "application/grpc"));
        block.extend([0x40, 2, b't', b'e', 8]);
        block.extend_from_slice(b"trailers");
        bytes.extend(frame(1, 0x4, 1, &block));
        bytes.extend(frame(0, 0x1, 1, &[0, 0, 0, 0, 0]));
    } else {
        bytes.extend(frame(1, 0x5, 1, &block));
    }
    bytes
}

/// Reads frames until stream 1 ends (answering SETTINGS); false if the connection closed
/// or nothing came within `limit`.
async fn h2_response_ends(stream: &mut TcpStream, limit: Duration) -> bool {
    let work = async {
        loop {
            let mut head = [0u8; 9];
            if stream.read_exact(&mut head).await.is_err() {
                return false;
            }
            let len = (usize::from(head[0]) << 16) | (usize::from(head[1]) << 8) | usize::from(head[2]);
            let (kind, flags) = (head[3], head[4]);
            let id = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
            let mut payload = vec![0u8; len];
            if stream.read_exact(&mut payload).await.is_err() {
                return false;
            }
            if kind == 4 && flags & 1 == 0 && stream.write_all(&frame(4, 1, 0, &[])).await.is_err() {
                return false;
            }
            if id == 1 && (kind == 0 || kind == 1) && flags & 1 == 1 {
                return true;
            }
        }
    };
    tokio::time::timeout(limit, work).await.unwrap_or(false)
}

// ---- idle and slow connections, descriptor pressure ------------------------------------

#[tokio::test]
async fn silent_sockets_at_the_descriptor_limit_leave_health_and_new_clients_served() {
    const SILENT: usize = 1050;
    let first_request_ms = 6000u64;
    let bridge = bridge_via(
        &["prlimit", "--nofile=1024", "--"],
        &set(&[&format!("http.header_read_timeout_ms={first_request_ms}"), "log.summary_interval_ms=1000"]),
    )
    .await;
    // 1,050 connections that never send a byte; the bridge has 1,024 descriptors. Opened
    // 50 at a time: a burst of all of them would overflow the kernel's accept queue, and
    // a connection the kernel dropped there looks open to this side without the bridge
    // ever seeing it (until the kernel retries its handshake, seconds later).
    let started = Instant::now();
    let mut silent: Vec<(TcpStream, Instant)> = Vec::new();
    for wave in 0..SILENT.div_ceil(50) {
        let attempts = (wave * 50..SILENT.min(wave * 50 + 50)).map(|i| {
            let to = bridge.http;
            // Spread over a few source addresses, as many clients would be.
            let from = ip(&format!("127.0.0.{}", 2 + i % 8));
            async move {
                let s = tokio::time::timeout(Duration::from_secs(10), connect_from(from, to)).await.ok()?.ok()?;
                Some((s, Instant::now()))
            }
        });
        silent.extend(futures::future::join_all(attempts).await.into_iter().flatten());
    }
    let opened_in = started.elapsed();
    eprintln!("{} of {SILENT} silent sockets connected in {opened_in:?}", silent.len());
    assert!(silent.len() >= 1024, "the test needs more silent sockets than the bridge has descriptors");

    // /health answers and a stock client connects, each within 5 s.
    let asked = Instant::now();
    let health = reqwest::Client::new()
        .get(format!("{}/health", bridge.url()))
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .expect("/health answered within 5 s while silent sockets fill the descriptor table");
    assert_eq!(health.status(), 200);
    let health_in = asked.elapsed();
    let mut d = Driver::spawn().await;
    let asked = Instant::now();
    d.connect("newcomer", &bridge.url(), json!({"userId": "nina"}), Some(&["websocket"])).await;
    let client_in = asked.elapsed();
    eprintln!(
        "under descriptor pressure: /health answered in {health_in:?}, a stock client connected in {client_in:?}"
    );
    assert!(client_in < Duration::from_secs(5), "stock client took {client_in:?}");

    // Every silent socket is closed: early to make room, or at the first-request deadline
    // (counted from its connect, with 3 s to spare).
    let mut last_close = Duration::ZERO;
    for (s, connected) in &mut silent {
        let limit =
            (*connected + Duration::from_millis(first_request_ms + 3000)).saturating_duration_since(Instant::now());
        let closed = closed_after(s, limit).await;
        assert!(closed.is_some(), "a silent socket outlived the {first_request_ms} ms first-request deadline");
        last_close = last_close.max(started.elapsed());
    }
    eprintln!("all {} silent sockets closed {last_close:?} after they were opened", silent.len());
    drop(silent);

    // The client that got in is served; the refusals are counted, and logged as summaries.
    let mut client = bridge.client_with_key(None).await;
    let r = client.push(push_request(T::UserId("nina".into()), "still-here", "[]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    d.event("newcomer", "still-here").await;
    let (failed, closed_early) = (errors(&bridge, "accept_failed").await, errors(&bridge, "idle_closed_early").await);
    eprintln!("accept failures {failed}, idle connections closed early {closed_early}");
    assert!(failed >= 1.0 && closed_early >= 1.0, "the shortage was met by closing idle connections");
    assert!(
        eventually(Duration::from_secs(3), || async {
            bridge.logs().iter().any(|l| l.contains("accepting connections failed"))
        })
        .await,
        "the shortage is logged"
    );
    let lines = bridge.logs().iter().filter(|l| l.contains("accept")).count();
    let seconds = started.elapsed().as_secs() as usize;
    eprintln!("{lines} log lines about accepting in {seconds} s");
    assert!(lines <= seconds + 2, "one summary line per interval, not one per failure: {lines}");
    d.exit().await;
}

#[tokio::test]
async fn idle_and_slow_connections_are_closed_on_both_ports_and_busy_ones_are_not() {
    let bridge = Bridge::start(&set(&[
        "http.header_read_timeout_ms=1000",
        "http.idle_timeout_ms=2000",
        "grpc.first_request_timeout_ms=1000",
        "grpc.idle_timeout_ms=2000",
        // Long-polls wait up to 3 s, longer than the idle timeout.
        "socketio.ping_interval_ms=3000",
        "socketio.ping_timeout_ms=3000",
    ]))
    .await;
    let limit = Duration::from_secs(4);
    for (port, addr) in [("http", bridge.http), ("grpc", bridge.grpc)] {
        // Nothing sent.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let t = closed_after(&mut s, limit).await.unwrap_or_else(|| panic!("{port}: silent connection kept"));
        eprintln!("{port}: nothing sent, closed after {t:?}");
        // Half an HTTP/2 preface.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&PREFACE[..10]).await.unwrap();
        let t = closed_after(&mut s, limit).await.unwrap_or_else(|| panic!("{port}: partial preface kept"));
        eprintln!("{port}: partial preface, closed after {t:?}");
        // The preface one byte every 100 ms: bytes keep coming, the deadline holds.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let started = Instant::now();
        let mut cut = false;
        for b in PREFACE {
            if s.write_all(&[*b]).await.is_err() {
                cut = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let t =
            if cut { Some(started.elapsed()) } else { closed_after(&mut s, limit).await.map(|_| started.elapsed()) };
        let t = t.unwrap_or_else(|| panic!("{port}: trickled preface kept"));
        eprintln!("{port}: preface trickled byte by byte, closed after {t:?}");
        assert!(t < Duration::from_millis(2500), "{port}: trickling extended the deadline to {t:?}");
        // A complete HTTP/2 preface and SETTINGS, then nothing.
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(PREFACE).await.unwrap();
        s.write_all(&frame(4, 0, 0, &[])).await.unwrap();
        let t = closed_after(&mut s, limit).await.unwrap_or_else(|| panic!("{port}: idle HTTP/2 kept"));
        eprintln!("{port}: idle after the HTTP/2 preface, closed after {t:?}");
        // One request, then idle: closed at the idle timeout, not before.
        let mut s = TcpStream::connect(addr).await.unwrap();
        let request = if port == "http" {
            h2_request("/health", false)
        } else {
            h2_request("/grpc.health.v1.Health/Check", true)
        };
        s.write_all(&request).await.unwrap();
        assert!(h2_response_ends(&mut s, Duration::from_secs(5)).await, "{port}: the request was answered");
        let t = closed_after(&mut s, limit).await.unwrap_or_else(|| panic!("{port}: idle HTTP/2 after a request kept"));
        eprintln!("{port}: idle HTTP/2 after one request, closed after {t:?}");
        assert!(t >= Duration::from_millis(1500), "{port}: closed {t:?} after its request, before the idle timeout");
    }
    // HTTP/1: slow headers, and idle keep-alive.
    let (mut read, mut write) = TcpStream::connect(bridge.http).await.unwrap().into_split();
    write.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let trickle = tokio::spawn(async move {
        for i in 0.. {
            if write.write_all(format!("X-Slow-{i}: 1\r\n").as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let started = Instant::now();
    let mut buf = [0u8; 64];
    let cut =
        tokio::time::timeout(limit, async { while !matches!(read.read(&mut buf).await, Ok(0) | Err(_)) {} }).await;
    trickle.abort();
    assert!(cut.is_ok(), "slow headers kept");
    eprintln!("http: headers trickled every 200 ms, closed after {:?}", started.elapsed());
    assert!((Duration::from_millis(900)..Duration::from_millis(1500)).contains(&started.elapsed()));
    let mut s = TcpStream::connect(bridge.http).await.unwrap();
    s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut buf = [0u8; 512];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    let t = closed_after(&mut s, limit).await.expect("idle keep-alive closed");
    eprintln!("http: idle keep-alive after one request, closed after {t:?}");
    assert!(t >= Duration::from_millis(1500));

    // Busy is not idle: a long-polling stock client, whose requests wait up to a ping
    // interval with nothing sent, and an open dashboard-style stream stay up across
    // several idle timeouts.
    let mut d = Driver::spawn().await;
    d.connect("poller", &bridge.url(), json!({"userId": "polly"}), Some(&["polling"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    tokio::time::sleep(Duration::from_secs(7)).await;
    assert!(d.try_expect(|v| v["type"] == "disconnect", Duration::ZERO).await.is_none(), "the poller was cut");
    let r = client.push(push_request(T::UserId("polly".into()), "after-idle", "[1]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    d.event("poller", "after-idle").await;
    d.send(json!({"cmd": "emit", "id": "poller", "event": "still", "args": [1]})).await;
    assert_eq!(
        backend.next_event().await.event,
        "still",
        "the backend's stream (a call in flight) outlived the idle timeout"
    );
    d.exit().await;
}

// ---- Engine.IO sessions -------------------------------------------------------------------

/// Opens an Engine.IO polling session; its id, or the HTTP status of the refusal.
async fn handshake(http: &reqwest::Client, bridge: &Bridge) -> Result<String, (u16, reqwest::header::HeaderMap)> {
    let url = format!("{}/socket.io/?EIO=4&transport=polling", bridge.url());
    let Ok(resp) = http.get(url).send().await else { return Err((0, Default::default())) };
    let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
    let body = resp.text().await.unwrap_or_default();
    if status != 200 {
        return Err((status, headers));
    }
    let open: Value = serde_json::from_str(body.strip_prefix('0').unwrap_or("{}")).unwrap_or(Value::Null);
    open["sid"].as_str().map(str::to_owned).ok_or((status, headers))
}

#[tokio::test]
async fn handshake_flood_is_capped_per_address_and_in_total_and_memory_returns() {
    // One greedy address meets its limit, the seven others together meet the total.
    // Sessions live 20 s unjoined, so any machine doing 200 handshakes a second reaches both.
    const PER_ADDRESS: usize = 600;
    const TOTAL: usize = 4000;
    let bridge = bridge_via(
        &["env"],
        &set(&[
            &format!("socketio.max_sessions={TOTAL}"),
            &format!("socketio.max_sessions_per_address={PER_ADDRESS}"),
            "socketio.connect_timeout_ms=20000",
            "log.summary_interval_ms=2000",
        ]),
    )
    .await;
    let test_started = Instant::now();
    let mut client = bridge.client_with_key(None).await;
    let sessions = || async { bridge.metric("socket_bridge_engineio_sessions").await };
    let baseline = rss(&mut client).await;

    // Per address: exactly the limit, then 429 with Retry-After; another address is not
    // affected.
    let one = http_from(ip("127.0.0.20"));
    for chunk in 0..PER_ADDRESS / 50 {
        let batch = (0..50).map(|_| handshake(&one, &bridge));
        for (i, r) in futures::future::join_all(batch).await.into_iter().enumerate() {
            r.unwrap_or_else(|e| panic!("handshake {} refused: {}", chunk * 50 + i, e.0));
        }
    }
    let (status, headers) = handshake(&one, &bridge).await.unwrap_err();
    assert_eq!(status, 429, "over the per-address limit");
    assert_eq!(headers["retry-after"], "5");
    handshake(&http_from(ip("127.0.0.21")), &bridge).await.expect("another address still gets a session");

    let flood = |seconds: u64| {
        let url = bridge.url();
        async move {
            let workers = (0..32).map(|w| {
                // Half the workers on one address (it meets the per-address limit), the
                // rest spread over seven (together they meet the total).
                let http = http_from(ip(&format!("127.0.0.{}", if w % 2 == 0 { 2 } else { 3 + w % 7 })));
                let url = format!("{url}/socket.io/?EIO=4&transport=polling");
                async move {
                    let stop = Instant::now() + Duration::from_secs(seconds);
                    let mut counts = [0u64; 4]; // 200, 429, 503, other
                    while Instant::now() < stop {
                        let status = match http.get(&url).send().await {
                            Ok(r) => {
                                let s = r.status().as_u16();
                                let _ = r.bytes().await;
                                s
                            }
                            Err(_) => 0,
                        };
                        counts[match status {
                            200 => 0,
                            429 => 1,
                            503 => 2,
                            _ => 3,
                        }] += 1;
                    }
                    counts
                }
            });
            futures::future::join_all(workers).await.into_iter().fold([0u64; 4], |mut a, c| {
                (0..4).for_each(|i| a[i] += c[i]);
                a
            })
        }
    };

    // The 20 s flood, sampled every second.
    let started = Instant::now();
    let run = tokio::spawn(flood(20));
    let (mut peak_sessions, mut peak_rss) = (0.0f64, 0u64);
    while !run.is_finished() {
        peak_sessions = peak_sessions.max(sessions().await);
        peak_rss = peak_rss.max(rss(&mut client).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let [ok, per_address, total, other] = run.await.unwrap();
    let flood_time = started.elapsed();
    eprintln!(
        "20 s handshake flood from 8 addresses: {ok} sessions opened, {per_address} refused per address (429), {total} refused in total (503), {other} other; at most {peak_sessions} sessions at once (limit {TOTAL}); {:.0} handshakes/s",
        (ok + per_address + total + other) as f64 / flood_time.as_secs_f64()
    );
    assert!(peak_sessions <= TOTAL as f64, "{peak_sessions} sessions over the limit of {TOTAL}");
    assert!(per_address > 0 && total > 0, "both limits were reached");
    assert_eq!(other, 0, "every handshake was either served or refused with 429/503");
    assert!(errors(&bridge, "session_limit").await >= (per_address + total) as f64);

    // Memory returns within 60 s: to 20% over the baseline plus a fixed 12 MiB, which covers
    // what a first flood leaves behind for good (the log ring filled, the runtime's and
    // the maps' grown capacity: 6 to 11 MiB measured); the flood itself added about 40.
    let bound = baseline + baseline / 5 + (12 << 20);
    let after = Instant::now();
    // Sessions that never CONNECT end after the connect timeout.
    assert!(
        eventually(Duration::from_secs(30), || async { sessions().await == 0.0 }).await,
        "unconnected sessions linger"
    );
    eprintln!("the last unconnected sessions ended {:?} after the flood", after.elapsed());
    let mut last = rss(&mut client).await;
    while last > bound && after.elapsed() < Duration::from_secs(60) {
        tokio::time::sleep(Duration::from_millis(500)).await;
        last = rss(&mut client).await;
    }
    let returned = last <= bound;
    eprintln!(
        "RSS: baseline {:.1} MiB, peak during the flood {:.1} MiB, {:.1} MiB {:?} after it (bound {:.1} MiB)",
        mib(baseline),
        mib(peak_rss),
        mib(last),
        after.elapsed(),
        mib(bound)
    );
    assert!(returned, "RSS stayed at {:.1} MiB, over {:.1} MiB", mib(last), mib(bound));
    assert_eq!(sessions().await, 0.0, "every unconnected session ended");

    // Refusals were summarized, not logged one by one; a stock client connects.
    let summaries = bridge.logs().iter().filter(|l| l.contains("Engine.IO requests refused")).count();
    eprintln!("{summaries} summary lines for {} refusals", per_address + total + 1);
    // One line per 2 s interval at most, from the first refusal on.
    assert!(summaries >= 1 && summaries <= 1 + (test_started.elapsed().as_secs() as usize) / 2, "{summaries}");
    let trims: Vec<String> = bridge
        .logs()
        .iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"] == "returned freed memory to the OS")
        .map(|v| format!("{} ms at peak {}", v["took_ms"], v["peak"]))
        .collect();
    eprintln!("malloc_trim runs: {trims:?}");
    // A connected client's session is counted, and given back when it leaves.
    let mut d = Driver::spawn().await;
    d.connect("after", &bridge.url(), json!({"userId": "afta"}), Some(&["polling"])).await;
    assert_eq!(sessions().await, 1.0);
    d.send(json!({"cmd": "disconnect", "id": "after"})).await;
    assert!(eventually(Duration::from_secs(5), || async { sessions().await == 0.0 }).await, "session given back");
    d.exit().await;
}

// ---- no credential in any log --------------------------------------------------------

#[tokio::test]
async fn no_credential_reaches_any_log_even_at_trace_level() {
    let dir = std::env::temp_dir().join(format!("edge-trace-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("bridge.log");
    let admin_password = "adm1n-Passw0rd-7731";
    let hidden_pin = "hunter2-pin-5583";
    let mut args = jwt_args();
    args.extend(set(&[
        "log.level=trace",
        &format!("log.file=\"{}\"", file.display()),
        "log.ring_capacity=5000",
        &format!("dashboard.password={admin_password}"),
        "dashboard.burst_per_address=100",
        "socketio.redacted_auth_fields=[\"token\", \"pin\"]",
    ]));
    // An empty RUST_LOG counts as unset, so log.level=trace applies to every crate.
    let bridge = bridge_via(&["env", "RUST_LOG="], &args).await;
    let basic = format!("Basic {}", b64(format!("admin:{admin_password}").as_bytes()));
    let wrong_basic = format!("Basic {}", b64(b"admin:not-the-admin-pass"));
    let http = reqwest::Client::new();

    // The dashboard's live log feed, read for the whole test (until `stop` says which
    // entry is the last one to wait for).
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(None::<u64>);
    let feed = {
        let mut resp = http
            .get(format!("{}/dashboard/api/stream", bridge.url()))
            .header("authorization", &basic)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        tokio::spawn(async move {
            let mut text = String::new();
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let last = *stop_rx.borrow();
                if let Some(seq) = last
                    && text.contains(&format!("\"seq\":{seq},"))
                {
                    return text;
                }
                tokio::select! {
                    chunk = resp.chunk() => match chunk {
                        Ok(Some(chunk)) => text.push_str(&String::from_utf8_lossy(&chunk)),
                        _ => return text,
                    },
                    _ = stop_rx.changed() => {}
                    _ = tokio::time::sleep_until(deadline) => return text,
                }
            }
        })
    };

    // Every credential the bridge meets: client tokens and a redacted auth field over
    // both transports, a refused token, API keys on both doors (right and wrong), admin
    // credentials (right and wrong).
    let tok = token("tracy", &[]);
    let mut d = Driver::spawn().await;
    for (id, transport) in [("p", "polling"), ("w", "websocket")] {
        d.connect(id, &bridge.url(), json!({"token": tok, "pin": hidden_pin}), Some(&[transport])).await;
        d.send(json!({"cmd": "emit", "id": id, "event": "hello", "args": [{"note": "no secret here"}]})).await;
    }
    d.connect_error("bad", &bridge.url(), json!({"token": format!("{tok}x"), "pin": hidden_pin})).await;
    let mut client = bridge.client().await;
    client.status(proto::StatusRequest {}).await.unwrap();
    let mut wrong = bridge.client_with_key(Some("wrong-key-0123456789abcdef")).await;
    assert!(wrong.status(proto::StatusRequest {}).await.is_err());
    bridge.rest("GET", "/api/v1/status", Some(API_KEY), None).await;
    bridge.rest("GET", "/api/v1/status", Some("wrong-key-0123456789abcdef"), None).await;
    for auth in [&basic, &wrong_basic] {
        http.get(format!("{}/dashboard", bridge.url())).header("authorization", auth).send().await.unwrap();
    }
    d.exit().await;
    tracing_marker(&bridge).await;

    // Every output: console, file, /api/v1/logs, the live feed (read up to the newest
    // entry the ring has now).
    assert!(
        eventually(Duration::from_secs(5), || async {
            bridge.logs().iter().any(|l| l.contains("credential-scan-finished"))
        })
        .await
    );
    let newest: Value = http
        .get(format!("{}/api/v1/logs?level=trace&limit=1", bridge.url()))
        .header("authorization", &basic)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    stop_tx.send(newest["entries"][0]["seq"].as_u64()).unwrap();
    let console = bridge.logs().join("\n");
    let mut logs_api = String::new();
    for level in ["trace", "debug", "info"] {
        let page = http
            .get(format!("{}/api/v1/logs?level={level}&limit=1000", bridge.url()))
            .header("authorization", &basic)
            .send()
            .await
            .unwrap();
        logs_api.push_str(&page.text().await.unwrap());
    }
    let fed = feed.await.unwrap();
    let written = eventually(Duration::from_secs(5), || async {
        std::fs::read_to_string(&file).is_ok_and(|t| t.contains("credential-scan-finished"))
    })
    .await;
    assert!(written, "the log file got the lines");
    let file_text = std::fs::read_to_string(&file).unwrap();
    let jwt_body = tok.rsplit_once('.').unwrap().0.to_owned();
    let secrets = [
        ("JWT", tok.as_str()),
        ("JWT header and claims", jwt_body.as_str()),
        ("JWT secret", JWT_SECRET),
        ("API key", API_KEY),
        ("wrong API key", "wrong-key-0123456789abcdef"),
        ("admin password", admin_password),
        ("admin Basic credentials", basic.trim_start_matches("Basic ")),
        ("wrong admin password", "not-the-admin-pass"),
        ("redacted auth field", hidden_pin),
    ];
    for (output, text) in
        [("console", &console), ("log file", &file_text), ("/api/v1/logs", &logs_api), ("live feed", &fed)]
    {
        eprintln!("{output}: {} bytes scanned, {} redactions", text.len(), text.matches("<redacted>").count());
        assert!(text.len() > 10_000, "{output} carries the trace output ({} bytes)", text.len());
        for (what, secret) in secrets {
            assert!(!text.contains(secret), "the {what} appears in the {output}");
        }
    }
    // The Socket.IO layer did print the CONNECT packets (which is what needed redacting).
    assert!(
        console.lines().any(|l| l.contains("socketioxide") && l.contains("auth") && l.contains("<redacted>")),
        "the CONNECT packet's trace line is there, redacted"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Logs a line the scans can wait for: a refused request's line carries its path.
async fn tracing_marker(bridge: &Bridge) {
    bridge.rest("GET", "/credential-scan-finished", None, None).await;
}

// ---- cross-origin ------------------------------------------------------------------------

const EVIL: &str = "https://evil.example";

#[tokio::test]
async fn other_origins_get_no_grant_on_admin_and_api_routes_and_socketio_follows_its_setting() {
    let password = "cors-test-pass-1234";
    let bridge = Bridge::start(&set(&[&format!("dashboard.password={password}")])).await;
    let basic = format!("Basic {}", b64(format!("admin:{password}").as_bytes()));
    let http = reqwest::Client::new();
    let routes = [
        ("GET", "/health"),
        ("GET", "/ready"),
        ("GET", "/metrics"),
        ("GET", "/api/v1/openapi.json"),
        ("GET", "/api/v1/status"),
        ("POST", "/api/v1/push"),
        ("POST", "/api/v1/push/batch"),
        ("GET", "/api/v1/logs"),
        ("GET", "/dashboard"),
        ("GET", "/dashboard/api/snapshot"),
        ("GET", "/nowhere"),
    ];
    let mut checked = 0;
    for (method, path) in routes {
        for with_credentials in [false, true] {
            let mut req =
                http.request(method.parse().unwrap(), format!("{}{path}", bridge.url())).header("origin", EVIL);
            if with_credentials {
                req = req.header("authorization", &basic).header("cookie", "session=1");
            }
            let resp = req.send().await.unwrap();
            let h = resp.headers();
            assert!(h.get("access-control-allow-origin").is_none(), "{method} {path} granted {EVIL}: {h:?}");
            assert!(h.get("access-control-allow-credentials").is_none(), "{method} {path}: {h:?}");
            assert_eq!(h["x-content-type-options"], "nosniff", "{method} {path}");
            assert!(h.contains_key("referrer-policy"), "{method} {path}");
            checked += 1;
        }
        let preflight = http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", bridge.url()))
            .header("origin", EVIL)
            .header("access-control-request-method", method)
            .header("access-control-request-headers", "authorization")
            .send()
            .await
            .unwrap();
        assert!(preflight.headers().get("access-control-allow-origin").is_none(), "preflight {path}");
        checked += 1;
    }
    // The dashboard: not frameable, not sniffable, no referrer, script allowed by hash only.
    for auth in [Some(&basic), None] {
        let mut req = http.get(format!("{}/dashboard", bridge.url()));
        if let Some(a) = auth {
            req = req.header("authorization", a);
        }
        let resp = req.send().await.unwrap();
        let h = resp.headers();
        let csp = h["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(h["x-frame-options"], "DENY");
        assert_eq!(h["x-content-type-options"], "nosniff");
        assert_eq!(h["referrer-policy"], "no-referrer");
        if auth.is_some() {
            assert!(csp.contains("script-src 'sha256-") && !csp.contains("script-src 'unsafe-inline'"), "{csp}");
        }
    }
    // Socket.IO with the default (empty) list: any origin, never with credentials.
    let polling = format!("{}/socket.io/?EIO=4&transport=polling", bridge.url());
    let resp = http.get(&polling).header("origin", EVIL).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    assert!(resp.headers().get("access-control-allow-credentials").is_none());
    let preflight = http
        .request(reqwest::Method::OPTIONS, &polling)
        .header("origin", EVIL)
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert_eq!(preflight.headers()["access-control-allow-origin"], "*");
    assert!(preflight.headers().get("access-control-allow-credentials").is_none());
    eprintln!("{checked} admin and API requests with Origin {EVIL}: no grant");

    // With a list: those origins with credentials; others refused on both transports.
    let app = "https://app.example";
    let listed = Bridge::start(&set(&[&format!("socketio.cors_origins=[\"{app}\"]")])).await;
    let polling = format!("{}/socket.io/?EIO=4&transport=polling", listed.url());
    let resp = http.get(&polling).header("origin", app).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["access-control-allow-origin"], app);
    assert_eq!(resp.headers()["access-control-allow-credentials"], "true");
    let resp = http.get(&polling).header("origin", EVIL).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let ws = format!("ws://{}/socket.io/?EIO=4&transport=websocket", listed.http);
    let mut request =
        tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(ws.as_str()).unwrap();
    request.headers_mut().insert("origin", EVIL.parse().unwrap());
    let refused = tokio_tungstenite::connect_async(request).await;
    assert!(
        matches!(&refused, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 403),
        "websocket from another origin: {refused:?}"
    );
    // A client that sends no Origin (a server, not a browser page) is not a cross-origin
    // request.
    tokio_tungstenite::connect_async(ws.as_str()).await.expect("websocket without Origin");
    assert_eq!(errors(&listed, "origin_refused").await, 2.0);
}

// ---- admin rate limit and failure summaries ------------------------------------------

#[tokio::test]
async fn admin_guessing_is_rate_limited_per_address_and_failures_are_summarized() {
    let password = "rate-test-pass-9876";
    let bridge =
        Bridge::start(&set(&[&format!("dashboard.password={password}"), "log.summary_interval_ms=1000"])).await;
    let good = format!("Basic {}", b64(format!("admin:{password}").as_bytes()));
    let attacker = http_from(ip("127.0.0.2"));
    let operator = http_from(ip("127.0.0.3"));
    let url = format!("{}/api/v1/logs", bridge.url());
    let started = Instant::now();
    let (mut unauthorized, mut limited, mut retry_after) = (0u32, 0u32, Vec::new());
    for i in 0..300 {
        let guess = format!("Basic {}", b64(format!("admin:guess-{i}").as_bytes()));
        let resp = attacker.get(&url).header("authorization", guess).send().await.unwrap();
        match resp.status().as_u16() {
            401 => unauthorized += 1,
            429 => {
                limited += 1;
                retry_after.push(resp.headers()["retry-after"].to_str().unwrap().parse::<u64>().unwrap());
            }
            s => panic!("unexpected {s}"),
        }
    }
    let took = started.elapsed();
    eprintln!(
        "300 guesses from one address in {took:?}: {unauthorized} checked (401), {limited} refused with 429 (Retry-After {:?} s)",
        retry_after.iter().min().zip(retry_after.iter().max())
    );
    // Burst 20, then 2 a second.
    assert!(u64::from(unauthorized) <= 20 + 2 * took.as_secs() + 2, "{unauthorized} guesses got through");
    assert!(retry_after.iter().all(|s| *s >= 1));
    // The operator, from another address, is not affected.
    let resp = operator.get(&url).header("authorization", &good).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(errors(&bridge, "admin_auth").await, 300.0);
    // Summaries: a few lines whose counts add up to the 300, and no line per request.
    assert!(
        eventually(Duration::from_secs(5), || async {
            summary_counts(&bridge.logs()) == (u64::from(unauthorized), u64::from(limited))
        })
        .await,
        "summaries add up: {:?}",
        summary_counts(&bridge.logs())
    );
    let logs = bridge.logs();
    let summaries = logs.iter().filter(|l| l.contains("admin requests refused")).count();
    let per_request = logs.iter().filter(|l| l.contains("request refused") && l.contains("/api/v1/logs")).count();
    eprintln!("{summaries} summary lines for 300 refusals, {per_request} per-request lines");
    assert!(summaries <= 2 + took.as_secs() as usize, "{summaries} lines");
    assert_eq!(per_request, 0);
    let line: Value =
        serde_json::from_str(logs.iter().find(|l| l.contains("admin requests refused")).unwrap()).unwrap();
    assert!(line["busiest"].as_str().unwrap().contains("127.0.0.2"), "{line}");
}

fn summary_counts(logs: &[String]) -> (u64, u64) {
    logs.iter()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with("admin requests refused")))
        .fold((0, 0), |(f, r), v| (f + v["failed"].as_u64().unwrap_or(0), r + v["rate_limited"].as_u64().unwrap_or(0)))
}

// ---- small bounds and precise errors -------------------------------------------------

/// The next Socket.IO packet that is not a ping, or None when the connection closed.
async fn next_packet<S>(ws: &mut S) -> Option<String>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) if t.as_str() != "2" => return Some(t.to_string()),
                Some(Ok(Message::Text(_))) | Some(Ok(Message::Ping(_))) | Some(Ok(Message::Pong(_))) => {}
                _ => return None,
            }
        }
    })
    .await
    .expect("a packet or the close within the time limit")
}

#[tokio::test]
async fn client_events_over_the_limits_are_refused_with_precise_errors_and_malformed_ones_close() {
    let bridge = Bridge::start(&set(&[
        "socketio.events_per_second=10",
        "socketio.event_burst=20",
        "log.summary_interval_ms=500",
    ]))
    .await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    let mut ws = raw_socket(&bridge, json!({"userId": "eve"})).await;

    let long = "e".repeat(300_000);
    ws.send(Message::text(format!("420[\"{long}\",1]"))).await.unwrap();
    let answer = next_packet(&mut ws).await.expect("an answer");
    assert_eq!(
        answer,
        r#"430[{"error":{"code":"invalid_event","message":"event name is 300000 characters, over the limit of 256"}}]"#
    );
    let deep = format!("{}1{}", "[".repeat(40), "]".repeat(40));
    ws.send(Message::text(format!("421[\"deep\",{deep}]"))).await.unwrap();
    let answer = next_packet(&mut ws).await.expect("an answer");
    assert_eq!(
        answer,
        r#"431[{"error":{"code":"invalid_payload","message":"arguments nest 40 levels deep, over the limit of 32"}}]"#
    );
    // Just under the limits passes, on the same connection.
    let name = "n".repeat(256);
    let ok_deep = format!("{}1{}", "[".repeat(32), "]".repeat(32));
    ws.send(Message::text(format!("42[\"{name}\",{ok_deep}]"))).await.unwrap();
    let e = backend.next_event().await;
    assert_eq!((e.event.len(), e.user_id.as_str()), (256, "eve"), "the refused events never reached the backend");
    assert_eq!(errors(&bridge, "invalid_event").await, 2.0);

    // Trailing garbage after the event's array: logged, counted, and the socket is
    // disconnected (the packet is malformed), never silently dropped.
    let mut garbage = raw_socket(&bridge, json!({"userId": "eve"})).await;
    garbage.send(Message::text("42[\"x\",1]garbage".to_string())).await.unwrap();
    let reply = next_packet(&mut garbage).await;
    assert!(matches!(reply.as_deref(), None | Some("41")), "disconnected: {reply:?}");
    assert!(
        eventually(Duration::from_secs(3), || async {
            bridge.logs().iter().any(|l| l.contains("malformed client event") && l.contains("not one JSON array"))
        })
        .await,
        "the reason is logged"
    );
    assert_eq!(errors(&bridge, "invalid_event").await, 3.0);
    assert!(backend.quiet_for(Duration::from_millis(300)).await.is_none(), "nothing of it reached the backend");

    // Refused events use up the socket's event rate: one that keeps sending them faster
    // than its rate (10/s, burst 20) is disconnected.
    let mut spammer = raw_socket(&bridge, json!({"userId": "spam"})).await;
    let mut answered = 0;
    for i in 0..100 {
        if spammer.send(Message::text(format!("42{i}[\"{}\"]", "s".repeat(300)))).await.is_err() {
            break;
        }
    }
    let disconnected = loop {
        match next_packet(&mut spammer).await.as_deref() {
            Some(p) if p.contains("invalid_event") => answered += 1,
            Some("41") | None => break true,
            Some(other) => panic!("unexpected {other}"),
        }
    };
    eprintln!("100 over-long event names in a row: {answered} answered with invalid_event, then disconnected");
    assert!(disconnected && (20..=25).contains(&answered), "{answered} answered");
    // The refusals are in summary lines, not one line each.
    assert!(
        eventually(Duration::from_secs(3), || async {
            bridge.logs().iter().any(|l| l.contains("client events refused") && l.contains("over_rate"))
        })
        .await
    );
    let summaries = bridge.logs().iter().filter(|l| l.contains("client events refused")).count();
    let info_lines = bridge.logs().iter().filter(|l| l.contains("\"level\":\"INFO\"") && l.contains("refused")).count();
    eprintln!("{summaries} summary lines, {info_lines} INFO lines for {} refusals", answered + 4);
    assert_eq!(info_lines, 0);
}

/// `PushRequest` with `event` (and the target's `user_id`) as raw bytes, to send what a
/// well-behaved client library never would.
#[derive(Clone, PartialEq, prost::Message)]
struct RawPush {
    #[prost(message, optional, tag = "1")]
    target: Option<RawTarget>,
    #[prost(bytes = "vec", tag = "3")]
    event: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct RawTarget {
    #[prost(bytes = "vec", tag = "1")]
    user_id: Vec<u8>,
}

#[tokio::test]
async fn invalid_utf8_in_a_grpc_string_is_invalid_argument_naming_the_field() {
    let bridge = Bridge::start(&[]).await;
    let mut grpc = tonic::client::Grpc::new(bridge.channel().await);
    let mut call = async |push: RawPush| {
        grpc.ready().await.unwrap();
        let codec = tonic_prost::ProstCodec::<RawPush, proto::PushResponse>::default();
        let path = tonic::codegen::http::uri::PathAndQuery::from_static("/socketbridge.v1.BridgeService/Push");
        grpc.unary(tonic::Request::new(push), path, codec).await.unwrap_err()
    };
    for (push, field) in [
        (RawPush { target: Some(RawTarget { user_id: b"ann".to_vec() }), event: b"caf\xe9".to_vec() }, "event"),
        (
            RawPush { target: Some(RawTarget { user_id: b"\xff\xfe".to_vec() }), event: b"ok".to_vec() },
            "target.user_id",
        ),
    ] {
        let status = call(push).await;
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(status.message(), format!("{field}: must be valid UTF-8"));
        use tonic_types::StatusExt;
        let details = status.get_error_details();
        assert_eq!(details.bad_request().unwrap().field_violations[0].field, field);
        eprintln!("invalid UTF-8 in {field}: {:?} {:?}", status.code(), status.message());
    }
}

#[tokio::test]
async fn dev_mode_on_a_public_interface_still_requires_api_keys() {
    let refused = Command::new(BIN)
        .args(["--http-listen", "0.0.0.0:0", "--grpc-listen", "127.0.0.1:0"])
        .args(set(&["auth.allow_dev_on_public_interface=true"]))
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("grpc.api_keys: at least one API key is required when a listener is beyond loopback"),
        "{stderr}"
    );

    let mut cmd = Command::new(BIN);
    cmd.args(["--http-listen", "0.0.0.0:0", "--grpc-listen", "0.0.0.0:0", "--set", "log.format=json"]);
    cmd.args(set(&["auth.allow_dev_on_public_interface=true", &format!("grpc.api_keys=[\"{API_KEY}\"]")]));
    let bridge = Bridge::spawn(cmd).await;
    let status = bridge.client_with_key(None).await.status(proto::StatusRequest {}).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::Unauthenticated);
    assert_eq!(bridge.rest("GET", "/api/v1/status", None, None).await.0, 401);
    assert_eq!(bridge.rest("GET", "/api/v1/status", Some(API_KEY), None).await.0, 200);
    bridge.client().await.status(proto::StatusRequest {}).await.expect("with the key");
    // Clients still choose their user id (that is what dev mode is).
    let mut d = Driver::spawn().await;
    d.connect("dev", &bridge.url(), json!({"userId": "devi"}), Some(&["websocket"])).await;
    d.exit().await;
}

#[tokio::test]
async fn tokens_with_critical_header_extensions_are_refused() {
    let bridge = Bridge::start(&jwt_args()).await;
    let header = jsonwebtoken::Header { crit: Some(vec!["exp".into()]), ..Default::default() };
    let claims = json!({"sub": "cris", "exp": jsonwebtoken::get_current_timestamp() + 60});
    let critical =
        jsonwebtoken::encode(&header, &claims, &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes())).unwrap();
    let mut d = Driver::spawn().await;
    assert_eq!(
        d.connect_error("crit", &bridge.url(), json!({"token": critical})).await,
        "token header marks extensions as critical (\"crit\"); none is supported"
    );
    d.connect("plain", &bridge.url(), json!({"token": token("cris", &[])}), Some(&["websocket"])).await;
    d.exit().await;
}

// ---- socket ids do not unlock sessions -------------------------------------------------

/// A raw Engine.IO polling client from a chosen source address.
struct Poller {
    http: reqwest::Client,
    url: String,
}

impl Poller {
    fn new(bridge: &Bridge, from: IpAddr, sid: &str) -> Self {
        Self { http: http_from(from), url: format!("{}/socket.io/?EIO=4&transport=polling&sid={sid}", bridge.url()) }
    }

    async fn get(&self) -> (u16, String) {
        let r = self.http.get(&self.url).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn post(&self, body: &str) -> (u16, String) {
        let r = self.http.post(&self.url).body(body.to_owned()).send().await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    /// Polls (answering pings) until a packet containing `wanted` arrives.
    async fn until(&self, wanted: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let (status, body) = self.get().await;
            assert_eq!(status, 200, "{body}");
            if body.contains(wanted) {
                return body;
            }
            if body.split('\u{1e}').any(|p| p == "2") {
                self.post("3").await;
            }
            assert!(Instant::now() < deadline, "no {wanted} within {WAIT:?}");
        }
    }
}

#[tokio::test]
async fn a_stolen_socket_id_unlocks_nothing_over_polling_or_websocket() {
    let bridge = Bridge::start(&set(&["socketio.ping_interval_ms=20000", "socketio.ping_timeout_ms=20000"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    let victim_ip = ip("127.0.0.1");
    let attacker_ip = ip("127.0.0.2");

    // The victim, over long-polling from 127.0.0.1.
    let sid = handshake(&http_from(victim_ip), &bridge).await.expect("victim's session");
    let victim = Poller::new(&bridge, victim_ip, &sid);
    assert_eq!(victim.post(r#"40{"userId":"vic"}"#).await.0, 200);
    victim.until("40{\"sid\"").await;
    // The backend shows socket ids; the attacker learns the victim's.
    let listed = client.list_connections(proto::ListConnectionsRequest::default()).await.unwrap().into_inner();
    let socket_id = listed.connections[0].socket_id.clone();
    assert_eq!(socket_id, sid, "a socket's id is its Engine.IO session id (the premise of the attack)");

    // The attacker, from 127.0.0.2, tries every way in with it.
    let attacker = Poller::new(&bridge, attacker_ip, &socket_id);
    let unknown = r#"{"code":1,"message":"Session ID unknown"}"#;
    assert_eq!(attacker.get().await, (400, unknown.to_owned()), "reading the victim's packets");
    assert_eq!(attacker.post(r#"42["steal",1]"#).await, (400, unknown.to_owned()), "writing as the victim");
    assert_eq!(attacker.post("1").await.0, 400, "closing the victim's session");
    let ws_url = format!("ws://{}/socket.io/?EIO=4&transport=websocket&sid={socket_id}", bridge.http);
    let stream = connect_from(attacker_ip, bridge.http).await.unwrap();
    let upgrade = tokio_tungstenite::client_async(ws_url.as_str(), stream).await;
    assert!(
        matches!(&upgrade, Err(tokio_tungstenite::tungstenite::Error::Http(r)) if r.status() == 400),
        "taking the session over with a websocket upgrade: {upgrade:?}"
    );
    assert_eq!(errors(&bridge, "session_address_mismatch").await, 4.0);

    // The victim is unaffected: still connected, reads its pushes, its events arrive.
    let r = client.push(push_request(T::UserId("vic".into()), "private", "[\"for vic\"]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    victim.until(r#"42["private","for vic"]"#).await;
    assert_eq!(victim.post(r#"42["hello",1]"#).await.0, 200);
    let e = backend.next_event().await;
    assert_eq!((e.event.as_str(), e.socket_id.as_str()), ("hello", sid.as_str()), "no event of the attacker's");
    let s = client.status(proto::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.connections, 1);

    // A websocket victim's id is as useless to the attacker.
    let ws_victim_stream = connect_from(victim_ip, bridge.http).await.unwrap();
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", bridge.http);
    let (mut ws, _) = tokio_tungstenite::client_async(url.as_str(), ws_victim_stream).await.unwrap();
    let open = ws.next().await.unwrap().unwrap();
    let ws_sid =
        serde_json::from_str::<Value>(&open.to_text().unwrap()[1..]).unwrap()["sid"].as_str().unwrap().to_owned();
    ws.send(Message::text(r#"40{"userId":"wanda"}"#.to_string())).await.unwrap();
    assert!(next_packet(&mut ws).await.unwrap().starts_with("40{\"sid\""));
    let attacker = Poller::new(&bridge, attacker_ip, &ws_sid);
    assert_eq!(attacker.get().await, (400, unknown.to_owned()));
    let r = client.push(push_request(T::UserId("wanda".into()), "private", "[2]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    assert_eq!(next_packet(&mut ws).await.as_deref(), Some(r#"42["private",2]"#));
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_forwarded_address_is_the_client() {
    let bridge =
        Bridge::start(&set(&["http.trusted_proxies=[\"127.0.0.1\"]", "socketio.max_sessions_per_address=2"])).await;
    let url = format!("{}/socket.io/?EIO=4&transport=polling", bridge.url());
    let open = |from: &str, forwarded: &str| {
        let (http, url, forwarded) = (http_from(ip(from)), url.clone(), forwarded.to_owned());
        async move {
            let r = http.get(&url).header("x-forwarded-for", forwarded).send().await.unwrap();
            let status = r.status().as_u16();
            let body = r.text().await.unwrap();
            let sid = serde_json::from_str::<Value>(body.strip_prefix('0').unwrap_or("{}")).ok();
            (status, sid.and_then(|v| v["sid"].as_str().map(str::to_owned)))
        }
    };
    // Through the proxy (127.0.0.1), two clients are two addresses; the client's own entry
    // (left of the proxy's) proves nothing.
    for _ in 0..2 {
        assert_eq!(open("127.0.0.1", "6.6.6.6, 203.0.113.1").await.0, 200);
    }
    assert_eq!(open("127.0.0.1", "7.7.7.7, 203.0.113.1").await.0, 429, "203.0.113.1 is at its limit");
    let (status, sid) = open("127.0.0.1", "203.0.113.2").await;
    assert_eq!(status, 200, "203.0.113.2 is another client");
    // Not from the proxy: the header is ignored, the connection's address counts.
    for _ in 0..2 {
        assert_eq!(open("127.0.0.2", "203.0.113.9").await.0, 200);
    }
    assert_eq!(open("127.0.0.2", "203.0.113.10").await.0, 429, "a forged header does not reset the count");

    // The session of 203.0.113.2 answers only requests forwarded for 203.0.113.2.
    let sid = sid.unwrap();
    let http = http_from(ip("127.0.0.1"));
    let poll = format!("{url}&sid={sid}");
    let post = |forwarded: &'static str| {
        http.post(&poll).header("x-forwarded-for", forwarded).body(r#"40{"userId":"px"}"#).send()
    };
    assert_eq!(post("203.0.113.1").await.unwrap().status(), 400, "another client behind the same proxy");
    assert_eq!(post("203.0.113.2").await.unwrap().status(), 200, "the session's own client");
    let later = http.get(&poll).header("x-forwarded-for", "203.0.113.3").send().await.unwrap();
    assert_eq!(later.status(), 400, "bound once joined: another forwarded address is refused");
    let own = http.get(&poll).header("x-forwarded-for", "203.0.113.2").send().await.unwrap();
    assert_eq!(own.status(), 200);
}
