//! The Engine.IO edge: a layer in front of socketioxide that (1) normalizes the base64 of
//! binary packets in long-polling POST bodies into the one form engineioxide decodes, and
//! (2) logs and counts every Engine.IO request that engineioxide refuses.
//!
//! Why normalize: over long-polling a client sends binary as `b` + base64. engineioxide
//! decodes it with the strict standard engine (padding required, no whitespace), while the
//! reference server decodes with Node's `Buffer.from(s, "base64")`, which skips line breaks
//! and accepts missing padding and the URL-safe alphabet. The Java client (what Android apps
//! use) encodes with `Base64.DEFAULT`: a line break every 76 characters and a trailing
//! newline. engineioxide answers those POSTs 400 and closes the session, so without this
//! layer every binary emit over polling kills the Java client's session.
//!
//! What engineioxide would need upstream so that this layer could go (engineioxide-core
//! 0.2.3, engineioxide 0.17.9):
//! - `Packet::parse` (engineioxide-core `packet.rs`) decodes a v4 `b` packet with
//!   `general_purpose::STANDARD.decode`. It would need a forgiving decode like Node's:
//!   skip ASCII whitespace (the `base64` crate has no such option, so strip it before
//!   decoding or decode with a custom engine), a `GeneralPurposeConfig` with
//!   `DecodePaddingMode::Indifferent` and `with_decode_allow_trailing_bits(true)`, and the
//!   URL-safe characters `-` and `_` read as `+` and `/`.
//! - `impl From<Error> for Response` (engineioxide `errors.rs`) answers a refused POST with
//!   400 and an empty body, and the only trace is a `debug!` inside the crate. A server
//!   needs the refusal surfaced: an error body naming the reason (like the reference's
//!   `{"code":3,"message":"Bad request"}`) and a hook such as
//!   `EngineIoHandler::on_refused(&Error, &http::request::Parts)`, so that it can log and
//!   count refusals without reading responses the way [`EngineIoEdge`] does here.
//!
//! What the layer accepts is what the reference accepts from real encoders (whitespace
//! anywhere, missing padding, the URL-safe alphabet, non-zero bits after the last byte),
//! with two deliberate exceptions
//! (bad input gets a precise refusal instead of silently lost bytes): characters in no
//! base64 alphabet, and data after `=` padding, which Node skips or drops. Such a body goes
//! to engineioxide unchanged, which refuses it; the log line names the offending byte.
//!
//! Bounds: a POST body is read into memory only up to `socketio.max_payload_bytes`, the
//! limit engineioxide applies to the same body. A longer one is handed on as it arrives
//! (the part already read first), so engineioxide answers 413 exactly as before. A body
//! that needs rewriting is copied once (at most twice the limit in memory for that
//! request, and only for its duration). The rewritten body is never longer than the
//! original except for restored `=` padding (at most 2 bytes per binary packet); a body
//! within 2 bytes per packet of the limit can therefore be refused where the reference
//! would take it.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::BoxError;
use axum::body::{Body, Bytes, HttpBody};
use axum::extract::ConnectInfo;
use axum::http::{Method, Request, Response, StatusCode};
use futures::StreamExt;
use prometheus::IntCounterVec;
use tower::layer::util::Stack;
use tower::{Layer, Service};

use crate::telemetry::metrics::Metrics;

mod normalize;
pub use normalize::{NotBase64, normalize_payload};

/// socketioxide's default Engine.IO path, which the bridge keeps.
pub const ENGINE_IO_PATH: &str = "/socket.io";
/// The Engine.IO v4 packet separator in polling payloads.
const SEPARATOR: u8 = 0x1e;
/// Refusals are logged at most once per interval (plus one summary of those left out), so
/// a misbehaving client or a crowd reconnecting with stale sessions after a restart cannot
/// flood the log; the metric counts every one.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// Puts the Engine.IO edge in front of the socketioxide layer: `max_payload_bytes` is
/// `socketio.max_payload_bytes`, refusals are counted in `metrics`.
pub fn in_front_of<L>(socketio: L, max_payload_bytes: u64, metrics: &Metrics) -> Stack<L, EngineIoEdgeLayer> {
    Stack::new(socketio, EngineIoEdgeLayer::new(max_payload_bytes, metrics.engineio_refused.clone()))
}

#[derive(Clone)]
pub struct EngineIoEdgeLayer {
    max_payload: usize,
    refusals: Arc<RefusalLog>,
}

