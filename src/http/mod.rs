//! The HTTP door: Socket.IO (both transports), the REST compatibility shim, the OpenAPI
//! document, and the operator endpoints.
//!
//! Layers, outermost first: request id (and its log span), panic → 500, timeout; then on
//! the REST routes: per-IP rate limit, API key, per-key rate limit.

pub mod api;
pub mod client_addr;
mod dashboard;
mod error;
pub mod polling;
mod request_id;
mod serve;
pub mod sessions;

pub use serve::serve;

use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use governor::clock::QuantaInstant;
use governor::middleware::NoOpMiddleware;
use socketioxide::layer::SocketIoLayer;
use tower::ServiceBuilder;
use tower_governor::GovernorLayer;
use tower_governor::errors::GovernorError;
use tower_governor::governor::GovernorConfigBuilder;
use tower_governor::key_extractor::KeyExtractor;
use tower_http::catch_panic::CatchPanicLayer;
use utoipa::OpenApi;

pub use error::{ApiError, ErrorBody, ErrorResponse, FieldError, rfc3339_now};

use crate::config::Config;
use crate::hub::Hub;
use crate::hub::auth::{AdminCredentials, ApiKeys};

/// The whole HTTP app. socketioxide wraps the router exactly once, as the fallback
/// service: wrapping it per route would create one engine per method and break
/// long-polling ("Session ID unknown").
pub fn app(config: &Config, hub: Arc<Hub>, socketio: SocketIoLayer) -> Router {
    let keys = ApiKeys::new(&config.grpc.api_keys);
    let h = &config.http;
    let client = ClientIpKey(client_addr::ClientAddr::new(&h.trusted_proxies));
    let per_key = limiter(ApiKeyHash, h.rate_per_key_per_second, h.burst_per_key, None);
    let per_ip = limiter(client.clone(), h.rate_per_ip_per_second, h.burst_per_ip, None);
    let timeout = config.request_timeout();
    let socketio = polling::in_front_of(socketio, config.socketio.max_payload_bytes, hub.metrics());

    let rest = Router::new()
        .route("/api/v1/push", post(api::push))
        .route("/api/v1/push/batch", post(api::push_batch))
        .route("/api/v1/status", get(api::status))
        .route_layer(per_key)
        .route_layer(middleware::from_fn_with_state(keys, require_api_key))
        .route_layer(per_ip);
    let d = &config.dashboard;
    let admin = dashboard::AdminGuard::new(
        AdminCredentials::new(&d.username, d.password.as_ref()),
        client.0.clone(),
        hub.clone(),
        config.summary_interval(),
    );
    // Rate limited per client address before the credentials are even looked at.
    let per_address = limiter(client, d.rate_per_address_per_second, d.burst_per_address, Some(admin.clone()));
    let operator = Router::new()
        .route("/dashboard", get(dashboard::page))
        .route("/dashboard/api/snapshot", get(dashboard::snapshot))
        .route("/dashboard/api/stream", get(dashboard::stream))
        .route("/api/v1/logs", get(dashboard::logs))
        .route_layer(middleware::from_fn_with_state(admin, dashboard::require_admin))
        .route_layer(per_address)
        .layer(middleware::map_response(dashboard::admin_headers));
    let app = rest
        .merge(operator)
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/health", get(health))
        .route("/ready", get(ready))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(h.max_body_bytes))
        .with_state(hub.clone());
    let app = with_error_layers(app, timeout).layer(middleware::map_response(common_headers));
    let gate = sessions::SessionGate::new(config, hub);
    Router::new().fallback_service(ServiceBuilder::new().layer(gate).layer(socketio).service(app))
}

/// The layers that turn every failure (timeout, panic) into the error format and stamp
/// the request id on every response and log line.
fn with_error_layers(router: Router, timeout: Duration) -> Router {
    router
        .layer(middleware::from_fn(move |req: Request, next: Next| with_timeout(timeout, req, next)))
        .layer(CatchPanicLayer::custom(|_| ApiError::internal().into_response()))
        .layer(middleware::from_fn(request_id::middleware))
}

type Limiter<K> = GovernorLayer<K, NoOpMiddleware<QuantaInstant>, axum::body::Body>;

