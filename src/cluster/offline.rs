//! Messages kept in Redis for users with no socket anywhere, taken on their next connect
//! on whichever instance, counted when they expire unread.

use super::Cluster;
use super::keys::OFFLINE_BYTES_SUFFIX;
use crate::hub::HubError;
use crate::hub::backplane::{OfflineMessage, OfflineOutcome};

const OFFLINE_STORE: &str = include_str!("scripts/offline_store.lua");
const OFFLINE_TAKE: &str = include_str!("scripts/offline_take.lua");
const OFFLINE_SWEEP: &str = include_str!("scripts/offline_sweep.lua");

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
        let stored: i64 = redis::Script::new(OFFLINE_STORE)
            .key(self.keys.presence(user))
            .key(self.keys.offline(user, &namespace))
            .key(self.keys.offline_expiry())
            .key(self.keys.offline_bytes(user, &namespace))
            .arg(encoded)
            .arg(ttl_ms)
            .arg(self.settings.offline_max_messages)
            .arg(expires_at_ms)
            .arg(size)
            .arg(self.settings.offline_max_bytes)
            .arg(if only_if_offline { "1" } else { "0" })
            .invoke_async(&mut redis)
            .await
            .map_err(super::redis_unavailable)?;
        Ok(match stored {
            1 => OfflineOutcome::Stored,
            2 => OfflineOutcome::Full,
            _ => OfflineOutcome::Online,
        })
    }

    /// Takes what was kept for a user in a namespace, unexpired and oldest first.
    pub(super) async fn take_offline(&self, user: &str, namespace: &str) -> Vec<OfflineMessage> {
        let Some(mut redis) = self.link.conn() else { return Vec::new() };
        let items: Vec<Vec<u8>> = match redis::Script::new(OFFLINE_TAKE)
            .key(self.keys.offline(user, namespace))
            .key(self.keys.offline_expiry())
            .key(self.keys.offline_bytes(user, namespace))
            .invoke_async(&mut redis)
            .await
        {
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

    /// Counts and drops offline messages that expired unread (any instance may do it;
    /// the script removes what it counts, so nothing is counted twice).
    pub(super) async fn sweep_offline(&self) {
        let Some(mut redis) = self.link.conn() else { return };
        let dropped: Result<u64, _> = redis::Script::new(OFFLINE_SWEEP)
            .key(self.keys.offline_expiry())
            .arg(super::now_ms())
            .arg(500)
            .arg(OFFLINE_BYTES_SUFFIX)
            .invoke_async(&mut redis)
            .await;
        match dropped {
            Ok(n) => self.node().metrics.dropped("offline_expired", n),
            Err(e) => tracing::debug!(error = %e, "offline sweep failed"),
        }
    }
}
