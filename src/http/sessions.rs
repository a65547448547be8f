//! The gate in front of the Socket.IO endpoint (`/socket.io/`). socketioxide creates an
//! Engine.IO session for every handshake and only the Socket.IO layer's `max_connections`
//! counts sockets, once they have joined a namespace; before that an anonymous client
//! could open sessions without bound. So here, before socketioxide sees a request:
//!
//! - **Count and cap sessions from the handshake**: each handshake gets a ticket that
//!   socketioxide keeps in the session's request parts; it is counted until the session
//!   is gone. Over `socketio.max_sessions` in total → 503, over
//!   `socketio.max_sessions_per_address` from one client address → 429, both with
//!   `Retry-After`. Sessions that never join a namespace end after
//!   `socketio.connect_timeout_ms` (socketioxide's connect timeout), freeing their ticket.
//! - **Bind sessions to their creator's address**: a socket's id is its Engine.IO session
//!   id, and the backend sees socket ids. A long-polling session is bound to the client
//!   address that created it as soon as its id exists (read from the handshake's answer);
//!   a websocket session, whose id travels only over that websocket, when it joins a
//!   namespace (before its id is shown to anyone). Every request naming a bound session
//!   (polling GET or POST, websocket upgrade) must come from that address; others get
//!   the same answer as an unknown session, so the answer reveals nothing. Behind
//!   proxies the client address comes from `X-Forwarded-For` only for
//!   `http.trusted_proxies` (see `client_addr`); without them every client shares the
//!   proxy's address and the binding cannot tell them apart.
//! - **Check the origin and answer CORS** as `socketio.cors_origins` says; the other
//!   routes (admin, API) grant no origin at all.
//! - **Give freed memory back**: after a flood of sessions ends, glibc keeps the freed
//!   heap; the upkeep task calls `malloc_trim` once the count has dropped by
//!   [`TRIM_AFTER_DROP`] from its peak.

use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::http::{HeaderValue, Method, Request, Response, StatusCode, header};
use dashmap::DashMap;
use prometheus::{IntGauge, Opts};
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowHeaders, AllowOrigin, Cors, CorsLayer};

use super::client_addr::{ClientAddr, limit_key};
use crate::config::Config;
use crate::hub::Hub;
use crate::telemetry::metrics::ErrorKind;
use crate::telemetry::summary::Summary;

/// socketioxide's endpoint (its default path).
const ENGINE_PATH: &str = "/socket.io";
/// Seconds a refused handshake is told to wait: sessions that never connect end within
/// the connect timeout, so room appears within seconds.
const RETRY_AFTER_SECONDS: u64 = 5;
/// Sessions the count must fall by, from its peak, before freed memory is given back.
/// Steady load never drops this much, so it never pays for a trim; a flood's end does.
const TRIM_AFTER_DROP: usize = 1_000;
/// How often the upkeep task looks.
const UPKEEP_EVERY: Duration = Duration::from_secs(5);

/// What the gate counts and remembers, shared by every request and ticket.
struct Shared {
    addr: ClientAddr,
    max_total: usize,
    max_per_address: usize,
    total: AtomicUsize,
    peak: AtomicUsize,
    per_address: Mutex<HashMap<IpAddr, usize>>,
    /// Session id → the client address that created it (see `SessionTicket::bind`).
    bound: DashMap<Box<str>, IpAddr>,
    /// `Some`: only these origins may open sessions from a browser.
    origins: Option<Vec<HeaderValue>>,
    hub: Arc<Hub>,
    gauge: Option<IntGauge>,
    summary: Summary,
}

/// One Engine.IO session's place in the count. socketioxide keeps a clone in the
/// session's request parts (`socket.req_parts().extensions`); when the session is gone
/// its place is given back.
#[derive(Clone)]
pub struct SessionTicket(Arc<Ticket>);

struct Ticket {
    shared: Arc<Shared>,
    client: Option<IpAddr>,
    sid: OnceLock<Box<str>>,
    /// Admitted, so counted in the sessions gauge. A refused attempt holds its place in the
    /// total only while it is being refused, and is never shown as a session.
    admitted: bool,
}

