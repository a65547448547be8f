//! Cluster scenario: N socket-bridge instances on one Redis, user pushes at fixed rates
//! through instance A (gRPC `Push`) to users whose sockets are all on instance B (A = B
//! with one instance). Every process (instances and Redis) is pinned to the server core;
//! the generator runs on its own core. Per window: CPU µs per push of the sender, the
//! holder, each other instance and Redis (less each one's idle background), deliveries per
//! second and the push latency (intended send time to the client's receipt).
//!
//! Topologies: `single` (one `redis-server`). `cluster` (three masters with one replica
//! each, created with `redis-cli --cluster create`) is started the same way once the
//! bridge accepts a Redis Cluster: [`cluster_url`] is the one place that names the form of
//! `redis.url` it is given.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::backend::{Door, Driver, Kind};
use crate::clients::Engine;
use crate::procs::{self, Server, ServerSpec};
use crate::suite::open_loop;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterPlan {
    pub topologies: Vec<String>,
    pub instances: Vec<usize>,
    /// Users (one socket each) held by instance B.
    pub users: usize,
    pub rates: Vec<f64>,
    pub warm_ms: u64,
    pub measure_ms: u64,
    pub idle_ms: u64,
}

impl Default for ClusterPlan {
    fn default() -> Self {
        Self::full()
    }
}

impl ClusterPlan {
    pub fn full() -> Self {
        Self {
            topologies: vec!["single".into()],
            instances: vec![1, 3, 6],
            users: 1000,
            rates: vec![1000.0, 5000.0],
            warm_ms: 500,
            measure_ms: 2000,
            idle_ms: 1000,
        }
    }

