//! REST errors in the original design's format:
//! `{"error":{"code","message","details","timestamp","requestId"}}`.

use axum::Json;
use axum::extract::rejection::JsonRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use utoipa::ToSchema;

use crate::hub::HubError;
pub use crate::telemetry::rfc3339_now;

/// One invalid field.
#[derive(Debug, Clone, Serialize, ToSchema, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. VALIDATION_ERROR.
    pub code: &'static str,
    pub message: String,
    /// For VALIDATION_ERROR: every invalid field.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub details: Option<Vec<FieldError>>,
    /// RFC 3339.
    pub timestamp: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorBody,
}

/// Response marker: this refusal is counted in a summary line (see
/// `telemetry::summary`), so the request-id middleware does not log it on its own.
#[derive(Debug, Clone, Copy)]
pub struct Summarized;

/// A REST failure; becomes the status and body above.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Option<Vec<FieldError>>,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), details: None, retry_after: None }
    }

    pub fn validation(field: impl Into<String>, message: impl Into<String>) -> Self {
        let (field, message) = (field.into(), message.into());
        Self {
            details: Some(vec![FieldError { field: field.clone(), message: message.clone() }]),
            ..Self::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", format!("{field}: {message}"))
        }
    }

    pub fn unauthorized() -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "missing or invalid API key: send `Authorization: Bearer <key>`",
        )
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    pub fn rate_limited(retry_after: u64) -> Self {
        Self {
            retry_after: Some(retry_after.max(1)),
            ..Self::new(StatusCode::TOO_MANY_REQUESTS, "RATE_LIMITED", "too many requests; retry after the given delay")
        }
    }

    pub fn internal() -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL_ERROR", "internal error; it has been logged")
    }

    /// The response, with the request id if known.
    pub fn into_response_with(self, request_id: Option<&str>) -> Response {
        let body = ErrorResponse {
            error: ErrorBody {
                code: self.code,
                message: self.message,
                details: self.details,
                timestamp: rfc3339_now(),
                request_id: request_id.map(str::to_owned),
            },
        };
        let mut response = (self.status, Json(body)).into_response();
        if let Some(secs) = self.retry_after
            && let Ok(v) = HeaderValue::from_str(&secs.to_string())
        {
            response.headers_mut().insert(header::RETRY_AFTER, v);
        }
        response
    }
}

impl IntoResponse for ApiError {
    /// The request id is added by the request-id middleware, which fills it in on the way
    /// out (see `request_id::stamp_error_body`).
    fn into_response(self) -> Response {
        let mut response = self.clone().into_response_with(None);
        response.extensions_mut().insert(self);
        response
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        match e {
            HubError::InvalidArgument { field, message } => ApiError::validation(rest_field(&field), message),
            HubError::NotFound(m) => ApiError::not_found(m),
            HubError::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", m),
            HubError::ResourceExhausted(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "SERVICE_UNAVAILABLE", m),
        }
    }
}

/// Hub field paths use the gRPC names; REST callers know the JSON names.
fn rest_field(field: &str) -> String {
    if let Some(rest) = field.strip_prefix("pushes[")
        && let Some((index, inner)) = rest.split_once("].")
    {
        return format!("pushes[{index}].{}", rest_field(inner));
    }
    match field {
        "target.user_id" => "userId".into(),
        "target.room" => "roomId".into(),
        "target.socket_id" => "socketId".into(),
        "target" => "userId".into(),
        "payload.args_json" | "payload" => "payload".into(),
        "options.ack_timeout" => "options.timeout".into(),
        "options.except_rooms" => "options.exceptRooms".into(),
        "options.except_socket_ids" => "options.exceptSocketIds".into(),
        other => other.into(),
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        match rejection {
            JsonRejection::MissingJsonContentType(_) => ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "UNSUPPORTED_MEDIA_TYPE",
                "send the body as JSON with `Content-Type: application/json`",
            ),
            JsonRejection::BytesRejection(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", "request body is over the size limit")
            }
            JsonRejection::JsonDataError(e) => {
                let (field, message) = field_from_serde(&e.body_text());
                ApiError::validation(field, message)
            }
            JsonRejection::JsonSyntaxError(e) => ApiError::validation("body", e.body_text()),
            other => ApiError::validation("body", other.body_text()),
        }
    }
}

/// serde_path_to_error's message starts with the path: "options.timeout: invalid type …".
/// Returns the field and the message without it.
fn field_from_serde(text: &str) -> (String, String) {
    let rest = text.strip_prefix("Failed to deserialize the JSON body into the target type: ").unwrap_or(text);
    // The field is named, so the position in the body adds nothing.
    let rest = rest.split(" at line ").next().unwrap_or(rest);
    match rest.split_once(": ") {
        Some((path, message)) if !path.contains(' ') && path != "." => (path.to_owned(), message.to_owned()),
        // "missing field `event`" / "unknown field `x`" name the field in backticks.
        _ => (rest.split('`').nth(1).map(str::to_owned).unwrap_or_else(|| "body".into()), rest.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serde_paths_become_fields() {
        assert_eq!(
            field_from_serde("options.timeout: invalid type: string \"x\", expected u64"),
            ("options.timeout".into(), "invalid type: string \"x\", expected u64".into())
        );
        assert_eq!(field_from_serde("missing field `event` at line 1 column 2").0, "event");
    }
}
