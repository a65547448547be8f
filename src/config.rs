//! The one place settings are read: defaults, then a TOML file, then `SOCKET_BRIDGE_*`
//! environment variables, then command-line flags. Everything is validated once at start;
//! each bad setting gets its own message naming the setting.

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Command line of the `socket-bridge` binary.
#[derive(Debug, Parser)]
#[command(name = "socket-bridge", version, about = "Real-time gateway between Socket.IO browsers and Go backends")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SOCKET_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listener (Socket.IO, health, REST); port 0 picks a free port.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// gRPC listener; port 0 picks a free port.
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Any setting as `section.key=value` (TOML value syntax; bare words are strings).
    /// Repeatable. Wins over the file and the environment.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the effective configuration (secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the effective configuration (file, environment and flags, JWT keys and TLS
    /// files included) without starting: exit 0, or print every problem and exit 2.
    #[arg(long)]
    pub check_config: bool,
    /// Ask the bridge at `http.listen` for `GET /health`: exit 0 on 200, 1 otherwise. The
    /// container image's health check, so the image needs no HTTP client of its own.
    #[arg(long, conflicts_with_all = ["print_config", "check_config"])]
    pub health_check: bool,
    /// Write console log lines to stdout instead of stderr (the container image sets it).
    #[arg(long, env = "SOCKET_BRIDGE_LOG_STDOUT")]
    pub log_stdout: bool,
}

/// A string that never appears in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub auth: AuthConfig,
    pub socketio: SocketIoSettings,
    pub events: EventsConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub dashboard: DashboardConfig,
    pub redis: RedisConfig,
    pub offline: OfflineConfig,
}

/// Pushes kept for users who are not connected (`ttl`). A backend can be made to push to
/// user ids nobody connects as (a typo, or ids taken from outside input), so the store is
/// bounded per user and in all; a push that does not fit is refused (RESOURCE_EXHAUSTED),
/// never made room for by dropping messages already accepted.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OfflineConfig {
    /// Messages kept per user (over all namespaces).
    pub max_messages_per_user: usize,
    /// Bytes kept per user: 1 MiB holds a thousand 1 KB notifications.
    pub max_bytes_per_user: usize,
    /// Bytes kept in all, in memory (embedded mode). 256 MiB is an eighth of a 2 GiB
    /// instance; in cluster mode the messages live in Redis and are bounded per user.
    pub max_bytes: usize,
}

