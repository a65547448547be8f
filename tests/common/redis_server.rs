//! A real Debian `redis-server` on a free loopback port, one per test: no persistence,
//! killed on drop, and able to stop and come back on the same port (to test Redis loss).
//! [`RedisCluster`]: a real Redis Cluster of three masters with one replica each, six
//! `redis-server --cluster-enabled yes` processes joined by `redis-cli --cluster create`.
//! [`TestRedis`] is either, so one test body runs against both ([`crate::on_each_topology`]).

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// How long `redis-server` may take to answer its first PING.
const START_LIMIT: Duration = Duration::from_secs(15);

pub struct RedisServer {
    port: u16,
    child: Option<Child>,
}

/// A port nobody listens on right now (the OS picks it; there is a small window in which
/// another process could take it, so callers retry on a failed start).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").expect("bind a free port").local_addr().expect("local addr").port()
}

impl RedisServer {
    /// Starts a fresh, empty server and waits until it answers PING.
    pub async fn start() -> RedisServer {
        let mut last_error = String::new();
        for _ in 0..5 {
            let mut server = RedisServer { port: free_port(), child: None };
            match server.spawn_and_wait().await {
                Ok(()) => return server,
                Err(e) => last_error = e,
            }
        }
        panic!("redis-server did not start: {last_error}");
    }

    /// `redis://127.0.0.1:PORT/`, the value for `redis.url`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL: a crash, not a clean shutdown) and waits until its port
    /// refuses connections.
    pub async fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        while TcpStream::connect(("127.0.0.1", self.port)).await.is_ok() {
            assert!(tokio::time::Instant::now() < deadline, "redis on port {} still accepts after kill", self.port);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Starts a new, empty server on the same port (what a restarted Redis without
    /// persistence looks like to its clients).
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(e) = self.spawn_and_wait().await {
            panic!("redis-server did not come back on port {}: {e}", self.port);
        }
    }

    /// True when the server answers PING with +PONG.
    pub async fn answers_ping(&self) -> bool {
        ping(self.port).await
    }

    async fn spawn_and_wait(&mut self) -> Result<(), String> {
        let port = self.port.to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("spawn redis-server (install Debian's redis-server): {e}"))?;
        self.child = Some(child);
        let deadline = tokio::time::Instant::now() + START_LIMIT;
        loop {
            // Another test's Redis may have taken the port first: then this one exits and
            // the PING is answered by the other, so the answer must come from this process.
            if let Some(pid) = self.child.as_ref().map(Child::id)
                && ping(self.port).await
                && served_by(self.port, pid).await
            {
                return Ok(());
            }
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                self.child = None;
                return Err(format!("redis-server on port {port} exited with {status} (port taken?)"));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(format!("redis-server on port {port} did not answer PING within {START_LIMIT:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Raw RESP: `PING\r\n` answered by `+PONG\r\n`, within one second.
async fn ping(port: u16) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await.ok()?;
        stream.write_all(b"PING\r\n").await.ok()?;
        let mut buf = [0u8; 7];
        stream.read_exact(&mut buf).await.ok()?;
        Some(&buf == b"+PONG\r\n")
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), attempt).await, Ok(Some(true)))
}

/// Which kind of Redis a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    Single,
    Cluster,
}

/// Runs each named `async fn(Topology)` of the calling file as two tests: one against a
/// single Redis (`single_redis::<name>`) and one against a Redis Cluster
/// (`redis_cluster::<name>`).
#[macro_export]
macro_rules! on_each_topology {
    ($($name:ident),* $(,)?) => {
        mod single_redis {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::redis_server::Topology::Single).await;
            })*
        }
        mod redis_cluster {
            $(#[tokio::test]
            async fn $name() {
                super::$name($crate::common::redis_server::Topology::Cluster).await;
            })*
        }
    };
}

/// A single Redis or a Redis Cluster, as a test needs it.
pub enum TestRedis {
    Single(RedisServer),
    Cluster(RedisCluster),
}

impl TestRedis {
    pub async fn start(topology: Topology) -> TestRedis {
        match topology {
            Topology::Single => TestRedis::Single(RedisServer::start().await),
            Topology::Cluster => TestRedis::Cluster(RedisCluster::start().await),
        }
    }

    /// The value for `redis.url`.
    pub fn url(&self) -> String {
        match self {
            TestRedis::Single(r) => r.url(),
            TestRedis::Cluster(c) => c.url(),
        }
    }

    /// Kills every Redis process (a crash) and waits until none accepts connections.
    pub async fn stop(&mut self) {
        match self {
            TestRedis::Single(r) => r.stop().await,
            TestRedis::Cluster(c) => c.stop().await,
        }
    }

    /// Runs one command (in a Redis Cluster, on the node serving its key), for tests that
    /// look at what the bridge wrote.
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> redis::RedisResult<T> {
        match self {
            TestRedis::Single(r) => {
                let mut conn = redis::Client::open(r.url())?.get_multiplexed_async_connection().await?;
                cmd.query_async(&mut conn).await
            }
            TestRedis::Cluster(c) => {
                let nodes: Vec<String> = c.ports.iter().map(|p| format!("redis://127.0.0.1:{p}/")).collect();
                let mut conn = redis::cluster::ClusterClient::new(nodes)?.get_async_connection().await?;
                cmd.query_async(&mut conn).await
            }
        }
    }

