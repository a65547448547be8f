//! The soak: one socket-bridge (release build, pinned to core 0)
//! holding N authenticated clients for D seconds under sustained pushes and client events
//! with acks, every message counted per (client, sequence number).
//!
//! - Clients: the benchmark's raw websocket clients, user `u<i>` with an HS256 JWT whose
//!   `rooms` claim puts it in room `soak-<i % rooms>`.
//! - Pushes: gRPC `Push`, non-volatile, open loop at `push_rate` per second; every
//!   `room_every`-th goes to a room (round robin), the rest to users (round robin). Each
//!   carries a unique number; a room push is expected once by every member.
//! - Client events: `soak` with an ack callback at `event_rate` per second, round robin over
//!   the clients; a backend on the `Events` stream counts each one and answers with the
//!   event's own argument, so the client checks that its ack carries its number back.
//! - Memory: the bridge's VmRSS every `sample_secs`; warm-up is the first 20% of the run (at
//!   least 20 s); growth = (highest sample in the last 20% − the sample at the end of the
//!   warm-up) ÷ the sample at the end of the warm-up.
//! - Logs: the bridge writes JSON lines to its `log.file` (level info); every ERROR line
//!   fails the soak, WARN lines are counted.
//!
//! Fails (exit 1) on any lost, duplicated or misrouted message, a wrong ack, growth at or over
//! `max_growth_pct`, an ERROR line or panic, fewer clients than asked, load not held, or a
//! bridge that did not exit 0 on SIGTERM.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use crate::backend::Kind;
use crate::clients::{self, AuthFn, Counters, Engine};
use crate::pb;
use crate::pb::bridge_service_client::BridgeServiceClient;
use crate::procs::{self, Server, ServerSpec};
use crate::{Args, suite};

pub(crate) const API_KEY: &str = "soak-api-key-0123456789";
pub(crate) const JWT_SECRET: &str = "soak-jwt-secret-0123456789abcdef0123";
const EVENT: &str = "soak";

#[derive(Debug, Clone, Serialize)]
pub struct Params {
    pub clients: usize,
    pub duration_secs: u64,
    /// gRPC Push calls per second (users and rooms together).
    pub push_rate: f64,
    /// Every n-th push goes to a room (0: none).
    pub room_every: u64,
    pub rooms: u32,
    /// Client events with acks per second (all clients together).
    pub event_rate: f64,
    pub drain_secs: u64,
    pub sample_secs: u64,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub push_inflight: usize,
    pub connect_inflight: usize,
    pub max_growth_pct: f64,
    pub bridge_sets: Vec<String>,
}

struct Options {
    params: Params,
    bridge_bin: PathBuf,
    out: PathBuf,
    label: String,
    commit: String,
}

impl Options {
    fn from_args(args: &Args) -> anyhow::Result<Self> {
        fn num<T: std::str::FromStr>(args: &Args, name: &str, default: T) -> anyhow::Result<T>
        where
            T::Err: std::fmt::Display,
        {
            match args.value(name) {
                Some(v) => v.parse().map_err(|e| anyhow::anyhow!("{name} {v}: {e}")),
                None => Ok(default),
            }
        }
        let params = Params {
            clients: num(args, "--clients", 10_000)?,
            duration_secs: num(args, "--duration", 600)?,
            push_rate: num(args, "--push-rate", 2000.0)?,
            room_every: num(args, "--room-every", 200)?,
            rooms: num(args, "--rooms", 4)?,
            event_rate: num(args, "--event-rate", 2000.0)?,
            drain_secs: num(args, "--drain", 5)?,
            sample_secs: num(args, "--sample", 5)?,
            ping_interval_ms: num(args, "--ping-interval-ms", 25_000)?,
            ping_timeout_ms: num(args, "--ping-timeout-ms", 20_000)?,
            push_inflight: num(args, "--push-inflight", 64)?,
            connect_inflight: num(args, "--connect-inflight", 64)?,
            max_growth_pct: num(args, "--max-growth-pct", 5.0)?,
            bridge_sets: args.values("--bridge-set"),
        };
        if params.clients == 0 || params.duration_secs == 0 || params.rooms == 0 || params.sample_secs == 0 {
            bail!("--clients, --duration, --rooms and --sample must be positive");
        }
        if !(params.push_rate > 0.0 && params.event_rate > 0.0) {
            bail!("--push-rate and --event-rate must be positive");
        }
        Ok(Self {
            params,
            bridge_bin: PathBuf::from(args.value("--bridge-bin").context("--bridge-bin")?),
            out: PathBuf::from(args.value("--out").unwrap_or_else(|| "bench/results/soak".into())),
            label: args.value("--label").unwrap_or_else(|| "soak".into()),
            commit: args.value("--commit").unwrap_or_default(),
        })
    }
}

// ---------------------------------------------------------------- result

