//! Proto ⇄ hub types, and hub errors → gRPC statuses. Validation that belongs to the wire
//! format (a missing oneof, a negative duration) happens here; every rule is the hub's.

use std::time::Duration;

use bytes::Bytes;
use tonic::{Code, Status};
use tonic_types::{ErrorDetails, StatusExt};

use crate::hub::registry::Handshake;
use crate::hub::router::{AckReply, BackendMessage, ClientEvent};
use crate::hub::{AckOutcome, DeliveryReport, HubError, Payload, PayloadLimits, PushCommand, PushOptions, Target};
use crate::proto as pb;

pub fn status_from(e: HubError) -> Status {
    match e {
        HubError::InvalidArgument { field, message } => Status::with_error_details(
            Code::InvalidArgument,
            format!("{field}: {message}"),
            ErrorDetails::with_bad_request_violation(field, message),
        ),
        HubError::NotFound(m) => Status::not_found(m),
        HubError::Unavailable(m) => Status::unavailable(m),
        HubError::ResourceExhausted(m) => Status::resource_exhausted(m),
    }
}

pub fn code_name(e: &HubError) -> &'static str {
    match e {
        HubError::InvalidArgument { .. } => "INVALID_ARGUMENT",
        HubError::NotFound(_) => "NOT_FOUND",
        HubError::Unavailable(_) => "UNAVAILABLE",
        HubError::ResourceExhausted(_) => "RESOURCE_EXHAUSTED",
    }
}

pub fn namespace(ns: String) -> String {
    if ns.is_empty() { "/".to_owned() } else { ns }
}

pub fn target(t: Option<pb::Target>, field: &str) -> Result<Target, HubError> {
    use pb::target::Kind;
    match t.and_then(|t| t.kind) {
        Some(Kind::UserId(u)) => Ok(Target::User(u)),
        Some(Kind::Room(r)) => Ok(Target::Room(r)),
        Some(Kind::SocketId(s)) => Ok(Target::Socket(s)),
        Some(Kind::Everyone(true)) => Ok(Target::Everyone),
        Some(Kind::Everyone(false)) => Err(HubError::invalid(format!("{field}.everyone"), "must be true when chosen")),
        None => Err(HubError::invalid(field, "choose one of user_id, room, socket_id, everyone")),
    }
}

pub fn payload(p: Option<pb::Payload>, field: &str, limits: PayloadLimits) -> Result<Payload, HubError> {
    let p = p.unwrap_or_default();
    Payload::from_backend(p.args_json, p.attachments.into_iter().map(Bytes::from).collect(), limits)
        .map_err(|e| HubError::invalid(format!("{field}.args_json"), e.to_string()))
}

pub fn duration(d: Option<prost_types::Duration>, field: &str) -> Result<Option<Duration>, HubError> {
    d.map(|d| Duration::try_from(d).map_err(|_| HubError::invalid(field, "must be a non-negative duration")))
        .transpose()
}

pub fn push_command(req: pb::PushRequest, limits: PayloadLimits) -> Result<PushCommand, HubError> {
    let options = req.options.unwrap_or_default();
    Ok(PushCommand {
        target: target(req.target, "target")?,
        namespace: namespace(req.namespace),
        event: req.event,
        payload: payload(req.payload, "payload", limits)?,
        options: PushOptions {
            volatile: options.volatile,
            except_rooms: options.except_rooms,
            except_sockets: options.except_socket_ids,
            ack_timeout: duration(options.ack_timeout, "options.ack_timeout")?,
            ttl: duration(options.ttl, "options.ttl")?,
        },
        door: crate::hub::Door::Grpc,
    })
}

pub fn pb_payload(p: Payload) -> pb::Payload {
    let (args_json, attachments) = p.into_parts();
    pb::Payload { args_json, attachments: attachments.into_iter().map(|b| b.to_vec()).collect() }
}

