//! Instructions per operation, counted by callgrind: stable to a fraction of a percent on
//! a loaded machine, where CPU time is not. For A/B of a change on the event or push path.
//!
//! loadgen count --bridge-bin P [--server bridge|sioxide|floor] [--op event|push-grpc|push-rest]
//!               [--ops N] [--clients C] [--bridge-set key=value ...]
//!
//! The server runs twice under `valgrind --tool=callgrind`: once doing N operations, once
//! 2N, after the same connections. Instructions per operation = (Ir(2N) − Ir(N)) ÷ N, so
//! start-up, connects and shutdown cancel out. Operations are paced (valgrind runs the
//! server about 50 times slower) and each run waits until all are answered.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::Args;
use crate::backend::{Door, Driver, Kind};
use crate::clients::Engine;

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Total instructions (Ir) of a callgrind output file.
fn total_ir(path: &Path) -> anyhow::Result<u64> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .find_map(|l| l.strip_prefix("summary: ").or_else(|| l.strip_prefix("totals: ")))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .context("no summary line in the callgrind output")
}

async fn wait_until(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + limit;
    while Instant::now() < until {
        if f() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f()
}

async fn one(args: &Args, kind: Kind, op: &str, ops: u64, clients: usize, out: &Path) -> anyhow::Result<u64> {
    let http = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let grpc = SocketAddr::from(([127, 0, 0, 1], free_port()?));
    let file = out.join(format!("callgrind.{}.{op}.{ops}.out", kind.name()));
    let _ = std::fs::remove_file(&file);
    let mut cmd = tokio::process::Command::new("valgrind");
    cmd.arg("--tool=callgrind").arg(format!("--callgrind-out-file={}", file.display())).arg("--trace-children=no");
    match kind {
        Kind::Bridge => {
            cmd.arg(args.value("--bridge-bin").context("--bridge-bin")?)
                .arg("--http-listen")
                .arg(http.to_string())
                .arg("--grpc-listen")
                .arg(grpc.to_string());
            let mut sets = vec![
                "log.level=warn".to_owned(),
                "socketio.events_per_second=1000000".to_owned(),
                "socketio.event_burst=1000000".to_owned(),
                "http.rate_per_key_per_second=1000000".to_owned(),
                "http.rate_per_ip_per_second=1000000".to_owned(),
                "shutdown.grace_period_ms=1000".to_owned(),
            ];
            sets.extend(args.values("--bridge-set"));
            for s in sets {
                cmd.arg("--set").arg(s);
            }
        }
        Kind::Sioxide => {
            cmd.arg(args.value("--sioxide-bin").context("--sioxide-bin")?).arg("--listen").arg(http.to_string());
        }
        Kind::Floor => {
            cmd.arg(args.value("--floor-bin").context("--floor-bin")?).arg("--listen").arg(http.to_string());
        }
        _ => bail!("count runs socket-bridge, socketioxide or the floor"),
    }
    cmd.stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let mut child = cmd.spawn().context("starting valgrind (apt-get install valgrind)")?;
    let pid = child.id().context("pid")?;
    let ready = async {
        for addr in if kind == Kind::Bridge { vec![http, grpc] } else { vec![http] } {
            while tokio::net::TcpStream::connect(addr).await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), ready).await.context("server did not listen under valgrind")?;
    let driver = Arc::new(Driver::connect(kind, http, Some(grpc), 8).await?);
    let _answered = driver.start_event_backend().await?;
    let engine = Engine::start()?;
    let rep = engine.connect(http, clients, 8, Duration::from_secs(120), 7).await;
    if rep.failed > 0 {
        bail!("{} clients failed to connect", rep.failed);
    }
    let users = engine.open_users().await;
    let c = engine.counters.clone();
    // Paced well below what the server does under valgrind, so nothing queues or times out.
    let rate = 200.0;
    match op {
        "event" => {
            let acks0 = c.acks.load(Ordering::Relaxed);
            engine.emit(rate, Duration::from_secs_f64(ops as f64 / rate)).await;
            let emitted = c.emitted.load(Ordering::Relaxed);
            if !wait_until(Duration::from_secs(120), || c.acks.load(Ordering::Relaxed) - acks0 >= emitted).await {
                bail!("not every event was answered");
            }
            if c.ack_errors.load(Ordering::Relaxed) > 0 {
                bail!("{} events were answered with an error", c.ack_errors.load(Ordering::Relaxed));
            }
        }
        "push-grpc" | "push-rest" => {
            let door = if op == "push-rest" { Door::Rest } else { Door::Grpc };
            let e0 = c.events.load(Ordering::Relaxed);
            for k in 0..ops {
                let user = users[(k as usize) % users.len()];
                driver.push_user(user, crate::clock::now_ns(), door).await?;
            }
            if !wait_until(Duration::from_secs(60), || c.events.load(Ordering::Relaxed) - e0 >= ops).await {
                bail!("not every push arrived");
            }
        }
        other => bail!("unknown op {other}"),
    }
    engine.close_all().await;
    drop(engine);
    drop(driver);
    tokio::time::sleep(Duration::from_millis(500)).await;
    // SAFETY: kill(2) on our own child.
    unsafe {
        libc::kill(pid as i32, libc::SIGTERM);
    }
    let _ = tokio::time::timeout(Duration::from_secs(60), child.wait()).await;
    total_ir(&file)
}

pub async fn run(args: &Args) -> anyhow::Result<()> {
    let kind = Kind::parse(&args.value("--server").unwrap_or_else(|| "bridge".into())).context("--server")?;
    let op = args.value("--op").unwrap_or_else(|| "event".into());
    let ops: u64 = args.value("--ops").map_or(Ok(1000), |v| v.parse())?;
    let clients: usize = args.value("--clients").map_or(Ok(100), |v| v.parse())?;
    let out = PathBuf::from(args.value("--out").unwrap_or_else(|| "/tmp/bench-count".into()));
    std::fs::create_dir_all(&out)?;
    let a = one(args, kind, &op, ops, clients, &out).await?;
    let b = one(args, kind, &op, 2 * ops, clients, &out).await?;
    let per = (b as f64 - a as f64) / ops as f64;
    println!("{} {op}: {per:.0} instructions per operation (Ir {a} for {ops}, {b} for {})", kind.name(), 2 * ops);
    Ok(())
}
