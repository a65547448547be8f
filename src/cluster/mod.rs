//! Cluster mode: several instances behind a load balancer, Redis between them. This is
//! the Redis implementation of the hub's [`Backplane`]; the hub does not know it exists.
//!
//! One concern per file:
//! - [`link`]: the Redis connection every part shares (reconnects, resubscribes, replaces
//!   a connection that stops answering) and its pub/sub channels, to one Redis or to a
//!   Redis Cluster.
//! - [`keys`]: every key and channel name, and the slot each lives in (hash tags).
//! - [`presence`]: who is online where and the connection index, changed by Lua scripts
//!   so racing instances agree (a user's last two sockets leaving at once on two
//!   instances); where a user's or a socket's sockets are.
//! - [`offline`]: messages kept for users with no socket anywhere.
//! - [`outbox`]: per-partition writers that put each user's connects, events and
//!   disconnects into Redis in the order they happened.
//! - [`streams`]: the readers that hand events from Redis Streams consumer groups to this
//!   instance's backend streams: at-least-once, redelivered when a backend comes back.
//! - [`relay`]: operations on sockets carried to the instances that hold them, their
//!   answers, and backend acks for clients on other instances.
//! - [`nodes`]: every instance reports itself each second; one that stops is reaped.
//! - [`codec`]: what instances write to each other.

mod codec;
mod keys;
pub mod link;
mod nodes;
mod offline;
mod outbox;
mod presence;
mod relay;
mod rooms;
mod streams;

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Notify, mpsc};

use crate::hub::backplane::{
    Backplane, EventRefusal, Located, NodeHandle, NodeInfo, NodeReply, NodeRequest, OfflineMessage, OfflineOutcome,
    Reach, Remote, Wait,
};
use crate::hub::deciders::DecisionKind;
use crate::hub::registry::{Connection, Presence};
use crate::hub::router::{AckReply, BackendMessage, ClientEvent};
use crate::hub::{HubError, Target};
use crate::shutdown::Shutdown;
use keys::Keys;
use link::RedisLink;
use outbox::Outgoing;

/// Queued outgoing operations per partition before new ones are refused.
const OUTBOX_CAPACITY: usize = 16_384;
/// Departures kept while Redis is unreachable, to report when it is back.
const MAX_UNREPORTED: usize = 100_000;

#[derive(Debug, Clone)]
pub struct ClusterSettings {
    pub prefix: String,
    pub request_timeout: Duration,
    pub partitions: usize,
    pub stream_max_len: u64,
    pub claim_idle: Duration,
    pub node_timeout: Duration,
    /// How long a client waits for an answer; past it an unanswered event is settled.
    pub ack_timeout: Duration,
    /// Messages kept per offline user and namespace.
    pub offline_max_messages: usize,
    /// Bytes kept per offline user and namespace.
    pub offline_max_bytes: usize,
}

impl ClusterSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let c = &config.redis;
        Self {
            ack_timeout: config.ack_timeout(),
            prefix: c.prefix.clone(),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            partitions: c.partitions as usize,
            stream_max_len: c.stream_max_len,
            claim_idle: Duration::from_millis(c.claim_idle_ms),
            node_timeout: Duration::from_millis(c.node_timeout_ms),
            offline_max_messages: config.offline.max_messages_per_user,
            offline_max_bytes: config.offline.max_bytes_per_user,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("redis.url: {0}")]
    Url(String),
}

/// The Redis backplane, as the hub holds it.
pub struct RedisBackplane {
    cluster: Arc<Cluster>,
}

impl RedisBackplane {
    /// Starting works with Redis down: the connection is made in the background.
    pub fn new(url: &str, settings: ClusterSettings) -> Result<Arc<Self>, ClusterError> {
        let link = RedisLink::new(url).map_err(|e| ClusterError::Url(e.to_string()))?;
        let (outbox, inboxes): (Vec<_>, Vec<_>) =
            (0..settings.partitions).map(|_| mpsc::channel(OUTBOX_CAPACITY)).unzip();
        let cluster = Arc::new(Cluster {
            keys: Keys::new(&settings.prefix, link.is_cluster()),
            link,
            settings,
            node: OnceLock::new(),
            outbox,
            inboxes: Mutex::new(inboxes),
            unreported: Mutex::default(),
            unrecorded: Mutex::default(),
            rejoined_at: Mutex::default(),
            left: AtomicBool::new(false),
            unwritten: AtomicUsize::new(0),
            flushed: Notify::new(),
            groups_known: AtomicBool::new(false),
            streams: streams::EventBus::default(),
            relay: relay::Relay::default(),
            interest: rooms::Interest::default(),
            live: Mutex::default(),
            deciders: Mutex::default(),
        });
        Ok(Arc::new(Self { cluster }))
    }
}

