//! One struct per section of the configuration, with its defaults and, next to each
//! setting, why its default is what it is.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::Secret;

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
    /// A new connection must deliver its first complete request head within this time,
    /// however many bytes trickle in (nothing sent, a partial HTTP/2 preface, headers sent
    /// a byte at a time: all closed). Later requests on a kept-alive connection are bounded
    /// by `idle_timeout_ms`.
    pub header_read_timeout_ms: u64,
    /// A connection with no request in flight for this long is closed (a long-poll, a
    /// streaming response or a websocket counts as in flight). Default 30 s: above the
    /// 25 s Engine.IO ping interval, so a long-polling client's second connection (the
    /// one its pongs and emits go out on, which waits up to one ping interval between
    /// requests) is reused rather than reopened every time.
    pub idle_timeout_ms: u64,
    /// Addresses (`10.0.0.5`) or networks (`10.0.0.0/8`, `fd00::/8`) of proxies in front of
    /// the bridge. For a connection from one of them, the client address is the last
    /// address in `X-Forwarded-For` that is not itself a trusted proxy. The client address
    /// is what per-address limits count and what an Engine.IO session is bound to.
    /// Empty (default): the connection's own address, which behind a proxy is the proxy's.
    pub trusted_proxies: Vec<String>,
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
    /// A new connection must complete its first call's request head (TLS handshake and
    /// HTTP/2 preface included) within this time. Default 10 s, like
    /// `http.header_read_timeout_ms`: a backend on a LAN does it in about a millisecond.
    pub first_request_timeout_ms: u64,
    /// A connection with no call in flight for this long is closed; an `Events` stream is
    /// a call, so a subscribed backend is never idle. Default 5 minutes: grpc-go and tonic
    /// channels reconnect on their next call, so only a backend that pushes less often
    /// than this pays one extra connection setup.
    pub idle_timeout_ms: u64,
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
    /// An Engine.IO session that has not joined a namespace (CONNECT) within this time is
    /// closed; so is one whose CONNECT was refused. Default 10 s: stock clients send
    /// CONNECT right after the handshake's answer (one round trip), and a session that
    /// never does holds memory for nothing (see `max_sessions`).
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
    /// Engine.IO sessions (connected or still in the handshake) allowed at once; more
    /// handshakes get 503 with `Retry-After`. Counted from the handshake, so sessions that
    /// never CONNECT are bounded too. Default: `max_connections` plus 10%, for handshakes
    /// in progress; at about 10 KiB per unjoined session the extra 10,000 hold about 100 MB
    /// at most, well inside a 2 GiB instance.
    pub max_sessions: usize,
    /// Engine.IO sessions allowed at once from one client address (IPv6: one /64), 0 for
    /// no limit; more get 429 with `Retry-After`. Behind a proxy, set
    /// `http.trusted_proxies` (or 0 here): otherwise every client shares the proxy's
    /// address. Default 1,000: a large office behind one NAT address with a few tabs per
    /// person, while one attacker's address holds at most about 10 MB of sessions (about
    /// 10 KiB per unjoined session, measured in `tests/edge.rs`).
    pub max_sessions_per_address: usize,
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
    /// Origins allowed to use the Socket.IO endpoint from a browser. Empty (default): any
    /// origin, without credentials (`Access-Control-Allow-Origin: *`): the endpoint relies
    /// on no cookie or cached credential, and websocket connections ignore CORS anyway.
    /// With a list: only those origins, with credentials (sticky-session cookies), and
    /// handshakes whose `Origin` is not on it are refused with 403 on both transports.
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
    /// How long a busy backend stream holds newly queued events so that they leave
    /// together, up to 32 per write (a stream idle for longer sends at once, so a quiet
    /// stream adds no delay). 1 ms cut the bridge's CPU per event round trip by 17-45% at
    /// 5,000-40,000 events/s, for about 1 ms more median latency at those rates. 0 sends
    /// every event as soon as it is queued.
    pub stream_batch_window_ms: u64,
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
    /// Events an outsider can repeat at will (failed admin logins, refused handshakes,
    /// accept failures) are logged as one summary line per this interval, not one line
    /// each. Default 10 s: at most 6 lines a minute per kind, so an attack cannot flush
    /// the ring (1,000 entries) or the rotated files.
    pub summary_interval_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DashboardConfig {
    /// Admin user for `/dashboard` and `GET /api/v1/logs` (HTTP Basic).
    pub username: String,
    /// Admin password. Unset: the dashboard and the logs API refuse every request.
    pub password: Option<Secret>,
    /// Admin requests (dashboard, its data, the logs API) per second allowed per client
    /// address, and the burst above it; more get 429 with `Retry-After`. Defaults 2/s and
    /// 20: opening the dashboard takes 3 requests and it then holds one stream, so an
    /// operator never waits, while password guessing drops from thousands a second to 2.
    pub rate_per_address_per_second: u32,
    /// Admin requests one client address may make at once above that rate.
    pub burst_per_address: u32,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        Self { username: "admin".into(), password: None, rate_per_address_per_second: 2, burst_per_address: 20 }
    }
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:3000".into(),
            max_body_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            trusted_proxies: Vec::new(),
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
            first_request_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
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
            connect_timeout_ms: 10_000,
            ack_timeout_ms: 5_000,
            max_payload_bytes: 1_000_000,
            max_attachments: 16,
            max_connections: 100_000,
            max_buffer_size: 128,
            max_sessions: 110_000,
            max_sessions_per_address: 1_000,
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
            stream_batch_window_ms: 1,
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
            summary_interval_ms: 10_000,
        }
    }
}