impl Default for OfflineConfig {
    fn default() -> Self {
        Self { max_messages_per_user: 1000, max_bytes_per_user: 1 << 20, max_bytes: 256 << 20 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub listen: String,
    /// Largest REST request body, in bytes; larger bodies get 413.
    pub max_body_bytes: usize,
    /// Longest a REST request may take, in milliseconds (pushes with an ack timeout wait
    /// for acks within it).
    pub request_timeout_ms: u64,
    /// A connection must send its request head within this time (slowloris defence).
    pub header_read_timeout_ms: u64,
    /// REST requests per second allowed per API key, and the burst above it.
    pub rate_per_key_per_second: u32,
    pub burst_per_key: u32,
    /// REST requests per second allowed per client IP, and the burst above it.
    pub rate_per_ip_per_second: u32,
    pub burst_per_ip: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GrpcConfig {
    pub listen: String,
    /// Keys accepted as `authorization: Bearer <key>` on gRPC and REST. Empty is allowed
    /// only in dev auth mode, where every call is let in.
    pub api_keys: Vec<Secret>,
    /// Largest gRPC message accepted, in bytes.
    pub max_message_bytes: usize,
    /// PEM certificate chain and private key: serve gRPC over TLS (rustls).
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// PEM CA: also require client certificates signed by it (mutual TLS).
    pub tls_client_ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AuthMode {
    /// User id from the handshake's `auth.userId`, unchecked. Loopback only unless forced.
    Dev,
    /// A JWT in the handshake's `auth.token`.
    Jwt,
    /// A backend subscribed on the `Authorize` stream decides each connect (with
    /// `auth.backend.require_jwt`, after a valid JWT).
    Backend,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    pub mode: AuthMode,
    /// Let dev mode listen on a non-loopback address. Anyone could then claim any user id.
    pub allow_dev_on_public_interface: bool,
    /// End a socket when its token expires (its `exp`, plus `auth.jwt.leeway_seconds`): the
    /// client gets `bridge:disconnect` with reason "token expired" and must reconnect with
    /// a fresh token. Off by default: clients that connect once with a short-lived token
    /// would otherwise be cut off mid-session; turn it on when a revoked or expired
    /// credential must stop receiving pushes.
    pub disconnect_on_token_expiry: bool,
    pub jwt: JwtConfig,
    pub backend: BackendAuthConfig,
}

/// Backend-decided connects (`auth.mode = "backend"`) and joins.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BackendAuthConfig {
    /// Longest wait for a backend's decision, in milliseconds; past it the client is
    /// refused (`decision_timeout`). 2 s: a decision is one lookup in the backend, and a
    /// handshake held open longer than that only helps someone holding many open.
    pub timeout_ms: u64,
    /// Require a valid JWT (see `auth.jwt`) before asking; its claims go with the question.
    pub require_jwt: bool,
    /// Ask a decider about client room joins (`bridge:join`) that
    /// `socketio.client_room_patterns` does not grant.
    pub decide_joins: bool,
    /// Request headers sent to the decider besides cookie, origin and user-agent (lower
    /// case). Never `authorization` unless listed here.
    pub forward_headers: Vec<String>,
}

impl Default for BackendAuthConfig {
    fn default() -> Self {
        Self { timeout_ms: 2000, require_jwt: false, decide_joins: false, forward_headers: Vec::new() }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JwtConfig {
    /// Accepted algorithms, e.g. ["HS256"] or ["RS256"]. One key family only, so a token
    /// cannot pick the verification method (no HS/RS confusion).
    pub algorithms: Vec<String>,
    /// Shared secret for HS256/384/512.
    pub secret: Option<Secret>,
    /// PEM public key for RS*/PS*/ES*/EdDSA, inline.
    pub public_key_pem: Option<String>,
    /// PEM public key file, instead of `public_key_pem`.
    pub public_key_file: Option<PathBuf>,
    pub issuer: Option<String>,
    pub audience: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, in seconds.
    pub leeway_seconds: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocketIoSettings {
    /// Namespaces clients may connect to.
    pub namespaces: Vec<String>,
    pub ping_interval_ms: u64,
    pub ping_timeout_ms: u64,
    /// A client that opens the transport but does not connect to a namespace within this
    /// time is closed.
    pub connect_timeout_ms: u64,
    /// How long a client's ack callback waits for the backend before it gets an error.
    pub ack_timeout_ms: u64,
    /// Largest Engine.IO payload accepted from a client, in bytes.
    pub max_payload_bytes: u64,
    /// Most binary attachments in one packet.
    pub max_attachments: usize,
    /// Connections beyond this are refused with a connect error.
    pub max_connections: usize,
    /// Packets waiting to be written to one client before pushes to it are refused (and
    /// reported per socket as `buffer_full`). 128, the Socket.IO layer's default: a client
    /// that stopped reading holds at most this many of its pushes.
    pub max_buffer_size: usize,
    /// Rooms a client may join itself with `bridge:join` (globs). Empty: none.
    pub client_room_patterns: Vec<String>,
    /// Fields of the handshake `auth` payload never forwarded to the backend.
    pub redacted_auth_fields: Vec<String>,
    /// Largest handshake `auth` object, in bytes (as JSON). It is kept with the socket and
    /// sent to backends in `SocketConnected`; 8 KiB holds a large JWT and a few fields.
    pub max_auth_bytes: usize,
    /// Sustained events per second one socket may send.
    pub events_per_second: f64,
    /// Burst of events one socket may send above the sustained rate.
    pub event_burst: u32,
    /// A socket whose events are refused this many times in a row is disconnected.
    pub flood_disconnect_after: u32,
    /// Origins allowed by CORS for polling; empty allows any origin.
    pub cors_origins: Vec<String>,
}

/// Client events on their way to backends. Every queue is bounded in bytes as well as in
/// count: a client may send events as large as `socketio.max_payload_bytes`, so a count
/// alone would let ten sockets hold gigabytes. The byte defaults fit a 2 GiB instance:
/// at most 256 MiB of events in all, whatever clients and backends do.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EventsConfig {
    /// Events queued per backend stream before the bridge answers clients "overloaded".
    pub stream_queue: usize,
    /// Bytes queued per backend stream: 64 MiB lets a backend that stalls for a second
    /// catch up on 64,000 events of 1 KB, and caps what one that never reads can hold.
    pub stream_queue_max_bytes: usize,
    /// Client events kept while no backend subscription matches them.
    pub undelivered_capacity: usize,
    /// Bytes kept while no backend subscription matches them: 64 MiB.
    pub undelivered_max_bytes: usize,
    /// Bytes of client events held in memory on their way to backends, in all (queues,
    /// the undelivered buffer, the cluster outbox): 256 MiB, an eighth of a 2 GiB instance.
    pub max_bytes: usize,
    /// The same for one socket: 4 MiB, four events at the default payload limit; a
    /// socket past it gets `backend_overloaded` until its earlier events are taken.
    pub max_bytes_per_socket: usize,
    /// How long such an event waits for a subscriber before it is dropped and counted.
    pub undelivered_max_age_ms: u64,
}

/// Cluster mode: several instances behind a load balancer share rooms, presence, events
/// and offline messages through Redis (7 or newer, RESP3).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `redis://[user:password@]host:port[/db]`, or a Redis Cluster:
    /// `redis+cluster://[user:password@]host:port[,host:port…]`. None: embedded mode.
    /// Kept secret because it may carry a password.
    pub url: Option<Secret>,
    /// Prefix of every key and channel, so several clusters can share one Redis.
    pub prefix: String,
    /// Longest wait for other instances' answers (listings, cross-instance acks).
    pub request_timeout_ms: u64,
    /// Event stream partitions: a socket's events stay in order within its partition.
    pub partitions: u32,
    /// Entries kept per partition stream (approximately); older ones are trimmed even if a
    /// group has not read them, so a group that never returns cannot fill Redis.
    pub stream_max_len: u64,
    /// Events handed to another instance's consumer and unacknowledged this long are
    /// taken over (that instance or its backend is gone).
    pub claim_idle_ms: u64,
    /// An instance that has not reported for this long is considered gone.
    pub node_timeout_ms: u64,
    /// Make `/ready` answer 503 while Redis is unreachable. Off by default: every instance
    /// loses Redis at the same moment, and taking them all out of the load balancer would
    /// also cut off the clients they can still serve locally.
    pub unready_when_down: bool,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            prefix: "socket-bridge".into(),
            request_timeout_ms: 2_000,
            partitions: 8,
            stream_max_len: 100_000,
            claim_idle_ms: 30_000,
            node_timeout_ms: 10_000,
            unready_when_down: false,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShutdownConfig {
    /// Time allowed for in-flight pushes and acks on SIGTERM before the process exits.
    pub grace_period_ms: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Human,
    Json,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Filter in `RUST_LOG` syntax; `RUST_LOG` itself wins when set.
    pub level: String,
    /// Console format.
    pub format: LogFormat,
    /// Also write JSON lines to this file, rotated (see below). None: console only.
    pub file: Option<PathBuf>,
    /// Rotate the file when it reaches this size, in bytes.
    pub file_max_bytes: u64,
    /// Also rotate at midnight (UTC).
    pub file_rotate_daily: bool,
    /// Rotated files kept; older ones are deleted.
    pub file_keep: usize,
    /// Recent entries kept in memory for the log viewer and `GET /api/v1/logs`.
    pub ring_capacity: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Admin user for `/dashboard` and `GET /api/v1/logs` (HTTP Basic).
    pub username: String,
    /// Admin password. Unset: the dashboard and the logs API refuse every request.
    pub password: Option<Secret>,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self { username: "admin".into(), password: None }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            max_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            rate_per_key_per_second: 200,
            burst_per_key: 400,
            rate_per_ip_per_second: 400,
            burst_per_ip: 800,
        }
    }
}

impl Default for GrpcConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:50051".into(),
            api_keys: Vec::new(),
            max_message_bytes: 4 << 20,
            tls_cert_file: None,
            tls_key_file: None,
            tls_client_ca_file: None,
        }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::Dev,
            allow_dev_on_public_interface: false,
            disconnect_on_token_expiry: false,
            jwt: JwtConfig::default(),
            backend: BackendAuthConfig::default(),
        }
    }
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec!["HS256".into()],
            secret: None,
            public_key_pem: None,
            public_key_file: None,
            issuer: None,
            audience: None,
            leeway_seconds: 0,
        }
    }
}

