//! The operator's view: `/dashboard` (one embedded page), its data (`snapshot`, and a
//! server-sent `stream` of snapshots and log lines), and `GET /api/v1/logs`. All behind
//! the admin credentials (HTTP Basic), rate limited per client address, with failures
//! logged as one summary line per interval.

use std::convert::Infallible;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::Json;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Response};
use futures::Stream;
use serde::{Deserialize, Serialize};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::{BroadcastStream, IntervalStream};

use super::client_addr::ClientAddr;
use super::error::ApiError;
use crate::hub::Hub;
use crate::hub::auth::AdminCredentials;
use crate::telemetry::logs::{self, LogEntry};
use crate::telemetry::metrics::ErrorKind;
use crate::telemetry::summary::Summary;

const PAGE: &str = include_str!("dashboard.html");
/// Most rooms listed in a snapshot.
const SNAPSHOT_ROOMS: u32 = 200;

/// The admin routes' door: the credentials, the client address resolver, and the
/// summary that failures are logged through (one line per interval, however many
/// guesses arrive).
#[derive(Clone)]
pub struct AdminGuard {
    credentials: AdminCredentials,
    client: ClientAddr,
    hub: Arc<Hub>,
    summary: Summary,
}

impl AdminGuard {
    pub fn new(credentials: AdminCredentials, client: ClientAddr, hub: Arc<Hub>, interval: Duration) -> Self {
        let summary = Summary::new(interval, |r| {
            tracing::warn!(
                failed = r.count("failed"),
                rate_limited = r.count("rate_limited"),
                addresses = r.address_count(),
                busiest = %r.top_addresses(),
                interval_s = r.interval().as_secs(),
                "admin requests refused (wrong or missing credentials, or over the rate limit)"
            );
        });
        Self { credentials, client, hub, summary }
    }

    /// A request refused by the per-address rate limit: counted and summarized.
    pub fn rate_limited(&self, response: Response) -> Response {
        self.hub.metrics().error(ErrorKind::AdminAuth);
        self.summary.add("rate_limited", 1, None);
        summarized(response)
    }
}

/// Marks a refusal as already counted in a summary line, so the request is not also
/// logged on its own.
fn summarized(mut response: Response) -> Response {
    response.extensions_mut().insert(super::error::Summarized);
    response
}

pub async fn require_admin(State(admin): State<AdminGuard>, request: Request, next: Next) -> Response {
    let header = request.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
    if admin.credentials.accepts(header) {
        return next.run(request).await;
    }
    admin.hub.metrics().error(ErrorKind::AdminAuth);
    admin.summary.add("failed", 1, admin.client.of(&request));
    let message = if admin.credentials.is_configured() {
        "admin credentials required"
    } else {
        "the dashboard is disabled: set dashboard.password"
    };
    let mut response = ApiError::new(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", message).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"socket-bridge\""));
    summarized(response)
}

/// Headers on every admin response (refusals included): never framed by another site,
/// never cached, never sniffed.
pub async fn admin_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CONTENT_SECURITY_POLICY) {
        h.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"),
        );
    }
    response
}

/// The page's Content Security Policy. Its one inline script is allowed by its SHA-256
/// hash, not by `'unsafe-inline'`, so markup injected into the page could not run; styles
/// stay inline (the page sets element styles from its script). Nothing may frame it.
fn page_policy() -> &'static HeaderValue {
    static POLICY: OnceLock<HeaderValue> = OnceLock::new();
    POLICY.get_or_init(|| {
        use base64::Engine as _;
        use sha2::Digest as _;
        let hashes: Vec<String> = inline_scripts(PAGE)
            .map(|script| {
                let digest = sha2::Sha256::digest(script.as_bytes());
                format!("'sha256-{}'", base64::engine::general_purpose::STANDARD.encode(digest))
            })
            .collect();
        let policy = format!(
            "default-src 'none'; script-src {}; style-src 'unsafe-inline'; connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
            hashes.join(" ")
        );
        HeaderValue::from_str(&policy).unwrap_or_else(|_| HeaderValue::from_static("default-src 'none'; frame-ancestors 'none'"))
    })
}

/// The bodies of the page's inline `<script>` elements.
fn inline_scripts(page: &str) -> impl Iterator<Item = &str> {
    page.split("<script>").skip(1).filter_map(|rest| rest.split_once("</script>").map(|(body, _)| body))
}

pub async fn page() -> impl IntoResponse {
    ([(header::CONTENT_SECURITY_POLICY, page_policy().clone())], Html(PAGE))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Snapshot {
    #[serde(flatten)]
    status: super::api::StatusBody,
    rooms: Vec<RoomRow>,
}

#[derive(Debug, Serialize)]
struct RoomRow {
    namespace: String,
    name: String,
    members: u32,
}

async fn snapshot_of(hub: &Hub) -> Snapshot {
    let s = hub.status().await;
    let mut rooms = Vec::new();
    for ns in &hub.settings().namespaces {
        let remaining = SNAPSHOT_ROOMS.saturating_sub(rooms.len() as u32);
        if remaining == 0 {
            break;
        }
        if let Ok(page) = hub.list_rooms(ns, remaining, "", false).await {
            rooms.extend(page.items.into_iter().map(|r| RoomRow {
                namespace: ns.clone(),
                name: r.name,
                members: r.members,
            }));
        }
    }
    Snapshot { status: super::api::StatusBody::from(s), rooms }
}

pub async fn snapshot(State(hub): State<Arc<Hub>>) -> Json<Snapshot> {
    Json(snapshot_of(&hub).await)
}

/// Snapshots once a second and every new log line, until the client goes away.
pub async fn stream(State(hub): State<Arc<Hub>>) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    // Ends when the bridge starts draining, so an open dashboard never holds up shutdown
    // (the browser's EventSource reconnects to whichever instance is up).
    let stop = {
        let hub = hub.clone();
        async move { hub.draining_started().await }
    };
    let ticks = IntervalStream::new(tokio::time::interval(Duration::from_secs(1))).then(move |_| {
        let hub = hub.clone();
        async move { Event::default().event("snapshot").json_data(snapshot_of(&hub).await).ok() }
    });
    // A lagging viewer skips lines rather than holding memory: the ring still has them.
    let lines = BroadcastStream::new(logs::ring().subscribe())
        .filter_map(|entry| entry.ok())
        .map(|entry: LogEntry| Event::default().event("log").json_data(entry).ok());
    let merged = futures::StreamExt::take_until(ticks.merge(lines).filter_map(|e| e.map(Ok)), stop);
    Sse::new(merged).keep_alive(KeepAlive::default())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    level: Option<String>,
    limit: Option<usize>,
    q: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct LogPage {
    entries: Vec<LogEntry>,
}

/// Most entries one call returns.
const MAX_LOG_LIMIT: usize = 1000;

pub async fn logs(
    query: Result<Query<LogQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Json<LogPage>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::validation("query", e.body_text()))?;
    let level = match query.level.as_deref() {
        None | Some("") => tracing::Level::INFO,
        Some(name) => logs::parse_level(name)
            .ok_or_else(|| ApiError::validation("level", "one of error, warn, info, debug, trace"))?,
    };
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LOG_LIMIT {
        return Err(ApiError::validation("limit", format!("must be 1 to {MAX_LOG_LIMIT}")));
    }
    let q = query.q.unwrap_or_default();
    if q.len() > 256 {
        return Err(ApiError::validation("q", "at most 256 bytes"));
    }
    Ok(Json(LogPage { entries: logs::ring().query(level, &q, limit) }))
}
