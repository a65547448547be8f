//! Test harness: the real `socket-bridge` binary on free loopback ports, stock
//! `socket.io-client` sockets driven through `tests/js/driver.mjs`, and the generated gRPC
//! client. Every wait is bounded.
#![allow(dead_code)]

pub mod cluster;
pub mod redis_server;

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::bridge_service_client::BridgeServiceClient;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(10);
pub const API_KEY: &str = "test-api-key-0123456789";
pub const JWT_SECRET: &str = "test-jwt-secret-0123456789abcdef0123";
/// Driver transports for a websocket-only socket.
pub const WS: Option<&[&str]> = Some(&["websocket"]);

/// Command-line arguments setting each `KEY=VALUE` (`--set KEY=VALUE` each; later ones win).
pub fn settings(pairs: &[&str]) -> Vec<String> {
    pairs.iter().flat_map(|p| ["--set".to_string(), p.to_string()]).collect()
}

/// Settings for a JWT-mode bridge with an API key.
pub fn jwt_args() -> Vec<String> {
    settings(&["auth.mode=jwt", &format!("auth.jwt.secret={JWT_SECRET}"), &format!("grpc.api_keys=[\"{API_KEY}\"]")])
}

/// Short timings. The heartbeat stays generous: on a loaded 2-core CI machine a 200 ms
/// ping timeout drops healthy clients (the conformance suite tests the short ones).
pub fn fast_timings() -> Vec<String> {
    settings(&["socketio.ping_interval_ms=1000", "socketio.ping_timeout_ms=2000", "socketio.ack_timeout_ms=1000"])
}

/// A gRPC call that must answer within `WAIT` and succeed.
pub async fn call<T>(what: &str, fut: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>) -> T {
    match tokio::time::timeout(WAIT, fut).await {
        Ok(Ok(response)) => response.into_inner(),
        Ok(Err(status)) => panic!("{what}: failed: {status:?}"),
        Err(_) => panic!("{what}: no answer within {WAIT:?}"),
    }
}

