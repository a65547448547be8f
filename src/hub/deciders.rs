//! Backend-decided connects and joins: backend streams subscribed to decide (the
//! `Authorize` door) get questions and answer them by id, within `auth.backend.timeout_ms`.
//!
//! Rules:
//! - Never an open door: no decider anywhere, a decider too slow, a decider that goes away
//!   with the question, or a full decider queue all refuse, each with its own code.
//! - Several deciders share the questions (round robin among those that decide that kind
//!   for that namespace); one that goes away fails only its own pending questions.
//! - With no decider on this instance, the question goes through the backplane to an
//!   instance that has one, and its answer comes back the same way.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::backplane::{NodeReply, NodeRequest, Remote, Wait};
pub use super::questions::{Answer, ConnectQuestion, DecisionKind, JoinQuestion, Question, Undecided};
use super::{Hub, HubError};

/// Questions queued per decider stream before new ones are refused.
const DECIDER_QUEUE: usize = 1024;
/// Most namespaces one decider subscription may list.
const MAX_DECIDER_NAMESPACES: usize = 64;

/// A question on its way to a decider stream, with the id its answer must carry.
#[derive(Debug, Clone)]
pub struct Asked {
    pub id: String,
    pub question: Question,
}

/// A decider's subscription.
#[derive(Debug, Clone, Default)]
pub struct DeciderSubscription {
    pub connects: bool,
    pub joins: bool,
    pub namespaces: Vec<String>,
}

struct Decider {
    id: u64,
    subscription: DeciderSubscription,
    tx: mpsc::Sender<Asked>,
}

impl Decider {
    fn decides(&self, kind: DecisionKind, namespace: &str) -> bool {
        let kind_ok = match kind {
            DecisionKind::Connect => self.subscription.connects,
            DecisionKind::Join => self.subscription.joins,
        };
        kind_ok
            && (self.subscription.namespaces.is_empty() || self.subscription.namespaces.iter().any(|n| n == namespace))
    }
}

struct Pending {
    decider: u64,
    tx: oneshot::Sender<Result<Answer, Undecided>>,
}

/// This instance's decider streams and the questions waiting for them.
#[derive(Default)]
pub struct Deciders {
    streams: Mutex<Vec<Decider>>,
    pending: Mutex<HashMap<u64, Pending>>,
    next_id: AtomicU64,
    next_turn: AtomicU64,
}

impl Deciders {
    fn lock_streams(&self) -> std::sync::MutexGuard<'_, Vec<Decider>> {
        self.streams.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Pending>> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Which kinds this instance's deciders decide, for the backplane to advertise.
    pub fn kinds(&self) -> (bool, bool) {
        let streams = self.lock_streams();
        (streams.iter().any(|d| d.subscription.connects), streams.iter().any(|d| d.subscription.joins))
    }

    fn has(&self, kind: DecisionKind, namespace: &str) -> bool {
        self.lock_streams().iter().any(|d| d.decides(kind, namespace))
    }
}

impl Hub {
    /// Registers a decider stream; questions arrive on the returned receiver.
    pub fn subscribe_decider(
        &self,
        subscription: DeciderSubscription,
    ) -> Result<(u64, mpsc::Receiver<Asked>), HubError> {
        if !subscription.connects && !subscription.joins {
            return Err(HubError::invalid("subscribe", "decide connects, joins, or both"));
        }
        if subscription.namespaces.len() > MAX_DECIDER_NAMESPACES {
            return Err(HubError::invalid(
                "subscribe.namespaces",
                format!("at most {MAX_DECIDER_NAMESPACES} namespaces"),
            ));
        }
        for ns in &subscription.namespaces {
            if !self.settings.namespaces.contains(ns) {
                return Err(HubError::invalid("subscribe.namespaces", format!("{ns:?} is not configured")));
            }
        }
        let id = self.deciders.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let (tx, rx) = mpsc::channel(DECIDER_QUEUE);
        self.deciders.lock_streams().push(Decider { id, subscription, tx });
        self.backplane.deciders_changed(self.deciders.kinds());
        Ok((id, rx))
    }

