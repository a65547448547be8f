//! Accepted TCP connections, on both listeners. An outsider can open connections and send
//! nothing, half an HTTP/2 preface, or a request head one byte at a time; each of those
//! holds a file descriptor and some memory. So every connection:
//!
//! - must deliver its first request (head complete) within `first_request` of being
//!   accepted, however many bytes trickle in;
//! - is closed once it has had no request in flight for `idle` (a response body still
//!   streaming, a long-poll still waiting, or an upgraded websocket all count as busy; the
//!   websocket's own heartbeat watches it from then on);
//! - when the process runs out of descriptors (`EMFILE`), is a candidate for early closing
//!   if it is idle: the oldest idle connections go first, so the listeners keep accepting
//!   and `/health` keeps answering. If nothing can be closed, one spare descriptor kept for
//!   the purpose lets the listener accept and close the newcomer at once, rather than leave
//!   it hanging in the backlog.
//!
//! Accept failures and early closes are counted in `socket_bridge_errors_total` and logged
//! as one summary line per interval.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::http;
use futures::task::AtomicWaker;
use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Sleep;

use crate::telemetry::metrics::ErrorKind;
use crate::telemetry::summary::Summary;

/// Deadlines of one listener's connections.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From accept to the first complete request head.
    pub first_request: Duration,
    /// Longest time without a request in flight after the first.
    pub idle: Duration,
}

/// Idle connections closed per round when descriptors run out. Small enough that a
/// round closes only what the backlog needs, big enough that a burst of newcomers is
/// through in a few rounds (1,050 silent sockets at a limit of 1,024: `/health` answered
/// within tens of milliseconds in `tests/edge.rs`).
const EVICT_BATCH: usize = 32;

/// What the connections of this process share: the registry used to find idle ones when
/// descriptors run out. Descriptors are a per-process resource, so the registry is too.
struct Registry {
    epoch: Instant,
    next_id: AtomicU64,
    live: Mutex<HashMap<u64, Arc<ConnState>>>,
    /// Connections told to close that have not closed yet: no new round starts until
    /// they are gone (or the last round is 100 ms old), so one shortage never closes more
    /// than it needs.
    closing: AtomicU64,
    last_round_ms: AtomicU64,
    spare: Mutex<Option<std::fs::File>>,
}

fn registry() -> &'static Registry {
    static REGISTRY: OnceLock<Registry> = OnceLock::new();
    REGISTRY.get_or_init(|| Registry {
        epoch: Instant::now(),
        next_id: AtomicU64::new(1),
        live: Mutex::new(HashMap::new()),
        closing: AtomicU64::new(0),
        last_round_ms: AtomicU64::new(0),
        spare: Mutex::new(std::fs::File::open("/dev/null").ok()),
    })
}

impl Registry {
    fn millis(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Whether connections told to close in the last round are still on their way out.
    fn round_in_progress(&self) -> bool {
        self.closing.load(Ordering::Acquire) > 0
            && self.millis().saturating_sub(self.last_round_ms.load(Ordering::Acquire)) < 100
    }

    /// Tells up to `n` of the longest-idle connections to close; returns how many.
    fn close_idle(&self, n: usize) -> usize {
        self.last_round_ms.store(self.millis(), Ordering::Release);
        let Ok(live) = self.live.lock() else { return 0 };
        let mut idle: Vec<&Arc<ConnState>> = live.values().filter(|c| c.is_idle() && !c.closing()).collect();
        idle.sort_by_key(|c| c.idle_since.load(Ordering::Relaxed));
        let chosen = idle.len().min(n);
        for c in &idle[..chosen] {
            self.closing.fetch_add(1, Ordering::AcqRel);
            c.evicted.store(true, Ordering::Release);
            c.waker.wake();
        }
        chosen
    }

    /// Frees the spare descriptor, accepts one waiting connection and closes it, then
    /// takes the spare back. True if a connection was turned away.
    fn shed_one(&self, listener: &TcpListener) -> bool {
        let Ok(mut spare) = self.spare.lock() else { return false };
        if spare.take().is_none() {
            *spare = std::fs::File::open("/dev/null").ok();
            return false;
        }
        let shed = match futures::FutureExt::now_or_never(listener.accept()) {
            Some(Ok((stream, _))) => {
                drop(stream);
                true
            }
            _ => false,
        };
        *spare = std::fs::File::open("/dev/null").ok();
        shed
    }
}

/// One connection's state, shared by its IO wrapper (which enforces the deadlines) and
/// the request layer (which marks requests in flight).
pub struct ConnState {
    id: u64,
    deadlines: Deadlines,
    in_flight: AtomicU32,
    served: AtomicBool,
    upgraded: AtomicBool,
    evicted: AtomicBool,
    /// Milliseconds since the registry's epoch at which the last request ended (or the
    /// connection was accepted).
    idle_since: AtomicU64,
    waker: AtomicWaker,
}

impl ConnState {
    fn is_idle(&self) -> bool {
        !self.upgraded.load(Ordering::Acquire) && self.in_flight.load(Ordering::Acquire) == 0
    }

