//! Client callbacks waiting for a backend's answer: who waits, which streams hold their
//! event, and the one task that answers those whose time is up.
//!
//! Every wait has the same timeout, so deadlines never decrease and one task expires them
//! from the front: no task, channel or timer is created per event.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::{ClientAck, ErrorKind, Metrics, Payload};

/// The backend's (or the bridge's) answer to a client's ack callback.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckReply {
    Payload(Payload),
    Error { code: String, message: String },
}

impl AckReply {
    pub fn error(code: &str, message: impl Into<String>) -> Self {
        Self::Error { code: code.to_owned(), message: message.into() }
    }

    /// The client callback's arguments: the backend's payload, or one error object.
    pub fn into_payload(self) -> Payload {
        match self {
            AckReply::Payload(p) => p,
            AckReply::Error { code, message } => Payload::from_json_args(&[serde_json::json!({
                "error": { "code": code, "message": message }
            })]),
        }
    }
}

/// Where the answer to a client event goes. Answered by whichever task settles the event
/// (the backend's ack, a failure, or the timeout task).
pub enum AckWaiter {
    /// The client's ack callback, waiting since `since`.
    Client { ack: ClientAck, since: Instant },
    /// The reply as a value, for a waiter inside the process.
    Reply(tokio::sync::oneshot::Sender<AckReply>),
}

impl AckWaiter {
    pub fn client(ack: ClientAck) -> Self {
        Self::Client { ack, since: Instant::now() }
    }

    /// Hands the reply over: to the client, counting how long it waited.
    fn settle(self, metrics: &Metrics, reply: AckReply) {
        match self {
            AckWaiter::Client { ack, since } => {
                metrics.backend_ack_duration.observe(since.elapsed().as_secs_f64());
                answer(Some(ack), reply);
            }
            AckWaiter::Reply(tx) => {
                let _ = tx.send(reply);
            }
        }
    }

    /// No answer in time: the client gets an error that says why.
    fn time_out(self, metrics: &Metrics, buffered: bool, timeout: Duration) {
        let reply = if buffered {
            metrics.error(ErrorKind::NoBackend);
            AckReply::error("no_backend", "no backend is subscribed to this event")
        } else {
            metrics.error(ErrorKind::AckTimeout);
            AckReply::error("ack_timeout", format!("the backend did not answer within {} ms", timeout.as_millis()))
        };
        match self {
            AckWaiter::Client { ack, .. } => answer(Some(ack), reply),
            AckWaiter::Reply(tx) => {
                let _ = tx.send(reply);
            }
        }
    }
}

/// Sends an ack answer to the client, if it asked for one and is still there.
pub(crate) fn answer(ack: Option<ClientAck>, reply: AckReply) {
    let Some(ack) = ack else { return };
    let payload = reply.into_payload();
    match payload.send_args() {
        Ok(args) => {
            if let Err(e) = ack.send(&args) {
                tracing::debug!(error = %e, "ack not delivered: client gone");
            }
        }
        Err(e) => tracing::warn!(error = %e, "ack payload could not be encoded"),
    }
}

/// A client callback waiting for its event's answer.
struct Pending {
    waiter: AckWaiter,
    /// Streams the event was handed to on this instance (one per group it went to). When
    /// all of them are gone the client is told at once instead of waiting for the timeout.
    holders: Holders,
    /// Waiting in the undelivered buffer (no holder yet, but one may come).
    buffered: bool,
}

#[derive(Default)]
struct Book {
    pending: HashMap<u64, Pending>,
    /// (deadline, seq) in the order the waits began. Settled entries at the front are
    /// dropped as they settle, so this stays about as long as `pending`.
    deadlines: VecDeque<(Instant, u64)>,
}

impl Book {
    fn remove(&mut self, seq: u64) -> Option<Pending> {
        let p = self.pending.remove(&seq)?;
        while let Some(&(_, front)) = self.deadlines.front() {
            if self.pending.contains_key(&front) {
                break;
            }
            self.deadlines.pop_front();
        }
        Some(p)
    }
}

