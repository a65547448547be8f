//! Node membership: every instance reports itself each second; one that stops reporting
//! for `redis.node_timeout_ms` is reaped by the others (its sockets leave presence with the
//! lifecycle news a backend expects, its unacknowledged events are claimed). After Redis
//! comes back (and every 30 s) an instance re-asserts its sockets, since changes made
//! while Redis was down never reached it.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use redis::AsyncCommands;

use super::outbox::Outgoing;
use super::presence::{disconnect_messages, node_socket_entry, split_node_socket};
use super::{Cluster, at_ms, now_ms};
use crate::hub::HubError;
use crate::hub::backplane::NodeInfo;
use crate::hub::registry::Connection;

impl Cluster {
    /// Instances that reported within `redis.node_timeout_ms`, this one first.
    pub(super) async fn nodes(&self) -> Result<Vec<NodeInfo>, HubError> {
        let mut redis = self.conn()?;
        let since = now_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let live: Vec<(String, f64)> =
            redis.zrangebyscore_withscores(self.keys.nodes(), since, "+inf").await.map_err(super::redis_unavailable)?;
        let ids: Vec<&str> = live.iter().map(|(id, _)| id.as_str()).collect();
        let counts: Vec<Option<u64>> = if ids.is_empty() {
            Vec::new()
        } else {
            redis::cmd("HMGET")
                .arg(self.keys.node_info())
                .arg(&ids)
                .query_async(&mut redis)
                .await
                .map_err(super::redis_unavailable)?
        };
        let mut nodes: Vec<NodeInfo> = live
            .iter()
            .zip(counts.into_iter().chain(std::iter::repeat(None)))
            .map(|((id, seen), connections)| NodeInfo {
                instance_id: id.clone(),
                connections: connections.unwrap_or(0),
                last_seen: at_ms(*seen as u64),
            })
            .collect();
        nodes.sort_by_key(|n| (n.instance_id != self.instance_id(), n.instance_id.clone()));
        Ok(nodes)
    }

