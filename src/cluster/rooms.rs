//! Room interest: an instance listens on a room's channel only while it has sockets in
//! that room, so a room push reaches only the instances holding its members.
//!
//! Each room has a sharded channel (`P:room:<namespace>:<room>`, `SSUBSCRIBE`: in a Redis
//! Cluster it lives on one shard). A socket joining a room here subscribes the channel
//! before the join is answered, so a push made after the join returned always reaches it.
//! Channels of rooms left empty are unsubscribed a few seconds later by a sweep that reads
//! this instance's rooms; a push that arrives meanwhile finds no member and costs only its
//! decoding. Subscription changes are serialized by one lock, and the sweep reads the rooms
//! while holding it, so a join racing the sweep either is seen by it or subscribes again
//! after it.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::Cluster;
use super::codec::NodeMessage;
use super::link::ChanItem;

/// Messages waiting from room channels before new ones are dropped (and logged).
const ROOM_BUFFER: usize = 16_384;

/// The room channels this instance listens on.
pub struct Interest {
    channels: tokio::sync::Mutex<HashSet<String>>,
    tx: mpsc::Sender<ChanItem>,
    rx: std::sync::Mutex<Option<mpsc::Receiver<ChanItem>>>,
}

impl Default for Interest {
    fn default() -> Self {
        let (tx, rx) = mpsc::channel(ROOM_BUFFER);
        Self { channels: tokio::sync::Mutex::default(), tx, rx: std::sync::Mutex::new(Some(rx)) }
    }
}

impl Interest {
    /// Whether this instance listens on `channel` now.
    pub fn listens(&self, channel: &str) -> bool {
        self.channels.try_lock().map(|c| c.contains(channel)).unwrap_or(true)
    }
}

impl Cluster {
    /// Listens on the channels of rooms this instance's sockets just joined.
    pub(super) async fn rooms_joined(&self, namespace: &str, rooms: &[String]) {
        let mut channels = self.interest.channels.lock().await;
        for room in rooms {
            let channel = self.keys.room_channel(namespace, room);
            if channels.insert(channel.clone()) {
                // Kept even if Redis did not confirm: the link subscribes again when the
                // connection recovers.
                let _ = self.link.subscribe_into(channel, self.interest.tx.clone(), true).await;
            }
        }
    }

    /// Stops listening on the channels of rooms with no socket here any more.
    pub(super) async fn drop_idle_rooms(&self) {
        let Some(hub) = self.node().hub.upgrade() else { return };
        let mut channels = self.interest.channels.lock().await;
        if channels.is_empty() {
            // Nothing to drop: spare the walk over every room (user rooms included).
            return;
        }
        let mut local = HashSet::new();
        for namespace in &hub.settings().namespaces {
            for room in hub.local_rooms(namespace).await {
                local.insert(self.keys.room_channel(namespace, &room));
            }
        }
        let idle: Vec<String> = channels.iter().filter(|c| !local.contains(*c)).cloned().collect();
        for channel in idle {
            self.link.unsubscribe(&channel).await;
            channels.remove(&channel);
        }
    }

    /// Applies the requests that arrive on room channels (other instances' room pushes
    /// and room changes), until the process ends.
    pub(super) async fn run_room_channels(self: Arc<Self>) {
        let Some(mut rx) = self.interest.rx.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        while let Some((_, bytes)) = rx.recv().await {
            if let Some(NodeMessage::Request { id, from, answer_to, request }) = NodeMessage::decode(&bytes)
                && from != self.instance_id()
            {
                self.node().metrics.cluster_requests_received.inc();
                self.apply_request(id, from, answer_to, request).await;
            }
        }
    }
}