    /// Brings Redis back empty on the same ports (a Redis Cluster is created again).
    pub async fn restart(&mut self) {
        match self {
            TestRedis::Single(r) => r.restart().await,
            TestRedis::Cluster(c) => c.restart().await,
        }
    }
}

/// How long a node may be unreachable before the others fail it over. Short, so a
/// failover takes seconds; long enough that a busy test machine does not fail over a node
/// that is only slow.
const CLUSTER_NODE_TIMEOUT_MS: u64 = 2_000;

/// Three masters with one replica each, on six free loopback ports, in a temp folder of
/// their own (cluster config files), killed and removed on drop.
pub struct RedisCluster {
    ports: Vec<u16>,
    children: Vec<Option<Child>>,
    dir: PathBuf,
    /// How long the last start took, from spawning the processes to every slot served.
    pub started_in: Duration,
}

impl RedisCluster {
    /// Starts six empty nodes, creates the cluster and waits until every node serves it.
    pub async fn start() -> RedisCluster {
        let mut last_error = String::new();
        for _ in 0..3 {
            let ports: Vec<u16> = (0..6).map(|_| free_port()).collect();
            let dir =
                std::env::temp_dir().join(format!("socket-bridge-redis-cluster-{}-{}", std::process::id(), ports[0]));
            let mut cluster =
                RedisCluster { children: ports.iter().map(|_| None).collect(), ports, dir, started_in: Duration::ZERO };
            match cluster.create().await {
                Ok(()) => return cluster,
                Err(e) => last_error = e,
            }
        }
        panic!("redis cluster did not start: {last_error}");
    }

