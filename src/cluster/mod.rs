//! Cluster mode: several instances behind a load balancer, Redis between them.
//!
//! What goes where:
//! - Pushes, room changes, disconnects and room listings ride socketioxide's Redis adapter
//!   (`socketioxide-redis`) through [`link::BridgeDriver`]; nothing here re-implements them.
//! - Presence, the connection index and offline messages are Redis keys changed by Lua
//!   scripts, so two instances racing (a user's last two sockets leaving at once on two
//!   instances) see one consistent answer.
//! - Client events and lifecycle news go to the backend through Redis Streams
//!   ([`events`]): at-least-once, redelivered when a backend comes back.
//! - Every instance reports itself each second (`nodes`); one that stops reporting is
//!   reaped by the others: its sockets leave presence (with the lifecycle events a backend
//!   expects) and its unacknowledged events are claimed.
//!
//! Keys, all under `redis.prefix` (P):
//! `P:nodes` zset instance→last report ms; `P:node-info` hash instance→connections;
//! `P:presence:<user>` set of `instance|namespace|socket`; `P:node-sockets:<instance>` set of
//! `namespace|socket|user`; `P:conn:<namespace>` hash socket→connection info;
//! `P:offline:<user>:<namespace>` list; `P:offline-expiry` zset list key→newest expiry ms;
//! `P:events:<n>` streams; `P:groups` set;
//! `P:group:<group>` zset instance→last read ms; channel `P:acks:<instance>`.

pub mod events;
pub mod link;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::config::RedisConfig;
use crate::hub::registry::{Connection, Handshake, Registry};
use crate::hub::router::{AckReply, BackendMessage, EventRouter};
use crate::hub::{HubError, Payload};
use crate::telemetry::metrics::Metrics;
use link::RedisLink;

/// Queued outgoing operations per partition before new ones are refused.
const OUTBOX_CAPACITY: usize = 16_384;
/// Most outgoing operations written in one pipeline.
const OUTBOX_BATCH: usize = 256;
/// Departures kept while Redis is unreachable, to report when it is back.
const MAX_UNREPORTED: usize = 100_000;
/// Most messages kept per offline user and namespace; the oldest go first beyond it.
const OFFLINE_MAX: usize = 1000;

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
}

impl ClusterSettings {
    pub fn from_config(config: &crate::config::Config) -> Self {
        let c: &RedisConfig = &config.redis;
        Self {
            ack_timeout: config.ack_timeout(),
            prefix: c.prefix.clone(),
            request_timeout: Duration::from_millis(c.request_timeout_ms),
            partitions: c.partitions as usize,
            stream_max_len: c.stream_max_len,
            claim_idle: Duration::from_millis(c.claim_idle_ms),
            node_timeout: Duration::from_millis(c.node_timeout_ms),
        }
    }
}

/// A live instance, as Status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub instance_id: String,
    pub connections: u64,
    pub last_seen: SystemTime,
}

/// A message kept for an offline user, as stored in Redis.
#[derive(Debug, Serialize, Deserialize)]
pub struct StoredMessage {
    pub event: String,
    pub args_json: String,
    pub attachments: Vec<Bytes>,
    pub expires_at_ms: u64,
}

/// What the connection index keeps per socket, for cluster-wide listings.
#[derive(Debug, Serialize, Deserialize)]
pub struct ConnectionInfo {
    pub user_id: Option<String>,
    pub instance_id: String,
    pub connected_at_ms: u64,
    pub handshake: Handshake,
}

