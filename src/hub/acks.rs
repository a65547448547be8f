//! Client callbacks waiting for a backend's answer: who waits, which streams hold their
//! event, and the one task that answers those whose time is up.
//!
//! Every wait has the same timeout, so deadlines never decrease and one task expires them
//! from the front: no task, channel or timer is created per event.
//!
//! An answer the client's socket cannot take yet (its outgoing buffer is full) is not
//! dropped: the same task writes it again until the socket takes it, leaves, or
//! `ANSWER_RETRY_FOR` has passed (then it is counted as lost).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use socketioxide::extract::AckSender;
use socketioxide::handler::FromMessageParts;
use socketioxide::{SendError, SocketError};

use super::{ErrorKind, Metrics, Payload};

/// How long an answer a client's socket could not take is tried again.
const ANSWER_RETRY_FOR: Duration = Duration::from_secs(30);
/// How often.
const ANSWER_RETRY_EVERY: Duration = Duration::from_millis(250);
/// Most answers written again to one socket per round. The Socket.IO layer's heartbeat
/// shares the socket's outgoing buffer and ends the connection when a ping finds it full,
/// so a socket that fell behind is refilled a little at a time, never to the brim.
const ANSWER_RETRY_PER_SOCKET: usize = 64;
/// Most answers waiting to be tried again; past it new ones are counted as lost.
const ANSWER_RETRY_MAX: usize = 100_000;

/// A client callback: the socket and the packet id its answer carries. Kept as such (not as
/// the Socket.IO layer's one-shot sender) so an answer the socket cannot take yet can be
/// written again.
#[derive(Clone)]
pub struct ClientAck {
    socket: Arc<socketioxide::socket::Socket>,
    id: i64,
}

impl ClientAck {
    pub fn new(socket: Arc<socketioxide::socket::Socket>, id: i64) -> Self {
        Self { socket, id }
    }

    fn send(&self, args: &impl serde::Serialize) -> Result<(), SendError> {
        let mut unused = socketioxide::handler::Value::Str(Default::default(), None);
        let sender = match AckSender::from_message_parts(&self.socket, &mut unused, &Some(self.id)) {
            Ok(sender) => sender,
            Err(never) => match never {},
        };
        sender.send(args)
    }
}

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

    /// Hands the reply over: to the client (counting how long it waited), or to the
    /// in-process waiter. Returns an answer its socket could not take yet.
    fn settle(self, metrics: &Metrics, reply: AckReply) -> Option<(ClientAck, Payload)> {
        match self {
            AckWaiter::Client { ack, since } => {
                metrics.backend_ack_duration.observe(since.elapsed().as_secs_f64());
                try_answer(&ack, reply.into_payload()).err().map(|payload| (ack, payload))
            }
            AckWaiter::Reply(tx) => {
                let _ = tx.send(reply);
                None
            }
        }
    }

    /// No answer in time: the client gets an error that says why. Not written here: the
    /// waits of one socket often time out together (a burst of asks), so their answers go
    /// out paced like retries (see `retry_unsent`).
    fn time_out(self, metrics: &Metrics, buffered: bool, timeout: Duration) -> Option<(ClientAck, Payload)> {
        let reply = if buffered {
            metrics.error(ErrorKind::NoBackend);
            AckReply::error("no_backend", "no backend is subscribed to this event")
        } else {
            metrics.error(ErrorKind::AckTimeout);
            AckReply::error("ack_timeout", format!("the backend did not answer within {} ms", timeout.as_millis()))
        };
        match self {
            AckWaiter::Client { ack, .. } => Some((ack, reply.into_payload())),
            AckWaiter::Reply(tx) => {
                let _ = tx.send(reply);
                None
            }
        }
    }
}

/// Writes an answer to the client's callback. Err(payload) when its socket's buffer is
/// full and the answer should be tried again.
fn try_answer(ack: &ClientAck, payload: Payload) -> Result<(), Payload> {
    let sent = match payload.send_args() {
        Ok(args) => ack.send(&args),
        Err(e) => {
            tracing::warn!(error = %e, "ack payload could not be encoded");
            return Ok(());
        }
    };
    match sent {
        Ok(()) => Ok(()),
        Err(SendError::Socket(SocketError::InternalChannelFull)) => Err(payload),
        Err(e) => {
            tracing::debug!(error = %e, "ack not delivered: client gone");
            Ok(())
        }
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
    /// Answers a socket could not take yet, with when they were first tried.
    unsent: VecDeque<(ClientAck, Payload, Instant)>,
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
                let unsent = p.waiter.settle(&self.metrics, reply);
                self.retry_later(unsent);
                true
            }
            None => false,
        }
    }

    /// Answers a client callback that never waited here (a refusal at once).
    pub fn answer(&self, ack: Option<ClientAck>, reply: AckReply) {
        let Some(ack) = ack else { return };
        let unsent = try_answer(&ack, reply.into_payload()).err().map(|payload| (ack, payload));
        self.retry_later(unsent);
    }

    fn retry_later(&self, unsent: Option<(ClientAck, Payload)>) {
        let Some((ack, payload)) = unsent else { return };
        let mut book = self.lock();
        if book.unsent.len() >= ANSWER_RETRY_MAX {
            drop(book);
            self.metrics.dropped("ack_unsent", 1);
            return;
        }
        if book.unsent.is_empty() && book.deadlines.is_empty() {
            self.timer.notify_one();
        }
        book.unsent.push_back((ack, payload, Instant::now()));
    }

    /// Tries the unsent answers again, in order; the ones still refused wait for the next
    /// round (or are given up after `ANSWER_RETRY_FOR`).
    fn retry_unsent(&self) {
        let unsent = std::mem::take(&mut self.lock().unsent);
        let mut kept = VecDeque::with_capacity(unsent.len());
        let mut lost = 0;
        // Per socket this round: answers written, or None once one was refused (the
        // rest wait, in order, for the next round).
        let mut written: HashMap<socketioxide::socket::Sid, Option<usize>> = HashMap::new();
        for (ack, payload, since) in unsent {
            let turn = written.entry(ack.socket.id).or_insert(Some(0));
            let result = match turn {
                Some(n) if *n < ANSWER_RETRY_PER_SOCKET => try_answer(&ack, payload),
                _ => Err(payload),
            };
            match result {
                Ok(()) => *turn = turn.map(|n| n + 1),
                Err(_) if since.elapsed() > ANSWER_RETRY_FOR => lost += 1,
                Err(payload) => {
                    *turn = None;
                    kept.push_back((ack, payload, since));
                }
            }
        }
        if lost > 0 {
            self.metrics.dropped("ack_unsent", lost);
        }
        let mut book = self.lock();
        kept.append(&mut book.unsent);
        book.unsent = kept;
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
            let unsent = p.waiter.settle(
                &self.metrics,
                AckReply::error("backend_unavailable", "the backend stream handling this event went away"),
            );
            self.retry_later(unsent);
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
                let unsent = p.waiter.time_out(&self.metrics, p.buffered, self.timeout);
                self.retry_later(unsent);
            }
            let retrying = !self.lock().unsent.is_empty();
            if retrying {
                self.retry_unsent();
            }
            let next = match (next, retrying) {
                (Some(deadline), true) => Some(deadline.min(Instant::now() + ANSWER_RETRY_EVERY)),
                (None, true) => Some(Instant::now() + ANSWER_RETRY_EVERY),
                (next, false) => next,
            };
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