/// The cluster's state on this instance.
pub(crate) struct Cluster {
    keys: Keys,
    link: Arc<RedisLink>,
    settings: ClusterSettings,
    /// This instance's hub parts, handed over by the hub as it is built.
    node: OnceLock<NodeHandle>,
    outbox: Vec<mpsc::Sender<Outgoing>>,
    /// The outbox' receiving ends until `start` hands them to their writers.
    inboxes: Mutex<Vec<mpsc::Receiver<Outgoing>>>,
    /// Sockets that left while Redis was unreachable: reported when it is back (Redis may
    /// have lost every trace of them, so the resync alone would not know).
    unreported: Mutex<Vec<(Arc<Connection>, String)>>,
    /// Sockets whose connect could not be written (Redis was unreachable): announced when
    /// it is back, however recent they are.
    unrecorded: Mutex<Vec<Arc<Connection>>>,
    /// When this instance last found itself missing from the node list after having
    /// reported (Redis lost its data, or the others reaped it): see
    /// [`Cluster::presence_may_be_missing`].
    rejoined_at: Mutex<Option<std::time::Instant>>,
    /// Set once this instance has left the cluster (shutdown): it stops reporting.
    left: AtomicBool,
    /// Items queued or being written, so shutdown can wait until they reached Redis.
    unwritten: AtomicUsize,
    /// Woken whenever `unwritten` drops to zero.
    flushed: Notify,
    /// True when some backend group exists anywhere in the cluster; otherwise client
    /// events are answered "no backend" at once rather than written for nobody.
    groups_known: AtomicBool,
    streams: streams::EventBus,
    relay: relay::Relay,
    interest: rooms::Interest,
    /// The other live instances, as the last heartbeat saw them: requests to every
    /// instance wait for this many answers.
    live: Mutex<Vec<String>>,
    /// What this instance's deciders decide, as advertised in `P:deciders`.
    deciders: Mutex<String>,
}

impl Cluster {
    fn node(&self) -> &NodeHandle {
        // The hub attaches itself before it hands the backplane to anyone.
        self.node.get().expect("backplane attached by Hub::new")
    }

    fn instance_id(&self) -> &str {
        &self.node().instance_id
    }

    fn conn(&self) -> Result<link::Conn, HubError> {
        self.link.conn().ok_or_else(|| HubError::Unavailable("the cluster's Redis is unreachable; retry later".into()))
    }

    /// Resolves once everything queued so far has been written (or failed to be).
    async fn flushed(&self) {
        loop {
            let notified = self.flushed.notified();
            if self.unwritten.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// True for `redis.node_timeout_ms` after this instance got Redis back after losing it,
    /// or found Redis had lost its data: the instances are re-registering their sockets
    /// then (each on its next report), so a socket missing from presence may be connected
    /// all the same. Every live instance has reported within that time.
    fn presence_may_be_missing(&self) -> bool {
        let window = self.settings.node_timeout;
        let rejoined = *self.rejoined_at.lock().unwrap_or_else(|e| e.into_inner());
        self.link.reconnected_within(window) || rejoined.is_some_and(|t| t.elapsed() < window)
    }

    fn other_live_nodes(&self) -> Vec<String> {
        self.live.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

impl Backplane for RedisBackplane {
    fn attach(&self, node: NodeHandle) {
        node.metrics.redis_up.set(0);
        let _ = self.cluster.node.set(node);
    }

    fn start(&self, shutdown: Shutdown) {
        let c = &self.cluster;
        let inboxes = std::mem::take(&mut *c.inboxes.lock().unwrap_or_else(|e| e.into_inner()));
        tokio::spawn(c.link.clone().run(shutdown.clone()));
        for (partition, inbox) in inboxes.into_iter().enumerate() {
            tokio::spawn(c.clone().run_outbox(partition, inbox));
        }
        tokio::spawn(c.clone().run_node_channel());
        tokio::spawn(c.clone().run_all_channel());
        tokio::spawn(c.clone().run_room_channels());
        tokio::spawn(c.clone().run_group_news());
        if c.link.is_cluster() {
            tokio::spawn(c.clone().run_wakes());
        }
        tokio::spawn(c.clone().run_heartbeat(shutdown));
    }

    fn reach(&self) -> Reach {
        if self.cluster.link.is_up() { Reach::Up } else { Reach::Down }
    }

    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, HubError>> {
        self.cluster.nodes().boxed()
    }

    fn leave(&self) -> BoxFuture<'_, ()> {
        async move {
            self.cluster.flushed().await;
            self.cluster.leave().await;
        }
        .boxed()
    }

    fn socket_connected(&self, conn: Arc<Connection>, rooms: Vec<String>, _local: Presence) -> BoxFuture<'static, ()> {
        let c = &self.cluster;
        if !c.link.is_up() {
            // Recorded when Redis is back (the resync); nobody could find it meanwhile.
            let _ = c.enqueue(Outgoing::Connected { conn, rooms, recorded: None });
            return futures::future::ready(()).boxed();
        }
        let (recorded, done) = tokio::sync::oneshot::channel();
        if c.enqueue(Outgoing::Connected { conn, rooms, recorded: Some(recorded) }).is_err() {
            c.node().metrics.dropped("cluster_outbox_full", 1);
            return futures::future::ready(()).boxed();
        }
        let wait = c.settings.request_timeout;
        async move {
            let _ = tokio::time::timeout(wait, done).await;
        }
        .boxed()
    }

    fn socket_disconnected(&self, conn: Arc<Connection>, reason: &str, _local: Presence) {
        let c = &self.cluster;
        if c.enqueue(Outgoing::Disconnected { conn, reason: reason.to_owned() }).is_err() {
            c.node().metrics.dropped("cluster_outbox_full", 1);
        }
    }

    fn rooms_joined<'a>(&'a self, namespace: &'a str, rooms: &'a [String]) -> BoxFuture<'a, ()> {
        self.cluster.rooms_joined(namespace, rooms).boxed()
    }

