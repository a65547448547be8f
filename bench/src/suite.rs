//! The scenarios, run against one server process at a time (pinned to the server core)
//! from this process (pinned to the generator core).
//!
//! One server process per (run, server): connections grow tier by tier (1k, 5k, 10k,
//! 19k) measuring handshake CPU and idle memory at each tier, and after each tier every
//! connected socket joins room `r<tier>` (so room `r1000` holds the first 1,000 sockets,
//! `r19000` all of them). Then, with all tiers connected: room fan-out, one-to-one push
//! latency, client event round trips.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::backend::{Driver, Kind};
use crate::clients::Engine;
use crate::clock;
use crate::procs::{self, Server, ServerSpec};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    pub runs: usize,
    pub tiers: Vec<usize>,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub connect_inflight: usize,
    /// Heartbeat of the server process that runs the traffic scenarios (fan-out, pushes,
    /// events): the production default, so its background is what a deployment pays. The
    /// connection tiers use `ping_interval_ms` (short, so every socket has answered a ping
    /// before its memory is read) on a process of their own.
    #[serde(default = "load_ping_interval")]
    pub load_ping_interval_ms: u64,
    #[serde(default = "load_ping_timeout")]
    pub load_ping_timeout_ms: u64,
    /// Offered deliveries per second swept at room `fanout_sweep_room`.
    pub fanout_rates: Vec<f64>,
    pub fanout_sweep_room: usize,
    /// Other room sizes measured at `fanout_room_rate` offered deliveries per second.
    pub fanout_rooms: Vec<usize>,
    pub fanout_room_rate: f64,
    pub fanout_inflight: usize,
    pub latency_rates: Vec<f64>,
    pub latency_inflight: usize,
    pub rtt_rates: Vec<f64>,
    pub warm_ms: u64,
    pub measure_ms: u64,
    pub latency_measure_ms: u64,
    /// Which scenario groups run: fanout, latency, rtt (after the connection tiers, per
    /// server), auth (decided connects), cluster.
    #[serde(default = "all_scenarios")]
    pub scenarios: Vec<String>,
    /// (room, offered deliveries/s): the everyday regime, measured before the sweep.
    #[serde(default = "moderate_fanout")]
    pub moderate_fanout: Vec<(usize, f64)>,
    /// Window with every connection open and no traffic: the ping background, subtracted
    /// from the CPU of the moderate-rate scenarios ("net" figures).
    #[serde(default = "idle_ms")]
    pub idle_ms: u64,
    #[serde(default)]
    pub auth: crate::authbench::AuthPlan,
    #[serde(default)]
    pub cluster: crate::cluster::ClusterPlan,
}

fn all_scenarios() -> Vec<String> {
    ["fanout", "latency", "rtt", "auth", "cluster"].into_iter().map(str::to_owned).collect()
}

fn moderate_fanout() -> Vec<(usize, f64)> {
    vec![(1000, 20_000.0)]
}

fn idle_ms() -> u64 {
    2000
}

fn load_ping_interval() -> u64 {
    25_000
}

fn load_ping_timeout() -> u64 {
    20_000
}

impl Plan {
    pub fn full() -> Self {
        Self {
            runs: 3,
            tiers: vec![1000, 5000, 10000, 19000],
            ping_interval_ms: 3000,
            ping_timeout_ms: 10000,
            connect_inflight: 64,
            load_ping_interval_ms: load_ping_interval(),
            load_ping_timeout_ms: load_ping_timeout(),
            fanout_rates: vec![50e3, 100e3, 200e3, 400e3, 800e3, 1600e3],
            fanout_sweep_room: 1000,
            fanout_rooms: vec![5000, 10000, 19000],
            fanout_room_rate: 400e3,
            fanout_inflight: 4,
            latency_rates: vec![1000.0, 2000.0, 5000.0, 10000.0],
            latency_inflight: 64,
            rtt_rates: vec![5e3, 10e3, 20e3, 30e3, 40e3, 50e3, 75e3],
            warm_ms: 500,
            measure_ms: 2000,
            latency_measure_ms: 2500,
            scenarios: all_scenarios(),
            moderate_fanout: moderate_fanout(),
            idle_ms: idle_ms(),
            auth: crate::authbench::AuthPlan::full(),
            cluster: crate::cluster::ClusterPlan::full(),
        }
    }