impl Default for SocketIoSettings {
    fn default() -> Self {
        Self {
            namespaces: vec!["/".into()],
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            connect_timeout_ms: 45_000,
            ack_timeout_ms: 5_000,
            max_payload_bytes: 1_000_000,
            max_attachments: 16,
            max_connections: 100_000,
            max_buffer_size: 128,
            client_room_patterns: Vec::new(),
            redacted_auth_fields: vec!["token".into(), "password".into(), "secret".into()],
            max_auth_bytes: 8192,
            events_per_second: 100.0,
            event_burst: 200,
            flood_disconnect_after: 200,
            cors_origins: Vec::new(),
        }
    }
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            stream_queue: 4096,
            stream_queue_max_bytes: 64 << 20,
            undelivered_capacity: 10_000,
            undelivered_max_bytes: 64 << 20,
            undelivered_max_age_ms: 30_000,
            max_bytes: 256 << 20,
            max_bytes_per_socket: 4 << 20,
        }
    }
}

impl Default for ShutdownConfig {
    fn default() -> Self {
        Self { grace_period_ms: 10_000 }
    }
}

impl Default for LogConfig {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Human,
            file: None,
            file_max_bytes: 10 << 20,
            file_rotate_daily: true,
            file_keep: 7,
            ring_capacity: 1000,
        }
    }
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

