//! The HTTP door: Socket.IO (both transports) and the operator endpoints.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use socketioxide::layer::SocketIoLayer;
use tower::ServiceBuilder;
use tower_http::cors::{AllowOrigin, CorsLayer};

use crate::config::Config;
use crate::hub::Hub;

/// The whole HTTP app. socketioxide wraps the API router exactly once, as the fallback
/// service: wrapping it per route would create one engine per method and break
/// long-polling ("Session ID unknown").
pub fn app(config: &Config, hub: Arc<Hub>, socketio: SocketIoLayer) -> Router {
    let api = Router::new().route("/health", get(health)).route("/ready", get(ready)).with_state(hub);
    let cors = cors(&config.socketio.cors_origins);
    Router::new().fallback_service(ServiceBuilder::new().layer(cors).layer(socketio).service(api))
}

fn cors(origins: &[String]) -> CorsLayer {
    let allow = if origins.is_empty() {
        AllowOrigin::mirror_request()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    CorsLayer::new().allow_origin(allow).allow_credentials(true)
}

/// Liveness: the process answers.
async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

/// Readiness: listeners up and not draining.
async fn ready(State(hub): State<Arc<Hub>>) -> impl IntoResponse {
    let draining = hub.is_draining();
    let status = if draining { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (status, Json(serde_json::json!({ "ready": !draining, "draining": draining })))
}
