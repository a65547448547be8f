//! Server processes (pinned to their core with taskset) and what /proc says about them.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

use crate::backend::Kind;

#[derive(Clone)]
pub struct ServerSpec {
    pub kind: Kind,
    pub bridge_bin: PathBuf,
    pub sioxide_bin: PathBuf,
    pub floor_bin: PathBuf,
    pub node_dir: PathBuf,
    /// The forwarding Node peer's backend (`Kind::NodeFwd`).
    pub forward_to: Option<SocketAddr>,
    pub core: usize,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    pub log_dir: PathBuf,
    /// Extra `--set key=value` for the bridge.
    pub bridge_sets: Vec<String>,
}

impl ServerSpec {
    /// socket-bridge alone on the server core (core 0), on free ports, with the production
    /// heartbeat (25 s ping, 20 s timeout) and `sets` as extra settings.
    pub fn bridge(bridge_bin: PathBuf, log_dir: PathBuf, sets: Vec<String>) -> Self {
        Self {
            kind: Kind::Bridge,
            bridge_bin,
            sioxide_bin: PathBuf::new(),
            floor_bin: PathBuf::new(),
            node_dir: PathBuf::new(),
            forward_to: None,
            core: 0,
            http: free_addr(),
            grpc: free_addr(),
            ping_interval_ms: 25000,
            ping_timeout_ms: 20000,
            log_dir,
            bridge_sets: sets,
        }
    }
}

pub struct Server {
    pub pid: u32,
    child: Child,
}

impl Server {
    pub async fn start(spec: &ServerSpec) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.log_dir)?;
        let log = spec.log_dir.join(format!("{}-{}.log", spec.kind.name(), spec.http.port()));
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(spec.core.to_string());
        match spec.kind {
            Kind::Bridge => {
                cmd.arg(&spec.bridge_bin)
                    .arg("--http-listen")
                    .arg(spec.http.to_string())
                    .arg("--grpc-listen")
                    .arg(spec.grpc.to_string());
                let mut sets = vec![
                    "log.level=warn".to_owned(),
                    format!("socketio.ping_interval_ms={}", spec.ping_interval_ms),
                    format!("socketio.ping_timeout_ms={}", spec.ping_timeout_ms),
                    // Throughput scenarios: lift the per-socket client event limit.
                    "socketio.events_per_second=1000000".to_owned(),
                    "socketio.event_burst=1000000".to_owned(),
                    // REST push scenario: lift the per-key and per-address request limits.
                    "http.rate_per_key_per_second=1000000".to_owned(),
                    "http.burst_per_key=1000000".to_owned(),
                    "http.rate_per_ip_per_second=1000000".to_owned(),
                    "http.burst_per_ip=1000000".to_owned(),
                    "shutdown.grace_period_ms=1000".to_owned(),
                ];
                sets.extend(spec.bridge_sets.iter().cloned());
                for s in sets {
                    cmd.arg("--set").arg(s);
                }
                cmd.env_remove("RUST_LOG");
            }
            Kind::Sioxide => {
                cmd.arg(&spec.sioxide_bin)
                    .arg("--listen")
                    .arg(spec.http.to_string())
                    .arg("--ping-interval-ms")
                    .arg(spec.ping_interval_ms.to_string())
                    .arg("--ping-timeout-ms")
                    .arg(spec.ping_timeout_ms.to_string());
            }
            Kind::Floor => {
                cmd.arg(&spec.floor_bin)
                    .arg("--listen")
                    .arg(spec.http.to_string())
                    .arg("--ping-interval-ms")
                    .arg(spec.ping_interval_ms.to_string())
                    .arg("--ping-timeout-ms")
                    .arg(spec.ping_timeout_ms.to_string());
            }
            Kind::Node | Kind::NodeFwd => {
                if let Some(backend) = spec.forward_to {
                    cmd.arg("node")
                        .arg("--expose-gc")
                        .arg(spec.node_dir.join("server.js"))
                        .arg("--forward")
                        .arg(format!("http://{backend}"));
                } else {
                    cmd.arg("node").arg("--expose-gc").arg(spec.node_dir.join("server.js"));
                }
                cmd.arg("--port")
                    .arg(spec.http.port().to_string())
                    .arg("--ping-interval-ms")
                    .arg(spec.ping_interval_ms.to_string())
                    .arg("--ping-timeout-ms")
                    .arg(spec.ping_timeout_ms.to_string())
                    .env("NODE_ENV", "production");
            }
        }
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {}", spec.kind.name()))?;
        let pid = child.id().context("server pid")?;
        let mut server = Server { pid, child };
        let mut addrs = vec![spec.http];
        if spec.kind == Kind::Bridge {
            addrs.push(spec.grpc);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        for addr in addrs {
            loop {
                if let Ok(Some(status)) = server.child.try_wait() {
                    bail!("{} exited at start ({status}); see {}", spec.kind.name(), log.display());
                }
                if tokio::net::TcpStream::connect(addr).await.is_ok() {
                    break;
                }
                if Instant::now() > deadline {
                    server.stop().await;
                    bail!("{} did not listen on {addr} within 30s; see {}", spec.kind.name(), log.display());
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(server)
    }

    /// Any other process (redis-server), pinned with `taskset -c core`, ready once `addr`
    /// accepts connections.
    pub async fn spawn(
        core: usize,
        program: &str,
        args: &[String],
        log: PathBuf,
        addr: SocketAddr,
    ) -> anyhow::Result<Self> {
        let out = std::fs::File::create(&log)?;
        let err = out.try_clone()?;
        let mut cmd = Command::new("taskset");
        cmd.arg("-c").arg(core.to_string()).arg(program).args(args);
        cmd.stdin(Stdio::null()).stdout(out).stderr(err).kill_on_drop(true);
        let child = cmd.spawn().with_context(|| format!("starting {program}"))?;
        let pid = child.id().context("pid")?;
        let mut server = Server { pid, child };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                bail!("{program} exited at start ({status}); see {}", log.display());
            }
            if tokio::net::TcpStream::connect(addr).await.is_ok() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                server.stop().await;
                bail!("{program} did not listen on {addr} within 30s; see {}", log.display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// CPU time in milliseconds, to the nanosecond: the sum of every live thread's
    /// schedstat run time plus what exited threads left in /proc/PID/stat (whose
    /// 10 ms ticks are too coarse for a thousand handshakes on their own).
    pub fn cpu_ms(&self) -> f64 {
        cpu_ms_precise(self.pid).or_else(|| cpu_ms(self.pid)).unwrap_or(0.0)
    }

    pub fn rss_kb(&self) -> u64 {
        rss_kb(self.pid).unwrap_or(0)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// SIGTERM, then SIGKILL after 4 s. The exit status when it ended on its own (None:
    /// it had to be killed).
    pub async fn stop(&mut self) -> Option<std::process::ExitStatus> {
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.pid as i32, libc::SIGTERM);
        }
        match tokio::time::timeout(Duration::from_secs(4), self.child.wait()).await {
            Ok(status) => status.ok(),
            Err(_) => {
                let _ = self.child.kill().await;
                None
            }
        }
    }
}

pub fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 { t as f64 } else { 100.0 }
}

pub fn cpu_ms(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after the comm: state(0) ... utime(11) stime(12)
    let ticks: f64 = f.get(11)?.parse::<f64>().ok()? + f.get(12)?.parse::<f64>().ok()?;
    Some(ticks * 1000.0 / clk_tck())
}

pub fn rss_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find(|l| l.starts_with("VmRSS:"))?.split_whitespace().nth(1)?.parse().ok()
}