/// Work for one partition's writer, in the order it must reach Redis.
///
/// Everything about one user (all their sockets' events and lifecycle news, presence
/// included) goes to one partition, chosen by user id (by socket id for anonymous
/// sockets): a backend then sees a user's `UserOffline` and later `UserOnline` in the order
/// they happened, and each socket's connect, events and disconnect in order.
pub(crate) enum Outgoing {
    /// A client event or lifecycle message for the backends. `pending_ack` is the router
    /// sequence of the client callback waiting on it, failed if the write fails.
    Message {
        message: BackendMessage,
        pending_ack: Option<u64>,
    },
    Connected {
        conn: Arc<Connection>,
        rooms: Vec<String>,
    },
    Disconnected {
        conn: Arc<Connection>,
        reason: String,
    },
    TakeOffline {
        user_id: String,
        namespace: String,
        reply: oneshot::Sender<Vec<StoredMessage>>,
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

fn message_key(message: &BackendMessage) -> &str {
    match message {
        BackendMessage::ClientEvent(e) => e.user_id.as_deref().unwrap_or(&e.socket_id),
        BackendMessage::SocketConnected(c) => c.user_id.as_deref().unwrap_or(&c.socket_id),
        BackendMessage::SocketDisconnected(d) => d.user_id.as_deref().unwrap_or(&d.socket_id),
        BackendMessage::UserOnline(u) | BackendMessage::UserOffline(u) => u,
        BackendMessage::Subscribed { .. } => "",
    }
}

pub struct Cluster {
    link: Arc<RedisLink>,
    instance_id: String,
    settings: ClusterSettings,
    router: Arc<EventRouter>,
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    outbox: Vec<mpsc::Sender<Outgoing>>,
    /// The outbox' receiving ends until `start` hands them to their writers.
    inboxes: std::sync::Mutex<Vec<mpsc::Receiver<Outgoing>>>,
    /// Sockets that left while Redis was unreachable: reported when it is back (Redis may
    /// have lost every trace of them, so the resync alone would not know).
    unreported: std::sync::Mutex<Vec<(Arc<Connection>, String)>>,
    /// Set once this instance has left the cluster (shutdown): it stops reporting.
    left: AtomicBool,
    /// Items queued or being written, so shutdown can wait until they reached Redis.
    unwritten: std::sync::atomic::AtomicUsize,
    /// True when some backend group exists anywhere in the cluster; otherwise client
    /// events are answered "no backend" at once rather than written for nobody.
    groups_known: AtomicBool,
    events: events::EventBus,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn wall_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Adds a socket to presence, the instance's socket set and the connection index.
/// Returns 1 when the user just came online (this socket is their only one anywhere).
const PRESENCE_ADD: &str = r"
local added = 0
if ARGV[1] ~= '' then
  added = redis.call('SADD', KEYS[1], ARGV[1])
end
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
if added == 1 and redis.call('SCARD', KEYS[1]) == 1 then return 1 end
return 0
";

/// Removes a socket. Returns {removed, went_offline}: the caller that removed it is the
/// one that reports it, so racing removers (the socket's instance, a reaper) report once.
const PRESENCE_DEL: &str = r"
local removed = redis.call('SREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[3])
local offline = 0
if ARGV[1] ~= '' then
  local was = redis.call('SREM', KEYS[1], ARGV[1])
  if was == 1 and redis.call('SCARD', KEYS[1]) == 0 then offline = 1 end
  removed = math.max(removed, was)
end
return {removed, offline}
";

/// Keeps a message for a user only if they have no socket anywhere (checked in the same
/// atomic step, so a connect racing the push either sees it stored or gets it live).
/// The list's key also goes into an expiry index scored by its newest message's expiry,
/// so the sweep can count what expires unread; the key's own TTL (a minute later) only
/// guards against a sweep that never runs.
const OFFLINE_STORE: &str = r"
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
redis.call('RPUSH', KEYS[2], ARGV[1])
local trimmed = redis.call('LLEN', KEYS[2]) - tonumber(ARGV[3])
if trimmed > 0 then redis.call('LTRIM', KEYS[2], trimmed, -1) end
local ttl = tonumber(ARGV[2]) + 60000
if redis.call('PTTL', KEYS[2]) < ttl then redis.call('PEXPIRE', KEYS[2], ttl) end
redis.call('ZADD', KEYS[3], 'GT', ARGV[4], KEYS[2])
return 1
";

const OFFLINE_TAKE: &str = r"
local items = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], KEYS[1])
return items
";

/// Drops the lists whose every message has expired; returns how many messages went.
const OFFLINE_SWEEP: &str = r"
local keys = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local dropped = 0
for _, k in ipairs(keys) do
  dropped = dropped + redis.call('LLEN', k)
  redis.call('DEL', k)
  redis.call('ZREM', KEYS[1], k)
end
return dropped
";

impl Cluster {
    /// Connects in the background (starting works with Redis down) and returns the handle
    /// plus the adapter driver for socketioxide.
    pub fn new(
        url: &str,
        settings: ClusterSettings,
        instance_id: String,
        router: Arc<EventRouter>,
        registry: Arc<Registry>,
        metrics: Arc<Metrics>,
    ) -> Result<Arc<Self>, String> {
        let link = RedisLink::new(url).map_err(|e| e.to_string())?;
        let (outbox, inboxes): (Vec<_>, Vec<_>) =
            (0..settings.partitions).map(|_| mpsc::channel(OUTBOX_CAPACITY)).unzip();
        metrics.redis_up.set(0);
        Ok(Arc::new(Self {
            inboxes: std::sync::Mutex::new(inboxes),
            unwritten: std::sync::atomic::AtomicUsize::new(0),
            left: AtomicBool::new(false),
            unreported: std::sync::Mutex::default(),
            events: events::EventBus::default(),
            link,
            instance_id,
            settings,
            router,
            registry,
            metrics,
            outbox,
            groups_known: AtomicBool::new(false),
        }))
    }

    pub fn driver(&self) -> link::BridgeDriver {
        link::BridgeDriver::new(Some(self.link.clone()))
    }

    /// Starts the connection, the partition writers, the ack channel and the heartbeat.
    pub fn start(self: &Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let inboxes = std::mem::take(&mut *self.inboxes.lock().unwrap_or_else(|e| e.into_inner()));
        tokio::spawn(self.link.clone().run(shutdown.clone()));
        for (partition, inbox) in inboxes.into_iter().enumerate() {
            tokio::spawn(self.clone().run_outbox(partition, inbox));
        }
        tokio::spawn(self.clone().run_ack_channel());
        tokio::spawn(self.clone().run_group_news());
        tokio::spawn(self.clone().run_heartbeat(shutdown));
    }

    /// Resolves once everything queued so far has been written (or failed to be).
    pub async fn flushed(&self) {
        while self.unwritten.load(Ordering::Acquire) > 0 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    pub fn is_up(&self) -> bool {
        self.link.is_up()
    }

    pub fn settings(&self) -> &ClusterSettings {
        &self.settings
    }

    pub fn groups_known(&self) -> bool {
        self.groups_known.load(Ordering::Acquire)
    }

    fn key(&self, parts: &[&str]) -> String {
        let mut k = self.settings.prefix.clone();
        for p in parts {
            k.push(':');
            k.push_str(p);
        }
        k
    }

    fn partition_of(&self, key: &str) -> usize {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        (h.finish() % self.settings.partitions as u64) as usize
    }

    fn conn(&self) -> Result<redis::aio::ConnectionManager, HubError> {
        self.link.conn().ok_or_else(|| HubError::Unavailable("the cluster's Redis is unreachable; retry later".into()))
    }

    /// Queues work for its partition (see [`Outgoing`]): what concerns one user reaches
    /// Redis in the order it happened. Refused only when the queue is full.
    pub(crate) fn enqueue(&self, item: Outgoing) -> Result<(), Outgoing> {
        let partition = self.partition_of(item.partition_key());
        self.unwritten.fetch_add(1, Ordering::AcqRel);
        self.outbox[partition].try_send(item).map_err(|e| {
            self.unwritten.fetch_sub(1, Ordering::AcqRel);
            match e {
                mpsc::error::TrySendError::Full(item) | mpsc::error::TrySendError::Closed(item) => item,
            }
        })
    }

    async fn run_outbox(self: Arc<Self>, partition: usize, mut inbox: mpsc::Receiver<Outgoing>) {
        let stream = self.key(&["events", &partition.to_string()]);
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
            self.unwritten.fetch_sub(taken, Ordering::AcqRel);
        }
    }

    /// Appends messages to a partition stream in one round trip.
    async fn write_messages(&self, stream: &str, messages: Vec<(BackendMessage, Option<u64>)>) {
        if messages.is_empty() {
            return;
        }
        let mut pipe = redis::pipe();
        for (message, _) in &messages {
            let wire = events::encode(&self.instance_id, message);
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
        let result = match self.link.conn() {
            Some(mut conn) => pipe.query_async::<()>(&mut conn).await.map_err(|e| e.to_string()),
            None => Err("redis unreachable".to_owned()),
        };
        if let Err(e) = result {
            // Redis is out of reach: streams on this instance still get what they want,
            // as in embedded mode (without redelivery); the rest is dropped and counted,
            // and waiting clients are told at once.
            let mut dropped = 0u64;
            for (message, seq) in messages {
                if self.router.deliver_here(&message) {
                    continue;
                }
                dropped += 1;
                if let Some(seq) = seq {
                    self.router.fail_ack(
                        seq,
                        AckReply::error("backend_unavailable", "the cluster cannot reach its backends right now"),
                    );
                }
            }
            if dropped > 0 {
                tracing::warn!(error = %e, dropped, "events could not be written to redis and no stream here wanted them");
                self.metrics.dropped("redis_unavailable", dropped);
            }
        }
    }

    /// Presence and index changes; returns the lifecycle messages they cause, in order.
    async fn apply(&self, item: Outgoing) -> Vec<BackendMessage> {
        match item {
            Outgoing::Message { .. } => Vec::new(),
            Outgoing::Connected { conn, rooms } => {
                let came_online = match self.presence_add(&conn).await {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(error = %e, "presence not recorded in redis");
                        return Vec::new();
                    }
                };
                let mut out = Vec::with_capacity(2);
                if came_online && let Some(user) = &conn.user_id {
                    out.push(BackendMessage::UserOnline(user.as_str().into()));
                }
                out.push(BackendMessage::SocketConnected(Arc::new(crate::hub::router::SocketConnected {
                    socket_id: conn.socket_id.clone(),
                    user_id: conn.user_id.clone(),
                    namespace: conn.namespace.clone(),
                    handshake: conn.handshake.clone(),
                    rooms,
                    connected_at: conn.connected_at,
                })));
                out
            }
            Outgoing::Disconnected { conn, reason } => {
                match self
                    .presence_del(&self.instance_id, &conn.namespace, &conn.socket_id, conn.user_id.as_deref())
                    .await
                {
                    Ok((removed, went_offline)) => disconnect_messages(
                        &conn.socket_id,
                        conn.user_id.as_deref(),
                        &conn.namespace,
                        &reason,
                        removed,
                        went_offline,
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "presence not updated in redis; reported once it is back");
                        let mut unreported = self.unreported.lock().unwrap_or_else(|e| e.into_inner());
                        if unreported.len() < MAX_UNREPORTED {
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

    async fn presence_add(&self, conn: &Connection) -> Result<bool, redis::RedisError> {
        let mut redis = self.link.conn().ok_or_else(unreachable)?;
        let user = conn.user_id.as_deref().unwrap_or("");
        let info = ConnectionInfo {
            user_id: conn.user_id.clone(),
            instance_id: self.instance_id.clone(),
            connected_at_ms: wall_ms(conn.connected_at),
            handshake: (*conn.handshake).clone(),
        };
        let member = if user.is_empty() {
            String::new()
        } else {
            presence_member(&self.instance_id, &conn.namespace, &conn.socket_id)
        };
        let came: i64 = redis::Script::new(PRESENCE_ADD)
            .key(self.key(&["presence", user]))
            .key(self.key(&["node-sockets", &self.instance_id]))
            .key(self.key(&["conn", &conn.namespace]))
            .arg(member)
            .arg(node_socket_entry(&conn.namespace, &conn.socket_id, conn.user_id.as_deref()))
            .arg(&conn.socket_id)
            .arg(serde_json::to_string(&info).unwrap_or_default())
            .invoke_async(&mut redis)
            .await?;
        Ok(came == 1)
    }

    /// Removes one socket of `instance` from presence and the index.
    async fn presence_del(
        &self,
        instance: &str,
        namespace: &str,
        socket_id: &str,
        user: Option<&str>,
    ) -> Result<(bool, bool), redis::RedisError> {
        let mut redis = self.link.conn().ok_or_else(unreachable)?;
        let user = user.unwrap_or("");
        let member = if user.is_empty() { String::new() } else { presence_member(instance, namespace, socket_id) };
        let (removed, offline): (i64, i64) = redis::Script::new(PRESENCE_DEL)
            .key(self.key(&["presence", user]))
            .key(self.key(&["node-sockets", instance]))
            .key(self.key(&["conn", namespace]))
            .arg(member)
            .arg(node_socket_entry(namespace, socket_id, Some(user)))
            .arg(socket_id)
            .invoke_async(&mut redis)
            .await?;
        Ok((removed == 1, offline == 1))
    }

    /// Keeps a push for a user with no socket anywhere. Ok(false): the user is online
    /// somewhere, deliver it live instead.
    pub async fn store_offline(
        &self,
        user_id: &str,
        namespace: &str,
        event: &str,
        payload: &Payload,
        ttl: Duration,
    ) -> Result<bool, HubError> {
        let mut redis = self.conn()?;
        let expires_at_ms = now_ms() + ttl.as_millis() as u64;
        let item = StoredMessage {
            event: event.to_owned(),
            args_json: payload.args_json().to_owned(),
            attachments: payload.attachments().to_vec(),
            expires_at_ms,
        };
        let encoded = rmp_serde::to_vec_named(&item).map_err(|e| HubError::Unavailable(e.to_string()))?;
        let stored: i64 = redis::Script::new(OFFLINE_STORE)
            .key(self.key(&["presence", user_id]))
            .key(self.key(&["offline", user_id, namespace]))
            .key(self.key(&["offline-expiry"]))
            .arg(encoded)
            .arg(ttl.as_millis() as u64)
            .arg(OFFLINE_MAX)
            .arg(expires_at_ms)
            .invoke_async(&mut redis)
            .await
            .map_err(redis_unavailable)?;
        Ok(stored == 1)
    }

    async fn take_offline(&self, user_id: &str, namespace: &str) -> Vec<StoredMessage> {
        let Some(mut redis) = self.link.conn() else { return Vec::new() };
        let items: Vec<Vec<u8>> = match redis::Script::new(OFFLINE_TAKE)
            .key(self.key(&["offline", user_id, namespace]))
            .key(self.key(&["offline-expiry"]))
            .invoke_async(&mut redis)
            .await
        {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "offline messages could not be read from redis");
                return Vec::new();
            }
        };
        let now = now_ms();
        let mut expired = 0;
        let kept = items
            .iter()
            .filter_map(|raw| rmp_serde::from_slice::<StoredMessage>(raw).ok())
            .filter(|m| {
                let fresh = m.expires_at_ms > now;
                expired += u64::from(!fresh);
                fresh
            })
            .collect();
        self.metrics.dropped("offline_expired", expired);
        kept
    }

    /// Live sockets of a user in a namespace, over the whole cluster.
    pub async fn user_sockets(&self, user_id: &str, namespace: &str) -> Result<u32, HubError> {
        let mut redis = self.conn()?;
        let members: Vec<String> = redis.smembers(self.key(&["presence", user_id])).await.map_err(redis_unavailable)?;
        Ok(members.iter().filter(|m| member_namespace(m) == Some(namespace)).count() as u32)
    }

    /// Whether a socket is connected anywhere in the cluster.
    pub async fn socket_exists(&self, namespace: &str, socket_id: &str) -> Result<bool, HubError> {
        let mut redis = self.conn()?;
        redis.hexists(self.key(&["conn", namespace]), socket_id).await.map_err(redis_unavailable)
    }

    /// Index entries (connection info) of these sockets, in the same order.
    pub async fn connection_infos(
        &self,
        namespace: &str,
        socket_ids: &[String],
    ) -> Result<Vec<Option<ConnectionInfo>>, HubError> {
        if socket_ids.is_empty() {
            return Ok(Vec::new());
        }
        let mut redis = self.conn()?;
        let raw: Vec<Option<String>> = redis::cmd("HMGET")
            .arg(self.key(&["conn", namespace]))
            .arg(socket_ids)
            .query_async(&mut redis)
            .await
            .map_err(redis_unavailable)?;
        Ok(raw.into_iter().map(|r| r.and_then(|s| serde_json::from_str(&s).ok())).collect())
    }

    /// Instances that reported within `redis.node_timeout_ms`, this one first.
    pub async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError> {
        let mut redis = self.conn()?;
        let since = now_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let live: Vec<(String, f64)> =
            redis.zrangebyscore_withscores(self.key(&["nodes"]), since, "+inf").await.map_err(redis_unavailable)?;
        let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        let counts: Vec<Option<u64>> = if ids.is_empty() {
            Vec::new()
        } else {
            redis::cmd("HMGET")
                .arg(self.key(&["node-info"]))
                .arg(&ids)
                .query_async(&mut redis)
                .await
                .map_err(redis_unavailable)?
        };
        let mut nodes: Vec<NodeInfo> = live
            .iter()
            .zip(counts.into_iter().chain(std::iter::repeat(None)))
            .map(|((id, seen), connections)| NodeInfo {
                instance_id: id.clone(),
                connections: connections.unwrap_or(0),
                last_seen: UNIX_EPOCH + Duration::from_millis(*seen as u64),
            })
            .collect();
        nodes.sort_by_key(|n| (n.instance_id != self.instance_id, n.instance_id.clone()));
        Ok(nodes)
    }

    /// Sends a backend's answer to the instance holding the client.
    pub async fn forward_ack(&self, origin: &str, event_id: &str, reply: AckReply) {
        let wire = events::WireAck::new(event_id, reply);
        match rmp_serde::to_vec_named(&wire) {
            Ok(bytes) => self.link.publish(&self.key(&["acks", origin]), &bytes).await,
            Err(e) => tracing::warn!(error = %e, "ack could not be encoded"),
        }
    }

    /// Learns at once when a backend group appears anywhere (the heartbeat would take up
    /// to a second).
    async fn run_group_news(self: Arc<Self>) {
        let mut rx = self.link.subscribe(self.key(&["groups"]), 64).await;
        while rx.recv().await.is_some() {
            self.groups_known.store(true, Ordering::Release);
        }
    }

    async fn run_ack_channel(self: Arc<Self>) {
        let mut rx = self.link.subscribe(self.key(&["acks", &self.instance_id]), 4096).await;
        while let Some((_, bytes)) = rx.recv().await {
            match rmp_serde::from_slice::<events::WireAck>(&bytes) {
                Ok(ack) => {
                    let (event_id, reply) = ack.into_parts();
                    if let Err(e) = self.router.complete_ack(&event_id, reply) {
                        tracing::debug!(error = %e, "forwarded ack not applied");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "malformed ack on the cluster channel"),
            }
        }
    }

    /// Each second: report this instance, learn whether any backend group exists; every
    /// few seconds reap instances that stopped reporting; after Redis comes back (and
    /// every 30 s) re-assert this instance's sockets, since changes made while it was
    /// down never reached it.
    async fn run_heartbeat(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = false;
        let mut ticks = 0u64;
        let mut reported = false;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => break,
            }
            ticks += 1;
            let up = self.link.is_up();
            self.metrics.redis_up.set(i64::from(up));
            if !up || self.left.load(Ordering::Acquire) {
                was_up = false;
                continue;
            }
            let rejoined = match self.report().await {
                Ok(rejoined) => rejoined,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster heartbeat failed");
                    continue;
                }
            };
            if rejoined && reported {
                tracing::warn!(
                    "this instance had been reaped by the others (paused or cut off); re-announcing its sockets"
                );
            }
            if !was_up || rejoined || ticks.is_multiple_of(30) {
                self.resync_sockets().await;
            }
            reported = true;
            was_up = true;
            if ticks.is_multiple_of(3) {
                self.reap_dead_nodes().await;
            }
            if ticks.is_multiple_of(5) {
                self.sweep_offline().await;
            }
        }
        // Leaving: other instances stop counting this one at once.
        if let Some(mut redis) = self.link.conn() {
            let _: Result<(), _> = redis.zrem(self.key(&["nodes"]), &self.instance_id).await;
        }
    }

    /// Shutdown: removes what Redis still holds of this instance (sockets whose disconnect
    /// could not be written are reported now) and stops counting it as a node.
    pub async fn leave(&self) {
        self.left.store(true, Ordering::Release);
        let Some(mut redis) = self.link.conn() else { return };
        let key = self.key(&["node-sockets", &self.instance_id]);
        let left_over: Vec<String> = redis.smembers(&key).await.unwrap_or_default();
        for entry in &left_over {
            if let Some((namespace, socket_id, user)) = split_node_socket(entry)
                && let Ok((removed, offline)) = self.presence_del(&self.instance_id, namespace, socket_id, user).await
            {
                let messages =
                    disconnect_messages(socket_id, user, namespace, "server shutting down", removed, offline);
                self.write_now(messages).await;
            }
        }
        let _: Result<(), _> = redis::pipe()
            .zrem(self.key(&["nodes"]), &self.instance_id)
            .hdel(self.key(&["node-info"]), &self.instance_id)
            .del(&key)
            .query_async(&mut redis)
            .await;
    }

    /// Writes lifecycle news directly (not through the queues), each to its partition.
    async fn write_now(&self, messages: Vec<BackendMessage>) {
        for message in messages {
            let stream = self.key(&["events", &self.partition_of(message_key(&message)).to_string()]);
            self.write_messages(&stream, vec![(message, None)]).await;
        }
    }

    /// Reports this instance; true when it was missing from the node list (first report,
    /// Redis lost its data, or the others reaped it while it was paused or cut off).
    async fn report(&self) -> Result<bool, redis::RedisError> {
        if self.left.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut redis = self.link.conn().ok_or_else(unreachable)?;
        let connections = self.router_connections();
        let since = now_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let (added, _, live, groups): (u64, (), u64, u64) = redis::pipe()
            .zadd(self.key(&["nodes"]), &self.instance_id, now_ms())
            .hset(self.key(&["node-info"]), &self.instance_id, connections)
            .zcount(self.key(&["nodes"]), since, "+inf")
            .scard(self.key(&["groups"]))
            .query_async(&mut redis)
            .await?;
        self.metrics.cluster_nodes.set(live as i64);
        self.groups_known.store(groups > 0 || self.router.has_groups(), Ordering::Release);
        Ok(added == 1)
    }

    fn router_connections(&self) -> u64 {
        self.registry.len() as u64
    }

    /// Makes Redis' view of this instance's sockets match the registry's.
    async fn resync_sockets(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let key = self.key(&["node-sockets", &self.instance_id]);
        let known: std::collections::HashSet<String> = match redis.smembers(&key).await {
            Ok(k) => k,
            Err(_) => return,
        };
        let live: HashMap<String, Arc<Connection>> = self
            .registry
            .all()
            .into_iter()
            .map(|c| (node_socket_entry(&c.namespace, &c.socket_id, c.user_id.as_deref()), c))
            .collect();
        // Gone while Redis could not hear about it.
        for entry in known.iter().filter(|e| !live.contains_key(*e)) {
            if let Some((namespace, socket_id, user)) = split_node_socket(entry) {
                self.remove_socket(&self.instance_id, namespace, socket_id, user, "transport close").await;
            }
        }
        // Left while Redis was unreachable: removed if Redis still has them, and reported
        // either way (UserOffline when the user has no socket left anywhere).
        let departed = std::mem::take(&mut *self.unreported.lock().unwrap_or_else(|e| e.into_inner()));
        for (conn, reason) in departed {
            let user = conn.user_id.as_deref();
            let _ = self.presence_del(&self.instance_id, &conn.namespace, &conn.socket_id, user).await;
            let still_online = match user {
                Some(u) => redis.scard::<_, u64>(self.key(&["presence", u])).await.map(|n| n > 0).unwrap_or(true),
                None => false,
            };
            for message in disconnect_messages(&conn.socket_id, user, &conn.namespace, &reason, true, !still_online) {
                let _ = self.enqueue(Outgoing::Message { message, pending_ack: None });
            }
        }
        // Unknown to Redis: connected while it was down (their connect never reached it),
        // or reaped while this instance was paused. Announced again through the queue, so
        // backends hear UserOnline and SocketConnected (with no rooms listed). Recent ones
        // are left to their own queued connect.
        let settled = SystemTime::now() - Duration::from_secs(1);
        for (entry, conn) in live {
            if !known.contains(&entry) && conn.connected_at < settled {
                let _ = self.enqueue(Outgoing::Connected { conn, rooms: Vec::new() });
            }
        }
    }

    /// Takes a socket out of presence and tells the backends, unless someone else did.
    async fn remove_socket(&self, instance: &str, namespace: &str, socket_id: &str, user: Option<&str>, reason: &str) {
        if let Ok((removed, offline)) = self.presence_del(instance, namespace, socket_id, user).await {
            for message in disconnect_messages(socket_id, user, namespace, reason, removed, offline) {
                let _ = self.enqueue(Outgoing::Message { message, pending_ack: None });
            }
        }
    }

    /// Counts and drops offline messages that expired unread (any instance may do it;
    /// the script removes what it counts, so nothing is counted twice).
    async fn sweep_offline(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let dropped: Result<u64, _> = redis::Script::new(OFFLINE_SWEEP)
            .key(self.key(&["offline-expiry"]))
            .arg(now_ms())
            .arg(500)
            .invoke_async(&mut redis)
            .await;
        match dropped {
            Ok(n) => self.metrics.dropped("offline_expired", n),
            Err(e) => tracing::debug!(error = %e, "offline sweep failed"),
        }
    }

    async fn reap_dead_nodes(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let cutoff = now_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let dead: Vec<String> = redis.zrangebyscore(self.key(&["nodes"]), "-inf", cutoff).await.unwrap_or_default();
        for node in dead.into_iter().filter(|n| *n != self.instance_id) {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(self.key(&["reap", &node]))
                .arg(&self.instance_id)
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query_async(&mut redis)
                .await
                .unwrap_or(None);
            if claimed.is_none() {
                continue;
            }
            let sockets: Vec<String> = redis.smembers(self.key(&["node-sockets", &node])).await.unwrap_or_default();
            tracing::warn!(
                instance = node,
                sockets = sockets.len(),
                "instance stopped reporting; removing its sockets"
            );
            for entry in &sockets {
                if let Some((namespace, socket_id, user)) = split_node_socket(entry) {
                    self.remove_socket(&node, namespace, socket_id, user, "instance lost").await;
                }
            }
            let _: Result<(), _> = redis::pipe()
                .del(self.key(&["node-sockets", &node]))
                .zrem(self.key(&["nodes"]), &node)
                .hdel(self.key(&["node-info"]), &node)
                .query_async(&mut redis)
                .await;
        }
    }
}

/// SocketDisconnected (and UserOffline when it was the user's last socket), only from
/// whoever actually removed the socket.
fn disconnect_messages(
    socket_id: &str,
    user: Option<&str>,
    namespace: &str,
    reason: &str,
    removed: bool,
    went_offline: bool,
) -> Vec<BackendMessage> {
    let mut out = Vec::with_capacity(2);
    if removed {
        out.push(BackendMessage::SocketDisconnected(Arc::new(crate::hub::router::SocketDisconnected {
            socket_id: socket_id.to_owned(),
            user_id: user.map(str::to_owned),
            namespace: namespace.to_owned(),
            reason: reason.to_owned(),
        })));
    }
    if went_offline && let Some(user) = user {
        out.push(BackendMessage::UserOffline(user.into()));
    }
    out
}

/// Separates the parts of set members. Names cannot contain control characters (they are
/// validated), so no part can contain it.
const SEP: char = '\u{1f}';

fn presence_member(instance: &str, namespace: &str, socket_id: &str) -> String {
    format!("{instance}{SEP}{namespace}{SEP}{socket_id}")
}

fn node_socket_entry(namespace: &str, socket_id: &str, user: Option<&str>) -> String {
    format!("{namespace}{SEP}{socket_id}{SEP}{}", user.unwrap_or(""))
}

/// `namespace SEP socket SEP user` → its parts (user may be empty: anonymous).
fn split_node_socket(entry: &str) -> Option<(&str, &str, Option<&str>)> {
    let mut parts = entry.splitn(3, SEP);
    let (namespace, socket_id, user) = (parts.next()?, parts.next()?, parts.next()?);
    Some((namespace, socket_id, (!user.is_empty()).then_some(user)))
}

/// Namespace of a presence member.
fn member_namespace(member: &str) -> Option<&str> {
    member.split(SEP).nth(1)
}

fn unreachable() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "redis unreachable"))
}

fn redis_unavailable(e: redis::RedisError) -> HubError {
    HubError::Unavailable(format!("the cluster's Redis failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_members_round_trip_whatever_printable_names_contain() {
        let entry = node_socket_entry("/a|b", "sid1", Some("u|1"));
        assert_eq!(split_node_socket(&entry), Some(("/a|b", "sid1", Some("u|1"))));
        assert_eq!(split_node_socket(&node_socket_entry("/", "sid1", None)), Some(("/", "sid1", None)));
        assert_eq!(member_namespace(&presence_member("0123abcd", "/x|y", "sid9")), Some("/x|y"));
    }

    #[test]
    fn only_the_remover_reports_a_disconnect() {
        assert!(disconnect_messages("s", Some("u"), "/", "r", false, false).is_empty());
        let both = disconnect_messages("s", Some("u"), "/", "r", true, true);
        assert!(matches!(both[0], BackendMessage::SocketDisconnected(_)));
        assert!(matches!(both[1], BackendMessage::UserOffline(_)));
    }
}