impl SessionTicket {
    /// Binds session `sid` to the client address that created it: from now on every
    /// request naming it must come from there. Called with the polling handshake's answer,
    /// and again (a no-op then) when the session first joins a namespace, before its id
    /// reaches the backend.
    pub fn bind(&self, sid: &str) {
        if let Some(client) = self.0.client
            && self.0.sid.set(sid.into()).is_ok()
        {
            self.0.shared.bound.insert(sid.into(), client);
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let s = &self.shared;
        s.total.fetch_sub(1, Ordering::AcqRel);
        if let Some(g) = s.gauge.as_ref().filter(|_| self.admitted) {
            g.dec();
        }
        if let Some(client) = self.client
            && s.max_per_address > 0
            && let Ok(mut per) = s.per_address.lock()
        {
            let key = limit_key(client);
            if let Some(n) = per.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    per.remove(&key);
                }
            }
        }
        if let Some(sid) = self.sid.get() {
            s.bound.remove(sid);
        }
    }
}

/// Why a request was turned away; each is its own Engine.IO error answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    TooManyInTotal,
    TooManyFromAddress,
    Origin,
    /// A request naming a session bound to another address: answered exactly like an
    /// unknown session.
    NotYours,
}

impl Refusal {
    fn response(self) -> Response<Body> {
        let (status, code, message) = match self {
            Refusal::TooManyInTotal => {
                (StatusCode::SERVICE_UNAVAILABLE, 4, "the server is at its session limit; retry later")
            }
            Refusal::TooManyFromAddress => {
                (StatusCode::TOO_MANY_REQUESTS, 4, "too many sessions from this address; retry later")
            }
            Refusal::Origin => (StatusCode::FORBIDDEN, 4, "origin not allowed"),
            Refusal::NotYours => (StatusCode::BAD_REQUEST, 1, "Session ID unknown"),
        };
        let body = serde_json::json!({ "code": code, "message": message }).to_string();
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if matches!(self, Refusal::TooManyInTotal | Refusal::TooManyFromAddress) {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        response
    }

    fn kind(self) -> (ErrorKind, &'static str) {
        match self {
            Refusal::TooManyInTotal => (ErrorKind::SessionLimit, "over_total"),
            Refusal::TooManyFromAddress => (ErrorKind::SessionLimit, "over_address"),
            Refusal::Origin => (ErrorKind::OriginRefused, "origin"),
            Refusal::NotYours => (ErrorKind::SessionAddressMismatch, "other_address"),
        }
    }
}

impl Shared {
    /// Takes a place for a new session, or says why not.
    fn admit(self: &Arc<Self>, client: Option<IpAddr>) -> Result<SessionTicket, Refusal> {
        if let Some(client) = client
            && self.max_per_address > 0
        {
            let Ok(mut per) = self.per_address.lock() else { return Err(Refusal::TooManyInTotal) };
            let n = per.entry(limit_key(client)).or_default();
            if *n >= self.max_per_address {
                return Err(Refusal::TooManyFromAddress);
            }
            *n += 1;
        }
        // From here the ticket gives back what was taken, whether it is kept or not.
        let total = self.total.fetch_add(1, Ordering::AcqRel) + 1;
        let admitted = total <= self.max_total;
        let ticket = SessionTicket(Arc::new(Ticket { shared: self.clone(), client, sid: OnceLock::new(), admitted }));
        if !admitted {
            return Err(Refusal::TooManyInTotal);
        }
        if let Some(g) = &self.gauge {
            g.inc();
        }
        self.peak.fetch_max(total, Ordering::AcqRel);
        Ok(ticket)
    }

