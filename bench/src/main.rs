//! socket-bridge benchmark driver: the load generator, the backend it plays, and the
//! report writer. `bench/run.sh` builds everything and calls `loadgen suite`.
//!
//! loadgen suite --bridge-bin P --sioxide-bin P --floor-bin P --node-dir D --out DIR --md FILE
//!               [--quick] [--runs N] [--servers bridge,sioxide,node,node-forward,floor]
//!               [--scenarios fanout,latency,rtt,auth,cluster] [--commit HASH]
//!               [--bridge-set key=value ...] [--tiers 1000,5000] [--rtt-rates ...]
//!               [--latency-rates ...] [--cluster-instances 1,3,6] [--cluster-topologies single]
//! loadgen report --out DIR --md FILE      (rewrites BENCHMARKS.md from DIR/results.json)
//! loadgen count --bridge-bin P [--server bridge|sioxide|floor] [--op event|push-grpc|push-rest]
//!               [--ops N] [--clients C]      (instructions per operation under callgrind)
//! loadgen soak --bridge-bin P [--clients N] [--duration S] [--push-rate R] [--event-rate R]
//!              [--room-every N] [--rooms N] [--drain S] [--out DIR] [--label NAME]
//!              [--bridge-set key=value ...]       (the soak, `bench/soak.sh`; exit 1 on failure)

mod authbench;
mod backend;
mod clients;
mod clock;
mod cluster;
mod count;
mod procs;
mod report;
mod soak;
mod suite;