/// Headers on every response of the app (not the Socket.IO endpoint): browsers must not
/// guess content types, and no URL leaks to other sites through `Referer`.
async fn common_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    h.insert(axum::http::header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(axum::http::header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    response
}

/// Rate-limit key: the client address (see `client_addr`: behind a trusted proxy, the
/// forwarded one).
#[derive(Clone)]
struct ClientIpKey(client_addr::ClientAddr);

impl KeyExtractor for ClientIpKey {
    type Key = std::net::IpAddr;
    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<Self::Key, GovernorError> {
        self.0.of(req).map(client_addr::limit_key).ok_or(GovernorError::UnableToExtractKey)
    }
}

/// A token bucket per key: `per_second` sustained, `burst` at once. Old keys are pruned
/// every minute so the table stays bounded. With `admin`, refusals are counted as failed
/// admin requests and summarized instead of logged one by one.
fn limiter<K: KeyExtractor + Send + Sync + 'static>(
    key: K,
    per_second: u32,
    burst: u32,
    admin: Option<dashboard::AdminGuard>,
) -> Limiter<K>
where
    K::Key: Send + Sync,
{
    let period = Duration::from_secs_f64(1.0 / f64::from(per_second.max(1)));
    let config = GovernorConfigBuilder::default()
        .period(period)
        .burst_size(burst.max(1))
        .key_extractor(key)
        .finish()
        // Runs once at start; finish() only refuses a zero period or burst, both excluded above.
        .expect("rate limiter with non-zero period and burst");
    let config = Arc::new(config);
    let limiter = config.limiter().clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        loop {
            tick.tick().await;
            limiter.retain_recent();
        }
    });
    GovernorLayer::new(config).error_handler(move |e| match e {
        GovernorError::TooManyRequests { wait_time, .. } => match &admin {
            Some(admin) => admin.rate_limited(ApiError::rate_limited(wait_time).into_response()),
            None => ApiError::rate_limited(wait_time).into_response(),
        },
        GovernorError::UnableToExtractKey => {
            ApiError::new(StatusCode::BAD_REQUEST, "BAD_REQUEST", "cannot tell who is calling").into_response()
        }
        GovernorError::Other { .. } => ApiError::internal().into_response(),
    })
}

/// Rate-limit key: a hash of the `authorization` header, so the table never holds a key.
#[derive(Clone, Copy)]
struct ApiKeyHash;

impl KeyExtractor for ApiKeyHash {
    type Key = u64;
    fn extract<T>(&self, req: &axum::http::Request<T>) -> Result<u64, GovernorError> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        req.headers().get("authorization").map(|v| v.as_bytes()).unwrap_or_default().hash(&mut h);
        Ok(h.finish())
    }
}

async fn require_api_key(State(keys): State<ApiKeys>, request: Request, next: Next) -> Response {
    let header = request.headers().get("authorization").and_then(|v| v.to_str().ok());
    if keys.accepts(header) { next.run(request).await } else { ApiError::unauthorized().into_response() }
}

async fn with_timeout(limit: Duration, request: Request, next: Next) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "TIMEOUT", "the request took too long").into_response()
        }
    }
}

/// Prometheus scrape endpoint (open, like `/health`: no credentials and no per-user data).
async fn metrics(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    hub.refresh_gauges(true).await;
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], hub.metrics().render())
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Health {
    status: &'static str,
}

#[derive(serde::Serialize, utoipa::ToSchema)]
struct Readiness {
    ready: bool,
    draining: bool,
    /// Cluster mode's Redis: "up", "down" (this instance still serves its own sockets;
    /// other instances' pushes do not reach them until it returns), or "disabled".
    #[schema(example = "up")]
    redis: &'static str,
}

/// Liveness: the process answers.
#[utoipa::path(get, path = "/health", tag = "operations", responses((status = 200, body = Health)))]
async fn health() -> Json<Health> {
    Json(Health { status: "ok" })
}

/// Readiness: listeners up and not draining. A lost Redis is reported; it makes the
/// instance unready only with `redis.unready_when_down` (see the setting for why not by
/// default).
#[utoipa::path(get, path = "/ready", tag = "operations",
    responses((status = 200, body = Readiness), (status = 503, description = "Draining, or Redis unreachable with redis.unready_when_down", body = Readiness)))]
