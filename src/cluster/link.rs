//! The Redis connection every cluster part shares, and its pub/sub channels.
//!
//! It starts even when Redis is unreachable, reconnects with backoff, subscribes again
//! after every reconnect, and while Redis is down publishes nothing (pushes then reach
//! this instance's sockets only) instead of making every push wait for a connect timeout.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::mpsc;

/// A message from a pub/sub channel: the channel and the payload.
pub type ChanItem = (String, Vec<u8>);

/// Longest a single Redis command may take before it counts as failed.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Where a channel's messages go, and whether it is a sharded channel (`SSUBSCRIBE`).
#[derive(Clone)]
struct Handler {
    tx: mpsc::Sender<ChanItem>,
    sharded: bool,
}

type Handlers = HashMap<String, Handler>;

pub struct RedisLink {
    /// Itself, for the push sender, which must own what it uses.
    me: std::sync::Weak<RedisLink>,
    client: redis::Client,
    /// Replaced when the connection stops answering without closing (a Redis moved behind
    /// the same address, a dropped NAT entry): the manager itself only reconnects after
    /// errors it sees as a broken connection, never after timeouts.
    conn: RwLock<Option<ConnectionManager>>,
    /// Pub/sub channel → where its messages go. Kept here (not only in Redis' connection
    /// state) so every reconnect can subscribe them all again.
    handlers: RwLock<Handlers>,
    up: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct LinkError(String);

impl From<redis::RedisError> for LinkError {
    fn from(e: redis::RedisError) -> Self {
        Self(e.to_string())
    }
}

impl RedisLink {
    pub fn new(url: &str) -> Result<Arc<Self>, LinkError> {
        use redis::IntoConnectionInfo;
        let info = url.into_connection_info().map_err(|e| LinkError(format!("redis.url: {e}")))?;
        // RESP3 carries pub/sub messages on the same connection as commands.
        let settings = info.redis_settings().clone().set_protocol(redis::ProtocolVersion::RESP3);
        let client =
            redis::Client::open(info.set_redis_settings(settings)).map_err(|e| LinkError(format!("redis.url: {e}")))?;
        Ok(Arc::new_cyclic(|me| Self {
            me: me.clone(),
            client,
            conn: RwLock::new(None),
            handlers: RwLock::default(),
            up: AtomicBool::new(false),
        }))
    }

    /// Connects (retrying with backoff until it works), then watches the connection:
    /// a PING a second keeps `is_up` true to within about a second, every time Redis comes
    /// back the channels are subscribed again, and a connection that fails its PINGs three
    /// times in a row is replaced by a new one.
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
                    self.resubscribe().await;
                    tracing::info!("redis connected");
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

    async fn connect(&self) -> Result<ConnectionManager, redis::RedisError> {
        let link = self.me.clone();
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            .set_response_timeout(Some(RESPONSE_TIMEOUT))
            .set_number_of_retries(2)
            .set_max_delay(MAX_BACKOFF)
            .set_automatic_resubscription()
            .set_push_sender(move |msg: redis::PushInfo| {
                if let Some(link) = link.upgrade() {
                    link.dispatch(msg);
                }
                Ok::<(), std::convert::Infallible>(())
            });
        ConnectionManager::new_with_config(self.client.clone(), config).await
    }

    fn current(&self) -> Option<ConnectionManager> {
        self.conn.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn replace(&self, conn: ConnectionManager) {
        *self.conn.write().unwrap_or_else(|e| e.into_inner()) = Some(conn);
    }

    async fn ping(&self) -> bool {
        let Some(mut conn) = self.current() else { return false };
        let cmd = redis::cmd("PING");
        let ping = cmd.query_async::<String>(&mut conn);
        matches!(tokio::time::timeout(RESPONSE_TIMEOUT, ping).await, Ok(Ok(_)))
    }

    async fn resubscribe(&self) {
        let Some(mut conn) = self.current() else { return };
        let channels: Vec<(String, bool)> = self.read_handlers().iter().map(|(c, h)| (c.clone(), h.sharded)).collect();
        for (chan, sharded) in channels {
            if let Err(e) = subscribe_command(&mut conn, &chan, sharded).await {
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

    pub fn is_up(&self) -> bool {
        self.up.load(Ordering::Acquire)
    }

    /// A command connection when Redis is believed reachable. Callers treat None like a
    /// failed command.
    pub fn conn(&self) -> Option<ConnectionManager> {
        if self.is_up() { self.current() } else { None }
    }

    /// A fresh dedicated connection, for blocking reads that must not hold up the shared
    /// multiplexed one.
    pub async fn dedicated(&self) -> Result<redis::aio::MultiplexedConnection, redis::RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(CONNECT_TIMEOUT))
            // Reads block for at most half a second; a reply this late means the
            // connection is dead (the reader then makes a new one).
            .set_response_timeout(Some(Duration::from_secs(5)));
        self.client.get_multiplexed_async_connection_with_config(&config).await
    }

    /// Subscribes a pub/sub channel; messages arrive on the returned receiver. Works while
    /// Redis is down too: the subscription is made when it comes back.
    pub async fn subscribe(&self, chan: String, size: usize) -> mpsc::Receiver<ChanItem> {
        let (tx, rx) = mpsc::channel(size.max(1));
        let _ = self.subscribe_into(chan, tx, false).await;
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
        subscribe_command(&mut conn, &chan, sharded).await.inspect_err(|e| {
            tracing::warn!(error = %e, chan, "redis subscribe failed; retried when the connection recovers");
        })
    }

    /// Stops listening on a channel.
    pub async fn unsubscribe(&self, chan: &str) {
        let Some(handler) = self.handlers.write().unwrap_or_else(|e| e.into_inner()).remove(chan) else { return };
        let Some(mut conn) = self.conn() else { return };
        let command = if handler.sharded { "SUNSUBSCRIBE" } else { "UNSUBSCRIBE" };
        // Redis confirms with a push message, not a reply the client waits for: the
        // command is sent, its answer not awaited for long.
        let mut cmd = redis::cmd(command);
        cmd.arg(chan);
        let _ = tokio::time::timeout(Duration::from_millis(100), cmd.exec_async(&mut conn)).await;
    }

    pub async fn publish(&self, chan: &str, payload: &[u8]) {
        self.publish_with("PUBLISH", chan, payload).await;
    }

    /// Publishes on a sharded channel (`SPUBLISH`).
    pub async fn spublish(&self, chan: &str, payload: &[u8]) {
        self.publish_with("SPUBLISH", chan, payload).await;
    }

    async fn publish_with(&self, command: &str, chan: &str, payload: &[u8]) {
        let Some(mut conn) = self.conn() else { return };
        if let Err(e) = redis::cmd(command).arg(chan).arg(payload).query_async::<i64>(&mut conn).await {
            tracing::debug!(error = %e, chan, "redis publish failed");
        }
    }

    fn read_handlers(&self) -> std::sync::RwLockReadGuard<'_, Handlers> {
        self.handlers.read().unwrap_or_else(|e| e.into_inner())
    }
}

async fn subscribe_command(conn: &mut ConnectionManager, chan: &str, sharded: bool) -> Result<(), redis::RedisError> {
    if sharded { redis::cmd("SSUBSCRIBE").arg(chan).exec_async(conn).await } else { conn.subscribe(chan).await }
}

/// A failed command when Redis is not reachable.
pub fn unreachable() -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "redis unreachable"))
}