const ENV_PREFIX: &str = "SOCKET_BRIDGE_";

impl Config {
    /// Reads the file named by the CLI, the environment and the flags, then validates.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let mut table = match &cli.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
                text.parse::<toml::Table>().map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?
            }
            None => toml::Table::new(),
        };
        let mut errors = Vec::new();
        // Environment: SOCKET_BRIDGE_SOCKETIO__PING_INTERVAL_MS=300 sets socketio.ping_interval_ms.
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?;
                key.contains("__").then(|| (key.to_lowercase().replace("__", "."), v))
            })
            .collect();
        env.sort();
        for (key, value) in env {
            set_path(&mut table, &key, &value, &mut errors);
        }
        if let Some(v) = &cli.http_listen {
            set_path(&mut table, "http.listen", &format!("\"{v}\""), &mut errors);
        }
        if let Some(v) = &cli.grpc_listen {
            set_path(&mut table, "grpc.listen", &format!("\"{v}\""), &mut errors);
        }
        for item in &cli.overrides {
            match item.split_once('=') {
                Some((key, value)) => set_path(&mut table, key.trim(), value, &mut errors),
                None => errors.push(format!("--set {item}: expected KEY=VALUE")),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Self::from_table(table)
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table = text.parse::<toml::Table>().map_err(|e| ConfigError(vec![e.to_string()]))?;
        Self::from_table(table)
    }

    fn from_table(table: toml::Table) -> Result<Self, ConfigError> {
        // Re-parsing the text gives serde errors that name the offending key.
        let text = toml::to_string(&table).map_err(|e| ConfigError(vec![e.to_string()]))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| ConfigError(vec![e.message().to_owned() + &key_hint(&e, &text)]))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks what types alone cannot. Collects every problem rather than stopping at the
    /// first, so an operator fixes the file in one go.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut err = |field: &str, msg: &str| errors.push(format!("{field}: {msg}"));

        let http = parse_addr(&self.http.listen).map_err(|e| err("http.listen", &e)).ok();
        let grpc = parse_addr(&self.grpc.listen).map_err(|e| err("grpc.listen", &e)).ok();
        if self.auth.mode == AuthMode::Dev && !self.auth.allow_dev_on_public_interface {
            for (field, addr) in [("http.listen", http), ("grpc.listen", grpc)] {
                if addr.is_some_and(|a| !a.ip().is_loopback()) {
                    err(
                        field,
                        "dev auth lets anyone claim any user id; listen on loopback, use auth.mode = \"jwt\", or set auth.allow_dev_on_public_interface = true",
                    );
                }
            }
        }
        if self.auth.mode != AuthMode::Dev && self.grpc.api_keys.is_empty() {
            err("grpc.api_keys", "at least one API key is required outside dev mode");
        }
        for (i, key) in self.grpc.api_keys.iter().enumerate() {
            if key.expose().len() < 16 {
                err(&format!("grpc.api_keys[{i}]"), "must be at least 16 characters");
            }
        }
        match (&self.grpc.tls_cert_file, &self.grpc.tls_key_file) {
            (Some(_), None) => err("grpc.tls_key_file", "required with grpc.tls_cert_file"),
            (None, Some(_)) => err("grpc.tls_cert_file", "required with grpc.tls_key_file"),
            _ => {}
        }
        if self.grpc.tls_client_ca_file.is_some() && self.grpc.tls_cert_file.is_none() {
            err("grpc.tls_client_ca_file", "mutual TLS needs grpc.tls_cert_file and grpc.tls_key_file");
        }
        if self.grpc.max_message_bytes < 1024 {
            err("grpc.max_message_bytes", "must be at least 1024");
        }
        let b = &self.auth.backend;
        if !(100..=60_000).contains(&b.timeout_ms) {
            err("auth.backend.timeout_ms", "must be between 100 and 60000");
        }
        if b.forward_headers.len() > 32
            || b.forward_headers.iter().any(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            err("auth.backend.forward_headers", "at most 32 valid header names");
        }
        if self.auth.mode == AuthMode::Jwt || (self.auth.mode == AuthMode::Backend && b.require_jwt) {
            self.validate_jwt(&mut err);
        }
        let s = &self.socketio;
        if s.namespaces.is_empty() {
            err("socketio.namespaces", "list at least one namespace, e.g. [\"/\"]");
        }
        for ns in &s.namespaces {
            if !ns.starts_with('/') || ns.len() > 128 {
                err("socketio.namespaces", &format!("{ns:?} must start with '/' and be at most 128 bytes"));
            }
        }
        for (field, value) in [
            ("socketio.ping_interval_ms", s.ping_interval_ms),
            ("socketio.ping_timeout_ms", s.ping_timeout_ms),
            ("socketio.connect_timeout_ms", s.connect_timeout_ms),
            ("socketio.ack_timeout_ms", s.ack_timeout_ms),
            ("socketio.max_payload_bytes", s.max_payload_bytes),
            ("events.undelivered_max_age_ms", self.events.undelivered_max_age_ms),
            ("shutdown.grace_period_ms", self.shutdown.grace_period_ms),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        for (field, value) in [
            ("http.rate_per_key_per_second", self.http.rate_per_key_per_second),
            ("http.burst_per_key", self.http.burst_per_key),
            ("http.rate_per_ip_per_second", self.http.rate_per_ip_per_second),
            ("http.burst_per_ip", self.http.burst_per_ip),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        if self.http.max_body_bytes < 1024 {
            err("http.max_body_bytes", "must be at least 1024");
        }
        if self.http.header_read_timeout_ms == 0 {
            err("http.header_read_timeout_ms", "must be greater than 0");
        }
        if self.http.request_timeout_ms == 0 {
            err("http.request_timeout_ms", "must be greater than 0");
        }
        if !(256..=1 << 20).contains(&s.max_auth_bytes) {
            err("socketio.max_auth_bytes", "must be between 256 and 1048576");
        }
        if !(1..=65_536).contains(&s.max_buffer_size) {
            err("socketio.max_buffer_size", "must be between 1 and 65536");
        }
        if s.max_connections == 0 {
            err("socketio.max_connections", "must be greater than 0");
        }
        if !(s.events_per_second > 0.0 && s.events_per_second.is_finite()) {
            err("socketio.events_per_second", "must be a positive number");
        }
        if s.flood_disconnect_after == 0 {
            err("socketio.flood_disconnect_after", "must be greater than 0");
        }
        if s.event_burst == 0 {
            err("socketio.event_burst", "must be greater than 0");
        }
        for p in &s.client_room_patterns {
            if let Err(e) = crate::hub::pattern::Pattern::new(p) {
                err("socketio.client_room_patterns", &format!("{p:?}: {e}"));
            } else if crate::hub::is_internal_room(p) || p.starts_with('*') {
                err("socketio.client_room_patterns", &format!("{p:?} could match internal rooms (\"user:\" prefix)"));
            }
        }
        if self.events.stream_queue == 0 {
            err("events.stream_queue", "must be greater than 0");
        }
        for (field, value) in [
            ("events.stream_queue_max_bytes", self.events.stream_queue_max_bytes),
            ("events.undelivered_max_bytes", self.events.undelivered_max_bytes),
            ("events.max_bytes", self.events.max_bytes),
            ("events.max_bytes_per_socket", self.events.max_bytes_per_socket),
        ] {
            if !(1024..=4 << 30).contains(&value) {
                err(field, "must be between 1024 and 4294967296");
            }
        }
        if self.log.file_max_bytes < 1024 {
            err("log.file_max_bytes", "must be at least 1024");
        }
        if self.log.file_keep == 0 {
            err("log.file_keep", "must be at least 1");
        }
        if self.log.ring_capacity == 0 || self.log.ring_capacity > 100_000 {
            err("log.ring_capacity", "must be 1 to 100000");
        }
        if let Some(p) = &self.dashboard.password
            && p.expose().len() < 8
        {
            err("dashboard.password", "must be at least 8 characters");
        }
        if self.offline.max_messages_per_user == 0 {
            err("offline.max_messages_per_user", "must be greater than 0");
        }
        if self.offline.max_bytes_per_user < 1024 {
            err("offline.max_bytes_per_user", "must be at least 1024");
        }
        if self.offline.max_bytes < self.offline.max_bytes_per_user {
            err("offline.max_bytes", "must be at least offline.max_bytes_per_user");
        }
        self.validate_redis(&mut err);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            err("log.level", &e.to_string());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigError(errors)) }
    }

    fn validate_redis(&self, err: &mut impl FnMut(&str, &str)) {
        let r = &self.redis;
        if let Some(url) = &r.url {
            let u = url.expose();
            let schemes = ["redis://", "rediss://", "redis+unix://", "redis+cluster://", "rediss+cluster://"];
            if !schemes.iter().any(|s| u.starts_with(s)) {
                err(
                    "redis.url",
                    "must start with redis://, rediss://, redis+unix://, redis+cluster:// or rediss+cluster://",
                );
            }
        }
        // Braces would change which Redis Cluster slot a key's hash tag picks.
        if r.prefix.is_empty()
            || r.prefix.len() > 64
            || r.prefix.contains(['#', ' ', '{', '}'])
            || r.prefix.contains(char::is_control)
        {
            err("redis.prefix", "must be 1 to 64 bytes without spaces, '#', braces or control characters");
        }
        if !(1..=256).contains(&r.partitions) {
            err("redis.partitions", "must be 1 to 256");
        }
        if r.stream_max_len < 1000 {
            err("redis.stream_max_len", "must be at least 1000");
        }
        for (field, value) in [
            ("redis.request_timeout_ms", r.request_timeout_ms),
            ("redis.claim_idle_ms", r.claim_idle_ms),
            ("redis.node_timeout_ms", r.node_timeout_ms),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        if r.node_timeout_ms < 2_000 {
            err("redis.node_timeout_ms", "must be at least 2000 (instances report every second)");
        }
        for ns in &self.socketio.namespaces {
            if r.url.is_some() && ns.contains('#') {
                err("socketio.namespaces", &format!("{ns:?}: '#' is not allowed in cluster mode"));
            }
        }
    }

    fn validate_jwt(&self, err: &mut impl FnMut(&str, &str)) {
        let jwt = &self.auth.jwt;
        if jwt.algorithms.is_empty() {
            err("auth.jwt.algorithms", "list at least one algorithm");
        }
        let mut families = Vec::new();
        for alg in &jwt.algorithms {
            match alg.parse::<jsonwebtoken::Algorithm>() {
                Ok(a) => families.push(crate::hub::auth::key_family(a)),
                Err(_) => err(
                    "auth.jwt.algorithms",
                    &format!(
                        "{alg:?} is not a supported algorithm (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                    ),
                ),
            }
        }
        families.dedup();
        if families.len() > 1 {
            err("auth.jwt.algorithms", "all algorithms must use the same key type (HMAC, RSA, EC or Ed25519)");
        }
        match families.first() {
            Some(crate::hub::auth::KeyFamily::Hmac) => match &jwt.secret {
                Some(s) if s.expose().len() >= 32 => {}
                Some(_) => err("auth.jwt.secret", "must be at least 32 bytes"),
                None => err("auth.jwt.secret", "required for HS* algorithms"),
            },
            Some(_) if jwt.public_key_pem.is_none() && jwt.public_key_file.is_none() => err(
                "auth.jwt.public_key_pem",
                "a public key (or auth.jwt.public_key_file) is required for this algorithm",
            ),
            _ => {}
        }
    }

    pub fn http_addr(&self) -> SocketAddr {
        parse_addr(&self.http.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3000)))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        parse_addr(&self.grpc.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 50051)))
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.socketio.ping_interval_ms)
    }
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio.ping_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio.connect_timeout_ms)
    }
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio.ack_timeout_ms)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http.header_read_timeout_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.http.request_timeout_ms)
    }
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.shutdown.grace_period_ms)
    }
    pub fn undelivered_max_age(&self) -> Duration {
        Duration::from_millis(self.events.undelivered_max_age_ms)
    }
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not an address like 127.0.0.1:3000"))
}