/// Retries `attempt` (every 200 ms) until it returns Ok or `limit` passes; the panic names
/// what was awaited and the last thing seen.
pub async fn eventually<T, F, Fut>(what: &str, limit: Duration, mut attempt: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = Instant::now() + limit;
    loop {
        let last = match tokio::time::timeout_at(deadline, attempt()).await {
            Ok(Ok(value)) => return value,
            Ok(Err(seen)) => seen,
            Err(_) => "(the last attempt was still running at the deadline)".to_string(),
        };
        if Instant::now() >= deadline {
            panic!("{what}: not within {limit:?}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The value of one sample line of a Prometheus text exposition, e.g.
/// `socket_bridge_errors_total{kind="auth"}`; None when the series is absent.
pub fn metric_sample(text: &str, series: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')).map(|v| {
        v.trim().parse().unwrap_or_else(|e| panic!("/metrics: {series} has the value {v:?}, not a number: {e}"))
    })
}

pub fn token(user: &str, rooms: &[&str]) -> String {
    let exp = jsonwebtoken::get_current_timestamp() + 600;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &json!({ "sub": user, "exp": exp, "rooms": rooms }),
        &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .expect("token")
}

pub struct Bridge {
    child: Child,
    pub http: SocketAddr,
    pub grpc: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Bridge {
    pub async fn start(extra: &[String]) -> Bridge {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_socket-bridge"));
        cmd.args(["--http-listen", "127.0.0.1:0", "--grpc-listen", "127.0.0.1:0", "--set", "log.format=json"]);
        cmd.args(extra);
        Self::spawn(cmd).await
    }

    /// Starts any command that runs the bridge with JSON logs on stderr.
    pub async fn spawn(mut cmd: Command) -> Bridge {
        cmd.env("RUST_LOG", "info,socket_bridge=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        // Its own process group, so dropping the Bridge also ends a bridge started through
        // `sh -c "cargo run"` (killing only the shell would orphan it).
        cmd.kill_on_drop(true).process_group(0);
        let mut child = cmd.spawn().expect("spawn bridge");
        let stderr = child.stderr.take().expect("stderr");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["message"] == "socket-bridge ready"
                {
                    let _ = ready_tx.send((
                        v["http"].as_str().unwrap_or("").to_owned(),
                        v["grpc"].as_str().unwrap_or("").to_owned(),
                    ));
                }
                sink.lock().unwrap().push(line);
            }
        });
        let (http, grpc) = tokio::time::timeout(Duration::from_secs(120), ready_rx.recv())
            .await
            .unwrap_or_else(|_| panic!("bridge not ready in time; logs:\n{}", logs.lock().unwrap().join("\n")))
            .unwrap_or_else(|| panic!("bridge exited before ready; logs:\n{}", logs.lock().unwrap().join("\n")));
        Bridge { child, http: http.parse().expect("http addr"), grpc: grpc.parse().expect("grpc addr"), logs }
    }

    /// A REST call; returns status, headers and the JSON body (Null if not JSON).
    pub async fn rest(
        &self,
        method: &str,
        path: &str,
        key: Option<&str>,
        body: Option<&Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let client = reqwest::Client::new();
        let mut req = client.request(method.parse().unwrap(), format!("{}{path}", self.url()));
        if let Some(k) = key {
            req = req.header("authorization", format!("Bearer {k}"));
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = tokio::time::timeout(WAIT, req.send()).await.expect("REST answer in time").expect("REST call");
        let (status, headers) = (resp.status().as_u16(), resp.headers().clone());
        let text = resp.text().await.unwrap_or_default();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    /// `GET /metrics`, the text exposition.
    pub async fn metrics(&self) -> Result<String, String> {
        let response = reqwest::get(format!("{}/metrics", self.url())).await.map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    }

    /// One sample on `/metrics` (see [`metric_sample`]); 0 when the series is absent.
    pub async fn metric(&self, series: &str) -> f64 {
        let text = self.metrics().await.unwrap_or_else(|e| panic!("GET /metrics: {e}"));
        metric_sample(&text, series).unwrap_or(0.0)
    }

    /// `GET /ready`: status and JSON body.
    pub async fn readiness(&self) -> Result<(u16, Value), String> {
        let response = reqwest::get(format!("{}/ready", self.url())).await.map_err(|e| e.to_string())?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| e.to_string())?;
        Ok((status, serde_json::from_str(&text).map_err(|e| format!("{status} {text:?}: {e}"))?))
    }

    /// The `redis` field of `GET /ready` ("up", "down", "disabled"); "?" without an answer.
    pub async fn redis_state(&self) -> String {
        let body = self.readiness().await.map(|(_, body)| body).unwrap_or(Value::Null);
        body["redis"].as_str().unwrap_or("?").to_owned()
    }

    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// Waits until the bridge's log (read from its stderr, so a line shows up a little after
    /// it was written) has a JSON line matching `pred`; returns that line.
    pub async fn logged(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        eventually(what, WAIT, || async {
            let lines = self.logs();
            let found = lines.iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).find(|v| pred(v));
            found.ok_or_else(|| format!("not in the {} lines logged so far", lines.len()))
        })
        .await
    }

    pub async fn channel(&self) -> Channel {
        Channel::from_shared(format!("http://{}", self.grpc)).unwrap().connect().await.expect("grpc connect")
    }

    /// Generated client carrying the test API key.
    pub async fn client(&self) -> Client {
        self.client_with_key(Some(API_KEY)).await
    }

    pub async fn client_with_key(&self, key: Option<&str>) -> Client {
        BridgeServiceClient::with_interceptor(self.channel().await, ApiKey(key.map(|k| format!("Bearer {k}"))))
    }

    /// The bridge process's id.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("pid")
    }

    /// Resident memory of the bridge process, in bytes.
    pub fn rss(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap_or_default();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
            .map_or(0, |kb| kb * 1024)
    }

    pub fn signal(&self, sig: i32) {
        let pid = self.child.id().expect("pid") as i32;
        // SAFETY: sending a signal to our own child process.
        unsafe { libc::kill(pid, sig) };
    }

    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        tokio::time::timeout(limit, self.child.wait()).await.ok().and_then(Result::ok)
    }
}

