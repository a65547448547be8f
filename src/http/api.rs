//! REST compatibility shim: `POST /api/v1/push`, `POST /api/v1/push/batch`,
//! `GET /api/v1/status`. The same hub calls as gRPC; only the encoding differs.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{FromRequest, Request, State};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use utoipa::ToSchema;

use super::error::{ApiError, ErrorResponse};
use crate::hub::{AckOutcome, DeliveryReport, Hub, Payload, PushCommand, PushOptions, Target};

/// `Json<T>` whose rejections answer in the error format, with the right status.
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: serde::de::DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        Json::<T>::from_request(req, state).await.map(|Json(v)| ApiJson(v)).map_err(ApiError::from)
    }
}

/// The original design's PushRequest, plus socket and broadcast targets. Exactly one of
/// `userId`, `roomId`, `socketId` or `broadcast: true`. Optional fields may be left out but
/// not set to null, so the schema says exactly what is accepted.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushBody {
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub user_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub room_id: Option<String>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub socket_id: Option<String>,
    /// Every socket of the namespace; must be true when given.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub broadcast: Option<bool>,
    /// Socket.IO namespace; default "/". An unconfigured namespace answers 404.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub namespace: Option<String>,
    pub event: String,
    /// The event's single argument (any JSON). Omit for an event without arguments.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<serde_json::Value>, nullable = false)]
    pub payload: Option<Box<RawValue>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub options: Option<PushBodyOptions>,
}

#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PushBodyOptions {
    /// Drop for sockets whose transport is not ready instead of queueing.
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub volatile: Option<bool>,
    /// Wait this many milliseconds for every reached socket's acknowledgement.
    #[serde(default, deserialize_with = "millis")]
    #[schema(nullable = false, minimum = 1)]
    pub timeout: Option<u64>,
    /// Keep the message this many milliseconds for an offline user (userId target only).
    #[serde(default, deserialize_with = "millis")]
    #[schema(nullable = false, minimum = 1)]
    pub ttl: Option<u64>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub except_rooms: Option<Vec<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(nullable = false)]
    pub except_socket_ids: Option<Vec<String>>,
}

/// Milliseconds as a JSON integer. `1500.0` is an integer to JSON Schema (and to
/// JavaScript), so whole-valued floats are accepted too.
fn millis<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    let n = serde_json::Number::deserialize(d)?;
    n.as_u64()
        .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0 && *f >= 0.0 && *f <= u64::MAX as f64).map(|f| f as u64))
        .map(Some)
        .ok_or_else(|| serde::de::Error::custom(format!("{n} is not a whole number of milliseconds")))
}

