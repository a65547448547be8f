//! Messages kept in Redis for users with no socket anywhere, taken on their next connect
//! on whichever instance, counted when they expire unread.
//!
//! A user's list, its byte counter and their presence set share the user's slot, so the
//! scripts on them are atomic in a Redis Cluster too. The expiry index (every list with
//! the time its newest message expires) is one key for all users, on a slot of its own: it
//! is written outside those scripts, before the message (a list never exists unindexed,
//! except when a bridge dies between the two writes: its own TTL then drops it, uncounted).
//! The sweep reads the index, drops each list whose messages have all expired (a script on
//! that list's slot, which decides from the list's TTL, so a message added meanwhile keeps
//! it), and takes the entry out of the index only if no newer message moved it since.

use redis::Value;

use super::Cluster;
use crate::hub::HubError;
use crate::hub::backplane::{OfflineMessage, OfflineOutcome};

const OFFLINE_STORE: &str = include_str!("scripts/offline_store.lua");
const OFFLINE_TAKE: &str = include_str!("scripts/offline_take.lua");
const OFFLINE_SWEEP: &str = include_str!("scripts/offline_sweep.lua");
const OFFLINE_UNINDEX: &str = include_str!("scripts/offline_unindex.lua");

/// Lists the sweep looks at per run (each instance sweeps every 5 s).
const SWEEP_BATCH: usize = 500;

/// `EVAL` of a script with its keys: scripts go inside ordered steps (a pipeline on a
/// single Redis), where the cached-script form (`EVALSHA`, reloaded when missing) cannot.
pub(super) fn eval(script: &str, keys: &[&str]) -> redis::Cmd {
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(script).arg(keys.len()).arg(keys);
    cmd
}

impl Cluster {
    /// Keeps a push for a user; with `only_if_offline`, only if they have no socket
    /// anywhere (checked atomically with the store).
    pub(super) async fn store_offline(
        &self,
        user: &str,
        message: OfflineMessage,
        only_if_offline: bool,
    ) -> Result<OfflineOutcome, HubError> {
        let mut redis = self.conn()?;
        let ttl_ms = message.expires_at_ms.saturating_sub(super::now_ms());
        let size = message.size();
        let (expires_at_ms, namespace) = (message.expires_at_ms, message.namespace.clone());
        let encoded = rmp_serde::to_vec_named(&message).map_err(|e| HubError::Unavailable(e.to_string()))?;
        let list = self.keys.offline(user, &namespace);
        let mut store =
            eval(OFFLINE_STORE, &[&self.keys.presence(user), &list, &self.keys.offline_bytes(user, &namespace)]);
        store
            .arg(encoded)
            .arg(ttl_ms)
            .arg(self.settings.offline_max_messages)
            .arg(size)
            .arg(self.settings.offline_max_bytes)
            .arg(if only_if_offline { "1" } else { "0" });
        let mut steps = redis::pipe();
        // Indexed first: a list is never there without its entry. When the message is not
        // kept, the entry is dropped by the sweep, which then finds no list.
        steps.cmd("ZADD").arg(self.keys.offline_expiry()).arg("GT").arg(expires_at_ms).arg(&list);
        steps.add_command(store);
        let replies = redis.in_order(&steps).await.map_err(super::redis_unavailable)?;
        let stored: i64 = last_reply(replies).map_err(super::redis_unavailable)?;
        Ok(match stored {
            1 => OfflineOutcome::Stored,
            2 => OfflineOutcome::Full,
            _ => OfflineOutcome::Online,
        })
    }

    /// Takes what was kept for a user in a namespace, unexpired and oldest first.
    pub(super) async fn take_offline(&self, user: &str, namespace: &str) -> Vec<OfflineMessage> {
        let Some(mut redis) = self.link.conn() else { return Vec::new() };
        let take =
            eval(OFFLINE_TAKE, &[&self.keys.offline(user, namespace), &self.keys.offline_bytes(user, namespace)]);
        let items: Vec<Vec<u8>> = match take.query_async(&mut redis).await {
            Ok(items) => items,
            Err(e) => {
                tracing::warn!(error = %e, "offline messages could not be read from redis");
                return Vec::new();
            }
        };
        let now = super::now_ms();
        let mut expired = 0;
        let kept = items
            .iter()
            .filter_map(|raw| rmp_serde::from_slice::<OfflineMessage>(raw).ok())
            .filter(|m| {
                let fresh = m.expires_at_ms > now;
                expired += u64::from(!fresh);
                fresh
            })
            .collect();
        self.node().metrics.dropped("offline_expired", expired);
        kept
    }

    /// Counts and drops offline messages that expired unread (any instance may do it; the
    /// script that deletes a list is the one that counts it, so nothing is counted twice).
    pub(super) async fn sweep_offline(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let index = self.keys.offline_expiry();
        let due: Vec<(String, String)> = match redis::cmd("ZRANGEBYSCORE")
            .arg(&index)
            .arg("-inf")
            .arg(super::now_ms())
            .arg("WITHSCORES")
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH)
            .query_async(&mut redis)
            .await
        {
            Ok(due) => due,
            Err(e) => {
                tracing::debug!(error = %e, "offline sweep failed");
                return;
            }
        };
        let mut dropped = 0;
        for (list, score) in due {
            let bytes = list.clone() + super::keys::OFFLINE_BYTES_SUFFIX;
            let swept: Result<(i64, u64), _> = eval(OFFLINE_SWEEP, &[&list, &bytes]).query_async(&mut redis).await;
            match swept {
                Ok((0, n)) => {
                    dropped += n;
                    let mut unindex = eval(OFFLINE_UNINDEX, &[&index]);
                    unindex.arg(&list).arg(&score);
                    let _: Result<i64, _> = unindex.query_async(&mut redis).await;
                }
                // A live message is left (the clocks of Redis and this instance disagree,
                // or the index missed a write): looked at again when that one expires.
                Ok((_, live_ms)) => {
                    let at = super::now_ms() + live_ms;
                    let _: Result<i64, _> =
                        redis::cmd("ZADD").arg(&index).arg("GT").arg(at).arg(&list).query_async(&mut redis).await;
                }
                Err(e) => {
                    tracing::debug!(error = %e, "offline sweep failed");
                    break;
                }
            }
        }
        self.node().metrics.dropped("offline_expired", dropped);
    }
}

/// The last of a list of replies, converted.
fn last_reply<T: redis::FromRedisValue>(replies: Vec<Value>) -> redis::RedisResult<T> {
    let last = replies.into_iter().last().unwrap_or(Value::Nil);
    redis::from_redis_value(last).map_err(Into::into)
}