impl EngineIoEdgeLayer {
    pub fn new(max_payload_bytes: u64, counter: IntCounterVec) -> Self {
        let refusals = Arc::new(RefusalLog::new(counter, REFUSAL_LOG_INTERVAL));
        RefusalLog::spawn_summaries(&refusals);
        Self { max_payload: usize::try_from(max_payload_bytes).unwrap_or(usize::MAX), refusals }
    }
}

impl<S> Layer<S> for EngineIoEdgeLayer {
    type Service = EngineIoEdge<S>;
    fn layer(&self, inner: S) -> EngineIoEdge<S> {
        EngineIoEdge { inner, max_payload: self.max_payload, refusals: self.refusals.clone() }
    }
}

#[derive(Clone)]
pub struct EngineIoEdge<S> {
    inner: S,
    max_payload: usize,
    refusals: Arc<RefusalLog>,
}

impl<S, B> Service<Request<Body>> for EngineIoEdge<S>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Response<Body>, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was not polled ready stays here; the ready one serves this call.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        if !is_engine_io_path(request.uri().path()) {
            return Box::pin(async move { Ok(inner.call(request).await?.map(Body::new)) });
        }
        let max_payload = self.max_payload;
        let refusals = self.refusals.clone();
        Box::pin(async move {
            let seen = Seen::of(&request);
            let (request, finding) =
                if seen.is_polling_post() { normalize_request(request, max_payload).await } else { (request, None) };
            let response = inner.call(request).await?;
            let status = response.status();
            if !(status.is_client_error() || status.is_server_error()) {
                return Ok(response.map(Body::new));
            }
            let (parts, body) = response.into_parts();
            let (reason, body) = classify(&seen, status, body).await;
            refusals.record(reason, finding.as_ref(), &seen, status);
            Ok(Response::from_parts(parts, body))
        })
    }
}

fn is_engine_io_path(path: &str) -> bool {
    path.strip_prefix(ENGINE_IO_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// What the edge notes about an Engine.IO request for its log line. Never the query (its
/// `sid` names the session) nor any header value.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    transport: Transport,
    v4: bool,
    has_sid: bool,
    peer: Option<SocketAddr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Polling,
    Websocket,
    Unknown,
}

impl Transport {
    fn as_str(self) -> &'static str {
        match self {
            Transport::Polling => "polling",
            Transport::Websocket => "websocket",
            Transport::Unknown => "unknown",
        }
    }
}

impl Seen {
    fn of(request: &Request<Body>) -> Self {
        let query = request.uri().query().unwrap_or_default();
        let param = |name: &str| query.split('&').find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='));
        let transport = match param("transport") {
            Some("polling") => Transport::Polling,
            Some("websocket") => Transport::Websocket,
            _ => Transport::Unknown,
        };
        Seen {
            method: request.method().clone(),
            transport,
            v4: param("EIO") == Some("4"),
            has_sid: param("sid").is_some(),
            peer: request.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0),
        }
    }

    fn is_polling_post(&self) -> bool {
        self.method == Method::POST && self.transport == Transport::Polling && self.v4 && self.has_sid
    }
}

/// Reads a polling POST body (up to `max_payload` bytes) and rewrites the base64 of its
/// binary packets into the standard padded form. Returns the request to hand on and, when
/// a binary packet is in no base64 form, what is wrong with it (the body then goes on
/// unchanged and engineioxide refuses it).
async fn normalize_request(request: Request<Body>, max_payload: usize) -> (Request<Body>, Option<NotBase64>) {
    let (parts, body) = request.into_parts();
    let mut stream = body.into_data_stream();
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut total = 0usize;
    loop {
        match stream.next().await {
            Some(Ok(chunk)) => {
                total = total.saturating_add(chunk.len());
                chunks.push(chunk);
                if total > max_payload {
                    // Too long: engineioxide reads it again and answers 413 as it always did.
                    let body = Body::from_stream(futures::stream::iter(chunks.into_iter().map(Ok)).chain(stream));
                    return (Request::from_parts(parts, body), None);
                }
            }
            Some(Err(e)) => {
                // The client went away mid-body: pass the same failure on.
                let failed =
                    futures::stream::iter(chunks.into_iter().map(Ok)).chain(futures::stream::once(async { Err(e) }));
                return (Request::from_parts(parts, Body::from_stream(failed)), None);
            }
            None => break,
        }
    }
    let whole = match chunks.len() {
        0 => Bytes::new(),
        1 => chunks.pop().unwrap_or_default(),
        _ => Bytes::from(chunks.concat()),
    };
    match normalize_payload(&whole) {
        Ok(None) => (Request::from_parts(parts, Body::from(whole)), None),
        Ok(Some(normalized)) => (Request::from_parts(parts, Body::from(normalized)), None),
        Err(e) => (Request::from_parts(parts, Body::from(whole)), Some(e)),
    }
}