    /// `redis+cluster://` with every node as a seed.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// A plain connection to one node (for inspecting it).
    pub async fn node(&self, port: u16) -> redis::aio::MultiplexedConnection {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).expect("node url");
        client.get_multiplexed_async_connection().await.expect("connect to a cluster node")
    }

    /// The port of the master serving `key`'s slot now, asked of a live node.
    pub async fn master_of(&self, key: &str) -> u16 {
        for &port in &self.live_ports() {
            let Ok(Ok(mut conn)) = tokio::time::timeout(Duration::from_secs(1), async {
                redis::Client::open(format!("redis://127.0.0.1:{port}/"))?.get_multiplexed_async_connection().await
            })
            .await
            else {
                continue;
            };
            let Ok(slot) = redis::cmd("CLUSTER").arg("KEYSLOT").arg(key).query_async::<u16>(&mut conn).await else {
                continue;
            };
            let Ok(nodes) = redis::cmd("CLUSTER").arg("NODES").query_async::<String>(&mut conn).await else {
                continue;
            };
            if let Some(port) = slot_owner(&nodes, slot) {
                return port;
            }
        }
        panic!("no live node knows who serves {key:?}");
    }

    /// Kills one node (SIGKILL) and waits until its port refuses connections.
    pub async fn kill(&mut self, port: u16) {
        let i = self.ports.iter().position(|p| *p == port).expect("a node of this cluster");
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_closed(port).await;
    }

    /// Waits until every live node reports the cluster healthy (every slot served by a live
    /// master); returns how long that took.
    pub async fn wait_healthy(&self, limit: Duration) -> Result<Duration, String> {
        let started = Instant::now();
        let mut last = String::new();
        while started.elapsed() < limit {
            match self.check_healthy().await {
                Ok(()) => return Ok(started.elapsed()),
                Err(e) => last = e,
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(format!("cluster not healthy within {limit:?}: {last}"))
    }

    async fn check_healthy(&self) -> Result<(), String> {
        let live = self.live_ports();
        for &port in &live {
            let info = info_of(port, &["CLUSTER", "INFO"]).await?;
            for want in ["cluster_state:ok", "cluster_slots_ok:16384", "cluster_slots_pfail:0", "cluster_slots_fail:0"]
            {
                if !info.lines().any(|l| l.trim() == want) {
                    return Err(format!("node {port}: no {want}"));
                }
            }
            let nodes = info_of(port, &["CLUSTER", "NODES"]).await?;
            // Every master that serves slots is alive, and every live replica is in sync.
            for line in nodes.lines() {
                let fields: Vec<&str> = line.split_whitespace().collect();
                if fields.len() < 8 {
                    continue;
                }
                let node_port = node_port(fields[1]);
                let serves = fields.len() > 8;
                if fields[2].contains("master") && serves && !node_port.is_some_and(|p| live.contains(&p)) {
                    return Err(format!("node {port} sees slots on a dead master: {line}"));
                }
            }
            let replication = info_of(port, &["INFO", "replication"]).await?;
            if replication.contains("role:slave") && !replication.contains("master_link_status:up") {
                return Err(format!("replica {port} not in sync yet"));
            }
        }
        Ok(())
    }

    /// Kills every node.
    pub async fn stop(&mut self) {
        for child in self.children.iter_mut() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        for &port in &self.ports {
            wait_closed(port).await;
        }
    }

    /// Kills every node, then creates an empty cluster again on the same ports.
    pub async fn restart(&mut self) {
        self.stop().await;
        if let Err(e) = self.create().await {
            panic!("redis cluster did not come back: {e}");
        }
    }

    fn live_ports(&self) -> Vec<u16> {
        self.ports.iter().zip(&self.children).filter(|(_, c)| c.is_some()).map(|(p, _)| *p).collect()
    }

    async fn create(&mut self) -> Result<(), String> {
        let started = Instant::now();
        let _ = std::fs::remove_dir_all(&self.dir);
        std::fs::create_dir_all(&self.dir).map_err(|e| format!("create {}: {e}", self.dir.display()))?;
        for i in 0..self.ports.len() {
            let port = self.ports[i].to_string();
            let timeout = CLUSTER_NODE_TIMEOUT_MS.to_string();
            let child = Command::new("redis-server")
                .args(["--port", &port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-config-file", &format!("nodes-{port}.conf")])
                .args(["--cluster-node-timeout", &timeout])
                // A replica may always take over, however long since it last heard its master.
                .args(["--cluster-replica-validity-factor", "0"])
                // Replicas sync at once (by default a master waits 5 s for more of them).
                .args(["--repl-diskless-sync-delay", "0"])
                .arg("--dir")
                .arg(&self.dir)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .map_err(|e| format!("spawn redis-server (install Debian's redis-server): {e}"))?;
            self.children[i] = Some(child);
        }
        for (&port, child) in self.ports.iter().zip(&mut self.children) {
            let pid = child.as_ref().map_or(0, Child::id);
            let deadline = tokio::time::Instant::now() + START_LIMIT;
            // Answered by this node's own process, not another test's Redis on the port.
            while !(ping(port).await && served_by(port, pid).await) {
                if tokio::time::Instant::now() >= deadline
                    || child.as_mut().is_none_or(|c| c.try_wait().ok().flatten().is_some())
                {
                    return Err(format!("cluster node on port {port} did not start (port taken?)"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        let mut create = tokio::process::Command::new("redis-cli");
        create.arg("--cluster").arg("create");
        for port in &self.ports {
            create.arg(format!("127.0.0.1:{port}"));
        }
        create.args(["--cluster-replicas", "1", "--cluster-yes"]).stdin(Stdio::null()).kill_on_drop(true);
        let out = tokio::time::timeout(Duration::from_secs(60), create.output())
            .await
            .map_err(|_| "redis-cli --cluster create did not finish within 60 s".to_string())?
            .map_err(|e| format!("run redis-cli: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "redis-cli --cluster create failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        self.wait_healthy(Duration::from_secs(30)).await?;
        self.started_in = started.elapsed();
        eprintln!("redis cluster (3 masters, 3 replicas) on {:?} ready in {:?}", self.ports, self.started_in);
        Ok(())
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for child in self.children.iter_mut() {
            if let Some(mut c) = child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `CLUSTER NODES` line address `ip:port@busport` → port.
fn node_port(addr: &str) -> Option<u16> {
    addr.split('@').next()?.rsplit(':').next()?.parse().ok()
}

/// The port of the master that `CLUSTER NODES` says serves `slot`.
fn slot_owner(nodes: &str, slot: u16) -> Option<u16> {
    for line in nodes.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 9 || !fields[2].contains("master") || fields[2].contains("fail") {
            continue;
        }
        for range in &fields[8..] {
            let (lo, hi) = range.split_once('-').unwrap_or((range, range));
            if let (Ok(lo), Ok(hi)) = (lo.parse::<u16>(), hi.parse::<u16>())
                && (lo..=hi).contains(&slot)
            {
                return node_port(fields[1]);
            }
        }
    }
    None
}

/// True when the Redis answering on `port` is the process `pid` (its `INFO server`).
async fn served_by(port: u16, pid: u32) -> bool {
    let info = info_of(port, &["INFO", "server"]).await.unwrap_or_default();
    info.lines().any(|l| l.trim() == format!("process_id:{pid}"))
}

/// A command's bulk-string answer from one node, within a second.
async fn info_of(port: u16, args: &[&str]) -> Result<String, String> {
    let attempt = async {
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}/")).map_err(|e| e.to_string())?;
        let mut conn = client.get_multiplexed_async_connection().await.map_err(|e| e.to_string())?;
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query_async::<String>(&mut conn).await.map_err(|e| e.to_string())
    };
    tokio::time::timeout(Duration::from_secs(1), attempt)
        .await
        .map_err(|_| format!("node {port} did not answer {args:?} within 1 s"))?
        .map_err(|e| format!("node {port}: {args:?}: {e}"))
}

/// Waits until nothing accepts connections on `port`.
async fn wait_closed(port: u16) {
    let deadline = tokio::time::Instant::now() + START_LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
        assert!(tokio::time::Instant::now() < deadline, "redis on port {port} still accepts after kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
