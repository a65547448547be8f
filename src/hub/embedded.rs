//! One instance in memory: the embedded backplane. Presence is this instance's own,
//! offline messages live in memory, client events go straight to this instance's backend
//! streams, and there is no other instance to relay anything to.

use std::sync::{Arc, OnceLock};

use futures::FutureExt;
use futures::future::BoxFuture;

use super::backplane::{
    Backplane, EventRefusal, Located, NodeHandle, NodeInfo, NodeReply, NodeRequest, OfflineMessage, OfflineOutcome,
    Reach, Remote, Wait,
};
use super::offline::{OfflineLimits, OfflineStore};
use super::registry::{Connection, Presence};
use super::router::{AckReply, BackendMessage, ClientEvent, DispatchOutcome, SocketConnected, SocketDisconnected};
use super::{HubError, Target};
use crate::shutdown::Shutdown;

pub struct EmbeddedBackplane {
    node: OnceLock<NodeHandle>,
    offline: OfflineStore,
}

impl EmbeddedBackplane {
    pub fn new(offline: OfflineLimits) -> Self {
        Self { node: OnceLock::new(), offline: OfflineStore::new(offline) }
    }

    fn node(&self) -> &NodeHandle {
        // The hub attaches itself before it hands the backplane to anyone.
        self.node.get().expect("backplane attached by Hub::new")
    }
}

impl Backplane for EmbeddedBackplane {
    fn attach(&self, node: NodeHandle) {
        let _ = self.node.set(node);
    }

    fn start(&self, shutdown: Shutdown) {
        let node = self.node().clone();
        let offline = self.offline.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => {}
                    _ = shutdown.wait() => return,
                }
                node.metrics.dropped("offline_expired", offline.expire(super::wall_ms(super::now_wall())));
            }
        });
    }

    fn reach(&self) -> Reach {
        Reach::Alone
    }

    /// This instance alone.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, HubError>> {
        let node = self.node();
        let this = NodeInfo {
            instance_id: node.instance_id.clone(),
            connections: node.registry.len() as u64,
            last_seen: super::now_wall(),
        };
        futures::future::ready(Ok(vec![this])).boxed()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        futures::future::ready(()).boxed()
    }

    fn socket_connected(&self, conn: Arc<Connection>, rooms: Vec<String>, local: Presence) -> BoxFuture<'static, ()> {
        let router = &self.node().router;
        if local == Presence::CameOnline
            && let Some(user) = &conn.user_id
        {
            router.publish_lifecycle(None, user, BackendMessage::UserOnline(user.as_str().into()));
        }
        let key = conn.user_id.as_deref().unwrap_or(&conn.socket_id);
        router.publish_lifecycle(
            Some(&conn.namespace),
            key,
            BackendMessage::SocketConnected(Arc::new(SocketConnected::of(&conn, rooms))),
        );
        futures::future::ready(()).boxed()
    }

    fn socket_disconnected(&self, conn: Arc<Connection>, reason: &str, local: Presence) {
        let router = &self.node().router;
        let key = conn.user_id.as_deref().unwrap_or(&conn.socket_id);
        router.publish_lifecycle(
            Some(&conn.namespace),
            key,
            BackendMessage::SocketDisconnected(Arc::new(SocketDisconnected::of(&conn, reason))),
        );
        if local == Presence::WentOffline
            && let Some(user) = &conn.user_id
        {
            router.publish_lifecycle(None, user, BackendMessage::UserOffline(user.as_str().into()));
        }
    }

    fn rooms_joined<'a>(&'a self, _namespace: &'a str, _rooms: &'a [String]) -> BoxFuture<'a, ()> {
        futures::future::ready(()).boxed()
    }

    fn locate<'a>(&'a self, _namespace: &'a str, _target: &'a Target) -> BoxFuture<'a, Result<Located, HubError>> {
        futures::future::ready(Ok(Located::HERE_ONLY)).boxed()
    }

    fn store_offline<'a>(
        &'a self,
        user: &'a str,
        message: OfflineMessage,
    ) -> BoxFuture<'a, Result<OfflineOutcome, HubError>> {
        let registry = &self.node().registry;
        // Decided under the store's lock, which taking (after a connect registered the
        // socket) also holds: a racing connect either finds the message or is seen here.
        let outcome = self.offline.store_if(user, message, || !registry.is_online(user));
        futures::future::ready(Ok(outcome)).boxed()
    }

    fn keep_undelivered<'a>(&'a self, user: &'a str, message: OfflineMessage) -> BoxFuture<'a, OfflineOutcome> {
        futures::future::ready(self.offline.store_if(user, message, || true)).boxed()
    }

    fn take_offline(&self, conn: &Connection) -> BoxFuture<'static, Vec<OfflineMessage>> {
        let kept = match &conn.user_id {
            Some(user) => self.offline.take(user, &conn.namespace, super::wall_ms(super::now_wall())),
            None => Vec::new(),
        };
        futures::future::ready(kept).boxed()
    }

    fn send_event(&self, seq: u64, event: Arc<ClientEvent>) -> Result<(), EventRefusal> {
        match self.node().router.dispatch(seq, event) {
            DispatchOutcome::Delivered | DispatchOutcome::Buffered => Ok(()),
            DispatchOutcome::Overloaded => Err(EventRefusal::Overloaded),
            DispatchOutcome::Dropped => Err(EventRefusal::NoBackend),
        }
    }

    fn deciders_changed(&self, _kinds: (bool, bool)) {}

    /// There is no other instance.
    fn decider_nodes(&self, _kind: super::deciders::DecisionKind) -> BoxFuture<'_, Result<Vec<String>, HubError>> {
        futures::future::ready(Ok(Vec::new())).boxed()
    }

    fn group_subscribed<'a>(&'a self, _group: &'a str) -> BoxFuture<'a, ()> {
        futures::future::ready(()).boxed()
    }

    fn event_settled(&self, _group: &str, _event_id: &str) -> Option<bool> {
        None
    }

    fn forward_ack(&self, event_id: &str, _reply: AckReply) -> Result<(), HubError> {
        Err(HubError::NotFound(format!(
            "ack.event_id {:?}: no client is waiting for it (unknown, already answered, or timed out)",
            event_id.chars().take(64).collect::<String>()
        )))
    }

    /// There is no other instance: nothing to carry, no answers.
    fn relay(
        &self,
        _to: Remote,
        _request: NodeRequest,
        _wait: Wait,
    ) -> BoxFuture<'_, Result<Vec<NodeReply>, HubError>> {
        futures::future::ready(Ok(Vec::new())).boxed()
    }
}