    fn closing(&self) -> bool {
        self.evicted.load(Ordering::Acquire)
    }

    /// When the connection must be closed if it stays as it is; None while it is busy.
    fn deadline(&self) -> Option<tokio::time::Instant> {
        if !self.is_idle() {
            return None;
        }
        let limit =
            if self.served.load(Ordering::Acquire) { self.deadlines.idle } else { self.deadlines.first_request };
        let since = registry().epoch + Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        Some(tokio::time::Instant::from_std(since + limit))
    }

    /// Marks a request in flight until the returned guard is dropped.
    pub fn begin(self: &Arc<Self>) -> Busy {
        self.served.store(true, Ordering::Release);
        self.in_flight.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// The connection now belongs to a websocket, whose heartbeat watches it.
    pub fn upgraded(&self) {
        self.upgraded.store(true, Ordering::Release);
        // The waker is the HTTP connection's task, which ends with the upgrade: holding it
        // would keep that task's memory (a few KB) for the websocket's whole life.
        drop(self.waker.take());
        // Never idle from now on, so never a candidate for closing early.
        if let Ok(mut live) = registry().live.lock() {
            live.remove(&self.id);
        }
    }
}

/// A request in flight on a connection.
pub struct Busy(Arc<ConnState>);

impl Busy {
    pub fn state(&self) -> &Arc<ConnState> {
        &self.0
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.in_flight.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.idle_since.store(registry().millis(), Ordering::Release);
            // The reader arms its timer on its next poll.
            self.0.waker.wake();
        }
    }
}

/// A response body that keeps its request marked in flight until it is finished or
/// dropped (a server-sent event stream, a long body being written).
pub struct BusyBody<B> {
    inner: B,
    _busy: Busy,
}

impl<B> BusyBody<B> {
    pub fn new(inner: B, busy: Busy) -> Self {
        Self { inner, _busy: busy }
    }
}

impl<B: Body + Unpin> Body for BusyBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// An accepted TCP stream under the deadlines above. Reads fail with `TimedOut` once a
/// deadline passes (or the registry picked the connection to close), which ends the
/// connection in whichever server drives it.
pub struct Tracked {
    io: TcpStream,
    state: Arc<ConnState>,
    timer: Option<Pin<Box<Sleep>>>,
    remote: SocketAddr,
}

impl Tracked {
    fn new(io: TcpStream, remote: SocketAddr, deadlines: Deadlines) -> Self {
        let r = registry();
        let state = Arc::new(ConnState {
            id: r.next_id.fetch_add(1, Ordering::Relaxed),
            deadlines,
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(false),
            upgraded: AtomicBool::new(false),
            evicted: AtomicBool::new(false),
            idle_since: AtomicU64::new(r.millis()),
            waker: AtomicWaker::new(),
        });
        if let Ok(mut live) = r.live.lock() {
            live.insert(state.id, state.clone());
        }
        Self { io, state, timer: None, remote }
    }

    pub fn state(&self) -> &Arc<ConnState> {
        &self.state
    }

    pub fn remote(&self) -> SocketAddr {
        self.remote
    }