    /// Checks a request for the Engine.IO endpoint; a new session's ticket is put in the
    /// request's extensions.
    fn check<B>(self: &Arc<Self>, request: &mut Request<B>) -> Result<(), Refusal> {
        let client = self.addr.of(request);
        if let Some(sid) = query_value(request.uri().query(), "sid") {
            if let Some(owner) = self.bound.get(sid)
                && Some(*owner) != client
            {
                return Err(Refusal::NotYours);
            }
            return Ok(());
        }
        // Only a GET without a session id opens one (preflights and the like do not).
        if request.method() != Method::GET {
            return Ok(());
        }
        if let (Some(allowed), Some(origin)) = (&self.origins, request.headers().get(header::ORIGIN))
            && !allowed.contains(origin)
        {
            return Err(Refusal::Origin);
        }
        let ticket = self.admit(client)?;
        request.extensions_mut().insert(ticket);
        Ok(())
    }

    fn refused(&self, refusal: Refusal, client: Option<IpAddr>) {
        let (kind, what) = refusal.kind();
        self.hub.metrics().error(kind);
        self.summary.add(what, 1, client);
    }

    /// Gives freed memory back once a flood of sessions is over.
    fn upkeep(&self) {
        let now = self.total.load(Ordering::Acquire);
        let peak = self.peak.load(Ordering::Acquire);
        if peak >= now + TRIM_AFTER_DROP {
            self.peak.store(now, Ordering::Release);
            let took = crate::telemetry::memory::trim();
            tracing::debug!(sessions = now, peak, took_ms = took.as_millis() as u64, "returned freed memory to the OS");
        }
    }
}

/// Largest Engine.IO OPEN packet read back from a handshake answer (they are about 120
/// bytes).
const MAX_OPEN_PACKET: usize = 4096;

/// The session id in an Engine.IO OPEN packet: `0{"sid":"…",…}`.
fn open_packet_sid(packet: &[u8]) -> Option<&str> {
    let text = std::str::from_utf8(packet).ok()?.strip_prefix('0')?;
    let rest = &text[text.find("\"sid\":\"")? + 7..];
    rest.split('"').next().filter(|sid| !sid.is_empty())
}

/// The value of `name` in a query string (Engine.IO's parameters are plain, unescaped).
fn query_value<'a>(query: Option<&'a str>, name: &str) -> Option<&'a str> {
    query?.split('&').find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
}

fn is_engine_path(path: &str) -> bool {
    path.strip_prefix(ENGINE_PATH).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

/// The CORS rules of the Socket.IO endpoint (see `socketio.cors_origins`).
fn cors(origins: &[String]) -> CorsLayer {
    let methods = [Method::GET, Method::POST];
    if origins.is_empty() {
        CorsLayer::new().allow_origin(AllowOrigin::any()).allow_methods(methods).allow_headers(AllowHeaders::any())
    } else {
        CorsLayer::new()
            .allow_origin(AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok())))
            .allow_credentials(true)
            .allow_methods(methods)
            .allow_headers(AllowHeaders::mirror_request())
    }
}

/// The gate as a layer, wrapping the Socket.IO service (which wraps the rest of the app).
#[derive(Clone)]
pub struct SessionGate {
    shared: Arc<Shared>,
    cors: CorsLayer,
}

impl SessionGate {
    pub fn new(config: &Config, hub: Arc<Hub>) -> Self {
        let s = &config.socketio;
        let gauge = IntGauge::with_opts(
            Opts::new("engineio_sessions", "Engine.IO sessions open, counted from the handshake.")
                .namespace("socket_bridge"),
        )
        .ok()
        .filter(|g| hub.metrics().registry.register(Box::new(g.clone())).is_ok());
        let summary = Summary::new(config.summary_interval(), |r| {
            tracing::warn!(
                over_total = r.count("over_total"),
                over_address = r.count("over_address"),
                origin = r.count("origin"),
                other_address = r.count("other_address"),
                addresses = r.address_count(),
                busiest = %r.top_addresses(),
                interval_s = r.interval().as_secs(),
                "Engine.IO requests refused (session limits, origin, or a session id used from another address)"
            );
        });
        let shared = Arc::new(Shared {
            addr: ClientAddr::new(&config.http.trusted_proxies),
            max_total: s.max_sessions,
            max_per_address: s.max_sessions_per_address,
            total: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            bound: DashMap::new(),
            origins: (!s.cors_origins.is_empty())
                .then(|| s.cors_origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()).collect()),
            hub,
            gauge,
            summary,
        });
        let weak = Arc::downgrade(&shared);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(UPKEEP_EVERY);
            loop {
                tick.tick().await;
                let Some(shared) = weak.upgrade() else { return };
                shared.upkeep();
            }
        });
        Self { shared, cors: cors(&s.cors_origins) }
    }
}

