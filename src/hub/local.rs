//! Operations applied to this instance's own sockets: what the hub does for a request it
//! takes itself, and for the same request carried here by the backplane from another
//! instance. The one place that touches socketioxide's sockets for the backend.

use std::time::Duration;

use futures::future::join_all;
use socketioxide::{BroadcastError, SendError, SocketError};

use super::backplane::{ConnectionView, EmitOutcome, EmitRequest, NodeReply, NodeRequest, NotWritten, OfflineMessage};
use super::listing::ConnectionFilter;
use super::payload::ClientAckArgs;
use super::push::{DISCONNECT_EVENT, socket_id_of};
use super::{AckOutcome, Hub, Operators, Socket, SocketAck, Target, user_room};

impl EmitOutcome {
    /// Adds another instance's outcome to this one.
    pub fn merge(&mut self, other: EmitOutcome) {
        self.reached += other.reached;
        self.acks.extend(other.acks);
        self.not_written.extend(other.not_written);
        self.not_written_uncounted += other.not_written_uncounted;
    }
}

/// Why a socket did not take a push.
fn not_written_reason(e: &SendError) -> &'static str {
    match e {
        SendError::Socket(SocketError::InternalChannelFull) => "buffer_full",
        SendError::Socket(SocketError::Closed) => "closed",
        SendError::Serialize(_) => "unencodable",
    }
}

impl Hub {
    /// Applies a request to this instance's sockets.
    pub async fn apply_local(&self, request: NodeRequest) -> NodeReply {
        match request {
            NodeRequest::Emit(emit) => NodeReply::Emitted(self.emit_local(&emit).await),
            NodeRequest::ChangeRooms { namespace, target, rooms, join } => {
                let Some(op) = self.io.of(namespace.as_str()) else { return NodeReply::Refused };
                let sockets = select(&op, &target, &[], &[]);
                for s in &sockets {
                    if join {
                        s.join(rooms.clone());
                    } else {
                        s.leave(rooms.clone());
                    }
                }
                if join && !sockets.is_empty() {
                    self.backplane.rooms_joined(&namespace, &rooms).await;
                }
                NodeReply::Count(count(sockets.len()))
            }
            NodeRequest::Disconnect { namespace, target, reason } => {
                let Some(op) = self.io.of(namespace.as_str()) else { return NodeReply::Refused };
                let sockets = select(&op, &target, &[], &[]);
                for s in &sockets {
                    let _ = s.emit(DISCONNECT_EVENT, &serde_json::json!({ "reason": reason }));
                    if let Err(e) = s.clone().disconnect() {
                        tracing::debug!(error = %e, "socket already gone");
                    }
                }
                NodeReply::Count(count(sockets.len()))
            }
            NodeRequest::ListRooms { namespace } => {
                let Some(op) = self.io.of(namespace.as_str()) else { return NodeReply::Refused };
                let rooms = op.clone().rooms().await.unwrap_or_default();
                NodeReply::Rooms(
                    rooms
                        .into_iter()
                        .map(|room| {
                            let members = op.clone().within(room.clone()).sockets().len();
                            (room.into_owned(), count(members))
                        })
                        .collect(),
                )
            }
            NodeRequest::ListConnections { namespace, filter, after, limit } => {
                NodeReply::Connections(self.list_local_connections(&namespace, &filter, after.as_deref(), limit))
            }
            NodeRequest::Decide(question) => {
                NodeReply::Decided(self.decide_here(question, self.settings.decision_timeout).await)
            }
        }
    }

    /// A push to this instance's sockets. User, socket and ack-waiting pushes go socket by
    /// socket, so the outcome names each socket that did not take it; room and everyone
    /// pushes are encoded once for the whole selection.
    pub(super) async fn emit_local(&self, r: &EmitRequest) -> EmitOutcome {
        let Some(op) = self.io.of(r.namespace.as_str()) else { return EmitOutcome::default() };
        let wire = match r.payload.wire_args() {
            Ok(wire) => wire,
            Err(e) => {
                tracing::warn!(error = %e, "push payload could not be encoded");
                return EmitOutcome::default();
            }
        };
        let per_socket = r.ack_timeout_ms.is_some()
            || !r.except_sockets.is_empty()
            || matches!(r.target, Target::User(_) | Target::Socket(_));
        if !per_socket {
            let mut selection = match &r.target {
                Target::Room(room) => op.to(room.clone()),
                _ => op,
            };
            if !r.except_rooms.is_empty() {
                selection = selection.except(r.except_rooms.clone());
            }
            let selected = count(selection.clone().sockets().len());
            if r.volatile {
                selection = selection.volatile();
            }
            let failed = match selection.emit(&r.event, &wire).await {
                Ok(()) => 0,
                Err(BroadcastError::Socket(errors)) => count(errors.len()),
                Err(e) => {
                    tracing::warn!(error = %e, "push could not be sent");
                    selected
                }
            };
            if failed > 0 {
                self.metrics.dropped("socket_buffer_full", u64::from(failed));
            }
            return EmitOutcome { reached: selected - failed, not_written_uncounted: failed, ..Default::default() };
        }
        let sockets = select(&op, &r.target, &r.except_rooms, &r.except_sockets);
        let Some(timeout) = r.ack_timeout_ms.map(Duration::from_millis) else {
            let mut outcome = EmitOutcome::default();
            for s in &sockets {
                // A ttl push to a socket already owed earlier ones waits behind them.
                let owed_to = self.owed_to(r, s);
                let sent = match &owed_to {
                    Some(conn) if self.owes(conn) => Err(SendError::Socket(SocketError::InternalChannelFull)),
                    _ if r.volatile => s.volatile().emit(&r.event, &wire),
                    _ => s.emit(&r.event, &wire),
                };
                match sent {
                    Ok(()) => outcome.reached += 1,
                    Err(e) => {
                        let full = matches!(e, SendError::Socket(SocketError::InternalChannelFull));
                        let kept = match (&owed_to, full) {
                            (Some(conn), true) => self.owe(conn, owed_message(r, s)),
                            _ => false,
                        };
                        if !kept {
                            self.metrics.dropped("socket_buffer_full", 1);
                        }
                        outcome.not_written.push(NotWritten {
                            socket_id: s.id.to_string(),
                            reason: not_written_reason(&e).to_owned(),
                            kept,
                        });
                    }
                }
            }
            return outcome;
        };
        let waits = sockets.iter().map(|s| {
            let sent = if r.volatile {
                s.volatile().timeout(timeout).emit_with_ack::<_, ClientAckArgs>(&r.event, &wire)
            } else {
                s.timeout(timeout).emit_with_ack::<_, ClientAckArgs>(&r.event, &wire)
            };
            let socket_id = s.id.to_string();
            async move {
                let outcome = match sent {
                    Err(e) => return (socket_id, false, AckOutcome::Failed(e.to_string())),
                    Ok(stream) => match stream.await {
                        Ok(ClientAckArgs(args)) => AckOutcome::Acked(args.into_payload()),
                        Err(socketioxide::AckError::Timeout) => AckOutcome::Timeout,
                        Err(e) => AckOutcome::Failed(e.to_string()),
                    },
                };
                (socket_id, true, outcome)
            }
        });
        let results = join_all(waits).await;
        EmitOutcome {
            reached: count(results.iter().filter(|(_, sent, _)| *sent).count()),
            acks: results.into_iter().map(|(socket_id, _, outcome)| SocketAck { socket_id, outcome }).collect(),
            ..Default::default()
        }
    }