/// `Option<T>` that may be absent (None) but not `null`: an explicit null is an error
/// naming the field rather than a silent default.
fn present<'de, D: serde::Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Option<T>, D::Error> {
    T::deserialize(d).map(Some)
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PushResult {
    pub message_id: String,
    pub sockets_reached: u32,
    /// True when the user was offline and the message was kept for `ttl`.
    pub stored_offline: bool,
    /// One entry per reached socket when `options.timeout` was set.
    pub acks: Vec<AckEntry>,
    /// Sockets of the target the event could not be handed to, with the reason.
    pub not_reached: Vec<NotReachedEntry>,
    /// Sockets the event could not be handed to, in all (room and everyone pushes count
    /// sockets whose ids a broadcast does not give).
    pub sockets_not_reached: u32,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NotReachedEntry {
    pub socket_id: String,
    /// "buffer_full" (the socket's outgoing buffer was full) or "closed".
    pub reason: String,
    /// With `ttl`: kept and delivered once the socket has room again, or on the user's
    /// next connect.
    pub kept: bool,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AckEntry {
    pub socket_id: String,
    /// "acked", "timeout" or "failed".
    pub status: &'static str,
    /// The client's acknowledgement arguments (a JSON array), when acked.
    #[schema(value_type = Option<Vec<serde_json::Value>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub args: Option<Box<RawValue>>,
    /// Binary arguments, base64, referenced from `args` by placeholders.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub attachments: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PushBatchBody {
    #[schema(min_items = 1)]
    pub pushes: Vec<PushBody>,
}

/// Exactly one of `result` or `error`.
#[derive(Debug, Serialize, ToSchema)]
pub struct PushBatchItem {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub result: Option<PushResult>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<super::error::ErrorBody>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct PushBatchResult {
    pub results: Vec<PushBatchItem>,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendGroupStatus {
    pub group: String,
    pub streams: u32,
    pub queued_events: u64,
}

/// What a monitoring system polls (connections, users, rooms, message and error rates,
/// memory), plus the bridge's own figures.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct StatusBody {
    pub instance_id: String,
    pub version: String,
    pub uptime_seconds: f64,
    pub active_connections: u64,
    pub unique_users: u64,
    pub room_count: u64,
    pub message_rate: MessageRate,
    pub error_rate: f64,
    pub messages_in_total: u64,
    pub messages_out_total: u64,
    pub errors_total: u64,
    pub memory_usage: MemoryUsage,
    pub backend_groups: Vec<BackendGroupStatus>,
    pub undelivered_events: u64,
    pub draining: bool,
    /// Live instances: this one alone in embedded mode, every reporting one in cluster mode.
    pub nodes: Vec<NodeStatus>,
    /// Cluster mode's Redis: "up", "down" or "disabled".
    pub redis: String,
}

#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NodeStatus {
    pub instance_id: String,
    pub connections: u64,
    /// RFC 3339.
    pub last_seen: String,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MessageRate {
    pub incoming: f64,
    pub outgoing: f64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct MemoryUsage {
    pub rss: u64,
}

impl PushBody {
    fn into_command(self, hub: &Hub) -> Result<PushCommand, ApiError> {
        let mut targets = Vec::new();
        if let Some(u) = self.user_id {
            targets.push(Target::User(u));
        }
        if let Some(r) = self.room_id {
            targets.push(Target::Room(r));
        }
        if let Some(s) = self.socket_id {
            targets.push(Target::Socket(s));
        }
        match self.broadcast {
            Some(true) => targets.push(Target::Everyone),
            Some(false) => return Err(ApiError::validation("broadcast", "must be true when given")),
            None => {}
        }
        if targets.len() != 1 {
            return Err(ApiError::validation("userId", "give exactly one of userId, roomId, socketId or broadcast"));
        }
        let args_json = match &self.payload {
            Some(raw) => format!("[{}]", raw.get()),
            None => "[]".into(),
        };
        let payload = Payload::from_backend(args_json, Vec::new(), hub.settings().payload_limits)
            .map_err(|e| ApiError::validation("payload", e.to_string()))?;
        let o = self.options.unwrap_or_default();
        Ok(PushCommand {
            target: targets.remove(0),
            namespace: self.namespace.unwrap_or_else(|| "/".into()),
            event: self.event,
            payload,
            options: PushOptions {
                volatile: o.volatile.unwrap_or(false),
                except_rooms: o.except_rooms.unwrap_or_default(),
                except_sockets: o.except_socket_ids.unwrap_or_default(),
                ack_timeout: o.timeout.map(Duration::from_millis),
                ttl: o.ttl.map(Duration::from_millis),
            },
            door: crate::hub::Door::Rest,
        })
    }
}

fn push_result(r: DeliveryReport) -> PushResult {
    PushResult {
        sockets_not_reached: r.sockets_not_reached(),
        not_reached: r
            .not_written
            .into_iter()
            .map(|n| NotReachedEntry { socket_id: n.socket_id, reason: n.reason, kept: n.kept })
            .collect(),
        message_id: r.message_id,
        sockets_reached: r.sockets_reached,
        stored_offline: r.stored_offline,
        acks: r
            .acks
            .into_iter()
            .map(|a| match a.outcome {
                AckOutcome::Acked(p) => {
                    let (args_json, attachments) = p.into_parts();
                    AckEntry {
                        socket_id: a.socket_id,
                        status: "acked",
                        args: RawValue::from_string(args_json).ok(),
                        attachments: attachments
                            .iter()
                            .map(|b| base64::engine::general_purpose::STANDARD.encode(b))
                            .collect(),
                        error: None,
                    }
                }
                AckOutcome::Timeout => AckEntry {
                    socket_id: a.socket_id,
                    status: "timeout",
                    args: None,
                    attachments: vec![],
                    error: Some("no acknowledgement within the timeout".into()),
                },
                AckOutcome::Failed(e) => AckEntry {
                    socket_id: a.socket_id,
                    status: "failed",
                    args: None,
                    attachments: vec![],
                    error: Some(e),
                },
            })
            .collect(),
    }
}

/// Push one event to a user, a room, a socket or everyone.
#[utoipa::path(post, path = "/api/v1/push", request_body = PushBody, tag = "push",
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "Delivery report", body = PushResult),
        (status = 400, description = "Invalid field", body = ErrorResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 404, description = "Namespace not configured", body = ErrorResponse),
        (status = 413, description = "Body over the limit", body = ErrorResponse),
        (status = 415, description = "Body is not JSON", body = ErrorResponse),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorResponse),
        (status = 503, description = "Draining or overloaded", body = ErrorResponse),
    ))]