/// Sets `a.b.c = value` in a TOML table, creating sections on the way.
fn set_path(table: &mut toml::Table, key: &str, raw: &str, errors: &mut Vec<String>) {
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => current = t,
            _ => {
                errors.push(format!("{key}: {part} is not a section"));
                return;
            }
        }
    }
    current.insert(last.to_owned(), value);
}

/// Names the key at the error's position, since serde's message alone may not.
fn key_hint(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else { return String::new() };
    let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
    let section = text[..line_start]
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_owned());
    let line = &text[line_start..line_end];
    let key = line.split('=').next().unwrap_or("").trim();
    match section {
        Some(s) if !key.is_empty() && !line.starts_with('[') => format!(" (at {s}.{key})"),
        Some(s) => format!(" (in [{s}])"),
        None if !key.is_empty() => format!(" (at {key})"),
        None => String::new(),
    }
}

impl Config {
    /// The effective configuration as TOML, with every secret replaced.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        for key in &mut copy.grpc.api_keys {
            *key = Secret::new("<redacted>");
        }
        if copy.dashboard.password.is_some() {
            copy.dashboard.password = Some(Secret::new("<redacted>"));
        }
        if copy.auth.jwt.secret.is_some() {
            copy.auth.jwt.secret = Some(Secret::new("<redacted>"));
        }
        if copy.redis.url.is_some() {
            copy.redis.url = Some(Secret::new("<redacted>"));
        }
        toml::to_string_pretty(&copy).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:3000");
        assert_eq!(c.grpc.listen, "127.0.0.1:50051");
        assert_eq!(c.auth.mode, AuthMode::Dev);
    }

    #[test]
    fn unknown_and_mistyped_settings_are_named() {
        let e = Config::from_toml("[socketio]\nping_intervall_ms = 3\n").unwrap_err().to_string();
        assert!(e.contains("ping_intervall_ms"), "{e}");
        let e = Config::from_toml("[socketio]\nping_interval_ms = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("socketio.ping_interval_ms"), "{e}");
    }

    #[test]
    fn every_problem_is_reported() {
        let e = Config::from_toml(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nalgorithms = [\"HS256\", \"RS256\"]\n[socketio]\nping_timeout_ms = 0\nnamespaces = [\"chat\"]\n",
        )
        .unwrap_err();
        let all = e.0.join("\n");
        for field in [
            "grpc.api_keys",
            "auth.jwt.algorithms",
            "auth.jwt.secret",
            "socketio.ping_timeout_ms",
            "socketio.namespaces",
        ] {
            assert!(all.contains(field), "{field} missing from {all}");
        }
    }

    #[test]
    fn dev_mode_refuses_public_listen_unless_forced() {
        let e = Config::from_toml("[http]\nlisten = \"0.0.0.0:3000\"\n").unwrap_err();
        assert!(e.0[0].starts_with("http.listen"), "{e}");
        Config::from_toml("[http]\nlisten = \"0.0.0.0:3000\"\n[auth]\nallow_dev_on_public_interface = true\n").unwrap();
    }

    #[test]
    fn secrets_are_hidden_from_debug() {
        let c = Config::from_toml("[grpc]\napi_keys = [\"super-secret-key-123456\"]\n").unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
    }

    #[test]
    fn overrides_take_toml_values_or_strings() {
        let mut table = toml::Table::new();
        let mut errors = Vec::new();
        set_path(&mut table, "socketio.ping_interval_ms", "300", &mut errors);
        set_path(&mut table, "log.level", "debug", &mut errors);
        set_path(&mut table, "socketio.namespaces", "[\"/\", \"/admin\"]", &mut errors);
        assert!(errors.is_empty());
        let c = Config::from_table(table).unwrap();
        assert_eq!(c.socketio.ping_interval_ms, 300);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.socketio.namespaces, ["/", "/admin"]);
    }

    #[test]
    fn client_room_patterns_cannot_reach_internal_rooms() {
        let e = Config::from_toml("[socketio]\nclient_room_patterns = [\"user:*\"]\n").unwrap_err();
        assert!(e.0[0].contains("internal"), "{e}");
    }
}