/// This process's CPU time (all threads) in ms.
pub fn self_cpu_ms() -> f64 {
    // SAFETY: getrusage fills the struct we pass.
    unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        let tv = |t: libc::timeval| t.tv_sec as f64 * 1000.0 + t.tv_usec as f64 / 1000.0;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
}

/// TcpExt ListenOverflows from /proc/net/netstat (accept queue overflows, host-wide).
pub fn listen_overflows() -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/netstat") else { return 0 };
    let lines: Vec<&str> = text.lines().collect();
    for pair in lines.chunks(2) {
        if let [names, values] = pair
            && names.starts_with("TcpExt:")
        {
            let names: Vec<&str> = names.split_whitespace().collect();
            let values: Vec<&str> = values.split_whitespace().collect();
            if let Some(i) = names.iter().position(|n| *n == "ListenOverflows") {
                return values.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
            }
        }
    }
    0
}

/// Raises the soft open-files limit to the hard one.
pub fn raise_nofile() -> u64 {
    // SAFETY: getrlimit/setrlimit on a struct we own.
    unsafe {
        let mut r: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut r) == 0 {
            r.rlim_cur = r.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &r);
            return r.rlim_cur;
        }
    }
    0
}

/// The cores this process may run on.
pub fn own_cores() -> Vec<usize> {
    // SAFETY: sched_getaffinity fills the set we pass.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) != 0 {
            return vec![];
        }
        (0..libc::CPU_SETSIZE as usize).filter(|&c| libc::CPU_ISSET(c, &set)).collect()
    }
}

/// Time one core was busy (user, nice, system, irq, softirq, steal), in ms. The server's
/// own CPU figure (schedstat run time) includes the softirq network work done on its
/// threads' time, so the difference is what other processes (and the hypervisor) took.
pub fn core_busy_ms(core: usize) -> f64 {
    let Ok(text) = std::fs::read_to_string("/proc/stat") else { return 0.0 };
    let name = format!("cpu{core} ");
    let Some(line) = text.lines().find(|l| l.starts_with(&name)) else { return 0.0 };
    let v: Vec<f64> = line.split_whitespace().skip(1).filter_map(|x| x.parse().ok()).collect();
    // user nice system idle iowait irq softirq steal
    let busy: f64 = v.iter().enumerate().filter(|(i, _)| matches!(*i, 0 | 1 | 2 | 5 | 6 | 7)).map(|(_, x)| x).sum();
    busy * 1000.0 / clk_tck()
}

/// A loopback address with a port no one listens on now (the kernel's choice). This machine
/// is shared: fixed ports could be taken by other programs' ephemeral ports.
pub fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 0)))
}

pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Sum of the run time (ns) of every live thread of `pid`, in ms. Threads that exit take
/// their time with them; the servers here keep their threads for the whole run (tokio's
/// blocking pool keeps idle threads 10 s, Node's pools live forever).
pub fn cpu_ms_precise(pid: u32) -> Option<f64> {
    let mut total: u64 = 0;
    for entry in std::fs::read_dir(format!("/proc/{pid}/task")).ok()? {
        let path = entry.ok()?.path().join("schedstat");
        if let Ok(s) = std::fs::read_to_string(path) {
            total += s.split_whitespace().next().and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
        }
    }
    Some(total as f64 / 1e6)
}