    pub fn quick() -> Self {
        Self {
            runs: 1,
            tiers: vec![1000, 5000],
            fanout_rates: vec![100e3, 400e3],
            fanout_rooms: vec![5000],
            latency_rates: vec![2000.0, 5000.0],
            rtt_rates: vec![10e3, 30e3],
            warm_ms: 300,
            measure_ms: 1000,
            latency_measure_ms: 1500,
            idle_ms: 1000,
            auth: crate::authbench::AuthPlan::quick(),
            cluster: crate::cluster::ClusterPlan::quick(),
            ..Self::full()
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TierResult {
    pub n: usize,
    pub opened: usize,
    pub failed: usize,
    pub connect_secs: f64,
    pub conn_per_s: f64,
    /// Server CPU over the tier's handshakes, less the background (pings) of the
    /// connections already open, per handshake.
    pub cpu_us_per_handshake: f64,
    pub rss_kb: u64,
    pub kb_per_conn: f64,
    pub listen_overflows: u64,
    pub gen_cpu_pct: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutPoint {
    /// Measured at the everyday rate (`Plan::moderate_fanout`), not part of the sweep.
    #[serde(default)]
    pub moderate: bool,
    pub room: usize,
    pub offered: f64,
    pub delivered_per_s: f64,
    pub cpu_ms_per_1000: f64,
    pub server_cpu_pct: f64,
    pub gen_cpu_pct: f64,
    pub push_errors: u64,
    /// CPU that other processes took on the server core during the window (noise).
    #[serde(default)]
    pub foreign_pct: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LatencyPoint {
    pub rate: f64,
    /// How the pushes came in (socket-bridge: gRPC or REST; the peers: HTTP, shown as REST).
    #[serde(default)]
    pub door: crate::backend::Door,
    pub offered: u64,
    pub delivered: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Fewer than 99% of the pushes were delivered within the window and drain time: the
    /// percentiles count the missing ones at the time they had waited so far (lower bounds).
    pub saturated: bool,
    pub server_cpu_pct: f64,
    pub gen_cpu_pct: f64,
    pub push_errors: u64,
    /// CPU that other processes took on the server core during the window (noise).
    #[serde(default)]
    pub foreign_pct: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RttPoint {
    pub rate: f64,
    pub emitted: u64,
    pub acked_per_s: f64,
    pub ack_errors: u64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    pub server_cpu_pct: f64,
    pub gen_cpu_pct: f64,
    /// CPU that other processes took on the server core during the window (noise).
    #[serde(default)]
    pub foreign_pct: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunResult {
    pub server: Kind,
    pub run: usize,
    pub base_rss_kb: u64,
    pub tiers: Vec<TierResult>,
    pub fanout: Vec<FanoutPoint>,
    pub latency: Vec<LatencyPoint>,
    pub rtt: Vec<RttPoint>,
    pub notes: Vec<String>,
    /// Server CPU with every connection open and no traffic (pings only), percent of a core.
    #[serde(default)]
    pub idle_cpu_pct: f64,
}

struct Snap {
    at: Instant,
    ack_errors: u64,
    /// Busy time of the server's core, all processes.
    core: f64,
    events: u64,
    acks: u64,
    cpu: f64,
    gcpu: f64,
}

fn snap(server: &Server, engine: &Engine) -> Snap {
    Snap {
        at: Instant::now(),
        ack_errors: engine.counters.ack_errors.load(Ordering::Relaxed),
        core: procs::core_busy_ms(0),
        events: engine.counters.events.load(Ordering::Relaxed),
        acks: engine.counters.acks.load(Ordering::Relaxed),
        cpu: server.cpu_ms(),
        gcpu: procs::self_cpu_ms(),
    }
}

fn pct(cpu_ms: f64, d: Duration) -> f64 {
    100.0 * cpu_ms / (d.as_secs_f64() * 1000.0).max(1e-9)
}

pub struct LoopReport {
    #[allow(dead_code)]
    pub issued: u64,
    pub errors: u64,
    /// Intended send times (ns) of the requests never issued before the window closed.
    pub abandoned: Vec<u64>,
    pub end_ns: u64,
}

/// Open-loop requests: the k-th is meant for t0 + k/rate; at most `max_inflight` are at
/// the server at once (the rest wait here, their latency still counted from the intended
/// time). A pacer thread with sub-millisecond sleeps (tokio's timer has 1 ms ticks, which
/// would add up to 1 ms of generator lag to every sample) hands out the due requests.
/// Bounded by `duration` plus one second of grace: what is not issued by then is
/// abandoned and reported.
pub async fn open_loop<F, Fut>(rate: f64, duration: Duration, max_inflight: usize, f: F) -> LoopReport
where
    F: Fn(u64, u64) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(max_inflight));
    let errors = Arc::new(AtomicU64::new(0));
    let t0 = clock::now_ns() + 2_000_000;
    let end = t0 + duration.as_nanos() as u64;
    let hard_end = end + 1_000_000_000;
    let interval = 1e9 / rate;
    let total = (rate * duration.as_secs_f64()).floor() as u64;
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(u64, u64)>();
    let pacer = std::thread::spawn(move || {
        for k in 0..total {
            let due = t0 + (k as f64 * interval) as u64;
            let now = clock::now_ns();
            if now >= hard_end {
                return;
            }
            if due > now + 20_000 {
                std::thread::sleep(Duration::from_nanos(due - now));
            }
            if tx.send((k, due)).is_err() {
                return;
            }
        }
    });
    let mut issued = 0u64;
    let mut since_yield = 0;
    loop {
        let next = tokio::select! {
            m = rx.recv() => m,
            _ = tokio::time::sleep(Duration::from_nanos(hard_end.saturating_sub(clock::now_ns()))) => None,
        };
        let Some((k, due)) = next else { break };
        let permit = tokio::select! {
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            _ = tokio::time::sleep(Duration::from_nanos(hard_end.saturating_sub(clock::now_ns()))) => break,
        };
        let fut = f(k, due);
        let errors = errors.clone();
        tokio::spawn(async move {
            if fut.await.is_err() {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
        issued = k + 1;
        since_yield += 1;
        if since_yield >= 64 {
            tokio::task::yield_now().await;
            since_yield = 0;
        }
    }
    drop(rx);
    let _ = pacer.join();
    let abandoned = (issued..total).map(|j| t0 + (j as f64 * interval) as u64).collect();
    // Let in-flight requests finish (bounded).
    let _ = tokio::time::timeout(Duration::from_secs(15), sem.acquire_many(max_inflight as u32)).await;
    LoopReport { issued, errors: errors.load(Ordering::Relaxed), abandoned, end_ns: end }
}

/// Waits until `counter` stops moving for 300 ms (or `limit` passes).
async fn drain(counter: &AtomicU64, limit: Duration) {
    let until = Instant::now() + limit;
    let mut last = counter.load(Ordering::Relaxed);
    let mut still_since = Instant::now();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = counter.load(Ordering::Relaxed);
        if now != last {
            last = now;
            still_since = Instant::now();
        } else if still_since.elapsed() >= Duration::from_millis(300) {
            return;
        }
    }
}

async fn wait_for(counter: &AtomicU64, target: u64, limit: Duration) {
    let until = Instant::now() + limit;
    while counter.load(Ordering::Relaxed) < target && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quantiles(h: &Histogram<u64>) -> (u64, u64, u64, u64) {
    if h.is_empty() {
        return (0, 0, 0, 0);
    }
    (h.value_at_quantile(0.5), h.value_at_quantile(0.99), h.value_at_quantile(0.999), h.max())
}

pub async fn run_server(
    plan: &Plan,
    spec: &ServerSpec,
    engine: &Engine,
    run: usize,
    salt: u8,
) -> anyhow::Result<RunResult> {
    let kind = spec.kind;
    let mut notes = Vec::new();
    let c = &engine.counters;
    let closed_at_start = c.closed.load(Ordering::Relaxed);
    // The forwarding Node peer is only measured on the event path; the rest is the Node
    // peer's.
    let wants = |scenario: &str| {
        plan.scenarios.iter().any(|x| x == scenario) && (kind != crate::backend::Kind::NodeFwd || scenario == "rtt")
    };
    let pool = plan.latency_inflight.max(plan.fanout_inflight);

    // ---- phase 1, its own process: connections, handshake CPU, idle memory ----
    let mut tiers = Vec::new();
    let mut base_rss = 0;
    if kind != crate::backend::Kind::NodeFwd {
        let mut server = Server::start(spec).await?;
        let driver = Driver::connect(kind, spec.http, Some(spec.grpc), 4).await?;
        tokio::time::sleep(Duration::from_millis(800)).await;
        driver.collect_garbage().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        base_rss = server.rss_kb();
        notes.push(format!("load average at start: {}", procs::loadavg()));
        let target: SocketAddr = spec.http;
        let mut prev = 0usize;
        let mut bg_per_conn_ms_per_s = 0.0;
        for &tier in &plan.tiers {
            let (ov0, cpu0, gen0) = (procs::listen_overflows(), server.cpu_ms(), procs::self_cpu_ms());
            let rep = engine.connect(target, tier, plan.connect_inflight, Duration::from_secs(120), salt).await;
            let (cpu1, gen1) = (server.cpu_ms(), procs::self_cpu_ms());
            let overflows = procs::listen_overflows().saturating_sub(ov0);
            let open = c.open.load(Ordering::Relaxed) as usize;
            let added = open.saturating_sub(prev).max(1);
            let secs = rep.elapsed.as_secs_f64();
            // Background (pings of the connections already open, growing during the phase).
            let avg_conns = (prev + open) as f64 / 2.0;
            let background = bg_per_conn_ms_per_s * avg_conns * secs;
            let handshake_cpu = (cpu1 - cpu0 - background).max(0.0);
            // Let every socket see a ping after the tier is complete.
            let pongs0 = c.pongs.load(Ordering::Relaxed);
            let t_idle = Instant::now();
            let cpu_idle0 = server.cpu_ms();
            wait_for(
                &c.pongs,
                pongs0 + open as u64,
                Duration::from_millis(plan.ping_interval_ms * 2 + plan.ping_timeout_ms.min(2000)),
            )
            .await;
            tokio::time::sleep(Duration::from_millis(300)).await;
            let idle_secs = t_idle.elapsed().as_secs_f64();
            if open > 0 {
                bg_per_conn_ms_per_s = (server.cpu_ms() - cpu_idle0) / idle_secs / open as f64;
            }
            driver.collect_garbage().await;
            tokio::time::sleep(Duration::from_millis(200)).await;
            let rss = server.rss_kb();
            if rep.failed > 0 || open < tier {
                notes.push(format!("tier {tier}: {open} open, {} failed", rep.failed));
            }
            tiers.push(TierResult {
                n: tier,
                opened: open,
                failed: rep.failed,
                connect_secs: secs,
                conn_per_s: added as f64 / secs.max(1e-9),
                cpu_us_per_handshake: handshake_cpu * 1000.0 / added as f64,
                rss_kb: rss,
                kb_per_conn: (rss.saturating_sub(base_rss)) as f64 / open.max(1) as f64,
                listen_overflows: overflows,
                gen_cpu_pct: pct(gen1 - gen0, rep.elapsed),
            });
            eprintln!(
                "  [{}] tier {tier}: open {open} in {secs:.2}s ({:.0}/s), {:.0} us CPU/handshake, {:.1} KB/conn, overflows {overflows}",
                kind.name(),
                added as f64 / secs.max(1e-9),
                handshake_cpu * 1000.0 / added as f64,
                (rss.saturating_sub(base_rss)) as f64 / open.max(1) as f64
            );
            prev = open;
            if !server.alive() {
                anyhow::bail!("{} died during connect", kind.name());
            }
        }
        engine.close_all().await;
        drop(driver);
        server.stop().await;
    }
    let traffic = ["fanout", "latency", "rtt"].iter().any(|x| wants(x));
    if !traffic {
        return Ok(RunResult {
            server: kind,
            run,
            base_rss_kb: base_rss,
            tiers,
            fanout: vec![],
            latency: vec![],
            rtt: vec![],
            notes,
            idle_cpu_pct: 0.0,
        });
    }

    // ---- phase 2, a fresh process with the production heartbeat: traffic ----
    let mut spec = spec.clone();
    spec.ping_interval_ms = plan.load_ping_interval_ms;
    spec.ping_timeout_ms = plan.load_ping_timeout_ms;
    spec.http = procs::free_addr();
    spec.grpc = procs::free_addr();
    if let Some(f) = spec.forward_to.as_mut() {
        *f = procs::free_addr();
    }
    let spec = &spec;
    // The forwarding Node peer's backend listens before the peer starts.
    let http_answered = match spec.forward_to {
        Some(addr) => Some(crate::backend::start_http_event_backend(addr).await?),
        None => None,
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut server = Server::start(spec).await?;
    let driver = Arc::new(Driver::connect(kind, spec.http, Some(spec.grpc), pool).await?);
    let answered = driver.start_event_backend().await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Same sockets and rooms as in phase 1: room `r<tier>` holds the first `tier` sockets.
    for &tier in &plan.tiers {
        let rep = engine
            .connect(spec.http, tier, plan.connect_inflight, Duration::from_secs(120), salt.wrapping_add(50))
            .await;
        if rep.failed > 0 {
            notes.push(format!("traffic phase, tier {tier}: {} connects failed", rep.failed));
        }
        if let Err(e) = driver.join_all(&format!("r{tier}")).await {
            notes.push(format!("join r{tier} failed: {e}"));
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let connected = c.open.load(Ordering::Relaxed) as usize;
    let max_tier = *plan.tiers.iter().max().unwrap_or(&1000);

    // ---- idle background: every connection open, pings only ----
    let idle_cpu_pct = {
        let s0 = snap(&server, engine);
        tokio::time::sleep(Duration::from_millis(plan.idle_ms)).await;
        let s1 = snap(&server, engine);
        pct(s1.cpu - s0.cpu, s1.at - s0.at)
    };
    eprintln!("  [{}] idle with {connected} connections: {idle_cpu_pct:.1}% CPU", kind.name());

    // ---- room fan-out ----
    let mut fanout = Vec::new();
    let warm = Duration::from_millis(plan.warm_ms);
    let measure = Duration::from_millis(plan.measure_ms);
    // (room, offered, part of the sweep, moderate)
    let mut points: Vec<(usize, f64, bool, bool)> = plan
        .moderate_fanout
        .iter()
        .filter(|(room, _)| plan.tiers.contains(room))
        .map(|&(room, rate)| (room, rate, false, true))
        .collect();
    points.extend(plan.fanout_rates.iter().map(|&r| (plan.fanout_sweep_room, r, true, false)));
    for &room in &plan.fanout_rooms {
        if room <= max_tier && plan.tiers.contains(&room) {
            points.push((room, plan.fanout_room_rate, false, false));
        }
    }
    let mut sweep_saturated = false;
    if !wants("fanout") {
        points.clear();
    }
    for (room, offered, sweep, moderate) in points {
        if sweep && sweep_saturated {
            continue;
        }
        let pushes_per_s = offered / room as f64;
        let name = format!("r{room}");
        let d = driver.clone();
        let handle = tokio::spawn(async move {
            open_loop(pushes_per_s, warm + measure, 4, move |_, t| {
                let d = d.clone();
                let name = name.clone();
                async move { d.push_room(&name, t).await }
            })
            .await
        });
        tokio::time::sleep(warm).await;
        let s0 = snap(&server, engine);
        tokio::time::sleep(measure).await;
        let s1 = snap(&server, engine);
        let rep = handle.await?;
        drain(&c.events, Duration::from_secs(20)).await;
        let dt = s1.at - s0.at;
        let delivered = (s1.events - s0.events) as f64;
        let p = FanoutPoint {
            moderate,
            room,
            offered,
            delivered_per_s: delivered / dt.as_secs_f64(),
            cpu_ms_per_1000: if delivered > 0.0 { (s1.cpu - s0.cpu) / delivered * 1000.0 } else { 0.0 },
            server_cpu_pct: pct(s1.cpu - s0.cpu, dt),
            gen_cpu_pct: pct(s1.gcpu - s0.gcpu, dt),
            foreign_pct: pct((s1.core - s0.core) - (s1.cpu - s0.cpu), dt).max(0.0),
            push_errors: rep.errors,
        };
        eprintln!(
            "  [{}] fan-out room {room} offered {:.0}/s: delivered {:.0}/s, {:.3} CPU-ms/1000, server {:.0}% gen {:.0}% foreign {:.0}%",
            kind.name(),
            offered,
            p.delivered_per_s,
            p.cpu_ms_per_1000,
            p.server_cpu_pct,
            p.gen_cpu_pct,
            p.foreign_pct
        );
        if sweep && p.delivered_per_s < 0.8 * offered {
            sweep_saturated = true;
        }
        fanout.push(p);
    }

    // ---- one-to-one push latency to distinct users ----
    let mut latency = Vec::new();
    let lat_measure = Duration::from_millis(plan.latency_measure_ms);
    let latency_rates = if wants("latency") { plan.latency_rates.clone() } else { vec![] };
    let doors: &[crate::backend::Door] = if kind == crate::backend::Kind::Bridge {
        &[crate::backend::Door::Grpc, crate::backend::Door::Rest]
    } else {
        &[crate::backend::Door::Rest]
    };
    let points: Vec<(f64, crate::backend::Door)> =
        latency_rates.iter().flat_map(|&r| doors.iter().map(move |&d| (r, d))).collect();
    for (rate, door) in points {
        // Only users whose connection is still open (a server may have closed some under
        // the fan-out overload before; those would count as undelivered pushes).
        let open_users = Arc::new(engine.open_users().await);
        if open_users.len() < connected {
            notes.push(format!(
                "push latency at {rate:.0}/s: {} of {connected} users still connected",
                open_users.len()
            ));
        }
        let users = open_users.clone();
        let d = driver.clone();
        let e0 = c.events.load(Ordering::Relaxed);
        let handle = tokio::spawn(async move {
            open_loop(rate, warm + lat_measure, 64, move |k, t| {
                let d = d.clone();
                let user = users.get((k as usize) % users.len().max(1)).copied().unwrap_or(0);
                async move { d.push_user(user, t, door).await }
            })
            .await
        });
        tokio::time::sleep(warm).await;
        let _ = engine.take_stats().await;
        let s0 = snap(&server, engine);
        let e_warm = s0.events - e0;
        tokio::time::sleep(lat_measure).await;
        let s1 = snap(&server, engine);
        let rep = handle.await?;
        let offered_total = (rate * (warm + lat_measure).as_secs_f64()).floor() as u64;
        wait_for(&c.events, e0 + offered_total, Duration::from_secs(5)).await;
        let mut stats = engine.take_stats().await;
        let delivered_total = c.events.load(Ordering::Relaxed) - e0;
        let offered_measured = offered_total.saturating_sub(e_warm);
        let delivered_measured = delivered_total.saturating_sub(e_warm);
        let missing = offered_total.saturating_sub(delivered_total);
        let saturated = (delivered_total as f64) < 0.99 * offered_total as f64;
        if missing > 0 {
            // Count what never arrived at the time it had waited so far (a lower bound).
            let now = clock::now_ns();
            let mut waits: Vec<u64> = rep.abandoned.iter().map(|t| now.saturating_sub(*t) / 1000).collect();
            waits.truncate(missing as usize);
            let rest = missing.saturating_sub(waits.len() as u64);
            for w in waits {
                let _ = stats.push_latency.record(w.max(1));
            }
            let _ = stats.push_latency.record_n(now.saturating_sub(rep.end_ns) / 1000 + 1, rest);
        }
        let (p50, p99, p999, max) = quantiles(&stats.push_latency);
        let dt = s1.at - s0.at;
        let p = LatencyPoint {
            rate,
            door,
            offered: offered_measured,
            delivered: delivered_measured,
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            max_us: max,
            saturated,
            server_cpu_pct: pct(s1.cpu - s0.cpu, dt),
            gen_cpu_pct: pct(s1.gcpu - s0.gcpu, dt),
            foreign_pct: pct((s1.core - s0.core) - (s1.cpu - s0.cpu), dt).max(0.0),
            push_errors: rep.errors,
        };
        eprintln!(
            "  [{}] push {rate:.0}/s ({door:?}): issued {} errors {} delivered {}/{} p50 {} us p99 {} us p99.9 {} us max {} us, server {:.0}% gen {:.0}% foreign {:.0}%{}",
            kind.name(),
            rep.issued,
            rep.errors,
            delivered_total,
            offered_total,
            p50,
            p99,
            p999,
            max,
            p.server_cpu_pct,
            p.gen_cpu_pct,
            p.foreign_pct,
            if saturated { " SATURATED" } else { "" }
        );
        eprintln!(
            "      clients open {} closed {} connect errors {}",
            c.open.load(Ordering::Relaxed),
            c.closed.load(Ordering::Relaxed),
            c.connect_errors.load(Ordering::Relaxed)
        );
        latency.push(p);
        drain(&c.events, Duration::from_secs(10)).await;
    }

    // ---- client event -> backend -> ack round trips ----
    let mut rtt = Vec::new();
    let rtt_rates = if wants("rtt") { plan.rtt_rates.clone() } else { vec![] };
    for &rate in &rtt_rates {
        let emitted0 = c.emitted.load(Ordering::Relaxed);
        let acks0 = c.acks.load(Ordering::Relaxed);
        let errors0 = c.ack_errors.load(Ordering::Relaxed);
        let emit = engine.emit(rate, warm + measure);
        let measure_fut = async {
            tokio::time::sleep(warm).await;
            let _ = engine.take_stats().await;
            let s0 = snap(&server, engine);
            tokio::time::sleep(measure).await;
            (s0, snap(&server, engine))
        };
        let ((), (s0, s1)) = tokio::join!(emit, measure_fut);
        let emitted = c.emitted.load(Ordering::Relaxed) - emitted0;
        wait_for(&c.acks, acks0 + emitted, Duration::from_secs(6)).await;
        let stats = engine.take_stats().await;
        let mut h = stats.rtt;
        let missing = emitted.saturating_sub(c.acks.load(Ordering::Relaxed) - acks0);
        if missing > 0 {
            let _ = h.record_n(6_000_000, missing);
        }
        let (p50, p99, p999, max) = quantiles(&h);
        let dt = s1.at - s0.at;
        let p = RttPoint {
            rate,
            emitted,
            // Successful round trips only: error answers (backend_overloaded, ack_timeout, ...)
            // are counted in ack_errors.
            acked_per_s: ((s1.acks - s0.acks).saturating_sub(s1.ack_errors - s0.ack_errors)) as f64 / dt.as_secs_f64(),
            ack_errors: c.ack_errors.load(Ordering::Relaxed) - errors0,
            p50_us: p50,
            p99_us: p99,
            p999_us: p999,
            max_us: max,
            server_cpu_pct: pct(s1.cpu - s0.cpu, dt),
            gen_cpu_pct: pct(s1.gcpu - s0.gcpu, dt),
            foreign_pct: pct((s1.core - s0.core) - (s1.cpu - s0.cpu), dt).max(0.0),
        };
        eprintln!(
            "  [{}] events {rate:.0}/s: acked {:.0}/s (errors {}), p50 {} us p99 {} us p99.9 {} us max {} us, server {:.0}% gen {:.0}% foreign {:.0}%",
            kind.name(),
            p.acked_per_s,
            p.ack_errors,
            p50,
            p99,
            p999,
            max,
            p.server_cpu_pct,
            p.gen_cpu_pct,
            p.foreign_pct
        );
        // Past 50 ms p99 the next rates only saturate further (the figure that matters is
        // the highest rate under 10 ms).
        let stop = p.acked_per_s < 0.9 * rate || p99 > 50_000;
        rtt.push(p);
        drain(&c.acks, Duration::from_secs(5)).await;
        if stop {
            break;
        }
    }
    let _ = (answered, http_answered);

    if !server.alive() {
        notes.push("server exited before the end of the run".into());
    }
    let closed = c.closed.load(Ordering::Relaxed) - closed_at_start;
    if closed > 0 {
        notes.push(format!("{closed} client connection(s) were closed by the server during the run (pushes to them count as not delivered)"));
    }
    engine.close_all().await;
    server.stop().await;
    drop(driver);
    Ok(RunResult { server: kind, run, base_rss_kb: base_rss, tiers, fanout, latency, rtt, notes, idle_cpu_pct })
}
