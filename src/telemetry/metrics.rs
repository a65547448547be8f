//! Prometheus metrics, `socket_bridge_*`, base units, `_total` on counters. Labels are
//! bounded: namespaces (from config), doors, results, reasons and error kinds (fixed
//! sets), backend groups (chosen by the operator's own backends). Never event names or ids.
//!
//! The hub bumps these as things happen; gauges that mirror state (connections, rooms,
//! queues) are refreshed once a second and before every scrape.

use std::sync::Mutex;
use std::time::Instant;

use prometheus::{
    Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
};

/// Which door a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Door {
    Grpc,
    Rest,
}

impl Door {
    pub fn as_str(self) -> &'static str {
        match self {
            Door::Grpc => "grpc",
            Door::Rest => "rest",
        }
    }
}

/// Error kinds counted in `socket_bridge_errors_total{kind}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    Auth,
    ConnectionLimit,
    RateLimited,
    BackendOverloaded,
    AckTimeout,
    NoBackend,
    ForbiddenRoom,
    InvalidRequest,
    Flood,
    /// A listener's accept failed (out of file descriptors, mostly).
    AcceptFailed,
    /// Idle connections closed before their deadline to free descriptors.
    IdleClosedEarly,
    /// Connections accepted and closed at once: no descriptor could be freed.
    TurnedAway,
    /// Engine.IO handshakes refused: too many sessions in total or from one address.
    SessionLimit,
    /// Engine.IO requests naming a session created from another client address.
    SessionAddressMismatch,
    /// Engine.IO handshakes from an origin not in `socketio.cors_origins`.
    OriginRefused,
    /// Client events refused: name too long, nesting too deep, malformed packet.
    InvalidEvent,
    /// Failed or rate-limited admin (dashboard, logs API) requests.
    AdminAuth,
}

/// The reasons a socket leaves (Socket.IO's own reason strings).
pub const DISCONNECT_REASONS: [&str; 7] = [
    "transport close",
    "transport error",
    "parse error",
    "ping timeout",
    "client namespace disconnect",
    "server namespace disconnect",
    "server shutting down",
];

impl ErrorKind {
    pub const ALL: [ErrorKind; 17] = [
        ErrorKind::Auth,
        ErrorKind::ConnectionLimit,
        ErrorKind::RateLimited,
        ErrorKind::BackendOverloaded,
        ErrorKind::AckTimeout,
        ErrorKind::NoBackend,
        ErrorKind::ForbiddenRoom,
        ErrorKind::InvalidRequest,
        ErrorKind::Flood,
        ErrorKind::AcceptFailed,
        ErrorKind::IdleClosedEarly,
        ErrorKind::TurnedAway,
        ErrorKind::SessionLimit,
        ErrorKind::SessionAddressMismatch,
        ErrorKind::OriginRefused,
        ErrorKind::InvalidEvent,
        ErrorKind::AdminAuth,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::Auth => "auth",
            ErrorKind::ConnectionLimit => "connection_limit",
            ErrorKind::RateLimited => "rate_limited",
            ErrorKind::BackendOverloaded => "backend_overloaded",
            ErrorKind::AckTimeout => "ack_timeout",
            ErrorKind::NoBackend => "no_backend",
            ErrorKind::ForbiddenRoom => "forbidden_room",
            ErrorKind::InvalidRequest => "invalid_request",
            ErrorKind::Flood => "flood_disconnect",
            ErrorKind::AcceptFailed => "accept_failed",
            ErrorKind::IdleClosedEarly => "idle_closed_early",
            ErrorKind::TurnedAway => "connection_turned_away",
            ErrorKind::SessionLimit => "session_limit",
            ErrorKind::SessionAddressMismatch => "session_address_mismatch",
            ErrorKind::OriginRefused => "origin_refused",
            ErrorKind::InvalidEvent => "invalid_event",
            ErrorKind::AdminAuth => "admin_auth",
        }
    }
}

pub struct Metrics {
    pub registry: Registry,
    pub connections: IntGauge,
    pub unique_users: IntGauge,
    pub connects: IntCounter,
    pub disconnects: IntCounterVec,
    pub messages_received: IntCounterVec,
    pub messages_sent: IntCounterVec,
    pub push_requests: IntCounterVec,
    pub push_duration: HistogramVec,
    pub backend_ack_duration: Histogram,
    pub backend_streams: IntGaugeVec,
    pub backend_subscribers: IntGauge,
    pub rooms: IntGauge,
    pub event_queue_depth: IntGauge,
    pub undelivered_events: IntGauge,
    pub undeliverable_dropped: IntCounter,
    pub dropped_messages: IntCounterVec,
    pub offline_stored: IntCounter,
    pub offline_delivered: IntCounter,
    pub errors: IntCounterVec,
    pub client_acks: IntCounterVec,
    pub draining: IntGauge,
    pub redis_up: IntGauge,
    pub cluster_nodes: IntGauge,
    pub cluster_redelivered: IntCounter,
    pub cluster_requests_received: IntCounter,
    /// Engine.IO requests engineioxide refused, by reason and transport (both fixed sets,
    /// see `http::polling::Refusal`).
    pub engineio_refused: IntCounterVec,
    /// `messages_received{namespace, door="socketio"}` of each configured namespace,
    /// resolved once (a label lookup hashes the labels every time).
    received_socketio: Vec<(String, IntCounter)>,
    rates: Mutex<Rates>,
}