    /// Called when the inner read is pending: arms the timer for the current deadline and
    /// fails the read once it has passed.
    fn check_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.state.waker.register(cx.waker());
        if self.state.closing() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "closed to free a file descriptor")));
        }
        let Some(deadline) = self.state.deadline() else {
            self.timer = None;
            return Poll::Pending;
        };
        let timer = self.timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
        if timer.deadline() != deadline {
            timer.as_mut().reset(deadline);
        }
        match timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "connection idle too long"))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        let r = registry();
        if let Ok(mut live) = r.live.lock() {
            live.remove(&self.state.id);
        }
        if self.state.closing() {
            r.closing.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl AsyncRead for Tracked {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        // A websocket's reads are the hot path: nothing to check once upgraded. The timer
        // goes (it holds the finished HTTP task's waker, and with it the task's memory).
        if this.state.upgraded.load(Ordering::Relaxed) {
            if this.timer.is_some() {
                this.timer = None;
            }
            return Pin::new(&mut this.io).poll_read(cx, buf);
        }
        if this.state.closing() {
            return Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "closed to free a file descriptor")));
        }
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Ready(r) => Poll::Ready(r),
            Poll::Pending => this.check_deadline(cx),
        }
    }
}

impl AsyncWrite for Tracked {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }
}

/// What tonic puts in each request's extensions for a [`Tracked`] connection.
#[derive(Clone)]
pub struct ConnInfo {
    pub remote: SocketAddr,
    pub state: Arc<ConnState>,
}

impl tonic::transport::server::Connected for Tracked {
    type ConnectInfo = ConnInfo;

    fn connect_info(&self) -> ConnInfo {
        ConnInfo { remote: self.remote, state: self.state.clone() }
    }
}

/// One listener's accepting side: deadlines for what it accepts, and what it does when
/// accepting fails.
pub struct Acceptor {
    listener: TcpListener,
    deadlines: Deadlines,
    door: &'static str,
    count: Counter,
    summary: Summary,
}

/// Where refusals are counted (`socket_bridge_errors_total{kind}`).
pub type Counter = Arc<dyn Fn(ErrorKind, u64) + Send + Sync>;

impl Acceptor {
    pub fn new(
        listener: TcpListener,
        deadlines: Deadlines,
        door: &'static str,
        count: Counter,
        summary_interval: Duration,
    ) -> Self {
        let summary = Summary::new(summary_interval, move |report| {
            tracing::warn!(
                door,
                accept_failures = report.count("accept_failed"),
                idle_closed_early = report.count("idle_closed"),
                turned_away = report.count("turned_away"),
                last_error = report.note(),
                interval_s = report.interval().as_secs(),
                "accepting connections failed (out of file descriptors?): idle connections were closed early to make room"
            );
        });
        Self { listener, deadlines, door, count, summary }
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The next connection. Never fails: accept errors are handled here (see the module
    /// documentation) and retried.
    pub async fn accept(&self) -> Tracked {
        loop {
            match self.listener.accept().await {
                Ok((stream, remote)) => {
                    let _ = stream.set_nodelay(true);
                    return Tracked::new(stream, remote, self.deadlines);
                }
                Err(e) => self.on_accept_error(e).await,
            }
        }
    }

    async fn on_accept_error(&self, e: io::Error) {
        self.summary.add("accept_failed", 1, None);
        self.summary.note(e.to_string());
        (self.count)(ErrorKind::AcceptFailed, 1);
        let out_of_descriptors = matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE));
        if !out_of_descriptors {
            tracing::debug!(door = self.door, error = %e, "accept failed");
            tokio::time::sleep(Duration::from_millis(10)).await;
            return;
        }
        let r = registry();
        if r.round_in_progress() {
            // Connections told to close in the last round are on their way out.
            tokio::time::sleep(Duration::from_millis(1)).await;
            return;
        }
        let closed = r.close_idle(EVICT_BATCH);
        if closed > 0 {
            self.summary.add("idle_closed", closed as u64, None);
            (self.count)(ErrorKind::IdleClosedEarly, closed as u64);
            tokio::task::yield_now().await;
            return;
        }
        if r.shed_one(&self.listener) {
            self.summary.add("turned_away", 1, None);
            (self.count)(ErrorKind::TurnedAway, 1);
        }
        // Nothing idle to close: every descriptor serves a request. Try again shortly.
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The gRPC side's layer: marks each call in flight on its connection until its response
/// body is finished.
#[derive(Clone, Copy, Default)]
pub struct TrackLayer;

impl<S> tower::Layer<S> for TrackLayer {
    type Service = TrackService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TrackService(inner)
    }
}

#[derive(Clone)]
pub struct TrackService<S>(S);

impl<S, ReqBody, ResBody> tower::Service<http::Request<ReqBody>> for TrackService<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<ResBody>>,
    S::Future: Send + 'static,
    ResBody: Body + Unpin,
{
    type Response = http::Response<BusyBody<ResBody>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<ReqBody>) -> Self::Future {
        let busy = request.extensions().get::<ConnInfo>().map(|info| info.state.begin());
        let future = self.0.call(request);
        Box::pin(async move {
            let response = future.await?;
            Ok(match busy {
                Some(busy) => response.map(|body| BusyBody::new(body, busy)),
                None => response.map(|body| BusyBody { inner: body, _busy: untracked() }),
            })
        })
    }
}