    /// Removes a decider stream: the questions it held are refused at once.
    pub fn unsubscribe_decider(&self, decider: u64) {
        self.deciders.lock_streams().retain(|d| d.id != decider);
        let orphaned: Vec<Pending> = {
            let mut pending = self.deciders.lock_pending();
            let ids: Vec<u64> = pending.iter().filter(|(_, p)| p.decider == decider).map(|(id, _)| *id).collect();
            ids.into_iter().filter_map(|id| pending.remove(&id)).collect()
        };
        for p in orphaned {
            let _ = p.tx.send(Err(Undecided::DeciderGone));
        }
        self.backplane.deciders_changed(self.deciders.kinds());
    }

    /// A decider's answer to question `id`, from stream `decider`.
    pub fn decided(&self, decider: u64, id: &str, answer: Answer) -> Result<(), HubError> {
        let not_found = || {
            HubError::NotFound(format!(
                "decision id {:?}: no question is waiting for it (unknown, answered, or timed out)",
                id.chars().take(64).collect::<String>()
            ))
        };
        let seq = id
            .strip_prefix(self.instance_id.as_str())
            .and_then(|rest| rest.strip_prefix("-q"))
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(not_found)?;
        let mut pending = self.deciders.lock_pending();
        match pending.get(&seq) {
            Some(p) if p.decider == decider => {}
            _ => return Err(not_found()),
        }
        let p = pending.remove(&seq).ok_or_else(not_found)?;
        drop(pending);
        let _ = p.tx.send(Ok(answer.bounded()));
        Ok(())
    }

    /// Asks a decider, here or on another instance, within the configured time.
    pub async fn decide(&self, question: Question) -> Result<Answer, Undecided> {
        let (kind, namespace) = (question.kind(), question.namespace().to_owned());
        let timeout = self.settings.decision_timeout;
        if self.deciders.has(kind, &namespace) {
            return self.decide_here(question, timeout).await;
        }
        let Ok(nodes) = self.backplane.decider_nodes(kind).await else { return Err(Undecided::NoDecider) };
        let Some(node) = pick(&nodes, &self.deciders.next_turn) else { return Err(Undecided::NoDecider) };
        let request = NodeRequest::Decide(question);
        match self.backplane.relay(Remote::Nodes(vec![node]), request, Wait::Answers { extra: timeout }).await {
            Ok(answers) => match answers.into_iter().next() {
                Some(NodeReply::Decided(result)) => result,
                _ => Err(Undecided::Timeout),
            },
            Err(_) => Err(Undecided::NoDecider),
        }
    }

    /// Asks one of this instance's deciders (round robin among those that decide it).
    pub(super) async fn decide_here(&self, question: Question, timeout: Duration) -> Result<Answer, Undecided> {
        let (kind, namespace) = (question.kind(), question.namespace().to_owned());
        let seq = self.deciders.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("{}-q{seq}", self.instance_id);
        let (tx, rx) = oneshot::channel();
        let chosen = {
            let streams = self.deciders.lock_streams();
            let candidates: Vec<&Decider> = streams.iter().filter(|d| d.decides(kind, &namespace)).collect();
            if candidates.is_empty() {
                return Err(Undecided::NoDecider);
            }
            let turn = self.deciders.next_turn.fetch_add(1, Ordering::Relaxed) as usize;
            let chosen = candidates[turn % candidates.len()];
            // Registered before it is sent, so an answer can never arrive first.
            self.deciders.lock_pending().insert(seq, Pending { decider: chosen.id, tx });
            chosen.tx.try_send(Asked { id, question }).map_err(|_| Undecided::Overloaded)
        };
        if let Err(refused) = chosen {
            self.deciders.lock_pending().remove(&seq);
            return Err(refused);
        }
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Undecided::DeciderGone),
            Err(_) => {
                self.deciders.lock_pending().remove(&seq);
                Err(Undecided::Timeout)
            }
        }
    }
}

/// The next of `nodes`, in turn.
fn pick(nodes: &[String], turn: &AtomicU64) -> Option<String> {
    if nodes.is_empty() {
        return None;
    }
    let i = turn.fetch_add(1, Ordering::Relaxed) as usize % nodes.len();
    nodes.get(i).cloned()
}