/// Why engineioxide refused a request. A fixed set: the metric's `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Refusal {
    UnknownTransport,
    UnknownSession,
    BadHandshakeMethod,
    BadRequest,
    UnsupportedProtocol,
    BadPacket,
    ConcurrentPoll,
    BadWebsocketKey,
    PayloadTooLarge,
    Other,
}

impl Refusal {
    pub const ALL: [Refusal; 10] = [
        Refusal::UnknownTransport,
        Refusal::UnknownSession,
        Refusal::BadHandshakeMethod,
        Refusal::BadRequest,
        Refusal::UnsupportedProtocol,
        Refusal::BadPacket,
        Refusal::ConcurrentPoll,
        Refusal::BadWebsocketKey,
        Refusal::PayloadTooLarge,
        Refusal::Other,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::UnknownTransport => "unknown_transport",
            Refusal::UnknownSession => "unknown_session",
            Refusal::BadHandshakeMethod => "bad_handshake_method",
            Refusal::BadRequest => "bad_request",
            Refusal::UnsupportedProtocol => "unsupported_protocol",
            Refusal::BadPacket => "bad_packet",
            Refusal::ConcurrentPoll => "concurrent_poll",
            Refusal::BadWebsocketKey => "bad_websocket_key",
            Refusal::PayloadTooLarge => "payload_too_large",
            Refusal::Other => "other",
        }
    }

    /// What the reason means, for the log line.
    fn explain(self) -> &'static str {
        match self {
            Refusal::UnknownTransport => "the query names no known transport",
            Refusal::UnknownSession => "the sid names no open session (closed, expired, or from another instance)",
            Refusal::BadHandshakeMethod => "a handshake must be a GET",
            Refusal::BadRequest => "the request does not fit the session's transport",
            Refusal::UnsupportedProtocol => "EIO must be 4",
            Refusal::BadPacket => "the POST body holds a packet that cannot be decoded; the session was closed",
            Refusal::ConcurrentPoll => "a second GET while one is pending; the session was closed",
            Refusal::BadWebsocketKey => "a websocket upgrade without Sec-WebSocket-Key",
            Refusal::PayloadTooLarge => "the POST body is over socketio.max_payload_bytes; the session was closed",
            Refusal::Other => "refused by the Engine.IO layer",
        }
    }
}

/// The error bodies engineioxide sends (the reference server's codes), longest is 59 bytes.
const ERROR_BODY_MAX: usize = 256;

/// Names the refusal from the request and engineioxide's answer. Only the small JSON
/// error bodies are read (and handed on unchanged); others pass through untouched.
async fn classify<B>(seen: &Seen, status: StatusCode, body: B) -> (Refusal, Body)
where
    B: HttpBody<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        return (Refusal::PayloadTooLarge, Body::new(body));
    }
    if status != StatusCode::BAD_REQUEST {
        return (Refusal::Other, Body::new(body));
    }
    let body = Body::new(body);
    let Ok(bytes) = axum::body::to_bytes(body, ERROR_BODY_MAX).await else {
        return (Refusal::Other, Body::empty());
    };
    let code = serde_json::from_slice::<serde_json::Value>(&bytes).ok().and_then(|v| match &v["code"] {
        serde_json::Value::String(s) => s.parse::<u8>().ok(),
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u8::try_from(n).ok()),
        _ => None,
    });
    let reason = match code {
        Some(0) => Refusal::UnknownTransport,
        Some(1) => Refusal::UnknownSession,
        Some(2) => Refusal::BadHandshakeMethod,
        Some(3) => Refusal::BadRequest,
        Some(5) => Refusal::UnsupportedProtocol,
        Some(_) => Refusal::Other,
        None if seen.method == Method::POST => Refusal::BadPacket,
        None if seen.transport == Transport::Polling => Refusal::ConcurrentPoll,
        None if seen.transport == Transport::Websocket => Refusal::BadWebsocketKey,
        None => Refusal::Other,
    };
    (reason, Body::from(bytes))
}

/// Counts every refusal and logs the first of each interval with its reason; the others
/// of the interval go into one summary line.
pub struct RefusalLog {
    counter: IntCounterVec,
    interval: Duration,
    state: Mutex<LogState>,
}

