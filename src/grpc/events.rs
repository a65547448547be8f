//! The `Events` stream: one backend subscription per stream.
//!
//! The router owns a bounded queue per subscription; its receiver is this stream's
//! response. A separate task reads the backend's side (acks). When either side ends the
//! subscription is removed, and the acks only it held fail at once.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use super::batch::Batches;
use super::convert::{self, status_from};
use crate::hub::router::{Queued, SubscribeRequest};
use crate::hub::{Hub, HubError};
use crate::proto as pb;

/// How long a new stream may take to send its Subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

type EventsStream = Pin<Box<dyn Stream<Item = Result<pb::EventsResponse, Status>> + Send + 'static>>;

pub async fn open(hub: Arc<Hub>, mut inbound: Streaming<pb::EventsRequest>) -> Result<EventsStream, Status> {
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no Subscribe received within 10s"))??;
    let subscribe = match first.and_then(|m| m.kind) {
        Some(pb::events_request::Kind::Subscribe(s)) => s,
        _ => {
            return Err(status_from(HubError::invalid("subscribe", "the first message on Events must be a Subscribe")));
        }
    };
    let request = SubscribeRequest {
        group: subscribe.group,
        event_patterns: subscribe.event_patterns,
        namespaces: subscribe.namespaces,
        wants_lifecycle: subscribe.wants_lifecycle,
        confirm_all: subscribe.confirm_all,
    };
    let (id, group, rx) = hub.subscribe_backend(request).await.map_err(status_from)?;
    tracing::info!(subscriber = id, "backend subscribed");

    let reader_hub = hub.clone();
    tokio::spawn(async move {
        let limits = reader_hub.settings().payload_limits;
        loop {
            match inbound.message().await {
                Ok(Some(pb::EventsRequest { kind: Some(pb::events_request::Kind::Ack(ack)) })) => {
                    // A malformed answer still ends the client's wait, with an error it can
                    // act on, and the backend's bug is logged.
                    let reply = convert::ack_reply(ack.result, limits).unwrap_or_else(|e| {
                        tracing::warn!(subscriber = id, error = %e, "backend sent a malformed ack");
                        crate::hub::router::AckReply::error("backend_error", "the backend's answer was malformed")
                    });
                    let result = reader_hub.backend_ack(&group, &ack.event_id, reply);
                    if let Err(e) = result {
                        // Late acks are normal (the client timed out); nothing to tell the backend.
                        tracing::debug!(subscriber = id, error = %e, "ack not applied");
                    }
                }
                Ok(Some(_)) => tracing::debug!(subscriber = id, "ignored a second Subscribe or an empty message"),
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(subscriber = id, error = %e, "backend stream read failed");
                    break;
                }
            }
        }
        reader_hub.unsubscribe_backend(id);
        tracing::info!(subscriber = id, "backend stream closed");
    });

    Ok(Box::pin(Outbound::new(rx, hub, id)))
}

/// The response stream: the subscription's queue, taken in batches (see `batch`) and
/// encoded as it is read. Dropping it (the backend went away) removes the subscription.
struct Outbound {
    batches: Batches<Queued>,
    hub: Arc<Hub>,
    id: u64,
}

impl Outbound {
    fn new(rx: mpsc::Receiver<Queued>, hub: Arc<Hub>, id: u64) -> Self {
        let batches = Batches::new(rx, hub.settings().stream_batch_window);
        Self { batches, hub, id }
    }
}

impl Stream for Outbound {
    type Item = Result<pb::EventsResponse, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // The queued message's bytes return to the stream's budget as it is encoded.
        self.batches.poll_next(cx).map(|q| q.map(|q| Ok(convert::backend_message(q.message))))
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.hub.unsubscribe_backend(self.id);
    }
}
