//! Connects through the backend's decision (`auth.mode = "backend"`, the `Authorize`
//! stream) next to the JWT path and dev mode, socket-bridge only, one server process per
//! mode and run.
//!
//! Per mode: `latency_conns` connections with `latency_inflight` handshakes at a time (the
//! latency a client sees when the server is not busy: p50/p99 from TCP connect to the
//! Socket.IO CONNECT answer), then `throughput_conns` more with `throughput_inflight` at a
//! time (connects per second, server CPU per connect). The decider is a tonic client in
//! this process that allows every connect with the `userId` of the auth object (for
//! `jwt+backend`: the token's `sub`), as a backend looking up a session would.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::clients::{AuthFn, Engine};
use crate::pb;
use crate::procs::{self, Server, ServerSpec};
use crate::soak::{API_KEY, JWT_SECRET, grpc_clients, hs256_token};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthPlan {
    /// dev, jwt, backend, jwt+backend
    pub modes: Vec<String>,
    pub latency_conns: usize,
    pub latency_inflight: usize,
    pub throughput_conns: usize,
    pub throughput_inflight: usize,
}

impl Default for AuthPlan {
    fn default() -> Self {
        Self::full()
    }
}

impl AuthPlan {
    pub fn full() -> Self {
        Self {
            modes: ["dev", "jwt", "backend", "jwt+backend"].into_iter().map(str::to_owned).collect(),
            latency_conns: 1000,
            latency_inflight: 4,
            throughput_conns: 5000,
            throughput_inflight: 64,
        }
    }

    pub fn quick() -> Self {
        Self { latency_conns: 300, throughput_conns: 2000, ..Self::full() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AuthResult {
    pub mode: String,
    pub run: usize,
    pub opened: usize,
    pub failed: usize,
    /// Handshake latency with `latency_inflight` at a time, µs.
    pub p50_us: u64,
    pub p99_us: u64,
    /// Connects per second with `throughput_inflight` at a time.
    pub conn_per_s: f64,
    /// Handshake latency during the throughput phase, µs.
    pub loaded_p50_us: u64,
    pub loaded_p99_us: u64,
    pub cpu_us_per_connect: f64,
    /// Decisions the backend made (0 outside the backend modes).
    pub decisions: u64,
    pub foreign_pct: f64,
}

fn sets_for(mode: &str) -> Vec<String> {
    let jwt = vec!["auth.jwt.secret=".to_owned() + JWT_SECRET, format!("grpc.api_keys=[\"{API_KEY}\"]")];
    let mut sets = vec![
        // Production heartbeat: no ping background in the window.
        "socketio.ping_interval_ms=25000".to_owned(),
        "socketio.ping_timeout_ms=20000".to_owned(),
    ];
    match mode {
        "jwt" => {
            sets.push("auth.mode=jwt".into());
            sets.extend(jwt);
        }
        "backend" => {
            sets.push("auth.mode=backend".into());
            sets.push(format!("grpc.api_keys=[\"{API_KEY}\"]"));
        }
        "jwt+backend" => {
            sets.push("auth.mode=backend".into());
            sets.push("auth.backend.require_jwt=true".into());
            sets.extend(jwt);
        }
        _ => {}
    }
    sets
}

fn auth_fn(mode: &str) -> Option<AuthFn> {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs()) + 3600;
    match mode {
        "jwt" | "jwt+backend" => {
            Some(Arc::new(move |i: u32| format!("{{\"token\":\"{}\"}}", hs256_token(&format!("u{i}"), "bench", exp))))
        }
        _ => None,
    }
}

/// `"name":"value"` in a JSON text (ids only, no escapes).
fn field<'a>(json: &'a str, name: &str) -> Option<&'a str> {
    let key = format!("\"{name}\":\"");
    let start = json.find(&key)? + key.len();
    let len = json[start..].find('"')?;
    Some(&json[start..start + len])
}