#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t_s: f64,
    pub rss_kb: u64,
    pub bridge_cpu_s: f64,
    /// Busy time of core 0 (the bridge's), all processes.
    pub core0_busy_s: f64,
    pub generator_cpu_s: f64,
    pub deliveries: u64,
    pub acks: u64,
    pub ack_errors: u64,
    pub open: u64,
    pub closed: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct PushCounts {
    pub offered: u64,
    pub issued: u64,
    pub call_errors: u64,
    pub first_call_errors: Vec<String>,
    pub user_pushes: u64,
    pub room_pushes: u64,
    /// Expected deliveries: one per user push, one per member for a room push.
    pub sent: u64,
    pub received: u64,
    pub lost: u64,
    pub duplicates: u64,
    pub misrouted: u64,
    pub user_sent: u64,
    pub user_received: u64,
    pub room_sent: u64,
    pub room_received: u64,
    /// Sum of the bridge's `sockets_reached` answers, and the pushes that reached fewer
    /// sockets than expected.
    pub reached_reported: u64,
    pub reached_short: u64,
}

#[derive(Debug, Default, Serialize)]
pub struct EventCounts {
    pub offered: u64,
    pub sent: u64,
    pub delivered_to_backend: u64,
    pub backend_duplicates: u64,
    pub backend_misrouted: u64,
    pub backend_garbled: u64,
    pub acks_sent_by_backend: u64,
    /// Acks carrying the event's own number back, once each.
    pub acks_received: u64,
    pub ack_errors: u64,
    pub ack_error_codes: BTreeMap<String, u64>,
    pub ack_duplicates: u64,
    pub ack_mismatches: u64,
    /// sent − acks_received.
    pub lost: u64,
    /// sent − delivered_to_backend.
    pub not_delivered_to_backend: u64,
    pub stream_ended_early: bool,
}