    /// The connection a ttl push would be kept for, if it cannot be written now: only
    /// user targets with a ttl (what `validate_push` allows), never volatile ones.
    fn owed_to(&self, r: &EmitRequest, socket: &Socket) -> Option<std::sync::Arc<super::registry::Connection>> {
        if r.ttl_ms.is_none() || r.volatile {
            return None;
        }
        self.registry.get(&r.namespace, socket.id.as_str())
    }

    /// This instance's connections in `namespace` that `filter` selects, sorted by socket
    /// id, after `after`, at most `limit` of them.
    fn list_local_connections(
        &self,
        namespace: &str,
        filter: &ConnectionFilter,
        after: Option<&str>,
        limit: usize,
    ) -> Vec<ConnectionView> {
        let Some(op) = self.io.of(namespace) else { return Vec::new() };
        let members: Option<std::collections::HashSet<String>> = match filter {
            ConnectionFilter::Room(room) => {
                Some(op.clone().within(room.clone()).sockets().iter().map(|s| s.id.to_string()).collect())
            }
            ConnectionFilter::User(u) => {
                Some(op.clone().within(user_room(u)).sockets().iter().map(|s| s.id.to_string()).collect())
            }
            ConnectionFilter::All => None,
        };
        let (conns, _) = self.registry.page(
            |c| c.namespace == namespace && members.as_ref().is_none_or(|m| m.contains(&c.socket_id)),
            after,
            limit,
        );
        conns
            .into_iter()
            .map(|c| {
                let mut rooms: Vec<String> = socket_id_of(&c.socket_id)
                    .and_then(|sid| op.get_socket(sid))
                    .map(|s| s.rooms().into_iter().map(|r| r.into_owned()).collect())
                    .unwrap_or_default();
                rooms.sort_unstable();
                ConnectionView {
                    socket_id: c.socket_id.clone(),
                    namespace: c.namespace.clone(),
                    user_id: c.user_id.clone(),
                    connected_at_ms: super::wall_ms(c.connected_at),
                    handshake: (*c.handshake).clone(),
                    rooms,
                    data_json: c.data_json.clone(),
                }
            })
            .collect()
    }
}

/// This instance's sockets a target selects, less the excluded rooms and sockets.
fn select(op: &Operators, target: &Target, except_rooms: &[String], except_sockets: &[String]) -> Vec<Socket> {
    let mut sockets = match target {
        Target::User(u) => op.clone().within(user_room(u)).sockets(),
        Target::Room(r) => op.clone().within(r.clone()).sockets(),
        Target::Socket(s) => socket_id_of(s).and_then(|sid| op.get_socket(sid)).into_iter().collect(),
        Target::Everyone => op.clone().sockets(),
    };
    if !except_rooms.is_empty() || !except_sockets.is_empty() {
        sockets.retain(|s| {
            let excluded_socket = except_sockets.iter().any(|e| *e == s.id.as_str());
            let excluded_room =
                !except_rooms.is_empty() && s.rooms().iter().any(|r| except_rooms.iter().any(|e| e == r));
            !(excluded_socket || excluded_room)
        });
    }
    sockets
}

/// A ttl push as kept for a socket that could not take it.
fn owed_message(r: &EmitRequest, _socket: &Socket) -> OfflineMessage {
    let ttl = r.ttl_ms.unwrap_or(0);
    OfflineMessage {
        namespace: r.namespace.clone(),
        event: r.event.clone(),
        payload: r.payload.clone(),
        expires_at_ms: r.expires_at_ms.unwrap_or_else(|| super::wall_ms(super::now_wall()) + ttl),
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}
