//! Pushes kept for users with no live socket (`ttl`), delivered in order on their next
//! connect, dropped at expiry. In memory: this is the embedded mode's store.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use super::Payload;

/// Most messages kept per user; the oldest go first beyond it.
const MAX_PER_USER: usize = 1000;
/// Most users with kept messages; new users' messages are refused beyond it.
const MAX_USERS: usize = 100_000;

#[derive(Debug, Clone)]
pub struct OfflineMessage {
    pub namespace: String,
    pub event: String,
    pub payload: Payload,
    pub expires_at: Instant,
}

#[derive(Default)]
pub struct OfflineStore {
    users: Mutex<HashMap<String, VecDeque<OfflineMessage>>>,
}

impl OfflineStore {
    pub fn store(&self, user_id: &str, msg: OfflineMessage) -> bool {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        if !users.contains_key(user_id) && users.len() >= MAX_USERS {
            return false;
        }
        let queue = users.entry(user_id.to_owned()).or_default();
        if queue.len() >= MAX_PER_USER {
            queue.pop_front();
        }
        queue.push_back(msg);
        true
    }

    /// Unexpired messages for this user and namespace, oldest first; they leave the store.
    pub fn take(&self, user_id: &str, namespace: &str, now: Instant) -> Vec<OfflineMessage> {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let Some(queue) = users.get_mut(user_id) else { return Vec::new() };
        let (mine, rest): (VecDeque<_>, VecDeque<_>) = queue.drain(..).partition(|m| m.namespace == namespace);
        *queue = rest;
        if queue.is_empty() {
            users.remove(user_id);
        }
        mine.into_iter().filter(|m| m.expires_at > now).collect()
    }

    /// Drops expired messages; returns how many.
    pub fn expire(&self, now: Instant) -> u64 {
        let mut users = self.users.lock().unwrap_or_else(|e| e.into_inner());
        let mut dropped = 0;
        users.retain(|_, queue| {
            let before = queue.len();
            queue.retain(|m| m.expires_at > now);
            dropped += (before - queue.len()) as u64;
            !queue.is_empty()
        });
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn msg(event: &str, ns: &str, expires_at: Instant) -> OfflineMessage {
        OfflineMessage { namespace: ns.into(), event: event.into(), payload: Payload::default(), expires_at }
    }

    #[test]
    fn kept_in_order_per_namespace_and_expired_dropped() {
        let s = OfflineStore::default();
        let now = Instant::now();
        let later = now + Duration::from_secs(60);
        s.store("u", msg("a", "/", later));
        s.store("u", msg("old", "/", now));
        s.store("u", msg("b", "/", later));
        s.store("u", msg("other", "/admin", later));
        let got: Vec<_> = s.take("u", "/", now).into_iter().map(|m| m.event).collect();
        assert_eq!(got, ["a", "b"]);
        assert_eq!(s.take("u", "/admin", now).len(), 1);
        assert!(s.take("u", "/", now).is_empty());
        s.store("v", msg("x", "/", now));
        assert_eq!(s.expire(now), 1);
    }
}