    /// Each second: report this instance, learn whether any backend group exists; every
    /// few seconds reap instances that stopped reporting; after Redis comes back (and
    /// every 30 s) re-assert this instance's sockets, since changes made while it was
    /// down never reached it.
    pub(super) async fn run_heartbeat(self: Arc<Self>, shutdown: crate::shutdown::Shutdown) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_up = false;
        let mut ticks = 0u64;
        let mut reported = false;
        // Since when this instance's reports go through. The others could not report
        // while Redis was out of reach either (a restart, a Redis Cluster failover), so
        // their last reports are as old as the outage: nobody is reaped until every live
        // instance has had `redis.node_timeout_ms` to report again.
        let mut reporting_since: Option<std::time::Instant> = None;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => break,
            }
            ticks += 1;
            let up = self.link.is_up();
            self.node().metrics.redis_up.set(i64::from(up));
            if !up || self.left.load(Ordering::Acquire) {
                was_up = false;
                reporting_since = None;
                continue;
            }
            let rejoined = match self.report().await {
                Ok(rejoined) => rejoined,
                Err(e) => {
                    tracing::warn!(error = %e, "cluster heartbeat failed");
                    reporting_since = None;
                    continue;
                }
            };
            let reporting_for = reporting_since.get_or_insert_with(std::time::Instant::now).elapsed();
            if rejoined && reported {
                *self.rejoined_at.lock().unwrap_or_else(|e| e.into_inner()) = Some(std::time::Instant::now());
                tracing::warn!(
                    "this instance had been reaped by the others (paused or cut off); re-announcing its sockets"
                );
            }
            if !was_up || rejoined || ticks.is_multiple_of(30) {
                self.resync_sockets().await;
            }
            if rejoined || !was_up {
                // Redis may have lost what this instance advertised.
                self.advertise_deciders().await;
            }
            reported = true;
            was_up = true;
            if ticks.is_multiple_of(3) && reporting_for >= self.settings.node_timeout {
                self.reap_dead_nodes().await;
            }
            if ticks.is_multiple_of(5) {
                self.sweep_offline().await;
                self.drop_idle_rooms().await;
            }
        }
        // Leaving: other instances stop counting this one at once.
        if let Some(mut redis) = self.link.conn() {
            let _: Result<(), _> = redis.zrem(self.keys.nodes(), self.instance_id()).await;
        }
    }

    /// Shutdown: removes what Redis still holds of this instance (sockets whose disconnect
    /// could not be written are reported now) and stops counting it as a node.
    pub(super) async fn leave(&self) {
        self.left.store(true, Ordering::Release);
        let Some(mut redis) = self.link.conn() else { return };
        let key = self.keys.node_sockets(self.instance_id());
        let left_over: Vec<String> = redis.smembers(&key).await.unwrap_or_default();
        for entry in &left_over {
            if let Some((namespace, socket_id, user)) = split_node_socket(entry)
                && let Ok((removed, offline)) = self.presence_del(self.instance_id(), namespace, socket_id, user).await
            {
                let messages =
                    disconnect_messages(socket_id, user, namespace, "server shutting down", removed, offline);
                self.write_now(messages).await;
            }
        }
        // The socket set is on this instance's slot, the rest on the instance-wide one.
        let _: Result<(), _> = redis.del(&key).await;
        let _: Result<(), _> = redis::pipe()
            .zrem(self.keys.nodes(), self.instance_id())
            .hdel(self.keys.node_info(), self.instance_id())
            .hdel(self.keys.deciders(), self.instance_id())
            .query_async(&mut redis)
            .await;
    }

    /// Writes which decisions this instance's backends make (nothing when none).
    pub(super) async fn advertise_deciders(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let flags = self.deciders.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let written: Result<(), _> = if flags.is_empty() {
            redis.hdel(self.keys.deciders(), self.instance_id()).await
        } else {
            redis.hset(self.keys.deciders(), self.instance_id(), flags).await
        };
        if let Err(e) = written {
            tracing::debug!(error = %e, "deciders not advertised; retried with the next report");
        }
    }

    /// Other live instances whose backends decide `kind`.
    pub(super) async fn decider_nodes(
        &self,
        kind: crate::hub::deciders::DecisionKind,
    ) -> Result<Vec<String>, HubError> {
        let mut redis = self.conn()?;
        let all: HashMap<String, String> =
            redis.hgetall(self.keys.deciders()).await.map_err(super::redis_unavailable)?;
        let flag = match kind {
            crate::hub::deciders::DecisionKind::Connect => 'c',
            crate::hub::deciders::DecisionKind::Join => 'j',
        };
        let live = self.other_live_nodes();
        let mut nodes: Vec<String> = all
            .into_iter()
            .filter(|(node, flags)| flags.contains(flag) && live.contains(node))
            .map(|(node, _)| node)
            .collect();
        nodes.sort();
        Ok(nodes)
    }

    /// Reports this instance; true when it was missing from the node list (first report,
    /// Redis lost its data, or the others reaped it while it was paused or cut off).
    async fn report(&self) -> Result<bool, redis::RedisError> {
        if self.left.load(Ordering::Acquire) {
            return Ok(false);
        }
        let mut redis = self.link.conn().ok_or_else(super::link::unreachable)?;
        let connections = self.router_connections();
        let since = now_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let (added, _, live, groups): (u64, (), Vec<String>, u64) = redis::pipe()
            .zadd(self.keys.nodes(), self.instance_id(), now_ms())
            .hset(self.keys.node_info(), self.instance_id(), connections)
            .zrangebyscore(self.keys.nodes(), since, "+inf")
            .scard(self.keys.groups())
            .query_async(&mut redis)
            .await?;
        self.node().metrics.cluster_nodes.set(live.len() as i64);
        let others: Vec<String> = live.into_iter().filter(|n| n != self.instance_id()).collect();
        *self.live.lock().unwrap_or_else(|e| e.into_inner()) = others;
        self.groups_known.store(groups > 0 || self.node().router.has_groups(), Ordering::Release);
        Ok(added == 1)
    }

    fn router_connections(&self) -> u64 {
        self.node().registry.len() as u64
    }

    /// Makes Redis' view of this instance's sockets match the registry's.
    async fn resync_sockets(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let key = self.keys.node_sockets(self.instance_id());
        let known: HashSet<String> = match redis.smembers(&key).await {
            Ok(k) => k,
            Err(_) => return,
        };
        let live: HashMap<String, Arc<Connection>> = self
            .node()
            .registry
            .all()
            .into_iter()
            .map(|c| (node_socket_entry(&c.namespace, &c.socket_id, c.user_id.as_deref()), c))
            .collect();
        // Gone while Redis could not hear about it.
        for entry in known.iter().filter(|e| !live.contains_key(*e)) {
            if let Some((namespace, socket_id, user)) = split_node_socket(entry) {
                self.remove_socket(self.instance_id(), namespace, socket_id, user, "transport close").await;
            }
        }
        // Left while Redis was unreachable: removed if Redis still has them, and reported
        // either way (UserOffline when the user has no socket left anywhere).
        let departed = std::mem::take(&mut *self.unreported.lock().unwrap_or_else(|e| e.into_inner()));
        for (conn, reason) in departed {
            let user = conn.user_id.as_deref();
            let _ = self.presence_del(self.instance_id(), &conn.namespace, &conn.socket_id, user).await;
            let still_online = match user {
                Some(u) => redis.scard::<_, u64>(self.keys.presence(u)).await.map(|n| n > 0).unwrap_or(true),
                None => false,
            };
            for message in disconnect_messages(&conn.socket_id, user, &conn.namespace, &reason, true, !still_online) {
                let _ = self.enqueue(Outgoing::Message { message, pending_ack: None });
            }
        }
        // Unknown to Redis: connected while it was down (their connect never reached it),
        // or reaped while this instance was paused. Announced again through the queue, so
        // backends hear UserOnline and SocketConnected (with no rooms listed). Recent ones
        // are left to their own queued connect, unless that connect already failed.
        let unrecorded: HashSet<(String, String)> =
            std::mem::take(&mut *self.unrecorded.lock().unwrap_or_else(|e| e.into_inner()))
                .into_iter()
                .map(|c| (c.namespace.clone(), c.socket_id.clone()))
                .collect();
        let settled = SystemTime::now() - Duration::from_secs(1);
        for (entry, conn) in live {
            let failed = unrecorded.contains(&(conn.namespace.clone(), conn.socket_id.clone()));
            if !known.contains(&entry) && (conn.connected_at < settled || failed) {
                let _ = self.enqueue(Outgoing::Connected { conn, rooms: Vec::new(), recorded: None });
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

    async fn reap_dead_nodes(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let cutoff = now_ms().saturating_sub(self.settings.node_timeout.as_millis() as u64);
        let dead: Vec<String> = redis.zrangebyscore(self.keys.nodes(), "-inf", cutoff).await.unwrap_or_default();
        for node in dead.into_iter().filter(|n| *n != self.instance_id()) {
            let claimed: Option<String> = redis::cmd("SET")
                .arg(self.keys.reap(&node))
                .arg(self.instance_id())
                .arg("NX")
                .arg("PX")
                .arg(60_000)
                .query_async(&mut redis)
                .await
                .unwrap_or(None);
            if claimed.is_none() {
                continue;
            }
            let sockets: Vec<String> = redis.smembers(self.keys.node_sockets(&node)).await.unwrap_or_default();
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
            let _: Result<(), _> = redis.del(self.keys.node_sockets(&node)).await;
            let _: Result<(), _> = redis::pipe()
                .zrem(self.keys.nodes(), &node)
                .hdel(self.keys.node_info(), &node)
                .hdel(self.keys.deciders(), &node)
                .query_async(&mut redis)
                .await;
        }
    }
}
