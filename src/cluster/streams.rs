//! Client events and lifecycle news on their way from Redis Streams to this instance's
//! backend streams.
//!
//! Writing is the outbox's (see `outbox`). Reading: every backend group is a Redis
//! consumer group on every partition stream. An instance with streams of a group runs one
//! reader for it, which reads the partitions assigned to it: the group's live readers,
//! sorted, take partitions round-robin, so each partition (and so each socket) is read by
//! one instance at a time and order holds.
//!
//! At-least-once: an entry stays pending in Redis until the backend has it. An event with
//! `wants_ack` (or any event, for a stream subscribed with `confirm_all`) is acknowledged
//! in Redis only when the backend's `Ack` arrives; the rest once handed to a stream. When
//! the stream holding unacknowledged events goes away they are delivered again, with the
//! same id: at once to another stream of the group on this instance, or to the first
//! stream of the group that comes back here; an instance that is gone has its pending
//! entries claimed by the partition's new reader after `redis.claim_idle_ms`.
//!
//! In a Redis Cluster the partitions live on several shards, and one `XREADGROUP` may only
//! name streams of one slot, so a blocking read cannot wait on all of a reader's
//! partitions at once. There each partition is read on its own, without blocking, and the
//! reader sleeps until a writer says "partition n has new entries" on the partition's
//! sharded channel (published in the same pipeline as the entries, so they are there when
//! the word arrives), or half a second passes (a word lost during a failover only delays).
//! Order and at-least-once are the same: one reader per partition, entries pending until
//! confirmed.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use redis::streams::{
    StreamAutoClaimOptions, StreamAutoClaimReply, StreamId, StreamInfoConsumersReply, StreamReadReply,
};

use tokio::sync::{Notify, mpsc};

use super::codec::decode;
use super::link::{ChanItem, Conn};
use super::{Cluster, now_ms};
use crate::hub::router::BackendMessage;

/// Entries read per call.
const READ_COUNT: usize = 256;
/// How long a read waits for new entries; also how often membership is refreshed.
const READ_BLOCK_MS: usize = 500;
/// Events handed to this instance's streams of one group and not yet confirmed. Past it
/// the reader stops taking new entries (they wait in Redis), so a backend that never
/// confirms cannot grow memory here without bound.
const MAX_UNCONFIRMED: usize = 10_000;

/// An entry handed to a local stream that still needs the backend's confirmation.
struct InFlight {
    stream: String,
    entry_id: String,
    holder: u64,
    wants_ack: bool,
    since: Instant,
}

/// Redis Cluster: how to wake a group's reader, and the partitions it reads.
type Sleeper = (Arc<Notify>, Vec<usize>);

/// Words "partition n has new entries" waiting to be handed to the readers (Redis Cluster).
const WAKE_BUFFER: usize = 4_096;

/// The readers running on this instance and what they have handed out.
pub struct EventBus {
    readers: Mutex<HashSet<String>>,
    /// (group, event id) → where it came from and which stream has it.
    in_flight: Mutex<HashMap<(String, String), InFlight>>,
    /// Redis Cluster: each reader's partitions and how to wake it.
    sleepers: Mutex<HashMap<String, Sleeper>>,
    /// Redis Cluster: the partitions whose channel this instance listens on. Changes are
    /// serialized by this lock.
    watched: tokio::sync::Mutex<HashSet<usize>>,
    wake_tx: mpsc::Sender<ChanItem>,
    wake_rx: Mutex<Option<mpsc::Receiver<ChanItem>>>,
}

impl Default for EventBus {
    fn default() -> Self {
        let (wake_tx, wake_rx) = mpsc::channel(WAKE_BUFFER);
        Self {
            readers: Mutex::default(),
            in_flight: Mutex::default(),
            sleepers: Mutex::default(),
            watched: tokio::sync::Mutex::default(),
            wake_tx,
            wake_rx: Mutex::new(Some(wake_rx)),
        }
    }
}

