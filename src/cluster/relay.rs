//! Operations on sockets carried to the instances that hold them, and their answers.
//!
//! Each instance listens on its own channel (`P:node:<instance>`, sharded in a Redis
//! Cluster, so only the shard serving it carries its messages): requests for its sockets,
//! answers to its own requests, and backend acks for its clients. Requests for
//! every instance (everyone pushes, listings) go once on `P:all`, a classic channel: in a
//! Redis Cluster the node that takes the PUBLISH forwards it over the cluster bus to every
//! other node (one bus message per node, masters and replicas, whether or not an instance
//! listens there), which every-instance requests need anyway. A request that
//! wants answers names the asking instance; the asker waits for one answer per instance it
//! addressed (the live instances the last heartbeat saw, for `P:all`), at most
//! `redis.request_timeout_ms` plus the operation's own wait (an ack timeout).
//!
//! Requests are applied in the order they arrive, so pushes from one instance to one
//! socket keep their order; one that must wait (for client acks) finishes on its own task
//! after its packets went out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::Poll;

use tokio::sync::mpsc;

use super::Cluster;
use super::codec::{NodeMessage, WireAck};
use crate::hub::HubError;
use crate::hub::backplane::{NodeReply, NodeRequest, Remote, Wait};
use crate::hub::router::AckReply;

/// Messages waiting on an instance's channel before new ones are dropped (and logged):
/// other instances send them, never clients, and the reader applies them at memory speed.
const CHANNEL_BUFFER: usize = 16_384;

/// Requests of this instance waiting for answers.
#[derive(Default)]
pub struct Relay {
    next_id: AtomicU64,
    waiting: Mutex<HashMap<u64, mpsc::Sender<NodeReply>>>,
}

