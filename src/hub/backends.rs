//! Backend subscriptions as the `Events` door sees them: subscribe, answer, leave. In
//! cluster mode an answer may belong to a client on another instance, and it also tells
//! Redis the event is done with.

use tokio::sync::mpsc;

use super::router::{AckReply, BackendMessage, SubscribeRequest};
use super::{Hub, HubError};

impl Hub {
    /// Registers a backend stream; in cluster mode this instance starts reading the
    /// group's events from Redis.
    pub async fn subscribe_backend(
        &self,
        request: SubscribeRequest,
    ) -> Result<(u64, mpsc::Receiver<BackendMessage>), HubError> {
        let (id, rx) = self.router.subscribe(request, &self.settings.namespaces)?;
        if let Some(cluster) = &self.cluster
            && let Some(group) = self.router.group_of(id)
        {
            cluster.prepare_group(&group).await;
            cluster.ensure_reader(&group);
        }
        Ok((id, rx))
    }

    pub fn unsubscribe_backend(&self, subscriber_id: u64) {
        self.router.unsubscribe(subscriber_id);
    }

    /// A backend's `Ack` for `event_id`, received on stream `subscriber_id`.
    pub async fn backend_ack(&self, subscriber_id: u64, event_id: &str, reply: AckReply) -> Result<(), HubError> {
        let Some(cluster) = &self.cluster else { return self.router.complete_ack(event_id, reply) };
        let wanted_ack = self.router.group_of(subscriber_id).and_then(|group| cluster.settle(&group, event_id));
        if wanted_ack == Some(false) {
            // A delivery confirmation (`confirm_all`): no client callback waits for it.
            return Ok(());
        }
        if self.router.is_local_event(event_id) {
            return self.router.complete_ack(event_id, reply);
        }
        match event_id.split_once('-') {
            Some((origin, _)) if is_instance_id(origin) => {
                // Sent on its own task: answers to other instances' clients must not wait
                // behind each other's round trips.
                let (cluster, origin, event_id) = (cluster.clone(), origin.to_owned(), event_id.to_owned());
                tokio::spawn(async move { cluster.forward_ack(&origin, &event_id, reply).await });
                Ok(())
            }
            _ => Err(HubError::NotFound(format!(
                "ack.event_id {:?} is not an event id this cluster issued",
                event_id.chars().take(64).collect::<String>()
            ))),
        }
    }
}

fn is_instance_id(s: &str) -> bool {
    s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit())
}