impl Cluster {
    /// Creates `group`'s consumer groups (reading from now on) and tells every instance a
    /// backend group exists, so their clients' events are written from now on too.
    /// Done before the stream is confirmed: an event a backend emits after its Subscribed
    /// cannot be missed. Redis down: the reader creates them once it is back.
    pub(super) async fn prepare_group(&self, group: &str) {
        let Some(mut redis) = self.link.conn() else { return };
        for p in 0..self.settings.partitions {
            let created: Result<(), _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(self.keys.events(p))
                .arg(group)
                .arg("$")
                .arg("MKSTREAM")
                .query_async(&mut redis)
                .await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                tracing::warn!(group, error = %e, "consumer group not created; retried by the reader");
                return;
            }
        }
        let _: Result<(), _> = redis::pipe()
            .sadd(self.keys.groups(), group)
            .ignore()
            .publish(self.keys.groups(), group)
            .ignore()
            .query_async(&mut redis)
            .await;
    }

    /// Makes sure this instance reads `group`'s events (a stream of it subscribed here).
    pub(super) fn ensure_reader(self: &Arc<Self>, group: &str) {
        self.groups_known.store(true, std::sync::atomic::Ordering::Release);
        let mut readers = self.streams.readers.lock().unwrap_or_else(|e| e.into_inner());
        if readers.insert(group.to_owned()) {
            tokio::spawn(self.clone().run_reader(group.to_owned()));
        }
    }

    /// The backend confirmed an event: it leaves the group's pending list in Redis. The
    /// Redis write runs on its own task so the stream's next answers are not held up by
    /// a round trip. Returns whether the event's client wanted an answer, when known here.
    pub(super) fn settle(self: &Arc<Self>, group: &str, event_id: &str) -> Option<bool> {
        let entry = self
            .streams
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&(group.to_owned(), event_id.to_owned()))?;
        let wants_ack = entry.wants_ack;
        let cluster = self.clone();
        let group = group.to_owned();
        tokio::spawn(async move {
            let Some(mut redis) = cluster.link.conn() else { return };
            let acked: Result<i64, _> =
                redis::cmd("XACK").arg(&entry.stream).arg(&group).arg(&entry.entry_id).query_async(&mut redis).await;
            if let Err(e) = acked {
                tracing::debug!(error = %e, "XACK failed; the event may be delivered again");
            }
        });
        Some(wants_ack)
    }

    /// Redis Cluster: hands each "partition n has new entries" to the readers of n here,
    /// until the process ends.
    pub(super) async fn run_wakes(self: Arc<Self>) {
        let Some(mut rx) = self.streams.wake_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let partitions: HashMap<String, usize> =
            (0..self.settings.partitions).map(|p| (self.keys.events(p), p)).collect();
        while let Some((channel, _)) = rx.recv().await {
            let Some(p) = partitions.get(&channel) else { continue };
            for (wake, mine) in self.streams.sleepers.lock().unwrap_or_else(|e| e.into_inner()).values() {
                if mine.contains(p) {
                    // Kept as a permit when the reader is not waiting yet: it reads again.
                    wake.notify_one();
                }
            }
        }
    }

    /// Redis Cluster: records which partitions `group`'s reader reads here (none: it
    /// stopped) and listens on the channels of exactly the partitions some reader here reads.
    async fn watch(&self, group: &str, wake: &Arc<Notify>, mine: Option<&[usize]>) {
        if !self.link.is_cluster() {
            return;
        }
        let mut watched = self.streams.watched.lock().await;
        let wanted: HashSet<usize> = {
            let mut sleepers = self.streams.sleepers.lock().unwrap_or_else(|e| e.into_inner());
            match mine {
                Some(mine) => sleepers.insert(group.to_owned(), (wake.clone(), mine.to_vec())),
                None => sleepers.remove(group),
            };
            sleepers.values().flat_map(|(_, mine)| mine.iter().copied()).collect()
        };
        for p in wanted.difference(&watched.clone()) {
            // Kept even if Redis did not confirm: the link subscribes again on recovery.
            let _ = self.link.subscribe_into(self.keys.events(*p), self.streams.wake_tx.clone(), true).await;
            watched.insert(*p);
        }
        for p in watched.clone().difference(&wanted) {
            self.link.unsubscribe(&self.keys.events(*p)).await;
            watched.remove(p);
        }
    }

    async fn run_reader(self: Arc<Self>, group: String) {
        tracing::info!(group, "reading the group's events from redis");
        let mut reader = Reader::new(self.clone(), group.clone());
        let mut backoff = Duration::from_millis(100);
        loop {
            if !self.node().router.has_group(&group) {
                let mut readers = self.streams.readers.lock().unwrap_or_else(|e| e.into_inner());
                // Checked again under the lock, so a stream subscribing now either sees
                // this reader still registered or starts a new one.
                if !self.node().router.has_group(&group) {
                    readers.remove(&group);
                    break;
                }
            }
            match reader.step().await {
                Ok(()) => backoff = Duration::from_millis(100),
                Err(e) => {
                    tracing::warn!(group, error = %e, "event reader step failed; retrying");
                    reader.reset();
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        }
        reader.leave().await;
        self.watch(&group, &reader.wake, None).await;
        tracing::info!(group, "no stream of the group left here; stopped reading its events");
    }
}

struct Reader {
    cluster: Arc<Cluster>,
    group: String,
    conn: Option<Conn>,
    /// Redis Cluster: woken when one of its partitions has new entries.
    wake: Arc<Notify>,
    /// Consumer groups known to exist on every partition stream.
    created: bool,
    mine: Vec<usize>,
    /// The group's live readers, as last seen.
    live: Vec<String>,
    /// Partitions just taken over from another reader, not read until the given time: the
    /// previous reader re-checks its share once a second, and reading both at once would
    /// split a socket's events between two backends.
    held: HashMap<usize, Instant>,
    /// Read this consumer's own pending entries before new ones (a stream went away, or
    /// the reader just started).
    reread_pending: bool,
    last_claim: Option<Instant>,
    last_membership: Option<Instant>,
}

impl Reader {
    fn new(cluster: Arc<Cluster>, group: String) -> Self {
        Self {
            cluster,
            group,
            conn: None,
            wake: Arc::default(),
            created: false,
            mine: Vec::new(),
            live: Vec::new(),
            held: HashMap::new(),
            reread_pending: true,
            last_claim: None,
            last_membership: None,
        }
    }

    fn reset(&mut self) {
        self.conn = None;
        self.created = false;
        self.reread_pending = true;
        self.last_membership = None;
    }

    fn stream(&self, partition: usize) -> String {
        self.cluster.keys.events(partition)
    }

    fn consumer(&self) -> &str {
        self.cluster.instance_id()
    }

    async fn step(&mut self) -> Result<(), redis::RedisError> {
        if self.cluster.link.is_cluster() {
            // Never blocks there: the shared connection, whichever the link holds now.
            self.conn = self.cluster.link.conn();
        }
        if self.conn.is_none() {
            if !self.cluster.link.is_up() {
                tokio::time::sleep(Duration::from_millis(250)).await;
                return Ok(());
            }
            self.conn = Some(self.cluster.link.dedicated().await?);
        }
        if !self.created {
            self.create_groups().await?;
        }
        if self.last_membership.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
            self.refresh_membership().await?;
        }
        if self.release_orphans() {
            self.reread_pending = true;
        }
        self.settle_unanswered().await?;
        if self.reread_pending {
            self.reread_pending = false;
            self.read(true).await?;
        }
        let claim_every = self.cluster.settings.claim_idle / 2;
        if self.last_claim.is_none_or(|t| t.elapsed() >= claim_every) {
            self.last_claim = Some(Instant::now());
            self.claim().await?;
        }
        if self.unconfirmed() >= MAX_UNCONFIRMED {
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        self.read(false).await
    }

    fn unconfirmed(&self) -> usize {
        let in_flight = self.cluster.streams.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        in_flight.keys().filter(|(group, _)| *group == self.group).count()
    }

    /// Creates the group where it is missing. From the start of the stream: a group the
    /// reader finds missing was lost with Redis' data (or never made it, Redis being down
    /// at subscribe time), and the entries already there were written for it since.
    async fn create_groups(&mut self) -> Result<(), redis::RedisError> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        for p in 0..self.cluster.settings.partitions {
            let stream = self.cluster.keys.events(p);
            let created: Result<(), _> = redis::cmd("XGROUP")
                .arg("CREATE")
                .arg(&stream)
                .arg(&self.group)
                .arg("0")
                .arg("MKSTREAM")
                .query_async(conn)
                .await;
            if let Err(e) = created
                && e.code() != Some("BUSYGROUP")
            {
                return Err(e);
            }
        }
        let _: () = redis::cmd("SADD").arg(self.cluster.keys.groups()).arg(&self.group).query_async(conn).await?;
        self.created = true;
        Ok(())
    }

    /// Reports this reader and works out which partitions are its own.
    async fn refresh_membership(&mut self) -> Result<(), redis::RedisError> {
        let key = self.cluster.keys.group(&self.group);
        let since = now_ms().saturating_sub(self.cluster.settings.node_timeout.as_millis() as u64);
        let consumer = self.consumer().to_owned();
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let (mut live,): (Vec<String>,) = redis::pipe()
            .zadd(&key, &consumer, now_ms())
            .ignore()
            .zrembyscore(&key, "-inf", format!("({since}"))
            .ignore()
            .zrangebyscore(&key, since, "+inf")
            .query_async(conn)
            .await?;
        live.sort();
        let me = live.iter().position(|m| *m == consumer).unwrap_or(0);
        let n = live.len().max(1);
        let mine: Vec<usize> = (0..self.cluster.settings.partitions).filter(|p| p % n == me).collect();
        if mine != self.mine {
            tracing::debug!(group = self.group, partitions = ?mine, readers = n, "event partitions assigned");
            if n > 1 {
                let until = Instant::now() + Duration::from_millis(1500);
                for p in mine.iter().filter(|p| !self.mine.contains(p)) {
                    self.held.insert(*p, until);
                }
            }
            self.held.retain(|p, _| mine.contains(p));
            self.cluster.watch(&self.group, &self.wake, Some(&mine)).await;
            self.mine = mine;
            // New partitions may hold entries the previous reader left pending.
            self.last_claim = None;
        }
        self.live = live;
        self.last_membership = Some(Instant::now());
        Ok(())
    }

    /// Forgets entries whose stream is gone; true if there were any (read them again).
    fn release_orphans(&self) -> bool {
        let mut in_flight = self.cluster.streams.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        let before = in_flight.len();
        in_flight.retain(|(group, _), entry| {
            *group != self.group || self.cluster.node().router.has_subscriber(entry.holder)
        });
        in_flight.len() != before
    }

    /// Events whose client has stopped waiting (its ack timeout passed) are settled even
    /// if the backend never answers, so unanswered asks cannot pile up and stall the group.
    async fn settle_unanswered(&mut self) -> Result<(), redis::RedisError> {
        let limit = self.cluster.settings.ack_timeout + Duration::from_secs(1);
        let expired: Vec<(String, String)> = {
            let mut in_flight = self.cluster.streams.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            let keys: Vec<(String, String)> = in_flight
                .iter()
                .filter(|((group, _), e)| *group == self.group && e.wants_ack && e.since.elapsed() > limit)
                .map(|(k, _)| k.clone())
                .collect();
            keys.iter().filter_map(|k| in_flight.remove(k)).map(|e| (e.stream, e.entry_id)).collect()
        };
        for (stream, entry_id) in expired {
            self.ack(&stream, &entry_id).await?;
        }
        Ok(())
    }

    fn is_in_flight(&self, event_id: &str) -> bool {
        self.cluster
            .streams
            .in_flight
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains_key(&(self.group.clone(), event_id.to_owned()))
    }

    /// Reads new entries (`>`), or with `own_pending` this consumer's unacknowledged ones.
    async fn read(&mut self, own_pending: bool) -> Result<(), redis::RedisError> {
        if self.mine.is_empty() {
            tokio::time::sleep(Duration::from_millis(READ_BLOCK_MS as u64)).await;
            return Ok(());
        }
        let now = Instant::now();
        self.held.retain(|_, until| *until > now);
        let streams: Vec<String> =
            self.mine.iter().filter(|p| !self.held.contains_key(p)).map(|p| self.stream(*p)).collect();
        if streams.is_empty() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Ok(());
        }
        if self.cluster.link.is_cluster() {
            return self.read_each(streams, own_pending).await;
        }
        let mut cursors: Vec<String> = vec![if own_pending { "0".into() } else { ">".into() }; streams.len()];
        loop {
            let mut cmd = redis::cmd("XREADGROUP");
            cmd.arg("GROUP").arg(&self.group).arg(self.consumer()).arg("COUNT").arg(READ_COUNT);
            if !own_pending {
                cmd.arg("BLOCK").arg(READ_BLOCK_MS);
            }
            cmd.arg("STREAMS").arg(&streams).arg(&cursors);
            let Some(conn) = self.conn.as_mut() else { return Ok(()) };
            let reply: Result<Option<StreamReadReply>, _> = cmd.query_async(conn).await;
            let reply = match reply {
                Ok(r) => r,
                Err(e) if e.code() == Some("NOGROUP") => {
                    // Redis lost its data (restarted without persistence): start over.
                    self.created = false;
                    return Ok(());
                }
                Err(e) => return Err(e),
            };
            let Some(reply) = reply else { return Ok(()) };
            let mut got = 0;
            for key in reply.keys {
                let index = streams.iter().position(|s| *s == key.key);
                for entry in key.ids {
                    got += 1;
                    if let Some(i) = index {
                        cursors[i] = entry.id.clone();
                    }
                    self.deliver(&key.key, entry, own_pending).await?;
                }
            }
            if !own_pending || got == 0 {
                return Ok(());
            }
        }
    }

    /// Redis Cluster: reads each partition on its own (one `XREADGROUP` per slot), without
    /// blocking; when none had anything new, sleeps until a writer's word or
    /// `READ_BLOCK_MS`.
    async fn read_each(&mut self, streams: Vec<String>, own_pending: bool) -> Result<(), redis::RedisError> {
        let mut busy = false;
        for stream in &streams {
            let mut cursor = if own_pending { "0".to_owned() } else { ">".to_owned() };
            loop {
                let mut cmd = redis::cmd("XREADGROUP");
                cmd.arg("GROUP").arg(&self.group).arg(self.consumer()).arg("COUNT").arg(READ_COUNT);
                cmd.arg("STREAMS").arg(stream).arg(&cursor);
                let Some(conn) = self.conn.as_mut() else { return Ok(()) };
                let reply: Option<StreamReadReply> = match cmd.query_async(conn).await {
                    Ok(r) => r,
                    Err(e) if e.code() == Some("NOGROUP") => {
                        self.created = false;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                let entries: Vec<StreamId> = reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids).collect();
                let got = entries.len();
                for entry in entries {
                    cursor.clone_from(&entry.id);
                    self.deliver(stream, entry, own_pending).await?;
                }
                busy |= got > 0;
                // New entries: one batch per partition per round, so every partition gets
                // its turn. Own pending ones: all of them, before anything new.
                if !own_pending || got == 0 {
                    break;
                }
            }
        }
        if !own_pending && !busy {
            let _ = tokio::time::timeout(Duration::from_millis(READ_BLOCK_MS as u64), self.wake.notified()).await;
        }
        Ok(())
    }

    /// Takes over entries another consumer has held unacknowledged for too long.
    async fn claim(&mut self) -> Result<(), redis::RedisError> {
        let idle = self.cluster.settings.claim_idle.as_millis() as u64;
        for p in self.mine.clone() {
            let stream = self.stream(p);
            let mut start = "0-0".to_owned();
            let consumer = self.consumer().to_owned();
            for _ in 0..100 {
                let Some(conn) = self.conn.as_mut() else { return Ok(()) };
                let reply: StreamAutoClaimReply = match redis::cmd("XAUTOCLAIM")
                    .arg(&stream)
                    .arg(&self.group)
                    .arg(&consumer)
                    .arg(idle)
                    .arg(&start)
                    .arg(StreamAutoClaimOptions::default().count(READ_COUNT))
                    .query_async(conn)
                    .await
                {
                    Ok(r) => r,
                    Err(e) if e.code() == Some("NOGROUP") => {
                        self.created = false;
                        return Ok(());
                    }
                    Err(e) => return Err(e),
                };
                if !reply.claimed.is_empty() {
                    tracing::info!(
                        group = self.group,
                        count = reply.claimed.len(),
                        "claimed events another instance left unacknowledged"
                    );
                }
                for entry in reply.claimed {
                    self.deliver(&stream, entry, true).await?;
                }
                if reply.next_stream_id == "0-0" {
                    break;
                }
                start = reply.next_stream_id;
            }
            self.forget_gone_consumers(&stream).await?;
        }
        Ok(())
    }

    /// Every instance start adds a consumer name to the group; once a gone instance's
    /// entries have all been claimed, its name is removed so the group does not grow.
    async fn forget_gone_consumers(&mut self, stream: &str) -> Result<(), redis::RedisError> {
        let idle = self.cluster.settings.claim_idle.as_millis() as usize;
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let info: StreamInfoConsumersReply =
            redis::cmd("XINFO").arg("CONSUMERS").arg(stream).arg(&self.group).query_async(conn).await?;
        for c in info.consumers {
            if c.pending == 0 && c.idle > idle && !self.live.contains(&c.name) {
                let _: i64 = redis::cmd("XGROUP")
                    .arg("DELCONSUMER")
                    .arg(stream)
                    .arg(&self.group)
                    .arg(&c.name)
                    .query_async(conn)
                    .await?;
            }
        }
        Ok(())
    }

    /// Hands one entry to a local stream of the group, waiting while its queue is full
    /// (the entry waits in Redis meanwhile, not in memory).
    async fn deliver(&mut self, stream: &str, entry: StreamId, again: bool) -> Result<(), redis::RedisError> {
        let message = match entry.map.get("m") {
            Some(redis::Value::BulkString(bytes)) => decode(bytes),
            _ => None,
        };
        let Some(message) = message else {
            // Trimmed or unreadable: nothing to deliver.
            return self.ack(stream, &entry.id).await;
        };
        let (event_id, wants_ack) = match &message {
            BackendMessage::ClientEvent(e) => (Some(e.id.clone()), e.wants_ack),
            _ => (None, false),
        };
        if let Some(id) = &event_id
            && self.is_in_flight(id)
        {
            return Ok(());
        }
        loop {
            let Some(picked) = self.cluster.node().router.pick(&self.group, &message) else {
                // No stream here wants it (patterns, namespaces, lifecycle): done with it.
                return self.ack(stream, &entry.id).await;
            };
            let confirm = event_id.is_some() && (wants_ack || picked.confirm_all);
            if let (true, Some(id)) = (confirm, &event_id) {
                self.cluster.streams.in_flight.lock().unwrap_or_else(|e| e.into_inner()).insert(
                    (self.group.clone(), id.clone()),
                    InFlight {
                        stream: stream.to_owned(),
                        entry_id: entry.id.clone(),
                        holder: picked.subscriber,
                        wants_ack,
                        since: Instant::now(),
                    },
                );
            }
            if picked.sender.send(message.clone()).await.is_err() {
                // That stream just closed; pick another (or none).
                if let Some(id) = &event_id {
                    self.cluster
                        .streams
                        .in_flight
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(self.group.clone(), id.clone()));
                }
                continue;
            }
            if again {
                self.cluster.node().metrics.cluster_redelivered.inc();
            }
            return if confirm { Ok(()) } else { self.ack(stream, &entry.id).await };
        }
    }

    async fn ack(&mut self, stream: &str, entry_id: &str) -> Result<(), redis::RedisError> {
        let Some(conn) = self.conn.as_mut() else { return Ok(()) };
        let _: i64 = redis::cmd("XACK").arg(stream).arg(&self.group).arg(entry_id).query_async(conn).await?;
        Ok(())
    }

    /// Stops counting as a reader of the group, so its partitions move at once.
    async fn leave(&mut self) {
        let key = self.cluster.keys.group(&self.group);
        let consumer = self.consumer().to_owned();
        if let Some(conn) = self.conn.as_mut() {
            let _: Result<i64, _> = redis::cmd("ZREM").arg(key).arg(consumer).query_async(conn).await;
        }
    }
}
