//! The outbox: one writer per event stream partition puts what concerns each user into
//! Redis in the order it happened.
//!
//! Everything about one user (all their sockets' events and lifecycle news, presence
//! included) goes to one partition, chosen by [`key_hash`] of the user id (of the socket id
//! for anonymous sockets): a backend then sees a user's `UserOffline` and later
//! `UserOnline` in the order they happened, and each socket's connect, events and
//! disconnect in order.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::sync::{mpsc, oneshot};

use super::Cluster;
use super::codec;
use crate::hub::backplane::OfflineMessage;
use crate::hub::keyhash::key_hash;
use crate::hub::registry::Connection;
use crate::hub::router::{AckReply, BackendMessage, SocketConnected};

/// Most outgoing operations written in one pipeline.
const OUTBOX_BATCH: usize = 256;

/// Work for one partition's writer, in the order it must reach Redis.
pub(crate) enum Outgoing {
    /// A client event or lifecycle message for the backends. `pending_ack` is the router
    /// sequence of the client callback waiting on it, failed if the write fails.
    Message {
        message: BackendMessage,
        pending_ack: Option<u64>,
    },
    /// A socket connected here; `recorded` is told once other instances can find it.
    Connected {
        conn: Arc<Connection>,
        rooms: Vec<String>,
        recorded: Option<oneshot::Sender<()>>,
    },
    Disconnected {
        conn: Arc<Connection>,
        reason: String,
    },
    TakeOffline {
        user_id: String,
        namespace: String,
        reply: oneshot::Sender<Vec<OfflineMessage>>,
    },
}

impl Outgoing {
    fn partition_key(&self) -> &str {
        match self {
            Outgoing::Message { message, .. } => message_key(message),
            Outgoing::Connected { conn, .. } | Outgoing::Disconnected { conn, .. } => {
                conn.user_id.as_deref().unwrap_or(&conn.socket_id)
            }
            Outgoing::TakeOffline { user_id, .. } => user_id,
        }
    }
}

/// The key that picks a message's partition: its user, or its socket when anonymous.
pub(super) fn message_key(message: &BackendMessage) -> &str {
    match message {
        BackendMessage::ClientEvent(e) => e.user_id.as_deref().unwrap_or(&e.socket_id),
        BackendMessage::SocketConnected(c) => c.user_id.as_deref().unwrap_or(&c.socket_id),
        BackendMessage::SocketDisconnected(d) => d.user_id.as_deref().unwrap_or(&d.socket_id),
        BackendMessage::UserOnline(u) | BackendMessage::UserOffline(u) => u,
        BackendMessage::Subscribed { .. } => "",
    }
}

impl Cluster {
    pub(super) fn partition_of(&self, key: &str) -> usize {
        (key_hash(key) % self.settings.partitions as u64) as usize
    }

