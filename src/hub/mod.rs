//! The core: every rule of the bridge lives here. The doors (`grpc`, `http`, `socketio`)
//! decode and validate at the edge, call a `Hub` method, and map the result back.
//!
//! - `registry`: which sockets are connected, for which user, with what handshake; presence.
//! - `router`: backend subscriptions, client events to them, their acks back to clients.
//! - `push`: pushes, room membership and disconnects requested by the backend.
//! - `listing`: paginated rooms and connections, and the status report.
//! - `offline`: pushes kept for users who are not connected.
//! - `payload`, `auth`, `pattern`: the pure pieces (argument lists, identities, globs).

mod acks;
pub mod auth;
mod backends;
pub mod backplane;
pub mod budget;
mod connections;
pub mod deciders;
pub mod embedded;
pub mod keyhash;
mod listing;
mod local;
pub mod offline;
pub use crate::names::pattern;
pub mod payload;
mod push;
mod questions;
mod redelivery;
pub mod registry;
pub mod router;
mod stream;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::config::Config;
pub use crate::telemetry::metrics::{Door, ErrorKind, Metrics};
use backplane::{Backplane, NodeHandle, Reach};
pub use connections::{ConnectContext, ConnectRefusal, JOIN_EVENT, LEAVE_EVENT};
pub use listing::{ConnectionFilter, Page, RoomSummary, StatusReport};
pub use payload::{Payload, PayloadError, PayloadLimits};
pub use push::{
    AckOutcome, DeliveryReport, MAX_ACK_TIMEOUT, MAX_BATCH, MAX_TTL, PushCommand, PushOptions, SocketAck, Target,
};
use registry::Registry;
use router::EventRouter;

pub type Io = socketioxide::SocketIo;
pub type Socket = socketioxide::extract::SocketRef;
pub use acks::ClientAck;
pub type Operators = socketioxide::operators::BroadcastOperators;

pub use crate::names::{
    MAX_LIST_LEN, MAX_NAME_LEN, MAX_NAMESPACE_LEN, SOCKET_ROOM_PREFIX, USER_ROOM_PREFIX, is_internal_room, user_room,
};

/// A failed hub call. Doors map these to gRPC codes and HTTP statuses; `field` names the
/// request field at fault so callers can fix it.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum HubError {
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    ResourceExhausted(String),
}

impl HubError {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidArgument { field: field.into(), message: message.into() }
    }
}

/// Checks a room name given by the backend or a token.
pub fn validate_room(room: &str) -> Result<(), HubError> {
    crate::names::check_room(room).map_err(|e| HubError::invalid("room", e.to_string()))
}

fn validate_name(name: &str) -> Result<(), crate::names::NameError> {
    crate::names::check_name(name)
}

fn validate_event(event: &str) -> Result<(), HubError> {
    crate::names::check_event(event).map_err(|e| HubError::invalid("event", e.to_string()))
}

/// Settings the hub applies, taken from `Config` once.
#[derive(Debug, Clone)]
pub struct HubSettings {
    pub namespaces: Vec<String>,
    pub payload_limits: PayloadLimits,
    pub ack_timeout: Duration,
    pub max_connections: usize,
    pub client_room_patterns: Vec<pattern::Pattern>,
    pub redacted_auth_fields: Vec<String>,
    pub max_auth_bytes: usize,
    pub events_per_second: f64,
    pub event_burst: u32,
    pub flood_disconnect_after: u32,
    pub stream_queue: usize,
    pub stream_queue_max_bytes: usize,
    pub undelivered_capacity: usize,
    pub undelivered_max_bytes: usize,
    pub undelivered_max_age: Duration,
    /// How long a busy backend stream holds new events to send them together.
    pub stream_batch_window: Duration,
    /// Bytes of client events held in memory on their way to backends, in all.
    pub event_max_bytes: usize,
    /// The same, per socket.
    pub event_max_bytes_per_socket: usize,
    /// Bounds of what one socket may be owed (ttl pushes it could not take yet).
    pub owed: offline::OfflineLimits,
    /// End sockets whose credential expired, this long after the expiry (None: never).
    pub end_expired_sockets_after: Option<Duration>,
    /// Longest wait for a deciding backend.
    pub decision_timeout: Duration,
    /// Ask a decider about client joins the room patterns do not grant.
    pub decide_joins: bool,
    /// Headers deciders see besides cookie, origin and user-agent.
    pub forward_headers: Vec<String>,
    /// Readiness fails while the cluster's Redis is unreachable.
    pub unready_without_redis: bool,
}

