//! The `Authorize` stream: one backend decider per stream. Questions come from the hub's
//! queue for this decider; a separate task reads the backend's decisions. When either side
//! ends, the decider is removed and the questions only it held are refused at once.

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use tonic::{Status, Streaming};

use super::convert::status_from;
use crate::hub::deciders::{Answer, Asked, DeciderSubscription, Question, Undecided};
use crate::hub::{Hub, HubError};
use crate::proto as pb;

/// How long a new stream may take to send its subscribe.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(10);

type AuthorizeStream = Pin<Box<dyn Stream<Item = Result<pb::AuthorizeResponse, Status>> + Send + 'static>>;

pub async fn open(hub: Arc<Hub>, mut inbound: Streaming<pb::AuthorizeRequest>) -> Result<AuthorizeStream, Status> {
    let first = tokio::time::timeout(SUBSCRIBE_TIMEOUT, inbound.message())
        .await
        .map_err(|_| Status::deadline_exceeded("no subscribe received within 10s"))??;
    let subscribe = match first.and_then(|m| m.kind) {
        Some(pb::authorize_request::Kind::Subscribe(s)) => s,
        _ => {
            return Err(status_from(HubError::invalid(
                "subscribe",
                "the first message on Authorize must be a subscribe",
            )));
        }
    };
    let subscription =
        DeciderSubscription { connects: subscribe.connects, joins: subscribe.joins, namespaces: subscribe.namespaces };
    let (id, questions) = hub.subscribe_decider(subscription).map_err(status_from)?;
    tracing::info!(decider = id, "backend deciding connects or joins");
    let reader_hub = hub.clone();
    tokio::spawn(async move {
        loop {
            // Draining ends the read side too: the stream's request half would otherwise
            // stay open while the backend keeps its half open, and hold shutdown.
            let next = tokio::select! {
                next = inbound.message() => next,
                () = reader_hub.draining_started() => break,
            };
            let decision = match next {
                Ok(Some(pb::AuthorizeRequest { kind: Some(pb::authorize_request::Kind::Connect(d)) })) => {
                    (d.id.clone(), connect_answer(d))
                }
                Ok(Some(pb::AuthorizeRequest { kind: Some(pb::authorize_request::Kind::Join(d)) })) => {
                    let answer = if d.allow {
                        Answer::Allow { user_id: None, rooms: Vec::new(), data_json: String::new() }
                    } else {
                        Answer::Deny { code: d.code, message: d.message, data_json: String::new() }
                    };
                    (d.id, answer)
                }
                Ok(Some(_)) => {
                    tracing::debug!(decider = id, "ignored a second subscribe or an empty message");
                    continue;
                }
                Ok(None) => break,
                Err(e) => {
                    tracing::debug!(decider = id, error = %e, "decider stream read failed");
                    break;
                }
            };
            if let Err(e) = reader_hub.decided(id, &decision.0, decision.1) {
                // Late decisions are normal (the question timed out).
                tracing::debug!(decider = id, error = %e, "decision not applied");
            }
        }
        reader_hub.unsubscribe_decider(id);
        tracing::info!(decider = id, "decider stream closed");
    });
    let subscribed = pb::AuthorizeResponse {
        kind: Some(pb::authorize_response::Kind::Subscribed(pb::AuthorizeSubscribed {
            decider_id: format!("{}-d{id}", hub.instance_id()),
            instance_id: hub.instance_id().to_owned(),
        })),
    };
    let asked = tokio_stream::wrappers::ReceiverStream::new(questions).map(|a| Ok(question(a)));
    // The stream ends when draining starts: a decider then moves to another instance
    // (its client reconnects), and shutdown does not wait out the grace period for it.
    // This instance refuses new connects while draining; joins it still decides go to a
    // decider elsewhere through the backplane, or are refused when none is left.
    let draining = {
        let hub = hub.clone();
        async move { hub.draining_started().await }
    };
    let unsubscribe = Unsubscribe { hub, id };
    let stream = futures::stream::once(async { Ok(subscribed) }).chain(asked).take_until(draining).map(move |m| {
        let _keep = &unsubscribe;
        m
    });
    Ok(Box::pin(stream))
}

/// Removes the decider when the response stream is dropped (the backend went away).
struct Unsubscribe {
    hub: Arc<Hub>,
    id: u64,
}

impl Drop for Unsubscribe {
    fn drop(&mut self) {
        self.hub.unsubscribe_decider(self.id);
    }
}

fn connect_answer(d: pb::ConnectDecision) -> Answer {
    match d.result {
        Some(pb::connect_decision::Result::Allow(a)) => {
            Answer::Allow { user_id: Some(a.user_id).filter(|u| !u.is_empty()), rooms: a.rooms, data_json: a.data_json }
        }
        Some(pb::connect_decision::Result::Deny(d)) => {
            Answer::Deny { code: d.code, message: d.message, data_json: d.data_json }
        }
        // A decision that decides nothing refuses: never an open door.
        None => Answer::Deny {
            code: Undecided::Malformed.code().into(),
            message: Undecided::Malformed.to_string(),
            data_json: String::new(),
        },
    }
}

fn question(asked: Asked) -> pb::AuthorizeResponse {
    use pb::authorize_response::Kind;
    let kind = match asked.question {
        Question::Connect(q) => Kind::Connect(pb::ConnectRequest {
            id: asked.id,
            socket_id: q.socket_id,
            namespace: q.namespace,
            auth_json: q.auth_json,
            headers: q.headers.into_iter().collect(),
            client_address: q.client_address,
            transport: q.transport,
            jwt_claims_json: q.jwt_claims_json.unwrap_or_default(),
        }),
        Question::Join(q) => Kind::Join(pb::JoinRequest {
            id: asked.id,
            socket_id: q.socket_id,
            user_id: q.user_id.unwrap_or_default(),
            namespace: q.namespace,
            room: q.room,
            data_json: q.data_json,
        }),
    };
    pb::AuthorizeResponse { kind: Some(kind) }
}