    pub fn quick() -> Self {
        Self { instances: vec![1, 3], rates: vec![2000.0], measure_ms: 1000, ..Self::full() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterPoint {
    pub topology: String,
    pub instances: usize,
    pub run: usize,
    pub rate: f64,
    pub pushes: u64,
    pub delivered_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU µs per push, each less its idle background.
    pub sender_us: f64,
    /// The holder (equal to the sender with one instance: then 0 here).
    pub holder_us: f64,
    pub others_us: Vec<f64>,
    pub redis_us: f64,
    pub total_us: f64,
    pub push_errors: u64,
    pub foreign_pct: f64,
}

pub struct ClusterSetup {
    pub bridge_bin: PathBuf,
    pub log_dir: PathBuf,
    pub bridge_sets: Vec<String>,
}

/// `redis.url` for a Redis Cluster given its masters' ports.
fn cluster_url(ports: &[u16]) -> String {
    let seeds: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    format!("redis+cluster://{}", seeds.join(","))
}

struct Redis {
    procs: Vec<Server>,
    url: String,
}

async fn start_redis(topology: &str, base_port: u16, log_dir: &std::path::Path) -> anyhow::Result<Redis> {
    let args = |port: u16, extra: &[&str]| -> Vec<String> {
        let mut a: Vec<String> =
            ["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        a.extend(extra.iter().map(|s| s.to_string()));
        a
    };
    match topology {
        "single" => {
            let addr = SocketAddr::from(([127, 0, 0, 1], base_port));
            let log = log_dir.join(format!("redis-{base_port}.log"));
            let p = Server::spawn(0, "redis-server", &args(base_port, &[]), log, addr).await?;
            Ok(Redis { procs: vec![p], url: format!("redis://127.0.0.1:{base_port}/") })
        }
        "cluster" => {
            let ports: Vec<u16> = (0..6).map(|_| procs::free_addr().port()).collect();
            let mut nodes = Vec::new();
            for &port in &ports {
                // The cluster bus port, given explicitly (port + 10000 may not exist).
                let bus = procs::free_addr().port().to_string();
                let dir = log_dir.join(format!("redis-cluster-{port}"));
                std::fs::create_dir_all(&dir)?;
                let conf = dir.join("nodes.conf");
                let _ = std::fs::remove_file(&conf);
                let extra = [
                    "--cluster-enabled",
                    "yes",
                    "--cluster-port",
                    &bus,
                    "--cluster-config-file",
                    &conf.to_string_lossy(),
                    "--dir",
                    &dir.to_string_lossy(),
                ];
                let addr = SocketAddr::from(([127, 0, 0, 1], port));
                nodes.push(Server::spawn(0, "redis-server", &args(port, &extra), dir.join("log"), addr).await?);
            }
            let mut create = tokio::process::Command::new("redis-cli");
            create.arg("--cluster").arg("create");
            for &port in &ports {
                create.arg(format!("127.0.0.1:{port}"));
            }
            create.arg("--cluster-replicas").arg("1").arg("--cluster-yes");
            let out = create.output().await?;
            anyhow::ensure!(
                out.status.success(),
                "redis-cli --cluster create failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            // The cluster agrees on its slots within a few seconds.
            tokio::time::sleep(Duration::from_secs(3)).await;
            Ok(Redis { procs: nodes, url: cluster_url(&ports[..3]) })
        }
        other => anyhow::bail!("unknown Redis topology {other}"),
    }
}

pub async fn run(plan: &crate::suite::Plan, setup: &ClusterSetup, engine: &Engine) -> (Vec<ClusterPoint>, Vec<String>) {
    let mut out = Vec::new();
    let mut notes = Vec::new();
    let p = &plan.cluster;
    for run in 0..plan.runs {
        for topology in &p.topologies {
            for (i, &n) in p.instances.iter().enumerate() {
                eprintln!("cluster run {}/{}: {topology}, {n} instance(s)", run + 1, plan.runs);
                let slot = 300 + (run * 16 + i * 4) as u16;
                match run_one(p, setup, engine, topology, n, run, slot).await {
                    Ok(points) => out.extend(points),
                    Err(e) => {
                        eprintln!("  cluster {topology} x{n} run {} failed: {e:#}", run + 1);
                        notes.push(format!("cluster {topology} with {n} instance(s), run {}: {e:#}", run + 1));
                    }
                }
                engine.close_all().await;
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
    (out, notes)
}

async fn run_one(
    p: &ClusterPlan,
    setup: &ClusterSetup,
    engine: &Engine,
    topology: &str,
    n: usize,
    run: usize,
    slot: u16,
) -> anyhow::Result<Vec<ClusterPoint>> {
    let redis = start_redis(topology, procs::free_addr().port(), &setup.log_dir).await?;
    let mut instances = Vec::new();
    for _ in 0..n {
        let mut sets = setup.bridge_sets.clone();
        sets.push(format!("redis.url={}", redis.url));
        let spec = ServerSpec::bridge(setup.bridge_bin.clone(), setup.log_dir.clone(), sets);
        let server = Server::start(&spec).await?;
        instances.push((spec, server));
    }
    let holder = if n > 1 { 1 } else { 0 };
    let salt = (100 + slot % 50) as u8;
    let rep = engine.connect(instances[holder].0.http, p.users, 64, Duration::from_secs(60), salt).await;
    anyhow::ensure!(rep.failed == 0, "{} of {} clients failed to connect", rep.failed, p.users);
    let users = Arc::new(engine.open_users().await);
    let sender = &instances[0].0;
    let driver = Arc::new(Driver::connect(Kind::Bridge, sender.http, Some(sender.grpc), 64).await?);
    // Presence reaches every instance, and connections settle.
    tokio::time::sleep(Duration::from_millis(1000)).await;

    let pids: Vec<u32> = instances.iter().map(|(_, s)| s.pid).chain(redis.procs.iter().map(|r| r.pid)).collect();
    let cpu =
        |pids: &[u32]| -> Vec<f64> { pids.iter().map(|&pid| procs::cpu_ms_precise(pid).unwrap_or(0.0)).collect() };
    // Idle background per process (node heartbeats, pings).
    let (i0, t0) = (cpu(&pids), Instant::now());
    tokio::time::sleep(Duration::from_millis(p.idle_ms)).await;
    let (i1, idle_secs) = (cpu(&pids), t0.elapsed().as_secs_f64());
    let idle_ms_per_s: Vec<f64> = i0.iter().zip(&i1).map(|(a, b)| (b - a) / idle_secs).collect();

    let mut points = Vec::new();
    let warm = Duration::from_millis(p.warm_ms);
    let measure = Duration::from_millis(p.measure_ms);
    for &rate in &p.rates {
        let d = driver.clone();
        let u = users.clone();
        let handle = tokio::spawn(async move {
            open_loop(rate, warm + measure, 64, move |k, t| {
                let d = d.clone();
                let user = u.get((k as usize) % u.len().max(1)).copied().unwrap_or(0);
                async move { d.push_user(user, t, Door::Grpc).await }
            })
            .await
        });
        tokio::time::sleep(warm).await;
        let _ = engine.take_stats().await;
        let (c0, e0, core0, w0) =
            (cpu(&pids), engine.counters.events.load(Ordering::Relaxed), procs::core_busy_ms(0), Instant::now());
        tokio::time::sleep(measure).await;
        let (c1, e1, core1, secs) = (
            cpu(&pids),
            engine.counters.events.load(Ordering::Relaxed),
            procs::core_busy_ms(0),
            w0.elapsed().as_secs_f64(),
        );
        let rep = handle.await?;
        let stats = engine.take_stats().await;
        let pushes = (rate * secs).round().max(1.0);
        let per_push: Vec<f64> = c0
            .iter()
            .zip(&c1)
            .zip(&idle_ms_per_s)
            .map(|((a, b), idle)| ((b - a) - idle * secs).max(0.0) * 1000.0 / pushes)
            .collect();
        let redis_us: f64 = per_push[n..].iter().sum();
        let q = |x: f64| if stats.push_latency.is_empty() { 0 } else { stats.push_latency.value_at_quantile(x) };
        let own: f64 = c0.iter().zip(&c1).map(|(a, b)| b - a).sum();
        let point = ClusterPoint {
            topology: topology.to_owned(),
            instances: n,
            run,
            rate,
            pushes: pushes as u64,
            delivered_per_s: (e1 - e0) as f64 / secs,
            p50_us: q(0.5),
            p99_us: q(0.99),
            sender_us: per_push[0],
            holder_us: if n > 1 { per_push[holder] } else { 0.0 },
            others_us: (0..n).filter(|&k| k != 0 && k != holder).map(|k| per_push[k]).collect(),
            redis_us,
            total_us: per_push.iter().sum(),
            push_errors: rep.errors,
            foreign_pct: (100.0 * ((core1 - core0) - own) / (secs * 1000.0)).max(0.0),
        };
        eprintln!(
            "  [{topology} x{n}] {rate:.0} pushes/s: delivered {:.0}/s, p50 {} us p99 {} us; µs/push sender {:.1} holder {:.1} others {:?} redis {:.1} total {:.1}; errors {}",
            point.delivered_per_s,
            point.p50_us,
            point.p99_us,
            point.sender_us,
            point.holder_us,
            point.others_us.iter().map(|x| format!("{x:.1}")).collect::<Vec<_>>(),
            point.redis_us,
            point.total_us,
            point.push_errors
        );
        points.push(point);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    engine.close_all().await;
    drop(driver);
    for (_, mut s) in instances {
        s.stop().await;
    }
    for mut r in redis.procs {
        r.stop().await;
    }
    Ok(points)
}