#[derive(Default)]
struct LogState {
    /// When the last detailed line was written; None: the next refusal gets one at once.
    logged_at: Option<Instant>,
    /// Refusals not logged since then, by reason.
    left_out: BTreeMap<Refusal, u64>,
}

impl RefusalLog {
    pub fn new(counter: IntCounterVec, interval: Duration) -> Self {
        for reason in Refusal::ALL {
            for transport in [Transport::Polling, Transport::Websocket, Transport::Unknown] {
                counter.with_label_values(&[reason.as_str(), transport.as_str()]);
            }
        }
        Self { counter, interval, state: Mutex::new(LogState::default()) }
    }

    /// Writes the summary of refusals left out once their interval is over, so the last
    /// ones of a burst are reported even if no refusal follows. Ends with the log.
    fn spawn_summaries(log: &Arc<Self>) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else { return };
        let weak: Weak<Self> = Arc::downgrade(log);
        let interval = log.interval;
        runtime.spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(log) = weak.upgrade() else { return };
                log.flush(Instant::now());
            }
        });
    }

    fn record(&self, reason: Refusal, finding: Option<&NotBase64>, seen: &Seen, status: StatusCode) {
        self.counter.with_label_values(&[reason.as_str(), seen.transport.as_str()]).inc();
        let Ok(mut state) = self.state.lock() else { return };
        let now = Instant::now();
        if state.logged_at.is_some_and(|at| now.duration_since(at) < self.interval) {
            *state.left_out.entry(reason).or_default() += 1;
            return;
        }
        let left_out = std::mem::take(&mut state.left_out);
        state.logged_at = Some(now);
        drop(state);
        let detail = finding.map(ToString::to_string);
        tracing::warn!(
            reason = reason.as_str(),
            detail = detail.as_deref().unwrap_or(reason.explain()),
            status = status.as_u16(),
            method = %seen.method,
            transport = seen.transport.as_str(),
            peer = %seen.peer.map(|p| p.to_string()).unwrap_or_default(),
            not_logged_before = %summary(&left_out),
            "Engine.IO request refused (one line per {}s; socket_bridge_engineio_refused_total counts all)",
            self.interval.as_secs()
        );
    }

    fn flush(&self, now: Instant) {
        let Ok(mut state) = self.state.lock() else { return };
        if state.left_out.is_empty() || state.logged_at.is_some_and(|at| now.duration_since(at) < self.interval) {
            return;
        }
        let left_out = std::mem::take(&mut state.left_out);
        state.logged_at = None;
        drop(state);
        tracing::warn!(
            refused = left_out.values().sum::<u64>(),
            by_reason = %summary(&left_out),
            "Engine.IO requests refused and not logged one by one in the last {}s",
            self.interval.as_secs()
        );
    }
}

fn summary(counts: &BTreeMap<Refusal, u64>) -> String {
    counts.iter().map(|(r, n)| format!("{}={n}", r.as_str())).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn engine_io_paths_are_recognized() {
        assert!(is_engine_io_path("/socket.io"));
        assert!(is_engine_io_path("/socket.io/"));
        assert!(!is_engine_io_path("/socket.iox"));
        assert!(!is_engine_io_path("/api/v1/push"));
    }

    #[test]
    fn refusals_are_all_counted_but_logged_once_per_interval() {
        let counter = IntCounterVec::new(prometheus::Opts::new("t", "t"), &["reason", "transport"]).unwrap();
        let log = RefusalLog::new(counter.clone(), Duration::from_secs(3600));
        let seen = Seen { method: Method::POST, transport: Transport::Polling, v4: true, has_sid: true, peer: None };
        for _ in 0..5 {
            log.record(Refusal::BadPacket, None, &seen, StatusCode::BAD_REQUEST);
        }
        log.record(Refusal::UnknownSession, None, &seen, StatusCode::BAD_REQUEST);
        assert_eq!(counter.with_label_values(&["bad_packet", "polling"]).get(), 5);
        assert_eq!(counter.with_label_values(&["unknown_session", "polling"]).get(), 1);
        {
            let state = log.state.lock().unwrap();
            assert!(state.logged_at.is_some());
            assert_eq!(summary(&state.left_out), "unknown_session=1,bad_packet=4", "the first one was logged");
        }
        // Within the interval the summary waits; after it, it is written and the next
        // refusal is logged at once again.
        log.flush(Instant::now());
        assert!(!log.state.lock().unwrap().left_out.is_empty());
        log.flush(Instant::now() + Duration::from_secs(3601));
        let state = log.state.lock().unwrap();
        assert!(state.left_out.is_empty() && state.logged_at.is_none());
    }
}
