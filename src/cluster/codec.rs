//! What instances write to each other through Redis: client events and lifecycle news
//! on the streams, and requests, answers and backend acks on the pub/sub channels. All
//! MessagePack, with field names, so an instance of a newer version can still read what an
//! older one wrote during a rolling upgrade.

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::Payload;
use crate::hub::backplane::{NodeReply, NodeRequest};
use crate::hub::budget::Charge;
use crate::hub::registry::Handshake;
use crate::hub::router::{AckReply, BackendMessage, ClientEvent, SocketConnected, SocketDisconnected};
use crate::hub::wall_ms;

#[derive(Serialize, Deserialize)]
enum Wire {
    Event {
        id: String,
        socket_id: String,
        user_id: Option<String>,
        namespace: String,
        event: String,
        args_json: String,
        attachments: Vec<Bytes>,
        wants_ack: bool,
        received_at_ms: u64,
    },
    Connected {
        socket_id: String,
        user_id: Option<String>,
        namespace: String,
        handshake: Handshake,
        rooms: Vec<String>,
        connected_at_ms: u64,
        #[serde(default)]
        data_json: String,
    },
    Disconnected {
        socket_id: String,
        user_id: Option<String>,
        namespace: String,
        reason: String,
    },
    Online(String),
    Offline(String),
}

#[derive(Serialize, Deserialize)]
struct Envelope {
    origin: String,
    body: Wire,
}

pub fn encode(origin: &str, message: &BackendMessage) -> Vec<u8> {
    let body = match message {
        BackendMessage::ClientEvent(e) => Wire::Event {
            id: e.id.clone(),
            socket_id: e.socket_id.clone(),
            user_id: e.user_id.clone(),
            namespace: e.namespace.clone(),
            event: e.event.clone(),
            args_json: e.payload.args_json().to_owned(),
            attachments: e.payload.attachments().to_vec(),
            wants_ack: e.wants_ack,
            received_at_ms: wall_ms(e.received_at),
        },
        BackendMessage::SocketConnected(c) => Wire::Connected {
            socket_id: c.socket_id.clone(),
            user_id: c.user_id.clone(),
            namespace: c.namespace.clone(),
            handshake: (*c.handshake).clone(),
            rooms: c.rooms.clone(),
            connected_at_ms: wall_ms(c.connected_at),
            data_json: c.data_json.clone(),
        },
        BackendMessage::SocketDisconnected(d) => Wire::Disconnected {
            socket_id: d.socket_id.clone(),
            user_id: d.user_id.clone(),
            namespace: d.namespace.clone(),
            reason: d.reason.clone(),
        },
        BackendMessage::UserOnline(u) => Wire::Online(u.to_string()),
        BackendMessage::UserOffline(u) => Wire::Offline(u.to_string()),
        // Never written: Subscribed is local to a stream.
        BackendMessage::Subscribed { .. } => Wire::Offline(String::new()),
    };
    rmp_serde::to_vec_named(&Envelope { origin: origin.to_owned(), body }).unwrap_or_default()
}

pub fn decode(bytes: &[u8]) -> Option<BackendMessage> {
    let envelope: Envelope = rmp_serde::from_slice(bytes).ok()?;
    let at = |ms: u64| UNIX_EPOCH + Duration::from_millis(ms);
    Some(match envelope.body {
        Wire::Event { id, socket_id, user_id, namespace, event, args_json, attachments, wants_ack, received_at_ms } => {
            BackendMessage::ClientEvent(Arc::new(ClientEvent {
                id,
                socket_id,
                user_id,
                namespace,
                event,
                payload: Payload::from_trusted_parts(args_json, attachments),
                wants_ack,
                received_at: at(received_at_ms),
                charge: Charge::none(),
            }))
        }
        Wire::Connected { socket_id, user_id, namespace, handshake, rooms, connected_at_ms, data_json } => {
            BackendMessage::SocketConnected(Arc::new(SocketConnected {
                socket_id,
                user_id,
                namespace,
                handshake: Arc::new(handshake),
                rooms,
                connected_at: at(connected_at_ms),
                data_json,
            }))
        }
        Wire::Disconnected { socket_id, user_id, namespace, reason } => {
            BackendMessage::SocketDisconnected(Arc::new(SocketDisconnected { socket_id, user_id, namespace, reason }))
        }
        Wire::Online(u) if !u.is_empty() => BackendMessage::UserOnline(u.into()),
        Wire::Offline(u) if !u.is_empty() => BackendMessage::UserOffline(u.into()),
        _ => return None,
    })
}