impl HubSettings {
    pub fn from_config(config: &Config) -> Self {
        let s = &config.socketio;
        Self {
            namespaces: s.namespaces.clone(),
            payload_limits: PayloadLimits {
                max_bytes: usize::try_from(s.max_payload_bytes).unwrap_or(usize::MAX),
                max_attachments: s.max_attachments,
            },
            ack_timeout: config.ack_timeout(),
            max_connections: s.max_connections,
            client_room_patterns: s.client_room_patterns.iter().filter_map(|p| pattern::Pattern::new(p).ok()).collect(),
            redacted_auth_fields: s.redacted_auth_fields.clone(),
            max_auth_bytes: s.max_auth_bytes,
            events_per_second: s.events_per_second,
            event_burst: s.event_burst,
            flood_disconnect_after: s.flood_disconnect_after,
            stream_queue: config.events.stream_queue,
            stream_queue_max_bytes: config.events.stream_queue_max_bytes,
            undelivered_capacity: config.events.undelivered_capacity,
            undelivered_max_bytes: config.events.undelivered_max_bytes,
            stream_batch_window: Duration::from_millis(config.events.stream_batch_window_ms),
            event_max_bytes: config.events.max_bytes,
            event_max_bytes_per_socket: config.events.max_bytes_per_socket,
            decision_timeout: Duration::from_millis(config.auth.backend.timeout_ms),
            decide_joins: config.auth.backend.decide_joins,
            forward_headers: config.auth.backend.forward_headers.iter().map(|h| h.to_ascii_lowercase()).collect(),
            end_expired_sockets_after: config
                .auth
                .disconnect_on_token_expiry
                .then(|| Duration::from_secs(config.auth.jwt.leeway_seconds)),
            owed: offline::OfflineLimits {
                max_messages_per_user: config.offline.max_messages_per_user,
                max_bytes_per_user: config.offline.max_bytes_per_user,
                max_bytes: config.offline.max_bytes,
            },
            undelivered_max_age: config.undelivered_max_age(),
            unready_without_redis: config.redis.unready_when_down,
        }
    }
}

/// The bridge's shared state. One per process, behind an `Arc`.
pub struct Hub {
    /// socketioxide's handle: the engine that actually writes to this instance's browsers.
    io: Io,
    settings: HubSettings,
    authenticator: auth::Authenticator,
    registry: Arc<Registry>,
    router: Arc<EventRouter>,
    /// Bytes of client events on their way to backends, per socket and in all.
    budget: budget::EventBudget,
    /// Sockets owed ttl pushes they could not take yet.
    debtors: redelivery::Debtors,
    /// Backend streams deciding connects and joins, and their pending questions.
    deciders: deciders::Deciders,
    /// (when its credential expires, namespace, socket id), soonest first: the sockets
    /// `auth.disconnect_on_token_expiry` ends.
    expiries: std::sync::Mutex<std::collections::BTreeSet<(SystemTime, String, String)>>,
    /// What differs between one instance and many (see [`backplane`]).
    backplane: Arc<dyn Backplane>,
    metrics: Arc<Metrics>,
    instance_id: String,
    started_at: Instant,
    started_at_wall: SystemTime,
    /// Set on SIGTERM: new connections are refused and readiness turns false.
    draining: AtomicBool,
    /// The same, for tasks that wait on it (dashboard streams end when it fires).
    drain_signal: tokio::sync::watch::Sender<bool>,
    /// Pushes running now, whichever door started them. Shutdown waits for them to reach
    /// zero (within the grace period) before closing client transports, so a push waiting
    /// for acks gets them.
    pushes_in_flight: tokio::sync::watch::Sender<usize>,
}

