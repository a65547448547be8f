//! The Redis connection every cluster part shares, and its pub/sub channels.
//!
//! It starts even when Redis is unreachable, reconnects with backoff, subscribes again
//! after every reconnect, and while Redis is down publishes nothing (pushes then reach
//! this instance's sockets only) instead of making every push wait for a connect timeout.
//!
//! `redis.url` names either one Redis (`redis://`, `rediss://`, `redis+unix://`) or a Redis
//! Cluster (`redis+cluster://[user:password@]host:port[,host:port…]`, `rediss+cluster://`
//! for TLS). A cluster gets its own scheme rather than "several URLs" because one seed is
//! enough to find a whole cluster, and a single `redis://` seed cannot be told apart from a
//! single Redis while it is down (the bridge starts with Redis down). Both kinds are
//! reached through [`Conn`], so the rest of the cluster code has one path; what differs
//! (a pipeline's commands may sit on several shards; a blocking read would hold a shard's
//! shared connection) is asked of [`RedisLink::is_cluster`] in the few places it matters.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::cluster_routing::{Route, RoutingInfo, SingleNodeRoutingInfo, SlotAddr};
use redis::{Cmd, ConnectionInfo, IntoConnectionInfo, Pipeline, RedisFuture, Value};
use tokio::sync::mpsc;

/// A message from a pub/sub channel: the channel and the payload.
pub type ChanItem = (String, Vec<u8>);

/// Longest a single Redis command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// Attempts to reach one cluster node before its connection is dropped. Then a command for
/// its slots finds no connection, which makes the client read the cluster's layout again:
/// that is how a replica promoted in place of a dead master is found.
const CLUSTER_NODE_ATTEMPTS: usize = 3;
/// Retries of a cluster command after a redirect or a node error, each a few tens of
/// milliseconds apart; all of them fit in [`RESPONSE_TIMEOUT`].
const CLUSTER_RETRIES: u32 = 5;

/// Where a channel's messages go, and whether it is a sharded channel (`SSUBSCRIBE`).
#[derive(Clone)]
struct Handler {
    tx: mpsc::Sender<ChanItem>,
    sharded: bool,
}

type Handlers = HashMap<String, Handler>;

/// What `redis.url` names.
enum Topology {
    Single(redis::Client),
    /// The seed nodes; any one that answers tells where the others are.
    Cluster(Vec<ConnectionInfo>),
}