#[allow(clippy::all, dead_code)]
mod pb {
    tonic::include_proto!("socketbridge.v1");
}

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use backend::Kind;
use suite::{Plan, RunResult};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct Meta {
    pub date: String,
    pub cpu: String,
    pub cores: usize,
    pub memory_gib: f64,
    pub kernel: String,
    pub rustc: String,
    pub node: String,
    pub socketio: String,
    pub express: String,
    #[serde(default)]
    pub undici: String,
    #[serde(default)]
    pub bufferutil: String,
    #[serde(default)]
    pub redis: String,
    pub socketioxide: String,
    pub bridge_commit: String,
    pub quick: bool,
    pub server_core: usize,
    pub generator_cores: Vec<usize>,
    pub nofile: u64,
    pub suite_secs: f64,
    pub bridge_sets: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Results {
    pub meta: Meta,
    pub plan: Plan,
    pub runs: Vec<RunResult>,
    #[serde(default)]
    pub auth: Vec<authbench::AuthResult>,
    #[serde(default)]
    pub cluster: Vec<cluster::ClusterPoint>,
    #[serde(default)]
    pub notes: Vec<String>,
}

struct Args(Vec<String>);

impl Args {
    fn value(&self, name: &str) -> Option<String> {
        self.0.iter().position(|a| a == name).and_then(|i| self.0.get(i + 1).cloned())
    }
    fn values(&self, name: &str) -> Vec<String> {
        self.0.windows(2).filter(|w| w[0] == name).map(|w| w[1].clone()).collect()
    }
    fn flag(&self, name: &str) -> bool {
        self.0.iter().any(|a| a == name)
    }

    /// Refuses what `command` does not know, so a misspelt option or `--help` never starts
    /// a run of many minutes on defaults. `with_value` options take the next argument; `flags`
    /// stand alone.
    fn check(&self, command: &str, with_value: &[&str], flags: &[&str]) -> anyhow::Result<()> {
        let usage = std::iter::once(format!("usage: loadgen {command}"))
            .chain(with_value.iter().map(|o| format!("[{o} V]")))
            .chain(flags.iter().map(|f| format!("[{f}]")))
            .collect::<Vec<_>>()
            .join(" ");
        let mut rest = self.0.iter().skip(1);
        while let Some(arg) = rest.next() {
            if arg == "--help" || arg == "-h" {
                println!("{usage}");
                std::process::exit(0);
            }
            if flags.contains(&arg.as_str()) {
                continue;
            }
            if !with_value.contains(&arg.as_str()) {
                bail!("unknown argument {arg:?}\n{usage}");
            }
            match rest.next() {
                Some(v) if !v.starts_with("--") => {}
                _ => bail!("{arg} needs a value\n{usage}"),
            }
        }
        Ok(())
    }
}

const SUITE_OPTIONS: &[&str] = &[
    "--bridge-bin",
    "--sioxide-bin",
    "--floor-bin",
    "--node-dir",
    "--out",
    "--md",
    "--commit",
    "--servers",
    "--scenarios",
    "--runs",
    "--tiers",
    "--rtt-rates",
    "--latency-rates",
    "--fanout-rates",
    "--fanout-rooms",
    "--measure-ms",
    "--cluster-instances",
    "--cluster-rates",
    "--cluster-topologies",
    "--auth-modes",
    "--bridge-set",
];
const COUNT_OPTIONS: &[&str] = &[
    "--server",
    "--op",
    "--ops",
    "--clients",
    "--out",
    "--bridge-bin",
    "--sioxide-bin",
    "--floor-bin",
    "--bridge-set",
];
const SOAK_OPTIONS: &[&str] = &[
    "--bridge-bin",
    "--out",
    "--commit",
    "--label",
    "--bridge-set",
    "--clients",
    "--duration",
    "--push-rate",
    "--room-every",
    "--rooms",
    "--event-rate",
    "--drain",
    "--sample",
    "--ping-interval-ms",
    "--ping-timeout-ms",
    "--push-inflight",
    "--connect-inflight",
    "--max-growth-pct",
];

fn main() -> anyhow::Result<()> {
    let args = Args(std::env::args().skip(1).collect());
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    match args.0.first().map(String::as_str) {
        Some("suite") => {
            args.check("suite", SUITE_OPTIONS, &["--quick"])?;
            rt.block_on(suite_cmd(&args))
        }
        Some("report") => {
            args.check("report", &["--out", "--md"], &[])?;
            let out = PathBuf::from(args.value("--out").context("--out")?);
            let md = PathBuf::from(args.value("--md").context("--md")?);
            let results: Results = serde_json::from_slice(&std::fs::read(out.join("results.json"))?)?;
            report::write(&results, &out, &md)
        }
        Some("count") => {
            args.check("count", COUNT_OPTIONS, &[])?;
            rt.block_on(count::run(&args))
        }
        Some("soak") => match args.check("soak", SOAK_OPTIONS, &[]).and_then(|()| rt.block_on(soak::run(&args))) {
            Ok(true) => Ok(()),
            Ok(false) => std::process::exit(1),
            Err(e) => {
                eprintln!("soak could not run: {e:#}");
                std::process::exit(2)
            }
        },
        _ => bail!(
            "usage: loadgen suite ... | loadgen report --out DIR --md FILE | loadgen count ... | loadgen soak --bridge-bin P ..."
        ),
    }
}

fn cmd_out(cmd: &str, args: &[&str]) -> String {
    std::process::Command::new(cmd)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default()
}

fn package_version(dir: &std::path::Path) -> String {
    std::fs::read(dir.join("package.json"))
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .and_then(|v| v.get("version").and_then(|v| v.as_str()).map(str::to_owned))
        .unwrap_or_default()
}

fn meta(args: &Args, node_dir: &std::path::Path, quick: bool, sets: &[String]) -> Meta {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("unknown")
        .trim()
        .to_owned();
    let mem_kb: f64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    let lock = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap_or_default();
    let sioxide = lock
        .split("[[package]]")
        .find(|p| p.contains("name = \"socketioxide\""))
        .and_then(|p| p.lines().find(|l| l.starts_with("version")))
        .and_then(|l| l.split('"').nth(1))
        .unwrap_or("")
        .to_owned();
    Meta {
        date: cmd_out("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        cpu,
        // SAFETY: sysconf has no preconditions. (available_parallelism would see the taskset mask.)
        cores: unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) }.max(0) as usize,
        memory_gib: mem_kb / 1024.0 / 1024.0,
        kernel: cmd_out("uname", &["-r"]),
        rustc: cmd_out("rustc", &["--version"]),
        node: cmd_out("node", &["--version"]),
        socketio: package_version(&node_dir.join("node_modules/socket.io")),
        express: package_version(&node_dir.join("node_modules/express")),
        undici: package_version(&node_dir.join("node_modules/undici")),
        bufferutil: package_version(&node_dir.join("node_modules/bufferutil")),
        redis: cmd_out("redis-server", &["--version"])
            .split_whitespace()
            .find_map(|w| w.strip_prefix("v="))
            .unwrap_or("")
            .to_owned(),
        socketioxide: sioxide,
        bridge_commit: args.value("--commit").unwrap_or_default(),
        quick,
        server_core: 0,
        generator_cores: procs::own_cores(),
        nofile: 0,
        suite_secs: 0.0,
        bridge_sets: sets.to_vec(),
    }
}