/// Counts one running push; dropping it (however the push ends) uncounts it.
pub(crate) struct InFlight<'a>(&'a tokio::sync::watch::Sender<usize>);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.send_modify(|n| *n = n.saturating_sub(1));
    }
}

impl Hub {
    /// Builds the hub on `backplane` (embedded or Redis) and socketioxide's handle `io`.
    pub fn new(
        settings: HubSettings,
        authenticator: auth::Authenticator,
        backplane: Arc<dyn Backplane>,
        io: Io,
    ) -> Arc<Self> {
        let instance_id = format!("{:016x}", rand::random::<u64>());
        let metrics = Arc::new(Metrics::new(&settings.namespaces));
        let router = Arc::new(EventRouter::new(&settings, instance_id.clone(), metrics.clone()));
        let registry = Arc::new(Registry::default());
        let hub = Arc::new(Self {
            io,
            metrics,
            router,
            budget: budget::EventBudget::new(settings.event_max_bytes, settings.event_max_bytes_per_socket),
            debtors: redelivery::Debtors::default(),
            deciders: deciders::Deciders::default(),
            expiries: std::sync::Mutex::default(),
            backplane,
            settings,
            authenticator,
            registry,
            instance_id,
            started_at: Instant::now(),
            started_at_wall: SystemTime::now(),
            draining: AtomicBool::new(false),
            drain_signal: tokio::sync::watch::channel(false).0,
            pushes_in_flight: tokio::sync::watch::channel(0).0,
        });
        hub.backplane.attach(NodeHandle {
            instance_id: hub.instance_id.clone(),
            router: hub.router.clone(),
            registry: hub.registry.clone(),
            metrics: hub.metrics.clone(),
            hub: Arc::downgrade(&hub),
        });
        hub
    }

    /// Starts the background work: upkeep, and the backplane's own.
    pub fn start_tasks(self: &Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        self.backplane.start(shutdown.clone());
        tokio::spawn(self.clone().run_redelivery(shutdown.clone()));
        tokio::spawn(self.clone().run_maintenance(shutdown));
        // Not tied to shutdown: callbacks still waiting while the bridge drains get their
        // timeout answer as before.
        tokio::spawn(self.router.acks().clone().run_timeouts());
    }

    pub fn io(&self) -> &Io {
        &self.io
    }

    pub fn backplane(&self) -> &Arc<dyn Backplane> {
        &self.backplane
    }