/// The waiting callbacks of this instance, keyed by the router's event sequence.
pub struct AckBook {
    book: Mutex<Book>,
    /// Wakes the timeout task when the first wait begins.
    timer: Notify,
    timeout: Duration,
    metrics: Arc<Metrics>,
}

impl AckBook {
    pub fn new(timeout: Duration, metrics: Arc<Metrics>) -> Self {
        Self { book: Mutex::default(), timer: Notify::new(), timeout, metrics }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        // A panic while holding the lock cannot leave the book half-updated in a way that
        // matters more than losing answers, so poisoning is ignored.
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A client callback starts waiting for the answer to event `seq`.
    pub fn wait(&self, seq: u64, waiter: AckWaiter) {
        let mut book = self.lock();
        if book.deadlines.is_empty() {
            self.timer.notify_one();
        }
        book.deadlines.push_back((Instant::now() + self.timeout, seq));
        book.pending.insert(seq, Pending { waiter, holders: Holders::default(), buffered: false });
    }

    /// Event `seq` went to stream `subscriber` (or, with None, into the undelivered
    /// buffer). No-op when nobody waits for it.
    pub fn held_by(&self, seq: u64, subscriber: Option<u64>) {
        if let Some(p) = self.lock().pending.get_mut(&seq) {
            match subscriber {
                Some(id) => {
                    p.holders.push(id);
                    p.buffered = false;
                }
                None => p.buffered = true,
            }
        }
    }

    /// Answers the callback waiting for `seq`; false when none waits (answered already,
    /// timed out, or never asked).
    pub fn settle(&self, seq: u64, reply: AckReply) -> bool {
        let pending = self.lock().remove(seq);
        match pending {
            Some(p) => {
                p.waiter.settle(&self.metrics, reply);
                true
            }
            None => false,
        }
    }

    /// Stream `subscriber` went away: the callbacks whose events only it held are told at
    /// once.
    pub fn holder_gone(&self, subscriber: u64) {
        let orphaned: Vec<Pending> = {
            let mut book = self.lock();
            let seqs: Vec<u64> = book
                .pending
                .iter_mut()
                .filter_map(|(seq, p)| {
                    let before = p.holders.len();
                    p.holders.remove(subscriber);
                    (before > 0 && p.holders.is_empty() && !p.buffered).then_some(*seq)
                })
                .collect();
            seqs.into_iter().filter_map(|seq| book.remove(seq)).collect()
        };
        for p in orphaned {
            p.waiter.settle(
                &self.metrics,
                AckReply::error("backend_unavailable", "the backend stream handling this event went away"),
            );
        }
    }

    pub fn len(&self) -> usize {
        self.lock().pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Answers the waits whose time is up, whenever the oldest one's deadline passes.
    /// Runs for the hub's life (started once, with its tasks).
    pub async fn run_timeouts(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let next = {
                let mut book = self.lock();
                loop {
                    match book.deadlines.front() {
                        Some(&(deadline, seq)) if deadline <= now => {
                            book.deadlines.pop_front();
                            if let Some(p) = book.pending.remove(&seq) {
                                due.push(p);
                            }
                        }
                        Some(&(deadline, _)) => break Some(deadline),
                        None => break None,
                    }
                }
            };
            for p in due {
                p.waiter.time_out(&self.metrics, p.buffered, self.timeout);
            }
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => self.timer.notified().await,
            }
        }
    }
}

/// The streams holding an event (one per group it went to): nearly always one, kept
/// inline.
#[derive(Default)]
struct Holders {
    first: Option<u64>,
    rest: Vec<u64>,
}

impl Holders {
    fn push(&mut self, id: u64) {
        match self.first {
            None => self.first = Some(id),
            Some(_) => self.rest.push(id),
        }
    }

    fn len(&self) -> usize {
        usize::from(self.first.is_some()) + self.rest.len()
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn remove(&mut self, id: u64) {
        self.rest.retain(|h| *h != id);
        if self.first == Some(id) {
            self.first = self.rest.pop();
        }
    }
}
