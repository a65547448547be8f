//! Every REST response carries `x-request-id` (the caller's, if it sent a sane one, else a
//! fresh UUID), and every log line of that request carries it as a span field.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::error::ApiError;

pub const HEADER: &str = "x-request-id";

#[derive(Debug, Clone)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

pub async fn middleware(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
    let request_id = RequestId(id.clone());
    request.extensions_mut().insert(request_id.clone());
    let span = tracing::info_span!("http", request_id = %id, method = %request.method(), path = %request.uri().path());
    let mut response = next.run(request).instrument(span.clone()).await;
    let summarized = response.extensions().get::<super::error::Summarized>().is_some();
    if let Some(error) = response.extensions_mut().remove::<ApiError>() {
        let status = error.status;
        span.in_scope(|| {
            if summarized {
                return;
            }
            if status.is_server_error() {
                tracing::warn!(status = status.as_u16(), code = error.code, "request failed");
            } else {
                tracing::info!(status = status.as_u16(), code = error.code, "request refused");
            }
        });
        // Re-rendered with the request id; headers set on the way out (Retry-After,
        // WWW-Authenticate …) are kept.
        let (parts, _) = response.into_parts();
        response = error.into_response_with(Some(&request_id.0));
        for (name, value) in &parts.headers {
            if name != axum::http::header::CONTENT_LENGTH && name != axum::http::header::CONTENT_TYPE {
                response.headers_mut().insert(name.clone(), value.clone());
            }
        }
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(HEADER, v);
    }
    response
}

#[cfg(test)]
mod tests {
    #[test]
    fn only_sane_ids_are_taken_from_callers() {
        assert!(super::acceptable("abc-123_x.y:z"));
        assert!(!super::acceptable(""));
        assert!(!super::acceptable("has space"));
        assert!(!super::acceptable(&"x".repeat(200)));
    }
}