async fn suite_cmd(args: &Args) -> anyhow::Result<()> {
    let started = Instant::now();
    let quick = args.flag("--quick");
    let mut plan = if quick { Plan::quick() } else { Plan::full() };
    if let Some(r) = args.value("--runs") {
        plan.runs = r.parse()?;
    }
    if let Some(t) = args.value("--scenarios") {
        plan.scenarios = t.split(',').map(str::to_owned).collect();
    }
    let floats = |s: String| s.split(',').map(|x| x.parse::<f64>()).collect::<Result<Vec<_>, _>>();
    if let Some(t) = args.value("--rtt-rates") {
        plan.rtt_rates = floats(t)?;
    }
    if let Some(t) = args.value("--latency-rates") {
        plan.latency_rates = floats(t)?;
    }
    if let Some(t) = args.value("--fanout-rates") {
        plan.fanout_rates = floats(t)?;
    }
    if let Some(t) = args.value("--fanout-rooms") {
        plan.fanout_rooms = t.split(',').map(|x| x.parse()).collect::<Result<_, _>>()?;
    }
    if let Some(t) = args.value("--measure-ms") {
        plan.measure_ms = t.parse()?;
        plan.latency_measure_ms = plan.measure_ms;
    }
    if let Some(t) = args.value("--tiers") {
        plan.tiers = t.split(',').map(|x| x.parse()).collect::<Result<_, _>>()?;
    }
    if let Some(t) = args.value("--cluster-instances") {
        plan.cluster.instances = t.split(',').map(|x| x.parse()).collect::<Result<_, _>>()?;
    }
    if let Some(t) = args.value("--cluster-rates") {
        plan.cluster.rates = floats(t)?;
    }
    if let Some(t) = args.value("--cluster-topologies") {
        plan.cluster.topologies = t.split(',').map(str::to_owned).collect();
    }
    if let Some(t) = args.value("--auth-modes") {
        plan.auth.modes = t.split(',').map(str::to_owned).collect();
    }
    let out = PathBuf::from(args.value("--out").unwrap_or_else(|| "bench/results".into()));
    let md = PathBuf::from(args.value("--md").unwrap_or_else(|| "BENCHMARKS.md".into()));
    let node_dir = PathBuf::from(args.value("--node-dir").unwrap_or_else(|| "bench/node-peer".into()));
    let sets = args.values("--bridge-set");
    let kinds: Vec<Kind> = args
        .value("--servers")
        .unwrap_or_else(|| "bridge,sioxide,node,node-forward,floor".into())
        .split(',')
        .filter(|s| !s.is_empty())
        .map(|s| Kind::parse(s).ok_or_else(|| anyhow::anyhow!("unknown server {s}")))
        .collect::<Result<_, _>>()?;
    let per_server = ["fanout", "latency", "rtt"].iter().any(|x| plan.scenarios.iter().any(|y| y == x));

    let nofile = procs::raise_nofile();
    let max_tier = plan.tiers.iter().copied().max().unwrap_or(0) as u64;
    if nofile < max_tier + 200 {
        bail!("open-files limit {nofile} is too low for {max_tier} connections");
    }
    let mut m = meta(args, &node_dir, quick, &sets);
    m.nofile = nofile;
    let server_core = 0usize;
    m.server_core = server_core;
    if m.generator_cores.contains(&server_core) {
        eprintln!(
            "warning: the generator may run on core {server_core} (the server core); run it under `taskset -c 1`"
        );
    }
    let raw = out.join("raw");
    std::fs::create_dir_all(&raw)?;

    let engine = clients::Engine::start()?;
    let mut runs = Vec::new();
    let server_runs = if per_server { plan.runs } else { 0 };
    for run in 0..server_runs {
        // Rotate the order so no server always runs first (or last) in a round.
        let order: Vec<Kind> = (0..kinds.len()).map(|i| kinds[(i + run) % kinds.len()]).collect();
        for (i, &kind) in order.iter().enumerate() {
            let spec = procs::ServerSpec {
                kind,
                bridge_bin: PathBuf::from(args.value("--bridge-bin").unwrap_or_default()),
                sioxide_bin: PathBuf::from(args.value("--sioxide-bin").unwrap_or_default()),
                floor_bin: PathBuf::from(args.value("--floor-bin").unwrap_or_default()),
                node_dir: node_dir.clone(),
                forward_to: (kind == Kind::NodeFwd).then(procs::free_addr),
                core: server_core,
                http: procs::free_addr(),
                grpc: procs::free_addr(),
                ping_interval_ms: plan.ping_interval_ms,
                ping_timeout_ms: plan.ping_timeout_ms,
                log_dir: raw.clone(),
                bridge_sets: sets.clone(),
            };
            eprintln!(
                "run {}/{}: {} ({:.0}s so far)",
                run + 1,
                plan.runs,
                kind.name(),
                started.elapsed().as_secs_f64()
            );
            let salt = (run * 8 + i) as u8;
            match suite::run_server(&plan, &spec, &engine, run, salt).await {
                Ok(r) => runs.push(r),
                Err(e) => {
                    eprintln!("  {} run {} failed: {e:#}", kind.name(), run + 1);
                    engine.close_all().await;
                }
            }
            // Let sockets in TIME_WAIT and the kernel settle between servers.
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    }
    let bridge_bin = PathBuf::from(args.value("--bridge-bin").unwrap_or_default());
    let mut auth = Vec::new();
    if plan.scenarios.iter().any(|x| x == "auth") {
        let setup =
            authbench::AuthSetup { bridge_bin: bridge_bin.clone(), log_dir: raw.clone(), bridge_sets: sets.clone() };
        auth = authbench::run(&plan, &setup, &engine).await;
    }
    let mut cluster_points = Vec::new();
    let mut notes = Vec::new();
    if plan.scenarios.iter().any(|x| x == "cluster") {
        let setup = cluster::ClusterSetup { bridge_bin, log_dir: raw.clone(), bridge_sets: sets.clone() };
        (cluster_points, notes) = cluster::run(&plan, &setup, &engine).await;
    }
    drop(engine);
    m.suite_secs = started.elapsed().as_secs_f64();
    let results = Results { meta: m, plan, runs, auth, cluster: cluster_points, notes };
    std::fs::write(out.join("results.json"), serde_json::to_vec_pretty(&results)?)?;
    report::write(&results, &out, &md)?;
    eprintln!("wrote {} and plots under {} in {:.0}s", md.display(), out.display(), started.elapsed().as_secs_f64());
    Ok(())
}