    fn locate<'a>(&'a self, namespace: &'a str, target: &'a Target) -> BoxFuture<'a, Result<Located, HubError>> {
        self.cluster.locate(namespace, target).boxed()
    }

    fn store_offline<'a>(
        &'a self,
        user: &'a str,
        message: OfflineMessage,
    ) -> BoxFuture<'a, Result<OfflineOutcome, HubError>> {
        self.cluster.store_offline(user, message, true).boxed()
    }

    fn keep_undelivered<'a>(&'a self, user: &'a str, message: OfflineMessage) -> BoxFuture<'a, OfflineOutcome> {
        async move {
            self.cluster.store_offline(user, message, false).await.unwrap_or_else(|e| {
                tracing::debug!(error = %e, "undelivered push not kept");
                OfflineOutcome::Full
            })
        }
        .boxed()
    }

    fn take_offline(&self, conn: &Connection) -> BoxFuture<'static, Vec<OfflineMessage>> {
        let Some(user) = conn.user_id.clone() else { return futures::future::ready(Vec::new()).boxed() };
        // Queued behind the socket's connect, so the push side's atomic "offline?" check
        // and this read never both miss a message.
        let (reply, kept) = tokio::sync::oneshot::channel();
        let take = Outgoing::TakeOffline { user_id: user, namespace: conn.namespace.clone(), reply };
        if self.cluster.enqueue(take).is_err() {
            self.cluster.node().metrics.dropped("cluster_outbox_full", 1);
            return futures::future::ready(Vec::new()).boxed();
        }
        async move { kept.await.unwrap_or_default() }.boxed()
    }

    fn send_event(&self, seq: u64, event: Arc<ClientEvent>) -> Result<(), EventRefusal> {
        let c = &self.cluster;
        if !c.groups_known.load(Ordering::Acquire) {
            return Err(EventRefusal::NoBackend);
        }
        let pending_ack = event.wants_ack.then_some(seq);
        c.enqueue(Outgoing::Message { message: BackendMessage::ClientEvent(event), pending_ack }).map_err(|_| {
            c.node().metrics.dropped("cluster_outbox_full", 1);
            EventRefusal::Overloaded
        })
    }

    fn deciders_changed(&self, kinds: (bool, bool)) {
        let flags = match kinds {
            (true, true) => "cj",
            (true, false) => "c",
            (false, true) => "j",
            (false, false) => "",
        };
        *self.cluster.deciders.lock().unwrap_or_else(|e| e.into_inner()) = flags.to_owned();
        let cluster = self.cluster.clone();
        tokio::spawn(async move { cluster.advertise_deciders().await });
    }

    fn decider_nodes(&self, kind: DecisionKind) -> BoxFuture<'_, Result<Vec<String>, HubError>> {
        self.cluster.decider_nodes(kind).boxed()
    }

    fn group_subscribed<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()> {
        async move {
            self.cluster.prepare_group(group).await;
            self.cluster.ensure_reader(group);
        }
        .boxed()
    }

    fn event_settled(&self, group: &str, event_id: &str) -> Option<bool> {
        self.cluster.settle(group, event_id)
    }

    fn forward_ack(&self, event_id: &str, reply: AckReply) -> Result<(), HubError> {
        self.cluster.forward_ack(event_id, reply)
    }

    fn relay(&self, to: Remote, request: NodeRequest, wait: Wait) -> BoxFuture<'_, Result<Vec<NodeReply>, HubError>> {
        self.cluster.relay(to, request, wait).boxed()
    }
}

fn now_ms() -> u64 {
    crate::hub::wall_ms(SystemTime::now())
}

fn at_ms(ms: u64) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ms)
}

fn redis_unavailable(e: redis::RedisError) -> HubError {
    HubError::Unavailable(format!("the cluster's Redis failed: {e}"))
}