pub async fn push(State(hub): State<Arc<Hub>>, ApiJson(body): ApiJson<PushBody>) -> Result<Json<PushResult>, ApiError> {
    let cmd = body.into_command(&hub)?;
    let report = hub.push(cmd).await?;
    Ok(Json(push_result(report)))
}

/// Many pushes in one call, each with its own result.
#[utoipa::path(post, path = "/api/v1/push/batch", request_body = PushBatchBody, tag = "push",
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "One result per push, in order", body = PushBatchResult),
        (status = 400, description = "Invalid batch", body = ErrorResponse),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 413, description = "Body over the limit", body = ErrorResponse),
        (status = 415, description = "Body is not JSON", body = ErrorResponse),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorResponse),
        (status = 503, description = "Draining", body = ErrorResponse),
    ))]
pub async fn push_batch(
    State(hub): State<Arc<Hub>>,
    ApiJson(body): ApiJson<PushBatchBody>,
) -> Result<Json<PushBatchResult>, ApiError> {
    let cmds = body
        .pushes
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            p.into_command(&hub).map_err(|mut e| {
                for d in e.details.iter_mut().flatten() {
                    d.field = format!("pushes[{i}].{}", d.field);
                }
                e.message = format!("pushes[{i}].{}", e.message);
                e
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let results = hub
        .push_batch(cmds)
        .await?
        .into_iter()
        .map(|outcome| match outcome {
            Ok(report) => PushBatchItem { result: Some(push_result(report)), error: None },
            Err(e) => {
                let e = ApiError::from(e);
                PushBatchItem {
                    result: None,
                    error: Some(super::error::ErrorBody {
                        code: e.code,
                        message: e.message,
                        details: e.details,
                        timestamp: super::error::rfc3339_now(),
                        request_id: None,
                    }),
                }
            }
        })
        .collect();
    Ok(Json(PushBatchResult { results }))
}

/// Connections, rates, memory and backend streams of this instance.
#[utoipa::path(get, path = "/api/v1/status", tag = "status",
    security(("apiKey" = [])),
    responses(
        (status = 200, description = "Status", body = StatusBody),
        (status = 401, description = "Missing or wrong API key", body = ErrorResponse),
        (status = 429, description = "Rate limited; see Retry-After", body = ErrorResponse),
    ))]
pub async fn status(State(hub): State<Arc<Hub>>) -> Json<StatusBody> {
    Json(StatusBody::from(hub.status().await))
}

/// The one JSON view of a status report: the REST status and the dashboard both show it.
impl From<crate::hub::StatusReport> for StatusBody {
    fn from(s: crate::hub::StatusReport) -> Self {
        Self {
            instance_id: s.instance_id,
            version: s.version.into(),
            uptime_seconds: s.uptime.as_secs_f64(),
            active_connections: s.connections,
            unique_users: s.unique_users,
            room_count: s.rooms,
            message_rate: MessageRate { incoming: s.messages_in_per_second, outgoing: s.messages_out_per_second },
            error_rate: s.errors_per_second,
            messages_in_total: s.messages_in_total,
            messages_out_total: s.messages_out_total,
            errors_total: s.errors_total,
            memory_usage: MemoryUsage { rss: s.rss_bytes },
            backend_groups: s
                .backend_groups
                .into_iter()
                .map(|g| BackendGroupStatus { group: g.group, streams: g.streams, queued_events: g.queued_events })
                .collect(),
            undelivered_events: s.undelivered_events,
            draining: s.draining,
            nodes: s
                .nodes
                .iter()
                .map(|n| NodeStatus {
                    instance_id: n.instance_id.clone(),
                    connections: n.connections,
                    last_seen: crate::telemetry::rfc3339(n.last_seen),
                })
                .collect(),
            redis: s.redis.to_owned(),
        }
    }
}