/// A backend's answer travelling to the instance that holds the client.
#[derive(Serialize, Deserialize)]
pub struct WireAck {
    event_id: String,
    args_json: Option<String>,
    attachments: Vec<Bytes>,
    error: Option<(String, String)>,
}

impl WireAck {
    pub fn new(event_id: &str, reply: AckReply) -> Self {
        match reply {
            AckReply::Payload(p) => {
                let (args_json, attachments) = p.into_parts();
                Self { event_id: event_id.to_owned(), args_json: Some(args_json), attachments, error: None }
            }
            AckReply::Error { code, message } => Self {
                event_id: event_id.to_owned(),
                args_json: None,
                attachments: Vec::new(),
                error: Some((code, message)),
            },
        }
    }

    pub fn into_parts(self) -> (String, AckReply) {
        let reply = match (self.error, self.args_json) {
            (Some((code, message)), _) => AckReply::Error { code, message },
            (None, args) => AckReply::Payload(Payload::from_trusted_parts(args.unwrap_or_default(), self.attachments)),
        };
        (self.event_id, reply)
    }
}

/// What travels on an instance's channel (`P:node:<instance>`) and on `P:all`.
#[derive(Serialize, Deserialize)]
pub enum NodeMessage {
    /// An operation to apply to the receiver's sockets, from instance `from`, which waits
    /// for the answer when `answer_to` is set.
    Request { id: u64, from: String, answer_to: bool, request: NodeRequest },
    /// The answer to request `id` of the receiver.
    Answer { id: u64, reply: NodeReply },
    /// A backend's answer for a client event of the receiver.
    Ack(WireAck),
}

impl NodeMessage {
    pub fn encode(&self) -> Option<Vec<u8>> {
        rmp_serde::to_vec_named(self).map_err(|e| tracing::warn!(error = %e, "cluster message not encoded")).ok()
    }

    pub fn decode(bytes: &[u8]) -> Option<Self> {
        rmp_serde::from_slice(bytes).map_err(|e| tracing::warn!(error = %e, "malformed cluster message")).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_survive_the_trip_through_redis_bytes_intact() {
        let event = ClientEvent {
            id: "abc-1".into(),
            socket_id: "s1".into(),
            user_id: Some("u".into()),
            namespace: "/".into(),
            event: "chat".into(),
            payload: Payload::from_trusted_parts(
                "[12345678901234567890123,{\"_placeholder\":true,\"num\":0}]".into(),
                vec![Bytes::from_static(&[0, 1, 255])],
            ),
            wants_ack: true,
            received_at: UNIX_EPOCH + Duration::from_millis(1_700_000_000_123),
            charge: Charge::none(),
        };
        let bytes = encode("node", &BackendMessage::ClientEvent(Arc::new(event)));
        let Some(BackendMessage::ClientEvent(back)) = decode(&bytes) else { panic!("not an event") };
        assert_eq!(back.payload.args_json(), "[12345678901234567890123,{\"_placeholder\":true,\"num\":0}]");
        assert_eq!(back.payload.attachments(), &[Bytes::from_static(&[0, 1, 255])]);
        assert_eq!(back.received_at, UNIX_EPOCH + Duration::from_millis(1_700_000_000_123));
        assert!(back.wants_ack);
        assert!(decode(b"garbage").is_none());
    }

    #[test]
    fn ack_answers_keep_payload_or_error() {
        let (id, reply) = WireAck::new("e1", AckReply::error("x", "y")).into_parts();
        assert_eq!((id.as_str(), reply), ("e1", AckReply::error("x", "y")));
        let p = Payload::from_trusted_parts("[1]".into(), vec![Bytes::from_static(b"b")]);
        let (_, reply) = WireAck::new("e2", AckReply::Payload(p.clone())).into_parts();
        assert_eq!(reply, AckReply::Payload(p));
    }
}
