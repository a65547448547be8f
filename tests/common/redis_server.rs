//! A real Debian `redis-server` on a free loopback port, one per test: no persistence,
//! killed on drop, and able to stop and come back on the same port (to test Redis loss).

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

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
            if ping(self.port).await {
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