impl Cluster {
    /// Carries `request` to other instances; see the module doc.
    pub(super) async fn relay(&self, to: Remote, request: NodeRequest, wait: Wait) -> Result<Vec<NodeReply>, HubError> {
        let channels: Vec<String> = match &to {
            Remote::None => return Ok(Vec::new()),
            Remote::Nodes(nodes) => nodes.iter().map(|n| self.keys.node_channel(n)).collect(),
            Remote::Room { namespace, room } => vec![self.keys.room_channel(namespace, room)],
            Remote::All => vec![self.keys.all_channel()],
        };
        // Room channels are sharded everywhere; instance channels in a Redis Cluster, where
        // a classic message would be copied to every node.
        let sharded = matches!(to, Remote::Room { .. }) || (self.link.is_cluster() && matches!(to, Remote::Nodes(_)));
        if !self.link.is_up() {
            return Err(HubError::Unavailable("the cluster's Redis is unreachable".into()));
        }
        let me = self.instance_id().to_owned();
        let Wait::Answers { extra } = wait else {
            let message = NodeMessage::Request { id: 0, from: me, answer_to: false, request };
            if let Some(bytes) = message.encode() {
                self.publish_all(&channels, &bytes, sharded).await?;
            }
            return Ok(Vec::new());
        };
        let most = match &to {
            Remote::Nodes(nodes) => nodes.len(),
            Remote::Room { .. } => self.room_listeners(&channels[0]).await,
            _ => self.other_listeners().await,
        };
        if most == 0 {
            return Ok(Vec::new());
        }
        let id = self.relay.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, mut rx) = mpsc::channel(most);
        self.relay.waiting.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        let _forget = Forget { relay: &self.relay, id };
        let message = NodeMessage::Request { id, from: me, answer_to: true, request };
        let Some(bytes) = message.encode() else { return Ok(Vec::new()) };
        let heard = self.publish_all(&channels, &bytes, sharded).await?;
        // An instance's own channel with no subscriber (it is gone, or its subscription was
        // lost with a Redis node and not made again yet) will not answer: not waited for.
        let expected = if matches!(to, Remote::Nodes(_)) { heard.iter().filter(|n| **n > 0).count() } else { most };
        let deadline = tokio::time::Instant::now() + self.settings.request_timeout + extra;
        let mut answers = Vec::with_capacity(expected);
        while answers.len() < expected {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(reply)) => answers.push(reply),
                Ok(None) | Err(_) => break,
            }
        }
        if answers.len() < most {
            tracing::debug!(
                addressed = most,
                listening = expected,
                got = answers.len(),
                "some instances did not answer"
            );
        }
        Ok(answers)
    }

    /// How many other instances listen on `P:all` now (Redis knows exactly; the heartbeat's
    /// list can be a second behind an instance that just started). In a Redis Cluster each
    /// node counts only its own subscribers; the client subscribes a classic channel on the
    /// node serving the channel's slot, so that node is the one asked.
    async fn other_listeners(&self) -> usize {
        let Some(mut conn) = self.link.conn() else { return self.other_live_nodes().len() };
        let channel = self.keys.all_channel();
        let reply: Result<(String, usize), _> =
            conn.on_slot_of(redis::cmd("PUBSUB").arg("NUMSUB").arg(&channel), &channel).await;
        match reply {
            Ok((_, n)) => n.saturating_sub(1),
            Err(_) => self.other_live_nodes().len(),
        }
    }

    /// How many other instances listen on a room's channel now.
    async fn room_listeners(&self, channel: &str) -> usize {
        let Some(mut conn) = self.link.conn() else { return 0 };
        let reply: Result<(String, usize), _> =
            conn.on_slot_of(redis::cmd("PUBSUB").arg("SHARDNUMSUB").arg(channel), channel).await;
        let listening = reply.map_or(0, |(_, n)| n);
        listening.saturating_sub(usize::from(self.interest.listens(channel)))
    }

    /// Publishes on each channel; how many subscribers each one had (0 for a channel
    /// whose publish failed). Err only when no publish went through.
    async fn publish_all(&self, channels: &[String], bytes: &[u8], sharded: bool) -> Result<Vec<usize>, HubError> {
        let mut heard = Vec::with_capacity(channels.len());
        let mut failed = None;
        for channel in channels {
            let published = if sharded {
                self.link.spublish(channel, bytes).await
            } else {
                self.link.publish(channel, bytes).await
            };
            match published {
                Ok(n) => heard.push(n),
                Err(e) => {
                    heard.push(0);
                    failed = Some(e);
                }
            }
        }
        match failed {
            Some(e) if heard.iter().all(|n| *n == 0) => Err(super::redis_unavailable(e)),
            _ => Ok(heard),
        }
    }

    /// Sends a backend's answer to the instance whose client waits for `event_id`.
    pub(super) fn forward_ack(self: &Arc<Self>, event_id: &str, reply: AckReply) -> Result<(), HubError> {
        let origin = match event_id.split_once('-') {
            Some((origin, _)) if is_instance_id(origin) => origin.to_owned(),
            _ => {
                return Err(HubError::NotFound(format!(
                    "ack.event_id {:?} is not an event id this cluster issued",
                    event_id.chars().take(64).collect::<String>()
                )));
            }
        };
        let Some(bytes) = NodeMessage::Ack(WireAck::new(event_id, reply)).encode() else { return Ok(()) };
        // Sent on its own task: answers to other instances' clients must not wait behind
        // each other's round trips.
        let cluster = self.clone();
        tokio::spawn(async move { cluster.publish_to_node(&origin, &bytes).await });
        Ok(())
    }

    /// Reads this instance's channel until the process ends.
    pub(super) async fn run_node_channel(self: Arc<Self>) {
        let channel = self.keys.node_channel(self.instance_id());
        let sharded = self.link.is_cluster();
        self.link.check_subscription(&channel, sharded);
        let mut rx = self.link.subscribe(channel, CHANNEL_BUFFER, sharded).await;
        while let Some((_, bytes)) = rx.recv().await {
            match NodeMessage::decode(&bytes) {
                Some(NodeMessage::Request { id, from, answer_to, request }) => {
                    self.node().metrics.cluster_requests_received.inc();
                    self.apply_request(id, from, answer_to, request).await;
                }
                Some(NodeMessage::Answer { id, reply }) => {
                    let waiting = self.relay.waiting.lock().unwrap_or_else(|e| e.into_inner()).get(&id).cloned();
                    if let Some(tx) = waiting {
                        let _ = tx.try_send(reply);
                    }
                }
                Some(NodeMessage::Ack(ack)) => {
                    let (event_id, reply) = ack.into_parts();
                    if let Err(e) = self.node().router.complete_ack(&event_id, reply) {
                        tracing::debug!(error = %e, "forwarded ack not applied");
                    }
                }
                None => {}
            }
        }
    }

    /// Reads the every-instance channel until the process ends.
    pub(super) async fn run_all_channel(self: Arc<Self>) {
        let mut rx = self.link.subscribe(self.keys.all_channel(), CHANNEL_BUFFER, false).await;
        while let Some((_, bytes)) = rx.recv().await {
            if let Some(NodeMessage::Request { id, from, answer_to, request }) = NodeMessage::decode(&bytes)
                && from != self.instance_id()
            {
                self.node().metrics.cluster_requests_received.inc();
                self.apply_request(id, from, answer_to, request).await;
            }
        }
    }

    /// Learns at once when a backend group appears anywhere (the heartbeat would take up
    /// to a second).
    pub(super) async fn run_group_news(self: Arc<Self>) {
        let mut rx = self.link.subscribe(self.keys.groups(), 64, false).await;
        while rx.recv().await.is_some() {
            self.groups_known.store(true, Ordering::Release);
        }
    }

    /// Applies another instance's request to this instance's sockets, and answers it when
    /// asked to. Whatever the request does at once (its packets going out) happens before
    /// the next request is read; only waiting for client acks continues on its own task.
    pub(super) async fn apply_request(self: &Arc<Self>, id: u64, from: String, answer_to: bool, request: NodeRequest) {
        let Some(hub) = self.node().hub.upgrade() else { return };
        let mut applying = Box::pin(async move { hub.apply_local(request).await });
        let reply = match futures::poll!(&mut applying) {
            Poll::Ready(reply) => reply,
            Poll::Pending => {
                let cluster = self.clone();
                tokio::spawn(async move {
                    let reply = applying.await;
                    if answer_to {
                        cluster.answer(&from, id, reply).await;
                    }
                });
                return;
            }
        };
        if answer_to {
            self.answer(&from, id, reply).await;
        }
    }

    async fn answer(&self, to: &str, id: u64, reply: NodeReply) {
        if let Some(bytes) = (NodeMessage::Answer { id, reply }).encode() {
            self.publish_to_node(to, &bytes).await;
        }
    }

    /// Publishes on one instance's channel (sharded in a Redis Cluster).
    async fn publish_to_node(&self, instance: &str, bytes: &[u8]) {
        let channel = self.keys.node_channel(instance);
        let _ = if self.link.is_cluster() {
            self.link.spublish(&channel, bytes).await
        } else {
            self.link.publish(&channel, bytes).await
        };
    }
}

/// Removes a request's answer slot however the wait ends.
struct Forget<'a> {
    relay: &'a Relay,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.relay.waiting.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

fn is_instance_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
