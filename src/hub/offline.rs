//! Pushes kept in memory for users who are not connected (`ttl`), delivered in order on
//! their next connect, dropped at expiry: the embedded backplane's store.
//!
//! Bounded three ways, because a backend pushing with a ttl to user ids nobody ever
//! connects as (a typo, or ids an outsider can make it push to) would otherwise grow it
//! without end: messages per user, bytes per user, and bytes in all. A message that does
//! not fit is refused (the push reports it), never made room for by dropping an older one
//! the backend was already told is kept.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

use super::Payload;

/// A push kept for a user with no socket anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OfflineMessage {
    pub namespace: String,
    pub event: String,
    pub payload: Payload,
    /// Wall-clock expiry, in milliseconds since the Unix epoch (instances share it).
    pub expires_at_ms: u64,
}

impl OfflineMessage {
    /// Bytes it holds, for the stores' byte limits.
    pub fn size(&self) -> usize {
        self.namespace.len() + self.event.len() + self.payload.len()
    }
}

/// What became of a push offered to the offline store.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OfflineOutcome {
    /// Kept: the user has no socket anywhere.
    Stored,
    /// Not kept: the user is online somewhere; deliver it live.
    Online,
    /// Not kept: the user's share of the store is full.
    Full,
}

/// The store's bounds (settings `offline.*`).
#[derive(Debug, Clone, Copy)]
pub struct OfflineLimits {
    pub max_messages_per_user: usize,
    pub max_bytes_per_user: usize,
    pub max_bytes: usize,
}

#[derive(Default)]
struct Kept {
    /// user → their messages, oldest first, with the bytes they hold.
    users: HashMap<String, (VecDeque<OfflineMessage>, usize)>,
    bytes: usize,
}

#[derive(Clone)]
pub struct OfflineStore {
    kept: Arc<Mutex<Kept>>,
    limits: OfflineLimits,
}

impl OfflineStore {
    pub fn new(limits: OfflineLimits) -> Self {
        Self { kept: Arc::default(), limits }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Kept> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Keeps `message` for `user` when `keep` (evaluated under the store's lock) says so
    /// and it fits the limits.
    pub fn store_if(&self, user: &str, message: OfflineMessage, keep: impl FnOnce() -> bool) -> OfflineOutcome {
        let size = message.size() + user.len();
        let mut kept = self.lock();
        if !keep() {
            return OfflineOutcome::Online;
        }
        let (count, user_bytes) = kept.users.get(user).map_or((0, 0), |(q, b)| (q.len(), *b));
        if count >= self.limits.max_messages_per_user
            || user_bytes + size > self.limits.max_bytes_per_user
            || kept.bytes + size > self.limits.max_bytes
        {
            return OfflineOutcome::Full;
        }
        kept.bytes += size;
        let (queue, bytes) = kept.users.entry(user.to_owned()).or_default();
        queue.push_back(message);
        *bytes += size;
        OfflineOutcome::Stored
    }

    /// Unexpired messages for this user and namespace, oldest first; they leave the store.
    pub fn take(&self, user: &str, namespace: &str, now_ms: u64) -> Vec<OfflineMessage> {
        let mut kept = self.lock();
        let Some((queue, bytes)) = kept.users.get_mut(user) else { return Vec::new() };
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = queue.drain(..).partition(|m| m.namespace == namespace);
        let freed: usize = mine.iter().map(|m| m.size() + user.len()).sum();
        *queue = rest;
        *bytes -= freed;
        if queue.is_empty() {
            kept.users.remove(user);
        }
        kept.bytes -= freed;
        mine.into_iter().filter(|m| m.expires_at_ms > now_ms).collect()
    }

    /// Drops expired messages; returns how many.
    pub fn expire(&self, now_ms: u64) -> u64 {
        let mut kept = self.lock();
        let mut dropped = 0;
        let mut freed = 0;
        kept.users.retain(|user, (queue, bytes)| {
            queue.retain(|m| {
                let fresh = m.expires_at_ms > now_ms;
                if !fresh {
                    dropped += 1;
                    let size = m.size() + user.len();
                    *bytes -= size;
                    freed += size;
                }
                fresh
            });
            !queue.is_empty()
        });
        kept.bytes -= freed;
        dropped
    }

    /// Bytes held in all.
    pub fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(event: &str, ns: &str, expires_at_ms: u64) -> OfflineMessage {
        OfflineMessage {
            namespace: ns.into(),
            event: event.into(),
            payload: crate::hub::Payload::default(),
            expires_at_ms,
        }
    }

    fn store(per_user: usize, bytes_per_user: usize, bytes: usize) -> OfflineStore {
        OfflineStore::new(OfflineLimits {
            max_messages_per_user: per_user,
            max_bytes_per_user: bytes_per_user,
            max_bytes: bytes,
        })
    }

    #[test]
    fn kept_in_order_per_namespace_and_expired_dropped() {
        let s = store(100, 1 << 20, 1 << 20);
        let (now, later) = (1_000, 61_000);
        for (event, ns, at) in [("a", "/", later), ("old", "/", now), ("b", "/", later), ("other", "/admin", later)] {
            assert_eq!(s.store_if("u", msg(event, ns, at), || true), OfflineOutcome::Stored);
        }
        let got: Vec<_> = s.take("u", "/", now).into_iter().map(|m| m.event).collect();
        assert_eq!(got, ["a", "b"]);
        assert_eq!(s.take("u", "/admin", now).len(), 1);
        assert!(s.take("u", "/", now).is_empty());
        assert_eq!(s.bytes(), 0, "taking frees every byte");
        s.store_if("v", msg("x", "/", now), || true);
        assert_eq!(s.expire(now), 1);
        assert_eq!(s.bytes(), 0, "expiry frees every byte");
    }

    #[test]
    fn a_full_store_refuses_instead_of_dropping_older_messages() {
        let s = store(2, 1 << 20, 1 << 20);
        assert_eq!(s.store_if("u", msg("1", "/", 9), || true), OfflineOutcome::Stored);
        assert_eq!(s.store_if("u", msg("2", "/", 9), || true), OfflineOutcome::Stored);
        assert_eq!(s.store_if("u", msg("3", "/", 9), || true), OfflineOutcome::Full);
        assert_eq!(s.take("u", "/", 0).into_iter().map(|m| m.event).collect::<Vec<_>>(), ["1", "2"]);

        let one = msg("x", "/", 9).size() + 1;
        let s = store(100, one * 2, one * 3);
        assert_eq!(s.store_if("a", msg("x", "/", 9), || true), OfflineOutcome::Stored);
        assert_eq!(s.store_if("a", msg("x", "/", 9), || true), OfflineOutcome::Stored);
        assert_eq!(s.store_if("a", msg("x", "/", 9), || true), OfflineOutcome::Full, "bytes per user");
        assert_eq!(s.store_if("b", msg("x", "/", 9), || true), OfflineOutcome::Stored);
        assert_eq!(s.store_if("c", msg("x", "/", 9), || true), OfflineOutcome::Full, "bytes in all");
        assert_eq!(s.store_if("c", msg("x", "/", 9), || false), OfflineOutcome::Online);
    }
}