/// Subscribes to connect decisions and allows each one. Returns the decision count.
async fn start_decider(grpc: SocketAddr) -> anyhow::Result<Arc<AtomicU64>> {
    let mut client = grpc_clients(grpc, 1).await?.remove(0);
    let (tx, rx) = mpsc::channel::<pb::AuthorizeRequest>(65536);
    tx.send(pb::AuthorizeRequest {
        kind: Some(pb::authorize_request::Kind::Subscribe(pb::AuthorizeSubscribe {
            connects: true,
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.authorize(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let count = Arc::new(AtomicU64::new(0));
    let decided = count.clone();
    tokio::spawn(async move {
        while let Ok(Some(msg)) = inbound.message().await {
            let Some(pb::authorize_response::Kind::Connect(q)) = msg.kind else { continue };
            let user = field(&q.auth_json, "userId").or_else(|| field(&q.jwt_claims_json, "sub")).unwrap_or("");
            let decision = pb::AuthorizeRequest {
                kind: Some(pb::authorize_request::Kind::Connect(pb::ConnectDecision {
                    id: q.id,
                    result: Some(pb::connect_decision::Result::Allow(pb::ConnectAllow {
                        user_id: user.to_owned(),
                        ..Default::default()
                    })),
                })),
            };
            if tx.send(decision).await.is_err() {
                break;
            }
            decided.fetch_add(1, Ordering::Relaxed);
        }
    });
    Ok(count)
}

pub struct AuthSetup {
    pub bridge_bin: PathBuf,
    pub log_dir: PathBuf,
    pub bridge_sets: Vec<String>,
}

pub async fn run(plan: &crate::suite::Plan, setup: &AuthSetup, engine: &Engine) -> Vec<AuthResult> {
    let mut out = Vec::new();
    let p = &plan.auth;
    for run in 0..plan.runs {
        for (i, mode) in p.modes.iter().enumerate() {
            let slot = (200 + run * 8 + i) as u16;
            eprintln!("auth run {}/{}: {mode}", run + 1, plan.runs);
            match run_mode(p, setup, engine, mode, run, slot).await {
                Ok(r) => {
                    eprintln!(
                        "  [{mode}] {} open ({} failed): unloaded p50 {} us p99 {} us; {:.0} connects/s, loaded p99 {} us, {:.0} us CPU/connect, {} decisions",
                        r.opened,
                        r.failed,
                        r.p50_us,
                        r.p99_us,
                        r.conn_per_s,
                        r.loaded_p99_us,
                        r.cpu_us_per_connect,
                        r.decisions
                    );
                    out.push(r);
                }
                Err(e) => eprintln!("  auth {mode} run {} failed: {e:#}", run + 1),
            }
            engine.close_all().await;
            engine.set_auth(None);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    out
}

async fn run_mode(
    p: &AuthPlan,
    setup: &AuthSetup,
    engine: &Engine,
    mode: &str,
    run: usize,
    slot: u16,
) -> anyhow::Result<AuthResult> {
    let mut sets = setup.bridge_sets.clone();
    sets.extend(sets_for(mode));
    let spec = ServerSpec::bridge(setup.bridge_bin.clone(), setup.log_dir.clone(), sets);
    let mut server = Server::start(&spec).await?;
    let decisions = if mode.contains("backend") { Some(start_decider(spec.grpc).await?) } else { None };
    engine.set_auth(auth_fn(mode));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let salt = (150 + slot % 50) as u8;
    let _ = engine.take_stats().await;
    let rep = engine.connect(spec.http, p.latency_conns, p.latency_inflight, Duration::from_secs(60), salt).await;
    let unloaded = engine.take_stats().await.connect;
    let total = p.latency_conns + p.throughput_conns;
    let (cpu0, core0) = (server.cpu_ms(), procs::core_busy_ms(0));
    let rep2 = engine.connect(spec.http, total, p.throughput_inflight, Duration::from_secs(120), salt).await;
    let (cpu1, core1) = (server.cpu_ms(), procs::core_busy_ms(0));
    let loaded = engine.take_stats().await.connect;
    let opened = engine.counters.open.load(Ordering::Relaxed) as usize;
    let added = opened.saturating_sub(p.latency_conns).max(1);
    let secs = rep2.elapsed.as_secs_f64().max(1e-9);
    let q = |h: &hdrhistogram::Histogram<u64>, x: f64| if h.is_empty() { 0 } else { h.value_at_quantile(x) };
    let result = AuthResult {
        mode: mode.to_owned(),
        run,
        opened,
        failed: rep.failed + rep2.failed,
        p50_us: q(&unloaded, 0.5),
        p99_us: q(&unloaded, 0.99),
        conn_per_s: added as f64 / secs,
        loaded_p50_us: q(&loaded, 0.5),
        loaded_p99_us: q(&loaded, 0.99),
        cpu_us_per_connect: (cpu1 - cpu0) * 1000.0 / added as f64,
        decisions: decisions.map_or(0, |d| d.load(Ordering::Relaxed)),
        foreign_pct: (100.0 * ((core1 - core0) - (cpu1 - cpu0)) / (secs * 1000.0)).max(0.0),
    };
    engine.close_all().await;
    server.stop().await;
    Ok(result)
}