impl Drop for Bridge {
    /// Keeps every bridge's log for the test command's whole-run credential scan.
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            // SAFETY: signalling the process group this test created.
            unsafe { libc::kill(-(pid as i32), libc::SIGKILL) };
        }
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/target/test-logs");
        if std::fs::create_dir_all(dir).is_ok() {
            let name = format!("{dir}/{}-{}.log", std::process::id(), self.http.port());
            let _ = std::fs::write(name, self.logs().join("\n"));
        }
    }
}

pub type Client = BridgeServiceClient<InterceptedService<Channel, ApiKey>>;

#[derive(Clone)]
pub struct ApiKey(Option<String>);

impl Interceptor for ApiKey {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0 {
            req.metadata_mut().insert("authorization", k.parse().expect("header"));
        }
        Ok(req)
    }
}

/// One backend `Events` stream.
pub struct Backend {
    pub tx: mpsc::Sender<proto::EventsRequest>,
    pub rx: tonic::Streaming<proto::EventsResponse>,
}

impl Backend {
    pub async fn subscribe(client: &mut Client, subscribe: proto::Subscribe) -> Backend {
        let (tx, rx) = mpsc::channel(1024);
        tx.send(proto::EventsRequest { kind: Some(proto::events_request::Kind::Subscribe(subscribe)) }).await.unwrap();
        let mut rx = client.events(ReceiverStream::new(rx)).await.expect("events").into_inner();
        match rx.message().await.expect("first message") {
            Some(proto::EventsResponse { kind: Some(proto::events_response::Kind::Subscribed(_)) }) => {}
            other => panic!("expected Subscribed, got {other:?}"),
        }
        Backend { tx, rx }
    }

    pub async fn next(&mut self) -> proto::events_response::Kind {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("backend message in time")
            .expect("stream ok")
            .and_then(|m| m.kind)
            .expect("message")
    }

    pub async fn next_event(&mut self) -> proto::ClientEvent {
        loop {
            if let proto::events_response::Kind::ClientEvent(e) = self.next().await {
                return e;
            }
        }
    }

    /// Nothing arrives within `d` (lifecycle included).
    pub async fn quiet_for(&mut self, d: Duration) -> Option<proto::events_response::Kind> {
        match tokio::time::timeout(d, self.rx.message()).await {
            Ok(Ok(Some(m))) => m.kind,
            _ => None,
        }
    }

    pub async fn ack(&self, event_id: &str, args_json: &str, attachments: Vec<Vec<u8>>) {
        let ack = proto::Ack {
            event_id: event_id.into(),
            result: Some(proto::ack::Result::Payload(proto::Payload { args_json: args_json.into(), attachments })),
        };
        self.tx.send(proto::EventsRequest { kind: Some(proto::events_request::Kind::Ack(ack)) }).await.unwrap();
    }
}

pub fn subscribe_all(group: &str, lifecycle: bool) -> proto::Subscribe {
    proto::Subscribe { group: group.into(), wants_lifecycle: lifecycle, ..Default::default() }
}

/// A subscription to the client events matching `patterns` (all events when empty).
pub fn subscription(group: &str, patterns: &[&str], confirm_all: bool) -> proto::Subscribe {
    proto::Subscribe {
        group: group.into(),
        event_patterns: patterns.iter().map(|p| p.to_string()).collect(),
        confirm_all,
        ..Default::default()
    }
}

/// A backend on its own gRPC connection: dropping it kills the stream and the connection.
pub async fn backend_on(bridge: &Bridge, subscribe: proto::Subscribe) -> Backend {
    let mut client = bridge.client().await;
    Backend::subscribe(&mut client, subscribe).await
}

