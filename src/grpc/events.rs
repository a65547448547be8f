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
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Status, Streaming};

use super::convert::{self, status_from};
use crate::hub::router::SubscribeRequest;
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
    let (id, rx) = hub.subscribe_backend(request).await.map_err(status_from)?;
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
                    let result = reader_hub.backend_ack(id, &ack.event_id, reply).await;
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

    let outbound = ReceiverStream::new(rx).map(|m| Ok(convert::backend_message(m)));
    Ok(Box::pin(Unsubscribing { inner: outbound, hub, id }))
}

/// The response stream; dropping it (the backend went away) removes the subscription.
struct Unsubscribing<S> {
    inner: S,
    hub: Arc<Hub>,
    id: u64,
}

impl<S: Stream + Unpin> Stream for Unsubscribing<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<S::Item>> {
        Pin::new(&mut self.inner).poll_next(cx)
    }
}

impl<S> Drop for Unsubscribing<S> {
    fn drop(&mut self) {
        self.hub.unsubscribe_backend(self.id);
    }
}