/// A guard on a state no connection reads: for requests that came without one.
fn untracked() -> Busy {
    static NONE: OnceLock<Arc<ConnState>> = OnceLock::new();
    let state = NONE.get_or_init(|| {
        Arc::new(ConnState {
            id: 0,
            deadlines: Deadlines { first_request: Duration::MAX, idle: Duration::MAX },
            in_flight: AtomicU32::new(0),
            served: AtomicBool::new(true),
            upgraded: AtomicBool::new(true),
            evicted: AtomicBool::new(false),
            idle_since: AtomicU64::new(0),
            waker: AtomicWaker::new(),
        })
    });
    state.begin()
}

/// The gRPC listener as the stream of connections tonic takes.
pub fn incoming(acceptor: Acceptor) -> impl futures::Stream<Item = Result<Tracked, io::Error>> {
    futures::stream::unfold(acceptor, |acceptor| async move {
        let conn = acceptor.accept().await;
        Some((Ok(conn), acceptor))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn deadlines() -> Deadlines {
        Deadlines { first_request: Duration::from_millis(200), idle: Duration::from_millis(400) }
    }

    async fn pair() -> (Tracked, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (server, remote) = listener.accept().await.unwrap();
        (Tracked::new(server, remote, deadlines()), client)
    }

    async fn read_result(t: &mut Tracked, limit: Duration) -> Option<io::Result<usize>> {
        use tokio::io::AsyncReadExt;
        let mut buf = [0u8; 64];
        tokio::time::timeout(limit, t.read(&mut buf)).await.ok()
    }

    #[tokio::test]
    async fn a_silent_connection_fails_its_read_at_the_first_request_deadline() {
        let (mut t, _client) = pair().await;
        let started = Instant::now();
        let r = read_result(&mut t, Duration::from_secs(2)).await.expect("read ends");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(started.elapsed() >= Duration::from_millis(190), "{:?}", started.elapsed());
    }

    #[tokio::test]
    async fn a_request_in_flight_holds_the_deadline_off_and_idle_time_counts_from_its_end() {
        let (mut t, _client) = pair().await;
        let busy = t.state().begin();
        assert!(read_result(&mut t, Duration::from_millis(500)).await.is_none(), "no deadline while busy");
        drop(busy);
        let ended = Instant::now();
        let r = read_result(&mut t, Duration::from_secs(2)).await.expect("read ends");
        assert_eq!(r.unwrap_err().kind(), io::ErrorKind::TimedOut);
        assert!(ended.elapsed() >= Duration::from_millis(390), "idle limit applies after the first request");
    }

    #[tokio::test]
    async fn upgraded_connections_have_no_deadline_and_are_never_closed_early() {
        let (mut t, _client) = pair().await;
        t.state().upgraded();
        assert!(read_result(&mut t, Duration::from_millis(500)).await.is_none());
        assert!(!t.state().is_idle());
    }
}