/// Lifecycle messages as short strings: "online:pat", "connected:<sid>", "disconnected:<sid>",
/// "offline:pat"; None for anything else.
pub fn lifecycle_label(kind: &proto::events_response::Kind) -> Option<String> {
    use proto::events_response::Kind as K;
    match kind {
        K::UserOnline(u) => Some(format!("online:{}", u.user_id)),
        K::UserOffline(u) => Some(format!("offline:{}", u.user_id)),
        K::SocketConnected(s) => Some(format!("connected:{}", s.socket_id)),
        K::SocketDisconnected(s) => Some(format!("disconnected:{}", s.socket_id)),
        _ => None,
    }
}

/// Reads lifecycle labels from `backend` until `done(seen)` holds or `limit` passes (or the
/// stream ends), then for `quiet` more; returns everything seen, in arrival order.
pub async fn read_lifecycle(
    backend: &mut Backend,
    limit: Duration,
    quiet: Duration,
    done: impl Fn(&[String]) -> bool,
) -> Vec<String> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    while !done(&seen) {
        match tokio::time::timeout_at(deadline, backend.rx.message()).await {
            Ok(Ok(Some(m))) => seen.extend(m.kind.as_ref().and_then(lifecycle_label)),
            _ => break,
        }
    }
    while let Ok(Ok(Some(m))) = tokio::time::timeout(quiet, backend.rx.message()).await {
        seen.extend(m.kind.as_ref().and_then(lifecycle_label));
    }
    seen
}

/// Node process running stock socket.io-client sockets.
pub struct Driver {
    child: Child,
    stdin: ChildStdin,
    rx: mpsc::UnboundedReceiver<Value>,
    backlog: Vec<Value>,
    syncs: u64,
}

impl Driver {
    pub async fn spawn() -> Driver {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/js/driver.mjs");
        let mut child = Command::new("node")
            .arg(script)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("node driver (run `npm ci --prefix tests/js` first)");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        Driver { child, stdin, rx, backlog: Vec::new(), syncs: 0 }
    }

    pub async fn send(&mut self, cmd: Value) {
        let is_rule = cmd["cmd"] == "on_ack_reply";
        let mut line = cmd.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes()).await.expect("driver stdin");
        if is_rule {
            // The rule must be in place before a push can reach the socket.
            self.syncs += 1;
            let req = self.syncs;
            self.stdin
                .write_all(format!("{}\n", json!({"cmd": "sync", "req": req})).as_bytes())
                .await
                .expect("driver stdin");
            self.expect("driver sync", |v| v["type"] == "synced" && v["req"] == req).await;
        }
    }

    /// Reports received and not taken by `expect` yet, in the order they arrived.
    pub fn backlog(&self) -> &[Value] {
        &self.backlog
    }

    /// The first report matching `pred`, from the backlog or within the time limit.
    pub async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.try_expect(pred, WAIT).await.unwrap_or_else(|| panic!("no report: {what}; backlog: {:?}", self.backlog))
    }

    pub async fn try_expect(&mut self, pred: impl Fn(&Value) -> bool, limit: Duration) -> Option<Value> {
        if let Some(i) = self.backlog.iter().position(&pred) {
            return Some(self.backlog.remove(i));
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(v)) if pred(&v) => return Some(v),
                Ok(Some(v)) => {
                    if v["type"] == "error" {
                        eprintln!("driver error: {v}");
                    }
                    self.backlog.push(v)
                }
                _ => return None,
            }
        }
    }

    /// The outcome of socket `id`'s connect: its `connect` or `connect_error` report.
    async fn connect_outcome(&mut self, id: &str) -> Value {
        self.expect(&format!("connect or connect_error of {id}"), |v| {
            v["id"] == id && (v["type"] == "connect" || v["type"] == "connect_error")
        })
        .await
    }

    /// Connects socket `id` and returns its socket id; panics on connect_error.
    pub async fn connect(&mut self, id: &str, url: &str, auth: Value, transports: Option<&[&str]>) -> String {
        self.send(json!({"cmd": "connect", "id": id, "url": url, "auth": auth, "transports": transports})).await;
        let v = self.connect_outcome(id).await;
        assert_eq!(v["type"], "connect", "{id} failed to connect: {v}");
        v["sid"].as_str().unwrap().to_owned()
    }

    /// Connects several websocket sockets at once, each `(driver id, url, user id)` with
    /// dev auth: all commands first, then the reports. Returns their socket ids by driver
    /// id; panics on a connect_error.
    pub async fn connect_all(&mut self, plan: &[(&str, &str, &str)]) -> HashMap<String, String> {
        for (id, url, user) in plan {
            self.send(json!({"cmd": "connect", "id": id, "url": url, "auth": {"userId": user}, "transports": WS}))
                .await;
        }
        let mut sids = HashMap::new();
        for (id, _, _) in plan {
            let v = self.connect_outcome(id).await;
            assert_eq!(v["type"], "connect", "{id} failed to connect: {v}");
            sids.insert(id.to_string(), v["sid"].as_str().unwrap().to_owned());
        }
        sids
    }

    pub async fn connect_error(&mut self, id: &str, url: &str, auth: Value) -> String {
        self.send(json!({"cmd": "connect", "id": id, "url": url, "auth": auth})).await;
        let v = self.connect_outcome(id).await;
        assert_eq!(v["type"], "connect_error", "{id} should have been refused: {v}");
        v["message"].as_str().unwrap_or_default().to_owned()
    }

    pub async fn event(&mut self, id: &str, event: &str) -> Value {
        self.expect(&format!("event {event} on {id}"), |v| v["type"] == "event" && v["id"] == id && v["event"] == event)
            .await
    }

    pub async fn no_event(&mut self, id: &str, event: &str, within: Duration) -> bool {
        self.try_expect(|v| v["type"] == "event" && v["id"] == id && v["event"] == event, within).await.is_none()
    }

    pub async fn ack(&mut self, id: &str, req: u64) -> Value {
        self.expect(&format!("ack {req} on {id}"), |v| v["type"] == "ack" && v["id"] == id && v["req"] == req).await
    }

    pub async fn exit(mut self) {
        self.send(json!({"cmd": "exit"})).await;
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }
}