/// A connection to either kind of Redis, usable wherever redis-rs takes a connection.
#[derive(Clone)]
pub enum Conn {
    /// One Redis, shared: reconnects by itself after errors.
    Managed(ConnectionManager),
    /// One Redis, a connection of its own (blocking reads).
    Direct(MultiplexedConnection),
    /// A Redis Cluster: one connection per node, commands routed by their keys' slots.
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Managed(c) => c.req_packed_command(cmd),
            Conn::Direct(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Managed(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Direct(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Managed(c) => c.get_db(),
            Conn::Direct(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

impl Conn {
    /// Runs commands one after another, each seeing what the ones before it did, and
    /// returns their replies in order. One round trip on a single Redis (a pipeline);
    /// in a Redis Cluster one command at a time, since they may live on different shards
    /// (a pipeline there must stay on one slot).
    pub async fn in_order(&mut self, steps: &Pipeline) -> redis::RedisResult<Vec<Value>> {
        match self {
            Conn::Cluster(c) => {
                let mut out = Vec::new();
                for cmd in steps.cmd_iter() {
                    out.push(cmd.query_async::<Value>(c).await?);
                }
                Ok(out)
            }
            other => steps.query_async(other).await,
        }
    }

    /// Runs `cmd` on the node serving `key`'s slot (in a Redis Cluster; on the one Redis
    /// otherwise): for commands that are about a channel but are answered by each node
    /// alone (`PUBSUB SHARDNUMSUB`).
    pub async fn on_slot_of<T: redis::FromRedisValue>(&mut self, cmd: &Cmd, key: &str) -> redis::RedisResult<T> {
        match self {
            Conn::Cluster(c) => {
                let route = RoutingInfo::SingleNode(SingleNodeRoutingInfo::SpecificNode(Route::with_key(
                    key.as_bytes(),
                    SlotAddr::Master,
                )));
                let reply = c.route_command(cmd.clone(), route).await?;
                redis::from_redis_value(reply).map_err(Into::into)
            }
            other => cmd.query_async(other).await,
        }
    }

    async fn subscribe(&mut self, chan: &str, sharded: bool) -> redis::RedisResult<()> {
        match self {
            // The cluster connection remembers its subscriptions and makes them again on
            // the node that serves each channel after a reconnect or a failover.
            Conn::Cluster(c) if sharded => c.ssubscribe(chan).await,
            Conn::Cluster(c) => c.subscribe(chan).await,
            Conn::Managed(c) if !sharded => c.subscribe(chan).await,
            other => redis::cmd(if sharded { "SSUBSCRIBE" } else { "SUBSCRIBE" }).arg(chan).exec_async(other).await,
        }
    }

    async fn unsubscribe(&mut self, chan: &str, sharded: bool) -> redis::RedisResult<()> {
        match self {
            Conn::Cluster(c) if sharded => c.sunsubscribe(chan).await,
            Conn::Cluster(c) => c.unsubscribe(chan).await,
            other => redis::cmd(if sharded { "SUNSUBSCRIBE" } else { "UNSUBSCRIBE" }).arg(chan).exec_async(other).await,
        }
    }
}

pub struct RedisLink {
    /// Itself, for the push sender, which must own what it uses.
    me: std::sync::Weak<RedisLink>,
    topology: Topology,
    /// Replaced when the connection stops answering without closing (a Redis moved behind
    /// the same address, a dropped NAT entry): the manager itself only reconnects after
    /// errors it sees as a broken connection, never after timeouts.
    conn: RwLock<Option<Conn>>,
    /// Pub/sub channel → where its messages go. Kept here (not only in Redis' connection
    /// state) so every reconnect can subscribe them all again.
    handlers: RwLock<Handlers>,
    up: AtomicBool,
    /// This instance's own channel (and whether it is sharded), whose subscription is
    /// checked every second: see [`RedisLink::run`].
    checked: OnceLock<(String, bool)>,
    /// When Redis last came back after being lost (not the first connect).
    reconnected_at: std::sync::Mutex<Option<std::time::Instant>>,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(String);

impl RedisLink {
    pub fn new(url: &str) -> Result<Arc<Self>, LinkError> {
        let topology = match cluster_seeds(url)? {
            Some(seeds) => Topology::Cluster(seeds),
            None => {
                // Never echo the URL: it may carry a password.
                let info = url.into_connection_info().map_err(|e| LinkError(format!("redis.url: {e}")))?;
                // RESP3 carries pub/sub messages on the same connection as commands.
                let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
                let client = redis::Client::open(info.set_redis_settings(settings))
                    .map_err(|e| LinkError(format!("redis.url: {e}")))?;
                Topology::Single(client)
            }
        };
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            topology,
            conn: RwLock::new(None),
            handlers: RwLock::default(),
            up: AtomicBool::new(false),
            checked: OnceLock::new(),
            reconnected_at: std::sync::Mutex::default(),
        }))
    }

    /// True for a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        matches!(self.topology, Topology::Cluster(_))
    }

    /// Connects (retrying with backoff until it works), then watches the connection:
    /// a PING a second keeps `is_up` true to within about a second, every time Redis comes
    /// back the channels are subscribed again, and a connection that fails its PINGs three
    /// times in a row is replaced by a new one.
    ///
    /// In a Redis Cluster the PING goes to every master the client holds a connection to;
    /// a master that died is dropped from that set, so the link stays up while the others
    /// answer and the commands that need the dead master's slots fail one by one (pushes
    /// through it are answered UNAVAILABLE) until its replica takes over. The client finds
    /// the promoted replica when a command fails, and then subscribes again whatever was
    /// subscribed on the dead master, but only once one of its own commands has failed:
    /// an instance with nothing to do there would wait. So each second the subscription of
    /// this instance's own channel (the one every request for its sockets comes on) is
    /// checked on the node that serves it now, and every channel is subscribed again when
    /// that node does not have it.
    pub async fn run(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let mut backoff = Duration::from_millis(100);
        while self.current().is_none() {
            match self.connect().await {
                Ok(conn) => self.replace(conn),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "redis unreachable");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.wait() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failed = 0u32;
        let mut ever_up = false;
        loop {
            let mut alive = self.ping().await;
            failed = if alive { 0 } else { failed + 1 };
            if failed >= 3 {
                failed = 0;
                match tokio::time::timeout(RESPONSE_TIMEOUT, self.connect()).await {
                    Ok(Ok(conn)) => {
                        tracing::warn!("redis connection stopped answering; replaced it");
                        self.replace(conn);
                        alive = self.ping().await;
                        if alive {
                            // The new connection has none of the old one's subscriptions.
                            self.resubscribe().await;
                        }
                    }
                    Ok(Err(e)) => tracing::debug!(error = %e, "redis still unreachable"),
                    Err(_) => tracing::debug!("redis still unreachable (connect timed out)"),
                }
            }
            let was_up = self.up.swap(alive, Ordering::AcqRel);
            match (was_up, alive) {
                (false, true) => {
                    if ever_up {
                        *self.reconnected_at.lock().unwrap_or_else(|e| e.into_inner()) =
                            Some(std::time::Instant::now());
                    }
                    ever_up = true;
                    self.resubscribe().await;
                    tracing::info!("redis connected");
                }
                (true, true) if self.checked_channel_lost().await => {
                    tracing::warn!(
                        "this instance's channel is not subscribed on the Redis node serving it now (a node failed or was \
                         replaced); subscribing every channel again"
                    );
                    self.resubscribe().await;
                }
                (true, false) => tracing::error!("redis connection lost; delivering to this instance's sockets only"),
                _ => {}
            }
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
        }
    }

    async fn connect(&self) -> Result<Conn, redis::RedisError> {
        let link = self.me.clone();
        let push = move |msg: redis::PushInfo| {
            if let Some(link) = link.upgrade() {
                link.dispatch(msg);
            }
            Ok::<(), std::convert::Infallible>(())
        };
        match &self.topology {
            Topology::Single(client) => {
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    .set_response_timeout(Some(RESPONSE_TIMEOUT))
                    .set_number_of_retries(2)
                    .set_max_delay(MAX_BACKOFF)
                    .set_automatic_resubscription()
                    .set_push_sender(push);
                Ok(Conn::Managed(ConnectionManager::new_with_config(client.clone(), config).await?))
            }
            Topology::Cluster(seeds) => {
                let client = cluster_builder(seeds).push_sender(push).build()?;
                Ok(Conn::Cluster(client.get_async_connection().await?))
            }
        }
    }

    /// Names the channel whose subscription `run` checks each second (once; later calls
    /// change nothing).
    pub fn check_subscription(&self, chan: &str, sharded: bool) {
        let _ = self.checked.set((chan.to_owned(), sharded));
    }

    /// True when the node serving the checked channel answers that nobody is subscribed to
    /// it (only this instance ever is). No answer, or no channel named yet: not lost.
    async fn checked_channel_lost(&self) -> bool {
        let Some((chan, sharded)) = self.checked.get() else { return false };
        if !self.read_handlers().contains_key(chan) {
            return false;
        }
        let Some(mut conn) = self.current() else { return false };
        let mut count = redis::cmd("PUBSUB");
        count.arg(if *sharded { "SHARDNUMSUB" } else { "NUMSUB" }).arg(chan);
        let asked = conn.on_slot_of::<(String, usize)>(&count, chan);
        matches!(tokio::time::timeout(RESPONSE_TIMEOUT, asked).await, Ok(Ok((_, 0))))
    }

    fn current(&self) -> Option<Conn> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, conn: Conn) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
    }

    async fn ping(&self) -> bool {
        let Some(mut conn) = self.current() else { return false };
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<Value>(&mut conn);
        matches!(tokio::time::timeout(RESPONSE_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    async fn resubscribe(&self) {
        let Some(mut conn) = self.current() else { return };
        let channels: Vec<(String, bool)> = self.read_handlers().iter().map(|(c, h)| (c.clone(), h.sharded)).collect();
        for (chan, sharded) in channels {
            if let Err(e) = conn.subscribe(&chan, sharded).await {
                tracing::warn!(error = %e, chan, "redis subscribe failed");
            }
        }
    }

    fn dispatch(&self, msg: redis::PushInfo) {
        if !matches!(msg.kind, redis::PushKind::Message | redis::PushKind::SMessage) || msg.data.len() < 2 {
            return;
        }
        let mut data = msg.data.into_iter();
        let (Some(chan), Some(payload)) = (data.next(), data.next()) else { return };
        let (Ok(chan), Ok(payload)) =
            (redis::from_redis_value::<String>(chan), redis::from_redis_value::<Vec<u8>>(payload))
        else {
            return;
        };
        if let Some(handler) = self.read_handlers().get(&chan)
            && handler.tx.try_send((chan.clone(), payload)).is_err()
        {
            tracing::warn!(chan, "redis message dropped: its handler is not keeping up");
        }
    }

    /// True when Redis came back after being lost less than `window` ago.
    pub fn reconnected_within(&self, window: Duration) -> bool {
        self.reconnected_at.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() < window)
    }

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A command connection when Redis is believed reachable. Callers treat None like a
    /// failed command.
    pub fn conn(&self) -> Option<Conn> {
        if self.is_up() { self.current() } else { None }
    }

    /// A connection for the event readers. On a single Redis a fresh dedicated one, for
    /// blocking reads that must not hold up the shared multiplexed one; in a Redis Cluster
    /// the shared one (readers there never block: a blocking read covers one slot only,
    /// and partitions live on several).
    pub async fn dedicated(&self) -> Result<Conn, redis::RedisError> {
        match &self.topology {
            Topology::Single(client) => {
                let config = redis::AsyncConnectionConfig::new()
                    .set_connection_timeout(Some(CONNECT_TIMEOUT))
                    // Reads block for at most half a second; a reply this late means the
                    // connection is dead (the reader then makes a new one).
                    .set_response_timeout(Some(Duration::from_secs(5)));
                Ok(Conn::Direct(client.get_multiplexed_async_connection_with_config(&config).await?))
            }
            Topology::Cluster(_) => self.conn().ok_or_else(unreachable),
        }
    }

    /// Subscribes a pub/sub channel; messages arrive on the returned receiver. Works while
    /// Redis is down too: the subscription is made when it comes back.
    pub async fn subscribe(&self, chan: String, size: usize, sharded: bool) -> mpsc::Receiver<ChanItem> {
        let (tx, rx) = mpsc::channel(size.max(1));
        let _ = self.subscribe_into(chan, tx, sharded).await;
        rx
    }

    /// Subscribes a channel (sharded with `sharded`: `SSUBSCRIBE`, served by the shard that
    /// owns the channel in a Redis Cluster) whose messages go to `tx`, which several
    /// channels may share. Err when Redis did not confirm it (it is subscribed again when
    /// the connection recovers).
    pub async fn subscribe_into(
        &self,
        chan: String,
        tx: mpsc::Sender<ChanItem>,
        sharded: bool,
    ) -> Result<(), redis::RedisError> {
        self.handlers.write().unwrap_or_else(|e| e.into_inner()).insert(chan.clone(), Handler { tx, sharded });
        let mut conn = self.conn().ok_or_else(unreachable)?;
        conn.subscribe(&chan, sharded).await.inspect_err(|e| {
            tracing::warn!(error = %e, chan, "redis subscribe failed; retried when the connection recovers");
        })
    }

    /// Stops listening on a channel.
    pub async fn unsubscribe(&self, chan: &str) {
        let Some(handler) = self.handlers.write().unwrap_or_else(|e| e.into_inner()).remove(chan) else { return };
        let Some(mut conn) = self.conn() else { return };
        // Redis confirms with a push message, not a reply the client waits for: the
        // command is sent, its answer not awaited for long.
        let _ = tokio::time::timeout(Duration::from_millis(100), conn.unsubscribe(chan, handler.sharded)).await;
    }

    /// Publishes on a classic channel; the number of subscribers that got it (in a Redis
    /// Cluster: those on the node that took the message).
    pub async fn publish(&self, chan: &str, payload: &[u8]) -> redis::RedisResult<usize> {
        self.publish_with("PUBLISH", chan, payload).await
    }

    /// Publishes on a sharded channel (`SPUBLISH`); the number of subscribers that got it.
    pub async fn spublish(&self, chan: &str, payload: &[u8]) -> redis::RedisResult<usize> {
        self.publish_with("SPUBLISH", chan, payload).await
    }

    async fn publish_with(&self, command: &str, chan: &str, payload: &[u8]) -> redis::RedisResult<usize> {
        let mut conn = self.conn().ok_or_else(unreachable)?;
        redis::cmd(command).arg(chan).arg(payload).query_async::<usize>(&mut conn).await.inspect_err(|e| {
            tracing::debug!(error = %e, chan, "redis publish failed");
        })
    }

    fn read_handlers(&self) -> std::sync::RwLockReadGuard<'_, Handlers> {
        self.handlers.read().unwrap_or_else(|e| e.into_inner())
    }
}

/// The cluster client's settings: RESP3 (pub/sub on the command connections), the same
/// timeouts as a single Redis, and retries that end within one response timeout.
fn cluster_builder(seeds: &[ConnectionInfo]) -> ClusterClientBuilder {
    ClusterClientBuilder::new(seeds.to_vec())
        .use_protocol(redis::ProtocolVersion::RESP3)
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(RESPONSE_TIMEOUT)
        .overall_response_timeout(Some(RESPONSE_TIMEOUT))
        .retries(CLUSTER_RETRIES)
        .min_retry_wait(20)
        .max_retry_wait(200)
        .max_connection_attempts(NonZeroUsize::new(CLUSTER_NODE_ATTEMPTS).unwrap_or(NonZeroUsize::MIN))
}

/// The seed nodes of a `redis+cluster://` (or `rediss+cluster://`) URL; None for any other
/// URL. Credentials, TLS and query settings apply to every node; a cluster has only
/// database 0. Errors never repeat the URL (it may carry a password).
fn cluster_seeds(url: &str) -> Result<Option<Vec<ConnectionInfo>>, LinkError> {
    let (scheme, rest) = match url.split_once("://") {
        Some(("redis+cluster", rest)) => ("redis", rest),
        Some(("rediss+cluster", rest)) => ("rediss", rest),
        _ => return Ok(None),
    };
    let end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rsplit_once('@') {
        Some((user, hosts)) => (format!("{user}@"), hosts),
        None => (String::new(), authority),
    };
    let mut seeds = Vec::new();
    for host in hosts.split(',') {
        if host.is_empty() {
            return Err(LinkError("redis.url: an empty host in the list of cluster nodes".into()));
        }
        let info = format!("{scheme}://{userinfo}{host}{tail}")
            .into_connection_info()
            .map_err(|e| LinkError(format!("redis.url: cluster node {host}: {e}")))?;
        if info.redis_settings().db() != 0 {
            return Err(LinkError("redis.url: a Redis Cluster has only database 0".into()));
        }
        seeds.push(info);
    }
    cluster_builder(&seeds).build().map_err(|e| LinkError(format!("redis.url: {e}")))?;
    Ok(Some(seeds))
}

/// A failed command when Redis is not reachable.
pub fn unreachable() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "redis unreachable"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_url_names_every_seed_with_the_same_credentials() {
        let seeds = cluster_seeds("redis+cluster://user:p%40ss@10.0.0.1:7000,10.0.0.2:7001,h3:7002")
            .expect("valid")
            .expect("a cluster");
        let addrs: Vec<String> = seeds.iter().map(|s| s.addr().to_string()).collect();
        assert_eq!(addrs, ["10.0.0.1:7000", "10.0.0.2:7001", "h3:7002"]);
        for s in &seeds {
            assert_eq!(s.redis_settings().username(), Some("user"));
            assert_eq!(s.redis_settings().password(), Some("p@ss"));
        }
    }

    #[test]
    fn other_urls_are_not_clusters_and_bad_cluster_urls_are_refused_without_echoing_them() {
        assert!(cluster_seeds("redis://127.0.0.1:6379/2").expect("not a cluster url").is_none());
        for bad in ["redis+cluster://h1:1,,h2:2", "redis+cluster://u:secret@h1:1/3", "redis+cluster://u:secret@/"] {
            let e = cluster_seeds(bad).expect_err(bad).to_string();
            assert!(e.starts_with("redis.url: ") && !e.contains("secret"), "{bad}: {e}");
        }
    }
}