    /// Whether this instance reaches the others, as readiness reports it: "disabled" (one
    /// instance), "up" or "down".
    pub fn redis_state(&self) -> &'static str {
        self.backplane.reach().as_str()
    }

    /// Whether load balancers should send new clients here: not draining, and the other
    /// instances reachable when `redis.unready_when_down` asks for it.
    pub fn is_ready(&self) -> bool {
        let cut_off = self.settings.unready_without_redis && self.backplane.reach() == Reach::Down;
        !self.is_draining() && !cut_off
    }

    /// Shutdown, once the transports are closed: every socket still registered leaves as
    /// if its disconnect handler had run.
    pub fn unregister_all(&self, reason: &str) {
        for conn in self.registry.all() {
            self.on_disconnect(&conn.namespace, &conn.socket_id, reason);
        }
    }

    /// Shutdown: waits (bounded by the caller) until what the backplane queued so far
    /// reached the other instances, then takes this instance out.
    pub async fn leave_peers(&self) {
        self.backplane.leave().await;
    }

    pub fn settings(&self) -> &HubSettings {
        &self.settings
    }

    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub fn router(&self) -> &EventRouter {
        &self.router
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn uptime(&self) -> Duration {
        self.started_at.elapsed()
    }

    pub fn started_at(&self) -> SystemTime {
        self.started_at_wall
    }

    pub fn is_dev_auth(&self) -> bool {
        self.authenticator.is_dev()
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::Acquire)
    }

    /// First step of shutdown: refuse new connections, report not ready.
    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::Release);
        self.metrics.draining.set(1);
        self.drain_signal.send_replace(true);
    }

    pub(crate) fn push_started(&self) -> InFlight<'_> {
        self.pushes_in_flight.send_modify(|n| *n += 1);
        InFlight(&self.pushes_in_flight)
    }

    /// Resolves when no push is running.
    pub async fn pushes_finished(&self) {
        let mut rx = self.pushes_in_flight.subscribe();
        let _ = rx.wait_for(|n| *n == 0).await;
    }

    /// Resolves once draining has started.
    pub async fn draining_started(&self) {
        let mut rx = self.drain_signal.subscribe();
        let _ = rx.wait_for(|draining| *draining).await;
    }

    /// Brings the state-mirroring gauges up to date: each second without the room count,
    /// and with it before a scrape. Counting rooms walks every socket's rooms under the
    /// adapter's locks (about 20 ms at 10,000 sockets, measured as a p99 stall of pushes
    /// when it ran every second), so it only runs when someone asks.
    pub async fn refresh_gauges(&self, with_rooms: bool) {
        let m = &self.metrics;
        m.connections.set(self.registry.len() as i64);
        m.unique_users.set(self.registry.unique_users() as i64);
        if with_rooms {
            m.rooms.set(self.count_rooms().await as i64);
        }
        let groups = self.router.groups();
        m.backend_streams.reset();
        for g in &groups {
            m.backend_streams.with_label_values(&[g.group.as_str()]).set(i64::from(g.streams));
        }
        m.backend_subscribers.set(groups.iter().map(|g| i64::from(g.streams)).sum());
        m.event_queue_depth.set(groups.iter().map(|g| g.queued_events as i64).sum());
        m.undelivered_events.set(self.router.undelivered_len() as i64);
        let lifecycle = self.router.lifecycle_dropped();
        let counted = m.dropped_messages.with_label_values(&["lifecycle_queue_full"]);
        counted.inc_by(lifecycle.saturating_sub(counted.get()));
    }

    fn check_namespace(&self, namespace: &str) -> Result<(), HubError> {
        let chars = namespace.chars().count();
        if chars == 0 || chars > MAX_NAMESPACE_LEN {
            return Err(HubError::invalid("namespace", format!("must be 1 to {MAX_NAMESPACE_LEN} characters")));
        }
        // An unknown namespace is a missing resource, not a malformed request: its name
        // may be perfectly valid, just not configured here.
        if self.settings.namespaces.iter().any(|n| n == namespace) {
            Ok(())
        } else {
            Err(HubError::NotFound(format!(
                "namespace {:?} is not configured (configured: {})",
                namespace.chars().take(128).collect::<String>(),
                self.settings.namespaces.join(", ")
            )))
        }
    }

    /// Periodic upkeep: message rates, expired undelivered events and offline messages.
    pub async fn run_maintenance(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut ticks = 0u64;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            ticks += 1;
            if ticks.is_multiple_of(30) {
                let removed = self.reconcile_registry();
                if removed > 0 {
                    tracing::warn!(removed, "removed registry entries of sockets that never finished connecting");
                }
            }
            self.metrics.sample_rates();
            self.end_expired_sockets();
            let expired = self.router.expire_undelivered();
            self.metrics.undeliverable_dropped.inc_by(expired);
            self.refresh_gauges(false).await;
        }
    }
}

pub(crate) fn now_wall() -> SystemTime {
    SystemTime::now()
}

/// Milliseconds since the Unix epoch: the wall-clock instants instances share.
pub fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
