//! Pushes with a ttl that a connected socket could not take (its outgoing buffer was full):
//! kept for that socket and delivered, in order, once it has room again; if it leaves
//! first, kept for its user's next connect like an offline message. The push's report
//! says `kept` for that socket, so nothing accepted with a ttl is lost without the backend
//! being told.
//!
//! Bounded like the offline store (`offline.max_messages_per_user`,
//! `offline.max_bytes_per_user`, per socket here); past it a push is reported not kept.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::backplane::{OfflineMessage, OfflineOutcome};
use super::registry::{Connection, Owed};
use super::{Hub, Socket};

/// How often sockets that are owed pushes are tried again.
const RETRY_EVERY: Duration = Duration::from_millis(50);

/// The sockets owed pushes, so the retry task visits only those.
#[derive(Default)]
pub struct Debtors {
    sockets: Mutex<HashSet<(String, String)>>,
    wake: tokio::sync::Notify,
}

impl Hub {
    /// Whether pushes are already owed to this socket (a new ttl push then waits behind
    /// them, so the socket receives them in order).
    pub(super) fn owes(&self, conn: &Connection) -> bool {
        !lock(&conn.owed).queue.is_empty()
    }

    /// Keeps a ttl push for a socket that could not take it. False when the socket's
    /// share is full.
    pub(super) fn owe(&self, conn: &Connection, message: OfflineMessage) -> bool {
        let size = message.size();
        let mut owed = lock(&conn.owed);
        let limits = &self.settings.owed;
        if owed.queue.len() >= limits.max_messages_per_user || owed.bytes + size > limits.max_bytes_per_user {
            return false;
        }
        owed.queue.push_back(message);
        owed.bytes += size;
        drop(owed);
        let mut debtors = self.debtors.sockets.lock().unwrap_or_else(|e| e.into_inner());
        if debtors.insert((conn.namespace.clone(), conn.socket_id.clone())) && debtors.len() == 1 {
            self.debtors.wake.notify_one();
        }
        true
    }

    /// Delivers what was kept for a user who just connected, oldest first: what the
    /// socket cannot take at once (its outgoing buffer holds `socketio.max_buffer_size`
    /// packets) is owed to it and follows as it reads.
    pub(super) fn deliver_kept(&self, conn: &Connection, socket: &Socket, messages: Vec<OfflineMessage>) {
        let namespace = conn.namespace.as_str();
        for message in messages {
            if !self.owes(conn)
                && let Ok(wire) = message.payload.wire_args()
                && socket.emit(&message.event, &wire).is_ok()
            {
                self.metrics.offline_delivered.inc();
                self.metrics.messages_sent.with_label_values(&[namespace, "offline"]).inc();
                continue;
            }
            if !self.owe(conn, message) {
                self.metrics.dropped("offline_full", 1);
            }
        }
        if !conn.is_registered() {
            // It left meanwhile: what it was owed goes back to the store.
            self.forward_owed(conn);
        }
    }

    /// Delivers what is owed to sockets as they make room, until shutdown.
    pub(super) async fn run_redelivery(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        loop {
            let idle = self.debtors.sockets.lock().unwrap_or_else(|e| e.into_inner()).is_empty();
            tokio::select! {
                _ = self.debtors.wake.notified(), if idle => {}
                _ = tokio::time::sleep(RETRY_EVERY), if !idle => {}
                _ = shutdown.wait() => return,
            }
            let debtors: Vec<(String, String)> =
                self.debtors.sockets.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
            for (namespace, socket_id) in debtors {
                let conn = self.registry.get(&namespace, &socket_id);
                let socket = super::push::socket_id_of(&socket_id)
                    .and_then(|sid| self.io.of(namespace.as_str()).and_then(|op| op.get_socket(sid)));
                let paid = match (conn, socket) {
                    (Some(conn), Some(socket)) => self.pay(&conn, &socket),
                    // Gone: what it was owed went to its user's offline store on its way out.
                    _ => true,
                };
                if paid {
                    self.debtors.sockets.lock().unwrap_or_else(|e| e.into_inner()).remove(&(namespace, socket_id));
                }
            }
        }
    }

    /// Emits what a socket is owed, in order, while it takes them. True when nothing is
    /// owed any more.
    fn pay(&self, conn: &Connection, socket: &Socket) -> bool {
        let now = super::wall_ms(super::now_wall());
        let mut owed = lock(&conn.owed);
        while let Some(message) = owed.queue.front() {
            if message.expires_at_ms <= now {
                self.metrics.dropped("offline_expired", 1);
            } else if let Ok(wire) = message.payload.wire_args() {
                // (The payload was validated when the push was accepted: encoding it
                // again cannot fail.)
                if socket.emit(&message.event, &wire).is_err() {
                    return false;
                }
                self.metrics.offline_delivered.inc();
                self.metrics.messages_sent.with_label_values(&[conn.namespace.as_str(), "offline"]).inc();
            }
            if let Some(done) = owed.queue.pop_front() {
                owed.bytes -= done.size();
            }
        }
        true
    }

    /// A socket that is owed pushes left: they are kept for its user's next connect.
    pub(super) fn forward_owed(&self, conn: &Connection) {
        let owed = std::mem::take(&mut *lock(&conn.owed));
        let Some(user) = conn.user_id.clone() else { return };
        if owed.queue.is_empty() {
            return;
        }
        let backplane = self.backplane.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            for message in owed.queue {
                if backplane.keep_undelivered(&user, message).await != OfflineOutcome::Stored {
                    metrics.dropped("offline_full", 1);
                }
            }
        });
    }
}

fn lock(owed: &Mutex<Owed>) -> std::sync::MutexGuard<'_, Owed> {
    owed.lock().unwrap_or_else(|e| e.into_inner())
}