pub fn push_response(r: DeliveryReport) -> pb::PushResponse {
    pb::PushResponse {
        sockets_not_reached: r.sockets_not_reached(),
        message_id: r.message_id,
        sockets_reached: r.sockets_reached,
        stored_offline: r.stored_offline,
        not_reached: r
            .not_written
            .into_iter()
            .map(|n| pb::SocketNotReached { socket_id: n.socket_id, reason: n.reason, kept: n.kept })
            .collect(),
        acks: r
            .acks
            .into_iter()
            .map(|a| {
                let (status, payload, error) = match a.outcome {
                    AckOutcome::Acked(p) => (pb::AckStatus::Acked, Some(pb_payload(p)), String::new()),
                    AckOutcome::Timeout => {
                        (pb::AckStatus::Timeout, None, "no acknowledgement within ack_timeout".into())
                    }
                    AckOutcome::Failed(e) => (pb::AckStatus::Failed, None, e),
                };
                pb::SocketAck { socket_id: a.socket_id, status: status as i32, payload, error }
            })
            .collect(),
    }
}

pub fn handshake(h: &Handshake) -> pb::Handshake {
    pb::Handshake {
        user_agent: h.user_agent.clone(),
        remote_address: h.remote_address.clone(),
        origin: h.origin.clone(),
        auth_json: h.auth_json.clone(),
        transport: h.transport.clone(),
    }
}

/// An event sent to one stream only (one group) is no longer shared by the time it is
/// encoded: its fields move into the message instead of being copied.
fn client_event(e: std::sync::Arc<ClientEvent>) -> pb::ClientEvent {
    match std::sync::Arc::try_unwrap(e) {
        Ok(e) => pb::ClientEvent {
            id: e.id,
            socket_id: e.socket_id,
            user_id: e.user_id.unwrap_or_default(),
            namespace: e.namespace,
            event: e.event,
            payload: Some(pb_payload(e.payload)),
            wants_ack: e.wants_ack,
            received_at: Some(e.received_at.into()),
        },
        Err(e) => pb::ClientEvent {
            id: e.id.clone(),
            socket_id: e.socket_id.clone(),
            user_id: e.user_id.clone().unwrap_or_default(),
            namespace: e.namespace.clone(),
            event: e.event.clone(),
            payload: Some(pb_payload(e.payload.clone())),
            wants_ack: e.wants_ack,
            received_at: Some(e.received_at.into()),
        },
    }
}

pub fn ack_reply(result: Option<pb::ack::Result>, limits: PayloadLimits) -> Result<AckReply, HubError> {
    match result {
        Some(pb::ack::Result::Payload(p)) => Ok(AckReply::Payload(payload(Some(p), "ack.payload", limits)?)),
        Some(pb::ack::Result::Error(e)) => {
            if e.code.is_empty() || e.code.len() > 64 || e.message.len() > 1024 {
                return Err(HubError::invalid("ack.error", "code must be 1 to 64 bytes and message at most 1024"));
            }
            Ok(AckReply::Error { code: e.code, message: e.message })
        }
        None => Ok(AckReply::Payload(Payload::default())),
    }
}

pub fn backend_message(m: BackendMessage) -> pb::EventsResponse {
    use pb::events_response::Kind;
    let kind = match m {
        BackendMessage::Subscribed { subscriber_id, instance_id } => {
            Kind::Subscribed(pb::Subscribed { subscriber_id, instance_id })
        }
        BackendMessage::ClientEvent(e) => Kind::ClientEvent(client_event(e)),
        BackendMessage::SocketConnected(c) => Kind::SocketConnected(pb::SocketConnected {
            socket_id: c.socket_id.clone(),
            user_id: c.user_id.clone().unwrap_or_default(),
            namespace: c.namespace.clone(),
            handshake: Some(handshake(&c.handshake)),
            rooms: c.rooms.clone(),
            connected_at: Some(c.connected_at.into()),
            data_json: c.data_json.clone(),
        }),
        BackendMessage::SocketDisconnected(d) => Kind::SocketDisconnected(pb::SocketDisconnected {
            socket_id: d.socket_id.clone(),
            user_id: d.user_id.clone().unwrap_or_default(),
            namespace: d.namespace.clone(),
            reason: d.reason.clone(),
        }),
        BackendMessage::UserOnline(u) => Kind::UserOnline(pb::UserOnline { user_id: u.to_string() }),
        BackendMessage::UserOffline(u) => Kind::UserOffline(pb::UserOffline { user_id: u.to_string() }),
    };
    pb::EventsResponse { kind: Some(kind) }
}