pub fn push_request(target: proto::target::Kind, event: &str, args_json: &str) -> proto::PushRequest {
    proto::PushRequest {
        target: Some(proto::Target { kind: Some(target) }),
        namespace: String::new(),
        event: event.into(),
        payload: Some(proto::Payload { args_json: args_json.into(), attachments: vec![] }),
        options: None,
    }
}

/// A protobuf duration of `ms` milliseconds.
pub fn proto_duration(ms: i32) -> prost_types::Duration {
    prost_types::Duration { seconds: (ms / 1000) as i64, nanos: (ms % 1000) * 1_000_000 }
}

/// Push options with a time to live of `ms` (stored for an offline user that long).
pub fn ttl_options(ms: i32) -> Option<proto::PushOptions> {
    Some(proto::PushOptions { ttl: Some(proto_duration(ms)), ..Default::default() })
}

/// Push options that wait `ms` for each socket's ack.
pub fn ack_timeout_options(ms: i32) -> Option<proto::PushOptions> {
    Some(proto::PushOptions { ack_timeout: Some(proto_duration(ms)), ..Default::default() })
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

pub fn b64url(s: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
}

/// A raw Engine.IO v4 websocket client (no Socket.IO library) joined to namespace "/" with
/// `auth`; answers the pings that arrive before the namespace CONNECT is acknowledged.
pub async fn raw_socket(
    bridge: &Bridge,
    auth: Value,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    use futures::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::Message;
    let url = format!("ws://{}/socket.io/?EIO=4&transport=websocket", bridge.http);
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.expect("websocket");
    let open = ws.next().await.expect("open packet").expect("open packet");
    assert!(open.to_text().unwrap_or_default().starts_with("0{"), "{open:?}");
    ws.send(Message::text(format!("40{auth}"))).await.expect("send CONNECT");
    loop {
        let m = ws.next().await.expect("CONNECT answer").expect("CONNECT answer");
        let text = m.to_text().unwrap_or_default();
        if text == "2" {
            // engineioxide sends its first ping right after the handshake.
            ws.send(Message::text("3".to_string())).await.expect("send pong");
            continue;
        }
        assert!(text.starts_with("40{\"sid\""), "{m:?}");
        return ws;
    }
}
