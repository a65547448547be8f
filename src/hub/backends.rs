//! Backend subscriptions as the `Events` door sees them: subscribe, answer, leave. An
//! answer may belong to a client on another instance (the backplane carries it there), and
//! it also tells the backplane the event is done with.

use tokio::sync::mpsc;

use super::router::{AckReply, Queued, SubscribeRequest};
use super::{Hub, HubError};

impl Hub {
    /// Registers a backend stream; the backplane then starts bringing this group's
    /// messages here. Returns the stream's id and its group.
    pub async fn subscribe_backend(
        &self,
        request: SubscribeRequest,
    ) -> Result<(u64, String, mpsc::Receiver<Queued>), HubError> {
        let (id, group, rx) = self.router.subscribe(request, &self.settings.namespaces)?;
        self.backplane.group_subscribed(&group).await;
        Ok((id, group, rx))
    }

    pub fn unsubscribe_backend(&self, subscriber_id: u64) {
        self.router.unsubscribe(subscriber_id);
    }

    /// A backend's `Ack` for `event_id`, received on a stream of `group`.
    pub fn backend_ack(&self, group: &str, event_id: &str, reply: AckReply) -> Result<(), HubError> {
        if self.backplane.event_settled(group, event_id) == Some(false) {
            // A delivery confirmation (`confirm_all`): no client callback waits for it.
            return Ok(());
        }
        if self.router.is_local_event(event_id) {
            return self.router.complete_ack(event_id, reply);
        }
        self.backplane.forward_ack(event_id, reply)
    }
}
