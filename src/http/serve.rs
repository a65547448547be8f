//! The HTTP accept loop. axum's own `serve` has no header-read timeout, so a client that
//! opens connections and trickles its headers (slowloris) could hold them forever; here
//! every connection must finish its request head within `header_timeout`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::shutdown::Shutdown;

/// Serves `app` until `shutdown`, then waits up to `drain` for open connections.
pub async fn serve(listener: TcpListener, app: Router, shutdown: Shutdown, header_timeout: Duration, drain: Duration) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder.http1().timer(TokioTimer::new()).header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.wait() => break,
        };
        let _ = stream.set_nodelay(true);
        let service = app.clone().map_request(move |request: hyper::Request<hyper::body::Incoming>| {
            // socketioxide keeps the request parts for the socket's whole life; their URI and
            // header values point into hyper's 8 KiB read buffer, which then stays allocated.
            // Owned copies let it go: idle memory 28.0 → 19.8 KB per connection at 10k
            // (release build, bench/results/ANALYSIS.md).
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
            hyper::Request::from_parts(parts, axum::body::Body::new(body))
        });
        let connection =
            builder.serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service));
        let connection = graceful.watch(connection.into_owned());
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, peer = %peer, "HTTP connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::debug!("HTTP connections still open after the drain period");
    }
}