    /// Queues work for its partition: what concerns one user reaches Redis in the order it
    /// happened. Refused only when the queue is full.
    pub(super) fn enqueue(&self, item: Outgoing) -> Result<(), Outgoing> {
        let partition = self.partition_of(item.partition_key());
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        self.outbox[partition].try_send(item).map_err(|e| {
            self.written(1);
            match e {
                mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item) => item,
            }
        })
    }

    fn written(&self, n: usize) {
        if self.unwritten.fetch_sub(n, Ordering::AcqRel) == n {
            self.flushed.notify_waiters();
        }
    }

    pub(super) async fn run_outbox(self: Arc<Self>, partition: usize, mut inbox: mpsc::Receiver<Outgoing>) {
        let stream = self.keys.events(partition);
        let mut batch = Vec::with_capacity(OUTBOX_BATCH);
        while inbox.recv_many(&mut batch, OUTBOX_BATCH).await > 0 {
            let taken = batch.len();
            let mut messages: Vec<(BackendMessage, Option<u64>)> = Vec::new();
            for item in batch.drain(..) {
                match item {
                    Outgoing::Message { message, pending_ack } => messages.push((message, pending_ack)),
                    other => {
                        self.write_messages(&stream, std::mem::take(&mut messages)).await;
                        let follow_up = self.apply(other).await;
                        messages.extend(follow_up.into_iter().map(|m| (m, None)));
                    }
                }
            }
            self.write_messages(&stream, messages).await;
            self.written(taken);
        }
    }

    /// Appends messages to a partition stream in one round trip.
    pub(super) async fn write_messages(&self, stream: &str, messages: Vec<(BackendMessage, Option<u64>)>) {
        if messages.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (message, _) in &messages {
            let wire = codec::encode(self.instance_id(), message);
            pipe.cmd("XADD")
                .arg(stream)
                .arg("MAXLEN")
                .arg("~")
                .arg(self.settings.stream_max_len)
                .arg("*")
                .arg("m")
                .arg(wire)
                .ignore();
        }
        if self.link.is_cluster() {
            // Wakes the partition's readers, which cannot block on it (see `streams`). Same
            // name as the stream, so the same slot: still one pipeline, published after
            // the entries are in.
            pipe.cmd("SPUBLISH").arg(stream).arg("").ignore();
        }
        let result = match self.link.conn() {
            Some(mut conn) => pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string()),
            None => Err("redis unreachable".to_owned()),
        };
        if let Err(e) = result {
            // Redis is out of reach: streams on this instance still get what they want,
            // as with one instance (without redelivery); the rest is dropped and counted,
            // and waiting clients are told at once.
            let node = self.node();
            let mut dropped = 0u64;
            for (message, seq) in messages {
                if node.router.deliver_here(&message) {
                    continue;
                }
                dropped += 1;
                if let Some(seq) = seq {
                    node.router.fail_ack(
                        seq,
                        AckReply::error("backend_unavailable", "the cluster cannot reach its backends right now"),
                    );
                }
            }
            if dropped > 0 {
                tracing::warn!(error = %e, dropped, "events could not be written to redis and no stream here wanted them");
                node.metrics.dropped("redis_unavailable", dropped);
            }
        }
    }

    /// Writes lifecycle news directly (not through the queues), each to its partition.
    pub(super) async fn write_now(&self, messages: Vec<BackendMessage>) {
        for message in messages {
            let stream = self.keys.events(self.partition_of(message_key(&message)));
            self.write_messages(&stream, vec![(message, None)]).await;
        }
    }

    /// Presence and index changes; returns the lifecycle messages they cause, in order.
    async fn apply(&self, item: Outgoing) -> Vec<BackendMessage> {
        match item {
            Outgoing::Message { .. } => Vec::new(),
            Outgoing::Connected { conn, rooms, recorded } => {
                let came_online = match self.presence_add(&conn).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "presence not recorded in redis");
                        let mut unrecorded = self.unrecorded.lock().unwrap_or_else(|e| e.into_inner());
                        if unrecorded.len() < super::MAX_UNREPORTED {
                            unrecorded.push(conn);
                        }
                        return Vec::new();
                    }
                };
                if let Some(recorded) = recorded {
                    let _ = recorded.send(());
                }
                let mut out = Vec::with_capacity(2);
                if came_online && let Some(user) = &conn.user_id {
                    out.push(BackendMessage::UserOnline(user.as_str().into()));
                }
                out.push(BackendMessage::SocketConnected(Arc::new(SocketConnected::of(&conn, rooms))));
                out
            }
            Outgoing::Disconnected { conn, reason } => {
                let user = conn.user_id.as_deref();
                match self.presence_del(self.instance_id(), &conn.namespace, &conn.socket_id, user).await {
                    Ok((removed, went_offline)) => super::presence::disconnect_messages(
                        &conn.socket_id,
                        user,
                        &conn.namespace,
                        &reason,
                        removed,
                        went_offline,
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "presence not updated in redis; reported once it is back");
                        let mut unreported = self.unreported.lock().unwrap_or_else(|e| e.into_inner());
                        if unreported.len() < super::MAX_UNREPORTED {
                            unreported.push((conn, reason));
                        }
                        Vec::new()
                    }
                }
            }
            Outgoing::TakeOffline { user_id, namespace, reply } => {
                let _ = reply.send(self.take_offline(&user_id, &namespace).await);
                Vec::new()
            }
        }
    }
}
