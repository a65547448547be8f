//! The `Events` stream: one backend subscription per stream.
//!
//! The router owns a bounded queue per subscription; its receiver is this stream's
//! response. A separate task reads the backend's side (acks). When either side ends the
//! subscription is removed, and the acks only it held fail at once.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures::Stream;
use tokio::sync::mpsc;
use tokio::time::{Instant, Sleep};
use tonic::{Status, Streaming};

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

/// Most events one batch holds back (see `Outbound`): 32 events of a few hundred bytes
/// fill a write without making the first wait for a large one.
const BATCH_MAX: usize = 32;

/// The response stream: the subscription's queue, encoded as it is read. Dropping it (the
/// backend went away) removes the subscription.
///
/// Batching: tonic encodes every message the stream yields without waiting into one
/// HTTP/2 write, and each write costs a system call here and a wake-up of the backend.
/// Events arrive spread out (each socket's read is its own wake-up), so without help
/// every event would leave alone. A stream that sent less than `window` ago is busy: new
/// events are held until `window` after that send, or until `BATCH_MAX` are held, and
/// then leave together. A stream idle for longer sends at once, so a quiet stream adds
/// no delay. With no window, a stream woken by a few messages lets the tasks already
/// waiting to run go first (one turn of the scheduler): those are typically other
/// sockets' events of the same batch of readiness.
struct Outbound {
    rx: mpsc::Receiver<Queued>,
    window: Duration,
    /// The last poll found the queue empty, at `idle_at`.
    idle: bool,
    idle_at: Instant,
    /// While holding: when the batch leaves at the latest, and what it holds.
    hold: Option<Pin<Box<Sleep>>>,
    held: VecDeque<Queued>,
    /// Without a window: this wake-up has already let the others go first.
    deferred: bool,
    hub: Arc<Hub>,
    id: u64,
}

impl Outbound {
    fn new(rx: mpsc::Receiver<Queued>, hub: Arc<Hub>, id: u64) -> Self {
        let window = hub.settings().stream_batch_window;
        let held = VecDeque::new();
        Self { rx, window, idle: true, idle_at: Instant::now(), hold: None, held, deferred: false, hub, id }
    }

    /// Takes queued messages into the batch until it is full, the queue is empty or
    /// closed, or the window ends. Ready once the batch should leave.
    fn poll_hold(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        while self.held.len() < BATCH_MAX {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(q)) => self.held.push_back(q),
                Poll::Ready(None) => return Poll::Ready(()),
                Poll::Pending => {
                    return match self.hold.as_mut() {
                        Some(timer) => timer.as_mut().poll(cx),
                        None => Poll::Ready(()),
                    };
                }
            }
        }
        Poll::Ready(())
    }
}

fn sent(q: Queued) -> Poll<Option<Result<pb::EventsResponse, Status>>> {
    // The queued message's bytes return to the stream's budget here.
    Poll::Ready(Some(Ok(convert::backend_message(q.message))))
}

impl Stream for Outbound {
    type Item = Result<pb::EventsResponse, Status>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.hold.is_none()
            && this.idle
            && !this.window.is_zero()
            && !this.rx.is_empty()
            && this.idle_at.elapsed() < this.window
        {
            this.hold = Some(Box::pin(tokio::time::sleep_until(this.idle_at + this.window)));
        }
        if this.hold.is_some() {
            if this.poll_hold(cx).is_pending() {
                return Poll::Pending;
            }
            this.hold = None;
            this.idle &= this.held.is_empty();
        }
        if let Some(q) = this.held.pop_front() {
            return sent(q);
        }
        if this.window.is_zero() && this.idle && !this.deferred && (1..BATCH_MAX).contains(&this.rx.len()) {
            this.deferred = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        this.deferred = false;
        match this.rx.poll_recv(cx) {
            Poll::Ready(Some(q)) => {
                this.idle = false;
                sent(q)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                if !this.idle {
                    this.idle = true;
                    this.idle_at = Instant::now();
                }
                Poll::Pending
            }
        }
    }
}

impl Drop for Outbound {
    fn drop(&mut self) {
        self.hub.unsubscribe_backend(self.id);
    }
}