#[derive(Default)]
struct Rates {
    last: Option<(Instant, u64, u64, u64)>,
    snapshot: RateSnapshot,
}

/// Rates over the last sampling window.
#[derive(Debug, Clone, Copy, Default)]
pub struct RateSnapshot {
    pub in_per_second: f64,
    pub out_per_second: f64,
    pub errors_per_second: f64,
}

const PREFIX: &str = "socket_bridge";

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help).namespace(PREFIX), labels).expect("valid metric");
    r.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::with_opts(Opts::new(name, help).namespace(PREFIX)).expect("valid metric");
    r.register(Box::new(g.clone())).expect("unique metric");
    g
}

/// Latency buckets from 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] =
    &[0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

impl Metrics {
    /// Builds the registry, with every known label combination at zero so that rates and
    /// alerts work from the first scrape. Metric definitions are static, so registration
    /// cannot fail at run time; the `expect`s only guard against a programming error.
    pub fn new(namespaces: &[String]) -> Self {
        let mut metrics = Self::unlabelled();
        for ns in namespaces {
            let received = metrics.messages_received.with_label_values(&[ns.as_str(), "socketio"]);
            metrics.received_socketio.push((ns.clone(), received));
            for door in ["grpc", "rest", "offline"] {
                metrics.messages_sent.with_label_values(&[ns.as_str(), door]);
            }
        }
        for door in [Door::Grpc, Door::Rest] {
            for result in ["ok", "invalid", "not_found", "unavailable", "exhausted"] {
                metrics.push_requests.with_label_values(&[door.as_str(), result]);
            }
            metrics.push_duration.with_label_values(&[door.as_str()]);
        }
        for kind in ErrorKind::ALL {
            metrics.errors.with_label_values(&[kind.as_str()]);
        }
        for reason in DISCONNECT_REASONS {
            metrics.disconnects.with_label_values(&[reason]);
        }
        for outcome in ["acked", "timeout", "failed"] {
            metrics.client_acks.with_label_values(&[outcome]);
        }
        for reason in [
            "lifecycle_queue_full",
            "offline_expired",
            "offline_full",
            "socket_buffer_full",
            "ack_unsent",
            "redis_unavailable",
            "cluster_outbox_full",
        ] {
            metrics.dropped_messages.with_label_values(&[reason]);
        }
        metrics
    }

    fn unlabelled() -> Self {
        let r = Registry::new();
        let push_duration = HistogramVec::new(
            HistogramOpts::new("push_duration_seconds", "Time to run a push, acks included, by door.")
                .namespace(PREFIX)
                .buckets(LATENCY_BUCKETS.to_vec()),
            &["door"],
        )
        .expect("valid metric");
        r.register(Box::new(push_duration.clone())).expect("unique metric");
        let backend_ack_duration = Histogram::with_opts(
            HistogramOpts::new(
                "backend_ack_duration_seconds",
                "Time from a client event to the backend's ack reaching the bridge.",
            )
            .namespace(PREFIX)
            .buckets(LATENCY_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        r.register(Box::new(backend_ack_duration.clone())).expect("unique metric");
        let backend_streams = IntGaugeVec::new(
            Opts::new("backend_streams", "Backend Events streams subscribed, by group.").namespace(PREFIX),
            &["group"],
        )
        .expect("valid metric");
        r.register(Box::new(backend_streams.clone())).expect("unique metric");
        #[cfg(target_os = "linux")]
        {
            let _ = r.register(Box::new(prometheus::process_collector::ProcessCollector::for_self()));
        }
        Self {
            connections: gauge(&r, "connections", "Sockets connected to this instance."),
            unique_users: gauge(&r, "unique_users", "Distinct users with at least one socket."),
            connects: counter(&r, "connects_total", "Sockets that connected."),
            disconnects: counter_vec(&r, "disconnects_total", "Sockets that disconnected, by reason.", &["reason"]),
            messages_received: counter_vec(
                &r,
                "messages_received_total",
                "Events received from clients, by namespace and door.",
                &["namespace", "door"],
            ),
            messages_sent: counter_vec(
                &r,
                "messages_sent_total",
                "Events delivered to client sockets, by namespace and the door that pushed them.",
                &["namespace", "door"],
            ),
            push_requests: counter_vec(
                &r,
                "push_requests_total",
                "Push requests, by door and result.",
                &["door", "result"],
            ),
            push_duration,
            backend_ack_duration,
            backend_streams,
            backend_subscribers: gauge(&r, "backend_subscribers", "Backend Events streams subscribed, all groups."),
            rooms: gauge(&r, "rooms", "Rooms (internal per-user rooms excluded)."),
            event_queue_depth: gauge(&r, "event_queue_depth", "Client events queued to backend streams, unread."),
            undelivered_events: gauge(&r, "undelivered_events", "Client events waiting for a backend subscriber."),
            undeliverable_dropped: counter(
                &r,
                "undeliverable_dropped_total",
                "Client events dropped because no backend subscribed in time or the buffer was full.",
            ),
            dropped_messages: counter_vec(&r, "dropped_messages_total", "Messages dropped, by reason.", &["reason"]),
            offline_stored: counter(&r, "offline_stored_total", "Pushes kept for offline users."),
            offline_delivered: counter(&r, "offline_delivered_total", "Kept pushes delivered on connect."),
            errors: counter_vec(&r, "errors_total", "Errors, by kind.", &["kind"]),
            client_acks: counter_vec(
                &r,
                "client_acks_total",
                "Client acknowledgements awaited by pushes, by outcome.",
                &["outcome"],
            ),
            draining: gauge(&r, "draining", "1 while the instance is shutting down."),
            redis_up: gauge(
                &r,
                "redis_up",
                "Cluster mode: 1 while Redis answers, 0 when unreachable; -1 in embedded mode.",
            ),
            cluster_nodes: gauge(&r, "cluster_nodes", "Cluster mode: live instances, this one included."),
            cluster_redelivered: counter(
                &r,
                "cluster_redelivered_total",
                "Cluster mode: client events delivered again to a backend (unacknowledged before).",
            ),
            cluster_requests_received: counter(
                &r,
                "cluster_requests_received_total",
                "Cluster mode: operations other instances sent here (pushes, room changes, listings).",
            ),
            engineio_refused: counter_vec(
                &r,
                "engineio_refused_total",
                "Engine.IO requests refused (HTTP 4xx/5xx from the Engine.IO layer), by reason and transport.",
                &["reason", "transport"],
            ),
            registry: r,
            received_socketio: Vec::new(),
            rates: Mutex::default(),
        }
    }

    /// Counts one client event received in `namespace`.
    pub fn client_event_received(&self, namespace: &str) {
        match self.received_socketio.iter().find(|(ns, _)| ns == namespace) {
            Some((_, counter)) => counter.inc(),
            None => self.messages_received.with_label_values(&[namespace, "socketio"]).inc(),
        }
    }

    pub fn error(&self, kind: ErrorKind) {
        self.errors.with_label_values(&[kind.as_str()]).inc();
    }

    pub fn dropped(&self, reason: &str, n: u64) {
        self.dropped_messages.with_label_values(&[reason]).inc_by(n);
    }

    fn total(vec: &IntCounterVec) -> u64 {
        use prometheus::core::Collector;
        vec.collect().iter().flat_map(|family| family.get_metric()).map(|m| m.get_counter().value() as u64).sum()
    }

    pub fn messages_in_total(&self) -> u64 {
        Self::total(&self.messages_received)
    }

    pub fn messages_out_total(&self) -> u64 {
        Self::total(&self.messages_sent)
    }

    pub fn errors_total(&self) -> u64 {
        Self::total(&self.errors)
    }

    /// Called once a second.
    pub fn sample_rates(&self) {
        let now = Instant::now();
        let (i, o, e) = (self.messages_in_total(), self.messages_out_total(), self.errors_total());
        let Ok(mut rates) = self.rates.lock() else { return };
        if let Some((then, pi, po, pe)) = rates.last {
            let secs = now.duration_since(then).as_secs_f64().max(0.001);
            rates.snapshot = RateSnapshot {
                in_per_second: i.saturating_sub(pi) as f64 / secs,
                out_per_second: o.saturating_sub(po) as f64 / secs,
                errors_per_second: e.saturating_sub(pe) as f64 / secs,
            };
        }
        rates.last = Some((now, i, o, e));
    }

    pub fn rates(&self) -> RateSnapshot {
        self.rates.lock().map(|r| r.snapshot).unwrap_or_default()
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let families = self.registry.gather();
        prometheus::TextEncoder::new().encode_to_string(&families).unwrap_or_default()
    }
}
