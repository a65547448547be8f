//! The HTTP accept loop. axum's own `serve` has no header-read timeout and no idle
//! timeout, so a client that opens connections and sends nothing, half an HTTP/2
//! preface, or its headers one byte at a time (slowloris) could hold them forever. Here
//! every connection lives under [`crate::conn`]'s deadlines: its first request head
//! within `http.header_read_timeout_ms`, and never longer than `http.idle_timeout_ms`
//! without a request in flight, HTTP/1 and HTTP/2 alike (hyper's own HTTP/1 header
//! timer is off: it also runs between keep-alive requests, which would make the idle
//! timeout meaningless for HTTP/1). HTTP/2 connections are pinged so dead peers are
//! noticed.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::StatusCode;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt;

use crate::conn::{Acceptor, BusyBody};
use crate::shutdown::Shutdown;

/// HTTP/2 keep-alive: a ping after this much silence, and the connection is closed when
/// it is not answered within [`KEEPALIVE_TIMEOUT`]. The same values as the gRPC port.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` until `shutdown`, then waits up to `drain` for open connections.
pub async fn serve(acceptor: Acceptor, app: Router, shutdown: Shutdown, drain: Duration) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(None);
    builder
        .http2()
        .timer(TokioTimer::new())
        .keep_alive_interval(Some(KEEPALIVE_INTERVAL))
        .keep_alive_timeout(KEEPALIVE_TIMEOUT);
    let graceful = GracefulShutdown::new();
    loop {
        let conn = tokio::select! {
            conn = acceptor.accept() => conn,
            _ = shutdown.wait() => break,
        };
        let peer = conn.remote();
        let state = conn.state().clone();
        let app = app.clone();
        let service = tower::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
            // In flight from here until its response body is finished or dropped.
            let busy = state.begin();
            let response = app.clone().oneshot(owned(request, peer));
            async move {
                let response = response.await?;
                if response.status() == StatusCode::SWITCHING_PROTOCOLS {
                    busy.state().upgraded();
                }
                Ok::<_, Infallible>(response.map(|body| Body::new(BusyBody::new(body, busy))))
            }
        });
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(conn), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, peer = %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(acceptor);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::debug!("HTTP connections still open after the drain period");
    }
}

/// socketioxide keeps the request parts for the socket's whole life; their URI and header
/// values point into hyper's 8 KiB read buffer, which then stays allocated. Owned copies
/// let it go: idle memory 28.0 → 19.8 KB per connection at 10k (release build,
/// bench/results/ANALYSIS.md).
fn owned(request: hyper::Request<hyper::body::Incoming>, peer: SocketAddr) -> hyper::Request<Body> {
    let (mut parts, body) = request.into_parts();
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in parts.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse() {
        parts.uri = uri;
    }
    parts.extensions.insert(ConnectInfo::<SocketAddr>(peer));
    hyper::Request::from_parts(parts, Body::new(body))
}