#[derive(Debug, Default, Serialize)]
pub struct Latency {
    /// Pushes to users: intended send time to receipt.
    pub push_p50_ms: f64,
    pub push_p99_ms: f64,
    pub push_p999_ms: f64,
    pub push_max_ms: f64,
    /// Pushes to rooms, every member's receipt.
    pub room_p50_ms: f64,
    pub room_p99_ms: f64,
    pub room_max_ms: f64,
    /// Client event → backend → ack back at the client.
    pub ack_p50_ms: f64,
    pub ack_p99_ms: f64,
    pub ack_p999_ms: f64,
    pub ack_max_ms: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Memory {
    pub rss_start_kb: u64,
    pub rss_after_connect_kb: u64,
    pub warmup_end_s: f64,
    pub rss_warmup_kb: u64,
    /// Highest sample in the last 20% of the load window.
    pub rss_last_max_kb: u64,
    pub rss_end_of_load_kb: u64,
    pub rss_after_drain_kb: u64,
    pub rss_min_kb: u64,
    pub rss_max_kb: u64,
    pub growth_pct: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct Cpu {
    /// Bridge CPU over its whole life (start, connects, load, drain).
    pub bridge_total_s: f64,
    /// Bridge CPU during the load window, and as a share of one core.
    pub bridge_load_s: f64,
    pub bridge_load_pct: f64,
    /// What other processes took on the bridge's core during the load window.
    pub foreign_on_bridge_core_pct: f64,
    pub generator_load_pct: f64,
}

#[derive(Debug, Default, Serialize)]
pub struct LogScan {
    pub files: Vec<String>,
    pub lines: u64,
    pub error_lines: u64,
    pub warn_lines: u64,
    pub unparsed_lines: u64,
    pub panics: u64,
    pub examples: Vec<String>,
}

#[derive(Debug, Serialize)]
pub struct Meta {
    pub label: String,
    pub date: String,
    pub commit: String,
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
    pub rustc: String,
    pub nofile: u64,
    pub bridge_core: usize,
    pub generator_cores: Vec<usize>,
    pub loadavg_start: String,
    pub loadavg_end: String,
    pub wall_secs: f64,
}

#[derive(Debug, Serialize)]
pub struct SoakResult {
    pub meta: Meta,
    pub params: Params,
    pub connected: usize,
    pub connect_failed: usize,
    pub connect_secs: f64,
    pub clients_closed_by_server: u64,
    pub pushes: PushCounts,
    pub events: EventCounts,
    pub latency: Latency,
    pub memory: Memory,
    pub cpu: Cpu,
    pub logs: LogScan,
    pub bridge_exit: String,
    pub bridge_console_log: String,
    /// `socket_bridge_*` lines of /metrics at the end of the load (histogram buckets left out).
    pub metrics_at_end: Vec<String>,
    pub samples: Vec<Sample>,
    pub pass: bool,
    pub failures: Vec<String>,
}

// ---------------------------------------------------------------- backend

#[derive(Clone)]
pub(crate) struct ApiKey(tonic::metadata::MetadataValue<tonic::metadata::Ascii>);

impl Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

pub(crate) type Client = BridgeServiceClient<InterceptedService<Channel, ApiKey>>;

pub(crate) async fn grpc_clients(addr: SocketAddr, n: usize) -> anyhow::Result<Vec<Client>> {
    let key = ApiKey(format!("Bearer {API_KEY}").parse()?);
    let mut out = Vec::new();
    for _ in 0..n {
        let ch = Endpoint::from_shared(format!("http://{addr}"))?
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .connect()
            .await?;
        out.push(BridgeServiceClient::with_interceptor(ch, key.clone()));
    }
    Ok(out)
}

#[derive(Default)]
struct BackendStats {
    delivered: u64,
    duplicates: u64,
    misrouted: u64,
    garbled: u64,
    acks_sent: u64,
    bits: Vec<u64>,
    ended: bool,
}

/// Subscribes to `soak` events and answers each ack with the event's own argument list.
async fn start_backend(client: &mut Client) -> anyhow::Result<Arc<Mutex<BackendStats>>> {
    let stats = Arc::new(Mutex::new(BackendStats::default()));
    let (tx, rx) = mpsc::channel::<pb::EventsRequest>(65536);
    tx.send(pb::EventsRequest {
        kind: Some(pb::events_request::Kind::Subscribe(pb::Subscribe {
            group: "soak".into(),
            event_patterns: vec![EVENT.into()],
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.events(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let (subscribed_tx, subscribed_rx) = oneshot::channel();
    let st = stats.clone();
    tokio::spawn(async move {
        let mut subscribed_tx = Some(subscribed_tx);
        while let Ok(Some(msg)) = inbound.message().await {
            match msg.kind {
                Some(pb::events_response::Kind::Subscribed(_)) => {
                    if let Some(t) = subscribed_tx.take() {
                        let _ = t.send(());
                    }
                }
                Some(pb::events_response::Kind::ClientEvent(e)) => {
                    let args = e.payload.map(|p| p.args_json).unwrap_or_default();
                    let b = args.as_bytes();
                    let n = clients::find(b, b"\"n\":").and_then(|i| clients::parse_u64(&b[i + 4..]));
                    let u = clients::find(b, b"\"u\":").and_then(|i| clients::parse_u64(&b[i + 4..]));
                    {
                        let mut s = st.lock().expect("stats");
                        match (n, u) {
                            (Some(n), Some(u)) if e.user_id == format!("u{u}") => {
                                match clients::test_set(&mut s.bits, n) {
                                    Some(true) => s.delivered += 1,
                                    Some(false) => s.duplicates += 1,
                                    None => s.garbled += 1,
                                }
                            }
                            (Some(_), Some(_)) => s.misrouted += 1,
                            _ => s.garbled += 1,
                        }
                    }
                    if e.wants_ack {
                        let ack = pb::EventsRequest {
                            kind: Some(pb::events_request::Kind::Ack(pb::Ack {
                                event_id: e.id,
                                result: Some(pb::ack::Result::Payload(pb::Payload {
                                    args_json: args,
                                    attachments: vec![],
                                })),
                            })),
                        };
                        if tx.send(ack).await.is_err() {
                            break;
                        }
                        st.lock().expect("stats").acks_sent += 1;
                    }
                }
                _ => {}
            }
        }
        st.lock().expect("stats").ended = true;
    });
    tokio::time::timeout(Duration::from_secs(10), subscribed_rx)
        .await
        .context("no Subscribed answer within 10 s")?
        .context("Events stream ended before Subscribed")?;
    Ok(stats)
}

#[derive(Default)]
struct PushState {
    user_pushes: AtomicU64,
    room_pushes: AtomicU64,
    user_sent: AtomicU64,
    room_sent: AtomicU64,
    reached: AtomicU64,
    reached_short: AtomicU64,
    errors: AtomicU64,
    first_errors: Mutex<Vec<String>>,
}

// ---------------------------------------------------------------- helpers

pub(crate) fn hs256_token(sub: &str, room: &str, exp: u64) -> String {
    use base64::Engine as _;
    use hmac::Mac;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = b64.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = b64.encode(format!(r#"{{"sub":"{sub}","exp":{exp},"rooms":["{room}"]}}"#));
    let signing = format!("{header}.{claims}");
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("HMAC takes any key");
    mac.update(signing.as_bytes());
    format!("{signing}.{}", b64.encode(mac.finalize().into_bytes()))
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn q(h: &Histogram<u64>, quantile: f64) -> f64 {
    if h.is_empty() { 0.0 } else { ms(h.value_at_quantile(quantile)) }
}

fn take_sample(pid: u32, c: &Counters, t0: Instant) -> Sample {
    Sample {
        t_s: t0.elapsed().as_secs_f64(),
        rss_kb: procs::rss_kb(pid).unwrap_or(0),
        bridge_cpu_s: procs::cpu_ms(pid).unwrap_or(0.0) / 1000.0,
        core0_busy_s: procs::core_busy_ms(0) / 1000.0,
        generator_cpu_s: procs::self_cpu_ms() / 1000.0,
        deliveries: c.events.load(Ordering::Relaxed),
        acks: c.acks.load(Ordering::Relaxed),
        ack_errors: c.ack_errors.load(Ordering::Relaxed),
        open: c.open.load(Ordering::Relaxed),
        closed: c.closed.load(Ordering::Relaxed),
    }
}

fn progress(prev: &Sample, s: &Sample) {
    let dt = (s.t_s - prev.t_s).max(1e-9);
    let cpu = s.bridge_cpu_s - prev.bridge_cpu_s;
    let foreign = ((s.core0_busy_s - prev.core0_busy_s) - cpu).max(0.0);
    eprintln!(
        "  [{:5.0}s] rss {:7.1} MiB  bridge CPU {:3.0}% (others on its core {:3.0}%)  deliveries {:7.0}/s  acks {:6.0}/s  ack errors {}  open {}",
        s.t_s,
        s.rss_kb as f64 / 1024.0,
        100.0 * cpu / dt,
        100.0 * foreign / dt,
        (s.deliveries - prev.deliveries) as f64 / dt,
        (s.acks - prev.acks) as f64 / dt,
        s.ack_errors,
        s.open
    );
}

/// GET on the bridge's HTTP port (HTTP/1.0, read to the end).
async fn http_get(addr: SocketAddr, path: &str) -> anyhow::Result<String> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr)).await??;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await?;
    let mut body = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut body)).await??;
    let text = String::from_utf8_lossy(&body).into_owned();
    Ok(text.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or(text))
}

/// Counts the levels of the bridge's JSON log file (and rotated siblings), and panics in
/// its console output.
fn scan_logs(dir: &Path, file_name: &str, console: &Path) -> LogScan {
    let mut scan = LogScan::default();
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .map(|e| e.path())
                .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with(file_name)))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    for f in &files {
        scan.files.push(f.display().to_string());
        let text = std::fs::read_to_string(f).unwrap_or_default();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            scan.lines += 1;
            let level = serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .and_then(|v| v.get("level").and_then(|l| l.as_str()).map(str::to_ascii_uppercase));
            match level.as_deref() {
                Some("ERROR") => scan.error_lines += 1,
                Some("WARN") => scan.warn_lines += 1,
                Some(_) => continue,
                None => scan.unparsed_lines += 1,
            }
            if scan.examples.len() < 20 {
                scan.examples.push(line.chars().take(500).collect());
            }
        }
    }
    let console_text = std::fs::read_to_string(console).unwrap_or_default();
    for line in console_text.lines().filter(|l| l.contains("panicked")) {
        scan.panics += 1;
        if scan.examples.len() < 20 {
            scan.examples.push(line.chars().take(500).collect());
        }
    }
    scan
}

// ---------------------------------------------------------------- the run

pub async fn run(args: &Args) -> anyhow::Result<bool> {
    let opts = Options::from_args(args)?;
    let p = opts.params.clone();
    let started = Instant::now();
    let nofile = procs::raise_nofile();
    if nofile < p.clients as u64 + 500 {
        bail!("open-files limit {nofile} is too low for {} clients", p.clients);
    }
    let generator_cores = procs::own_cores();
    if generator_cores.contains(&0) {
        eprintln!("warning: the generator may run on core 0 (the bridge's core); run it under `taskset -c 1`");
    }
    let raw = opts.out.join("raw");
    std::fs::create_dir_all(&raw)?;
    let log_name = format!("{}-bridge.jsonl", opts.label);
    for e in std::fs::read_dir(&raw)?.filter_map(Result::ok) {
        if e.file_name().to_str().is_some_and(|n| n.starts_with(&log_name)) {
            std::fs::remove_file(e.path())?;
        }
    }
    let log_file = raw.join(&log_name);
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let mut sets = vec![
        // Procs' benchmark defaults lift the per-socket event limit and log at warn: back to
        // the shipped defaults, plus JWT auth, an API key and the JSON log file.
        "log.level=info".to_owned(),
        format!("log.file={}", log_file.display()),
        "socketio.events_per_second=100".to_owned(),
        "socketio.event_burst=200".to_owned(),
        "shutdown.grace_period_ms=5000".to_owned(),
        "auth.mode=jwt".to_owned(),
        format!("auth.jwt.secret={JWT_SECRET}"),
        format!("grpc.api_keys=[\"{API_KEY}\"]"),
        format!("socketio.max_connections={}", p.clients + 1000),
    ];
    sets.extend(p.bridge_sets.iter().cloned());
    let spec = ServerSpec {
        kind: Kind::Bridge,
        bridge_bin: opts.bridge_bin.clone(),
        sioxide_bin: PathBuf::new(),
        floor_bin: PathBuf::new(),
        node_dir: PathBuf::new(),
        forward_to: None,
        core: 0,
        http,
        grpc,
        ping_interval_ms: p.ping_interval_ms,
        ping_timeout_ms: p.ping_timeout_ms,
        log_dir: raw.clone(),
        bridge_sets: sets,
    };
    let console_log = raw.join(format!("{}-{}.log", Kind::Bridge.name(), http.port()));
    let loadavg_start = procs::loadavg();
    eprintln!(
        "soak {}: {} clients, {} s, {:.0} pushes/s (1 in {} to a room of {}), {:.0} events/s with acks; load average {loadavg_start}",
        opts.label,
        p.clients,
        p.duration_secs,
        p.push_rate,
        p.room_every,
        p.clients / p.rooms as usize,
        p.event_rate
    );
    let mut server = Server::start(&spec).await?;
    let pid = server.pid;
    let mut failures = Vec::new();

    let mut grpc_pool = grpc_clients(grpc, 4).await?;
    let backend = start_backend(&mut grpc_pool[0]).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_start = server.rss_kb();

    // ---- connect ----
    let engine = Engine::start()?;
    let exp = unix_now() + p.duration_secs + 3600;
    let rooms = p.rooms;
    let auth: AuthFn = Arc::new(move |i: u32| {
        format!("{{\"token\":\"{}\"}}", hs256_token(&format!("u{i}"), &format!("soak-{}", i % rooms), exp))
    });
    engine.set_auth(Some(auth));
    let rep = engine.connect(http, p.clients, p.connect_inflight, Duration::from_secs(180), 0).await;
    let users = engine.open_users().await;
    let connect_secs = rep.elapsed.as_secs_f64();
    eprintln!("  connected {} of {} in {connect_secs:.1}s ({} failed)", users.len(), p.clients, rep.failed);
    if users.len() < p.clients {
        failures.push(format!("only {} of {} clients connected", users.len(), p.clients));
    }
    if users.is_empty() {
        engine.close_all().await;
        server.stop().await;
        bail!("no client connected; see {}", console_log.display());
    }
    let mut members = vec![0u64; rooms as usize];
    for &u in &users {
        members[(u % rooms) as usize] += 1;
    }
    engine.soak_start(rooms);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_after_connect = server.rss_kb();
    let c = engine.counters.clone();
    let closed0 = c.closed.load(Ordering::Relaxed);
    let emitted0 = c.emitted.load(Ordering::Relaxed);

    // ---- load ----
    let duration = Duration::from_secs(p.duration_secs);
    let t0 = Instant::now();
    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sampler = {
        let c = c.clone();
        let every = Duration::from_secs(p.sample_secs);
        tokio::spawn(async move {
            let mut samples = vec![take_sample(pid, &c, t0)];
            let mut next = t0 + every;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep_until(next.into()) => {}
                    _ = stop_rx.changed() => break,
                }
                let s = take_sample(pid, &c, t0);
                progress(samples.last().expect("first sample"), &s);
                samples.push(s);
                next += every;
            }
            samples
        })
    };
    let state = Arc::new(PushState::default());
    let users = Arc::new(users);
    let members = Arc::new(members);
    let pool = Arc::new(grpc_pool);
    let push_loop = {
        let (state, users, members, pool) = (state.clone(), users.clone(), members.clone(), pool.clone());
        let room_every = p.room_every;
        suite::open_loop(p.push_rate, duration, p.push_inflight, move |k, due| {
            let is_room = room_every > 0 && k % room_every == room_every - 1;
            let (kind, args, expected) = if is_room {
                let r = k / room_every;
                let g = r % u64::from(rooms);
                state.room_pushes.fetch_add(1, Ordering::Relaxed);
                state.room_sent.fetch_add(members[g as usize], Ordering::Relaxed);
                (
                    pb::target::Kind::Room(format!("soak-{g}")),
                    format!("[{{\"r\":{r},\"g\":{g},\"t\":{due}}}]"),
                    members[g as usize],
                )
            } else {
                let u = users[(k % users.len() as u64) as usize];
                state.user_pushes.fetch_add(1, Ordering::Relaxed);
                state.user_sent.fetch_add(1, Ordering::Relaxed);
                (pb::target::Kind::UserId(format!("u{u}")), format!("[{{\"s\":{k},\"u\":{u},\"t\":{due}}}]"), 1)
            };
            let mut client = pool[(k % pool.len() as u64) as usize].clone();
            let state = state.clone();
            async move {
                let req = pb::PushRequest {
                    target: Some(pb::Target { kind: Some(kind) }),
                    event: EVENT.into(),
                    payload: Some(pb::Payload { args_json: args, attachments: vec![] }),
                    ..Default::default()
                };
                match client.push(req).await {
                    Ok(resp) => {
                        let reached = u64::from(resp.into_inner().sockets_reached);
                        state.reached.fetch_add(reached, Ordering::Relaxed);
                        if reached < expected {
                            state.reached_short.fetch_add(1, Ordering::Relaxed);
                        }
                        Ok(())
                    }
                    Err(e) => {
                        state.errors.fetch_add(1, Ordering::Relaxed);
                        let mut first = state.first_errors.lock().expect("errors");
                        if first.len() < 5 {
                            first.push(format!("{:?}: {}", e.code(), e.message()));
                        }
                        Err(e.into())
                    }
                }
            }
        })
    };
    let (loop_report, ()) = tokio::join!(push_loop, engine.emit_soak(p.event_rate, duration));
    let load_end = take_sample(pid, &c, t0);
    let load_secs = load_end.t_s;
    eprintln!("  load done after {load_secs:.1}s; draining (up to {} s)", p.drain_secs);

    // ---- drain: until every expected message is in, or drain_secs pass ----
    let sent_total = state.user_sent.load(Ordering::Relaxed) + state.room_sent.load(Ordering::Relaxed);
    let emitted = c.emitted.load(Ordering::Relaxed) - emitted0;
    let until = Instant::now() + Duration::from_secs(p.drain_secs);
    while Instant::now() < until
        && (c.events.load(Ordering::Relaxed) < sent_total || c.acks.load(Ordering::Relaxed) < emitted)
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // A moment more, so a late duplicate would still be seen.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let _ = stop_tx.send(true);
    let mut samples = sampler.await?;
    let load_sample_count = samples.len();
    samples.push(load_end.clone());
    let after_drain = take_sample(pid, &c, t0);
    samples.push(after_drain.clone());
    let rx = engine.soak_take().await.context("soak counters")?;
    let metrics: Vec<String> = http_get(http, "/metrics")
        .await
        .map(|m| {
            m.lines()
                .filter(|l| l.starts_with("socket_bridge_") && !l.contains("_bucket{"))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_else(|e| vec![format!("metrics unavailable: {e}")]);
    let clients_closed = c.closed.load(Ordering::Relaxed) - closed0;

    // ---- stop ----
    engine.close_all().await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let bridge_cpu_total = procs::cpu_ms(pid).unwrap_or(0.0) / 1000.0;
    let status = server.stop().await;
    drop(engine);
    let bridge_exit = match status {
        Some(s) if s.success() => "exit 0".to_owned(),
        Some(s) => {
            failures.push(format!("bridge ended with {s} on SIGTERM"));
            s.to_string()
        }
        None => {
            failures.push("bridge did not exit within 4 s of SIGTERM (killed)".into());
            "killed".to_owned()
        }
    };
    let logs = scan_logs(&raw, &log_name, &console_log);

    // ---- figures ----
    let ps = &state;
    let user_sent = ps.user_sent.load(Ordering::Relaxed);
    let room_sent = ps.room_sent.load(Ordering::Relaxed);
    let mut pushes = PushCounts {
        offered: (p.push_rate * duration.as_secs_f64()).floor() as u64,
        issued: loop_report.issued,
        call_errors: ps.errors.load(Ordering::Relaxed),
        first_call_errors: ps.first_errors.lock().expect("errors").clone(),
        user_pushes: ps.user_pushes.load(Ordering::Relaxed),
        room_pushes: ps.room_pushes.load(Ordering::Relaxed),
        sent: user_sent + room_sent,
        received: rx.user_rx + rx.room_rx,
        duplicates: rx.user_dup + rx.room_dup,
        misrouted: rx.user_misrouted + rx.room_misrouted,
        user_sent,
        user_received: rx.user_rx,
        room_sent,
        room_received: rx.room_rx,
        reached_reported: ps.reached.load(Ordering::Relaxed),
        reached_short: ps.reached_short.load(Ordering::Relaxed),
        ..Default::default()
    };
    pushes.lost = pushes.sent.saturating_sub(pushes.received);
    let b = backend.lock().expect("stats");
    let mut events = EventCounts {
        offered: (p.event_rate * duration.as_secs_f64()).floor() as u64,
        sent: emitted,
        delivered_to_backend: b.delivered,
        backend_duplicates: b.duplicates,
        backend_misrouted: b.misrouted,
        backend_garbled: b.garbled,
        acks_sent_by_backend: b.acks_sent,
        acks_received: rx.acks_ok,
        ack_errors: rx.ack_errors,
        ack_error_codes: rx.ack_error_codes.clone(),
        ack_duplicates: rx.ack_dup,
        ack_mismatches: rx.ack_mismatch,
        stream_ended_early: b.ended,
        ..Default::default()
    };
    drop(b);
    events.lost = events.sent.saturating_sub(events.acks_received);
    events.not_delivered_to_backend = events.sent.saturating_sub(events.delivered_to_backend);
    let latency = Latency {
        push_p50_ms: q(&rx.push_latency, 0.5),
        push_p99_ms: q(&rx.push_latency, 0.99),
        push_p999_ms: q(&rx.push_latency, 0.999),
        push_max_ms: ms(rx.push_latency.max()),
        room_p50_ms: q(&rx.room_latency, 0.5),
        room_p99_ms: q(&rx.room_latency, 0.99),
        room_max_ms: ms(rx.room_latency.max()),
        ack_p50_ms: q(&rx.rtt, 0.5),
        ack_p99_ms: q(&rx.rtt, 0.99),
        ack_p999_ms: q(&rx.rtt, 0.999),
        ack_max_ms: ms(rx.rtt.max()),
    };

    // Memory over the load window (samples taken every sample_secs, plus the end of load).
    let window: Vec<&Sample> = samples[..load_sample_count].iter().chain(std::iter::once(&load_end)).collect();
    let warmup_end = (0.2 * load_secs).max(20.0).min(load_secs);
    let warm = window.iter().find(|s| s.t_s >= warmup_end - 0.5).copied().unwrap_or(&load_end);
    let last_from = 0.8 * load_secs;
    let last_max = window.iter().filter(|s| s.t_s >= last_from - 0.5).map(|s| s.rss_kb).max().unwrap_or(0);
    let growth_pct =
        if warm.rss_kb > 0 { 100.0 * (last_max as f64 - warm.rss_kb as f64) / warm.rss_kb as f64 } else { f64::NAN };
    let memory = Memory {
        rss_start_kb: rss_start,
        rss_after_connect_kb: rss_after_connect,
        warmup_end_s: warm.t_s,
        rss_warmup_kb: warm.rss_kb,
        rss_last_max_kb: last_max,
        rss_end_of_load_kb: load_end.rss_kb,
        rss_after_drain_kb: after_drain.rss_kb,
        rss_min_kb: window.iter().map(|s| s.rss_kb).min().unwrap_or(0),
        rss_max_kb: window.iter().map(|s| s.rss_kb).max().unwrap_or(0),
        growth_pct,
    };
    let first = &samples[0];
    let load_cpu = load_end.bridge_cpu_s - first.bridge_cpu_s;
    let cpu = Cpu {
        bridge_total_s: bridge_cpu_total,
        bridge_load_s: load_cpu,
        bridge_load_pct: 100.0 * load_cpu / load_secs.max(1e-9),
        foreign_on_bridge_core_pct: (100.0 * ((load_end.core0_busy_s - first.core0_busy_s) - load_cpu)
            / load_secs.max(1e-9))
        .max(0.0),
        generator_load_pct: 100.0 * (load_end.generator_cpu_s - first.generator_cpu_s) / load_secs.max(1e-9),
    };

    // ---- verdict ----
    if pushes.lost > 0 {
        failures
            .push(format!("{} push deliveries lost ({} sent, {} received)", pushes.lost, pushes.sent, pushes.received));
    }
    if events.lost > 0 {
        failures.push(format!(
            "{} client events without their ack ({} sent, {} acked, {} error answers)",
            events.lost, events.sent, events.acks_received, events.ack_errors
        ));
    }
    let dups = pushes.duplicates + events.backend_duplicates + events.ack_duplicates;
    if dups > 0 {
        failures.push(format!("{dups} duplicate deliveries"));
    }
    let wrong =
        pushes.misrouted + events.backend_misrouted + events.ack_mismatches + rx.garbled + events.backend_garbled;
    if wrong > 0 {
        failures.push(format!("{wrong} misrouted, mismatched or garbled messages"));
    }
    if growth_pct.is_nan() || growth_pct >= p.max_growth_pct {
        failures.push(format!("RSS grew {growth_pct:.2}% after warm-up (limit {}%)", p.max_growth_pct));
    }
    if logs.error_lines > 0 || logs.panics > 0 {
        failures.push(format!("{} ERROR log lines, {} panics", logs.error_lines, logs.panics));
    }
    if (pushes.issued as f64) < 0.99 * pushes.offered as f64 || (events.sent as f64) < 0.99 * events.offered as f64 {
        failures.push(format!(
            "load not held: {} of {} pushes issued, {} of {} events sent",
            pushes.issued, pushes.offered, events.sent, events.offered
        ));
    }
    if clients_closed > 0 {
        failures.push(format!("{clients_closed} clients were disconnected during the soak"));
    }
    let result = SoakResult {
        meta: Meta {
            label: opts.label.clone(),
            date: crate::cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            commit: opts.commit.clone(),
            cpu: std::fs::read_to_string("/proc/cpuinfo")
                .unwrap_or_default()
                .lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .unwrap_or("unknown")
                .trim()
                .to_owned(),
            // SAFETY: sysconf has no preconditions.
            cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize,
            kernel: crate::cmd_out("uname", &["-r"]),
            rustc: crate::cmd_out("rustc", &["--version"]),
            nofile,
            bridge_core: 0,
            generator_cores,
            loadavg_start,
            loadavg_end: procs::loadavg(),
            wall_secs: started.elapsed().as_secs_f64(),
        },
        params: p.clone(),
        connected: users.len(),
        connect_failed: rep.failed,
        connect_secs,
        clients_closed_by_server: clients_closed,
        pushes,
        events,
        latency,
        memory,
        cpu,
        logs,
        bridge_exit,
        bridge_console_log: console_log.display().to_string(),
        metrics_at_end: metrics,
        samples,
        pass: failures.is_empty(),
        failures,
    };
    let json = opts.out.join(format!("{}.json", opts.label));
    std::fs::write(&json, serde_json::to_vec_pretty(&result)?)?;
    print_summary(&result);
    println!("\nresult: {}", json.display());
    Ok(result.pass)
}

fn print_summary(r: &SoakResult) {
    let p = &r.params;
    let (pu, ev, m, cpu) = (&r.pushes, &r.events, &r.memory, &r.cpu);
    let mb = |kb: u64| kb as f64 / 1024.0;
    println!("\n## Soak {} ({}, commit {})\n", r.meta.label, r.meta.date, r.meta.commit);
    println!("| | |\n|---|---|");
    println!(
        "| load held | {} clients ({} connected in {:.1} s), {} rooms of {}, {} s; {:.0} pushes/s (1 in {} to a room), {:.0} client events/s with acks |",
        p.clients,
        r.connected,
        r.connect_secs,
        p.rooms,
        r.connected / p.rooms as usize,
        p.duration_secs,
        p.push_rate,
        p.room_every,
        p.event_rate
    );
    println!(
        "| pushes | {} issued of {} offered ({} to users, {} to rooms), {} call errors |",
        pu.issued, pu.offered, pu.user_pushes, pu.room_pushes, pu.call_errors
    );
    println!(
        "| push deliveries | sent {} / received {} / lost {} / duplicates {} / misrouted {} (users {}/{}, rooms {}/{}) |",
        pu.sent,
        pu.received,
        pu.lost,
        pu.duplicates,
        pu.misrouted,
        pu.user_received,
        pu.user_sent,
        pu.room_received,
        pu.room_sent
    );
    println!(
        "| client events | sent {} / at backend {} / acked back {} / lost {} / duplicates {} / ack errors {} {:?} / mismatched {} |",
        ev.sent,
        ev.delivered_to_backend,
        ev.acks_received,
        ev.lost,
        ev.backend_duplicates + ev.ack_duplicates,
        ev.ack_errors,
        ev.ack_error_codes,
        ev.ack_mismatches
    );
    println!(
        "| latency | push to a user p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.1} ms; to a room (every member) p50 {:.1} / p99 {:.1} / max {:.1} ms; ack round trip p50 {:.2} / p99 {:.2} / p99.9 {:.2} / max {:.1} ms |",
        r.latency.push_p50_ms,
        r.latency.push_p99_ms,
        r.latency.push_p999_ms,
        r.latency.push_max_ms,
        r.latency.room_p50_ms,
        r.latency.room_p99_ms,
        r.latency.room_max_ms,
        r.latency.ack_p50_ms,
        r.latency.ack_p99_ms,
        r.latency.ack_p999_ms,
        r.latency.ack_max_ms
    );
    println!(
        "| RSS | start {:.1} MiB, after connect {:.1} MiB, end of warm-up ({:.0} s) {:.1} MiB, max of last 20% {:.1} MiB, end {:.1} MiB: growth {:+.2}% |",
        mb(m.rss_start_kb),
        mb(m.rss_after_connect_kb),
        m.warmup_end_s,
        mb(m.rss_warmup_kb),
        mb(m.rss_last_max_kb),
        mb(m.rss_end_of_load_kb),
        m.growth_pct
    );
    println!(
        "| CPU | bridge {:.1} s during the load ({:.0}% of one core), {:.1} s in all; others on its core {:.0}%; generator {:.0}% |",
        cpu.bridge_load_s,
        cpu.bridge_load_pct,
        cpu.bridge_total_s,
        cpu.foreign_on_bridge_core_pct,
        cpu.generator_load_pct
    );
    println!(
        "| log | {} lines: {} ERROR, {} WARN, {} panics; bridge {} on SIGTERM |",
        r.logs.lines, r.logs.error_lines, r.logs.warn_lines, r.logs.panics, r.bridge_exit
    );
    println!("| load average | {} at start, {} at end |", r.meta.loadavg_start, r.meta.loadavg_end);
    for e in r.logs.examples.iter().take(5) {
        println!("  log: {e}");
    }
    if r.pass {
        println!("\nPASS");
    } else {
        println!("\nFAIL:");
        for f in &r.failures {
            println!("  - {f}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_hs256_jwts() {
        // Same inputs through Python's hmac/hashlib/base64.
        assert_eq!(
            super::hs256_token("u1", "soak-1", 1000),
            "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJ1MSIsImV4cCI6MTAwMCwicm9vbXMiOlsic29hay0xIl19.mWZZ6b0fsRP-0bjuezSnlUMkwJ8MHp55zLVosrpazE8"
        );
    }
}