impl<S: Clone> Layer<S> for SessionGate {
    type Service = SessionGateService<S>;

    fn layer(&self, inner: S) -> Self::Service {
        let checked = Checks { inner: inner.clone(), shared: self.shared.clone() };
        SessionGateService { inner, guarded: self.cors.layer(checked) }
    }
}

#[derive(Clone)]
pub struct SessionGateService<S> {
    inner: S,
    guarded: Cors<Checks<S>>,
}

type BoxFuture<E> = Pin<Box<dyn Future<Output = Result<Response<Body>, E>> + Send>>;

impl<S, ResBody> Service<Request<Body>> for SessionGateService<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        // Both paths are driven with `oneshot` on a clone, which waits for readiness.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        if is_engine_path(request.uri().path()) {
            Box::pin(self.guarded.clone().oneshot(request))
        } else {
            let response = self.inner.clone().oneshot(request);
            Box::pin(async move { Ok(response.await?.map(Body::new)) })
        }
    }
}

/// The checks, inside the CORS layer so that refusals carry the CORS headers too and a
/// browser's client can read them.
#[derive(Clone)]
pub struct Checks<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S, ResBody> Service<Request<Body>> for Checks<S>
where
    S: Service<Request<Body>, Response = Response<ResBody>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    ResBody: hyper::body::Body<Data = bytes::Bytes> + Send + 'static,
    ResBody::Error: Into<axum::BoxError>,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<S::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        if let Err(refusal) = self.shared.check(&mut request) {
            self.shared.refused(refusal, self.shared.addr.of(&request));
            return Box::pin(std::future::ready(Ok(refusal.response())));
        }
        // A new long-polling session is bound as soon as its id exists: the id is in the
        // handshake's answer, and from then on only its creator may use it. (A websocket
        // session's id travels only over that websocket; it is bound when it joins.)
        let polling_ticket = request
            .extensions()
            .get::<SessionTicket>()
            .filter(|_| query_value(request.uri().query(), "transport") == Some("polling"))
            .cloned();
        let response = self.inner.clone().oneshot(request);
        Box::pin(async move {
            let response = response.await?.map(Body::new);
            let Some(ticket) = polling_ticket.filter(|_| response.status() == StatusCode::OK) else {
                return Ok(response);
            };
            let (parts, body) = response.into_parts();
            // The answer is one small Engine.IO OPEN packet, complete already.
            let bytes = axum::body::to_bytes(body, MAX_OPEN_PACKET).await.unwrap_or_default();
            if let Some(sid) = open_packet_sid(&bytes) {
                ticket.bind(sid);
            }
            Ok(Response::from_parts(parts, Body::from(bytes)))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_values_and_paths() {
        assert_eq!(query_value(Some("EIO=4&transport=polling&sid=abc"), "sid"), Some("abc"));
        assert_eq!(query_value(Some("EIO=4&transport=polling"), "sid"), None);
        assert_eq!(query_value(Some("xsid=1"), "sid"), None);
        assert_eq!(query_value(None, "sid"), None);
        assert!(is_engine_path("/socket.io/"));
        assert!(is_engine_path("/socket.io"));
        assert!(!is_engine_path("/socket.io-admin"));
        assert!(!is_engine_path("/api/v1/status"));
    }

    #[test]
    fn the_session_id_is_read_from_the_open_packet() {
        let open = br#"0{"sid":"lv_VI97HAXpY6yYWAAAC","upgrades":["websocket"],"pingInterval":25000}"#;
        assert_eq!(open_packet_sid(open), Some("lv_VI97HAXpY6yYWAAAC"));
        assert_eq!(open_packet_sid(b"0{}"), None);
        assert_eq!(open_packet_sid(b"{\"sid\":\"x\"}"), None);
    }
}