async fn ready(State(hub): State<Arc<Hub>>) -> (StatusCode, Json<Readiness>) {
    let ready = hub.is_ready();
    let status = if ready { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (status, Json(Readiness { ready, draining: hub.is_draining(), redis: hub.redis_state() }))
}

#[derive(OpenApi)]
#[openapi(
    info(title = "socket-bridge REST API", description = "Compatibility shim: the same pushes as the gRPC API."),
    paths(api::push, api::push_batch, api::status, health, ready),
    modifiers(&BearerAuth),
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI 3 document, generated from the handlers' types. Every limit and pattern is
/// filled in from the constants the hub enforces ([`crate::names`] and the push limits),
/// and what the types cannot say (exactly one target; `ttl` only with a user; `broadcast`
/// only `true`) is added here, so the document states precisely what the handlers accept.
pub fn openapi_document() -> serde_json::Value {
    use crate::hub::{MAX_ACK_TIMEOUT, MAX_BATCH, MAX_TTL};
    use crate::names;
    use serde_json::json;
    let mut doc = serde_json::to_value(ApiDoc::openapi()).unwrap_or_default();
    let name =
        |max: usize, pattern: String| json!({ "type": "string", "minLength": 1, "maxLength": max, "pattern": pattern });
    if let Some(push) = doc.pointer_mut("/components/schemas/PushBody") {
        const TARGETS: [&str; 4] = ["userId", "roomId", "socketId", "broadcast"];
        let only = |field: &str| {
            let others: Vec<_> = TARGETS.iter().filter(|t| **t != field).map(|t| json!({ "required": [t] })).collect();
            let mut alt = json!({ "required": [field], "not": { "anyOf": others } });
            if field != "userId" {
                alt["properties"] = json!({ "options": { "not": { "required": ["ttl"] } } });
            }
            alt
        };
        push["oneOf"] = TARGETS.iter().map(|t| only(t)).collect();
        let props = &mut push["properties"];
        props["broadcast"] = json!({ "type": "boolean", "enum": [true] });
        props["userId"] = name(names::MAX_USER_ID_LEN, names::printable_pattern());
        props["roomId"] = name(names::MAX_NAME_LEN, names::room_pattern());
        props["socketId"] = json!({ "type": "string", "pattern": names::SOCKET_ID_PATTERN });
        props["namespace"] = json!({ "type": "string", "minLength": 1, "maxLength": names::MAX_NAMESPACE_LEN });
        props["event"] = name(names::MAX_NAME_LEN, names::event_pattern());
    }
    if let Some(options) = doc.pointer_mut("/components/schemas/PushBodyOptions/properties") {
        options["exceptRooms"]["items"] = name(names::MAX_NAME_LEN, names::room_pattern());
        options["exceptRooms"]["maxItems"] = json!(names::MAX_LIST_LEN);
        options["exceptSocketIds"]["items"] = json!({ "type": "string", "pattern": names::SOCKET_ID_PATTERN });
        options["exceptSocketIds"]["maxItems"] = json!(names::MAX_LIST_LEN);
        options["timeout"]["maximum"] = json!(MAX_ACK_TIMEOUT.as_millis() as u64);
        options["ttl"]["maximum"] = json!(MAX_TTL.as_millis() as u64);
    }
    if let Some(batch) = doc.pointer_mut("/components/schemas/PushBatchBody/properties/pushes") {
        batch["maxItems"] = json!(MAX_BATCH);
    }
    doc
}

async fn openapi() -> Json<serde_json::Value> {
    static DOC: std::sync::OnceLock<serde_json::Value> = std::sync::OnceLock::new();
    Json(DOC.get_or_init(openapi_document).clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn body_json(response: Response) -> serde_json::Value {
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// 500 cannot be provoked from outside (that would be a bug); this drives the real
    /// error layers with a handler that panics.
    #[tokio::test]
    async fn status_500_a_panicking_handler_answers_in_the_error_format() {
        async fn boom() -> &'static str {
            panic!("handler bug")
        }
        let router = Router::new().route("/boom", get(boom));
        let app = with_error_layers(router, Duration::from_secs(5));
        let request = axum::http::Request::get("/boom").header("x-request-id", "req-500").body(Body::empty()).unwrap();
        let response = app.oneshot(request).await.unwrap();
        assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(response.headers()["x-request-id"], "req-500");
        let body = body_json(response).await;
        assert_eq!(body["error"]["code"], "INTERNAL_ERROR");
        assert_eq!(body["error"]["message"], "internal error; it has been logged");
        assert_eq!(body["error"]["requestId"], "req-500");
        assert!(body["error"]["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')));
        assert!(body["error"].get("details").is_none());
    }

    #[tokio::test]
    async fn slow_handlers_time_out_with_503() {
        let router = Router::new().route("/slow", get(|| async { tokio::time::sleep(Duration::from_secs(5)).await }));
        let app = with_error_layers(router, Duration::from_millis(50));
        let response = app.oneshot(axum::http::Request::get("/slow").body(Body::empty()).unwrap()).await.unwrap();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(body_json(response).await["error"]["code"], "TIMEOUT");
    }
}
