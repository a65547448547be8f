//! The event router: backend subscriptions (one per `Events` stream), client events handed
//! to them, and the backend's acks carried back to the waiting client callbacks.
//!
//! Rules:
//! - Streams subscribed under the same group share the load; every group gets its own copy.
//! - Within a group, a socket's events always go to the same stream (chosen by hashing the
//!   socket id), so one socket's events reach the backend in the order it sent them.
//! - Every stream has a bounded queue. A full queue never blocks: the event is refused and
//!   the client's ack gets an "overloaded" error at once.
//! - Client events that no subscription matches wait in a bounded buffer for at most
//!   `undelivered_max_age`, then are dropped and counted.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::{Notify, mpsc};

use super::pattern::{Pattern, any_matches};
use super::registry::Handshake;
use super::{ClientAck, ErrorKind, HubError, HubSettings, MAX_LIST_LEN, MAX_NAME_LEN, Metrics, Payload};

/// A client event on its way to the backend.
#[derive(Debug)]
pub struct ClientEvent {
    pub id: String,
    pub socket_id: String,
    pub user_id: Option<String>,
    pub namespace: String,
    pub event: String,
    pub payload: Payload,
    pub wants_ack: bool,
    pub received_at: SystemTime,
    pub handshake: Arc<Handshake>,
}

#[derive(Debug)]
pub struct SocketConnected {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub namespace: String,
    pub handshake: Arc<Handshake>,
    pub rooms: Vec<String>,
    pub connected_at: SystemTime,
}

#[derive(Debug)]
pub struct SocketDisconnected {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub namespace: String,
    pub reason: String,
}

/// What a backend stream receives.
#[derive(Debug, Clone)]
pub enum BackendMessage {
    Subscribed { subscriber_id: String, instance_id: String },
    ClientEvent(Arc<ClientEvent>),
    SocketConnected(Arc<SocketConnected>),
    SocketDisconnected(Arc<SocketDisconnected>),
    UserOnline(Arc<str>),
    UserOffline(Arc<str>),
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

/// Where the answer to a client event goes. The router answers it itself, from whichever
/// task settles the event (the backend's ack, a failure, or the one timeout task), so no
/// task, channel or timer is created per event.
pub enum AckWaiter {
    /// The client's ack callback, waiting since `since`.
    Client { ack: ClientAck, since: Instant },
    /// The reply as a value (unit tests).
    #[cfg(test)]
    Channel(tokio::sync::oneshot::Sender<AckReply>),
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
            #[cfg(test)]
            AckWaiter::Channel(tx) => {
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
            #[cfg(test)]
            AckWaiter::Channel(tx) => {
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

/// A backend's subscription request, validated by `EventRouter::subscribe`.
#[derive(Debug, Clone, Default)]
pub struct SubscribeRequest {
    pub group: String,
    pub event_patterns: Vec<String>,
    pub namespaces: Vec<String>,
    pub wants_lifecycle: bool,
    /// Every event counts as delivered only once the backend acks it (cluster mode).
    pub confirm_all: bool,
}

/// A local stream chosen for a message read from the cluster.
pub struct Picked {
    pub subscriber: u64,
    pub tx: mpsc::Sender<BackendMessage>,
    pub confirm_all: bool,
}

/// What became of a client event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DispatchOutcome {
    /// Handed to at least one group.
    Delivered,
    /// No subscription matched; waiting in the undelivered buffer.
    Buffered,
    /// Matching streams' queues were full.
    Overloaded,
    /// No subscription matched and the undelivered buffer is full.
    Dropped,
}

struct Subscriber {
    id: u64,
    patterns: Vec<Pattern>,
    namespaces: Vec<String>,
    wants_lifecycle: bool,
    confirm_all: bool,
    tx: mpsc::Sender<BackendMessage>,
}

impl Subscriber {
    fn wants_event(&self, namespace: &str, event: &str) -> bool {
        self.wants_namespace(namespace) && any_matches(&self.patterns, event)
    }

    fn wants_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

struct PendingAck {
    waiter: AckWaiter,
    /// Subscribers the event was handed to. When all of them are gone the client is told
    /// at once instead of waiting for the timeout.
    holders: Holders,
    /// Still in the undelivered buffer (no holder yet, but one may come).
    buffered: bool,
}

struct Undelivered {
    seq: u64,
    event: Arc<ClientEvent>,
    at: Instant,
}

#[derive(Default)]
struct State {
    /// group name → its streams, in subscription order.
    groups: BTreeMap<String, Vec<Subscriber>>,
    undelivered: VecDeque<Undelivered>,
}

/// Per-group view for Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: String,
    pub streams: u32,
    pub queued_events: u64,
}

/// Client callbacks waiting for an answer.
#[derive(Default)]
struct Acks {
    pending: HashMap<u64, PendingAck>,
    /// (deadline, seq) in the order the waits began. Every wait has the same timeout, so
    /// deadlines never decrease and one task expires them from the front. Settled entries
    /// at the front are dropped as they settle, so this stays about as long as `pending`.
    deadlines: VecDeque<(Instant, u64)>,
}

impl Acks {
    fn insert(&mut self, seq: u64, ack: PendingAck, timeout: Duration, timer: &Notify) {
        if self.deadlines.is_empty() {
            timer.notify_one();
        }
        self.deadlines.push_back((Instant::now() + timeout, seq));
        self.pending.insert(seq, ack);
    }

    fn remove(&mut self, seq: u64) -> Option<PendingAck> {
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

pub struct EventRouter {
    state: Mutex<State>,
    acks: Mutex<Acks>,
    /// Wakes the timeout task when the first wait begins.
    ack_timer: Notify,
    ack_timeout: Duration,
    metrics: Arc<Metrics>,
    next_seq: AtomicU64,
    next_subscriber: AtomicU64,
    instance_id: String,
    stream_queue: usize,
    undelivered_capacity: usize,
    undelivered_max_age: Duration,
    lifecycle_dropped: AtomicU64,
}

/// Most event patterns or namespaces one subscription may list.
const MAX_SUBSCRIBE_ITEMS: usize = 64;

impl EventRouter {
    pub fn new(settings: &HubSettings, instance_id: String, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::default(),
            acks: Mutex::default(),
            ack_timer: Notify::new(),
            ack_timeout: settings.ack_timeout,
            metrics,
            next_seq: AtomicU64::new(1),
            next_subscriber: AtomicU64::new(1),
            instance_id,
            stream_queue: settings.stream_queue,
            undelivered_capacity: settings.undelivered_capacity,
            undelivered_max_age: settings.undelivered_max_age,
            lifecycle_dropped: AtomicU64::new(0),
        }
    }

    /// A fresh event id, unique across instances: `<instance id>-<seq>`.
    pub fn next_event_id(&self) -> (u64, String) {
        use std::fmt::Write;
        let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
        let mut id = String::with_capacity(self.instance_id.len() + 21);
        id.push_str(&self.instance_id);
        id.push('-');
        let _ = write!(id, "{seq}");
        (seq, id)
    }

    fn seq_of(&self, event_id: &str) -> Option<u64> {
        event_id.strip_prefix(&self.instance_id)?.strip_prefix('-')?.parse().ok()
    }

    /// Registers a stream. The returned receiver starts with `Subscribed`, then gets any
    /// buffered events this subscription matches.
    pub fn subscribe(
        &self,
        request: SubscribeRequest,
        known_namespaces: &[String],
    ) -> Result<(u64, mpsc::Receiver<BackendMessage>), HubError> {
        let group = if request.group.is_empty() { "default".to_owned() } else { request.group };
        if group.len() > MAX_NAME_LEN || group.chars().any(char::is_control) {
            return Err(HubError::invalid(
                "subscribe.group",
                format!("must be at most {MAX_NAME_LEN} bytes of printable text"),
            ));
        }
        if request.event_patterns.len() > MAX_SUBSCRIBE_ITEMS {
            return Err(HubError::invalid(
                "subscribe.event_patterns",
                format!("at most {MAX_SUBSCRIBE_ITEMS} patterns"),
            ));
        }
        let patterns = request
            .event_patterns
            .iter()
            .map(|p| Pattern::new(p).map_err(|e| HubError::invalid("subscribe.event_patterns", format!("{p:?}: {e}"))))
            .collect::<Result<Vec<_>, _>>()?;
        if request.namespaces.len() > MAX_SUBSCRIBE_ITEMS {
            return Err(HubError::invalid("subscribe.namespaces", format!("at most {MAX_SUBSCRIBE_ITEMS} namespaces")));
        }
        for ns in &request.namespaces {
            if !known_namespaces.contains(ns) {
                return Err(HubError::invalid("subscribe.namespaces", format!("{ns:?} is not configured")));
            }
        }
        let id = self.next_subscriber.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(self.stream_queue);
        // The queue is empty, so this first message always fits.
        let _ = tx.try_send(BackendMessage::Subscribed {
            subscriber_id: format!("{}-s{id}", self.instance_id),
            instance_id: self.instance_id.clone(),
        });
        let subscriber = Subscriber {
            id,
            patterns,
            namespaces: request.namespaces,
            wants_lifecycle: request.wants_lifecycle,
            confirm_all: request.confirm_all,
            tx,
        };
        let mut state = self.lock_state();
        self.flush_undelivered(&mut state, &subscriber);
        state.groups.entry(group).or_default().push(subscriber);
        Ok((id, rx))
    }

    /// Hands buffered events to a new subscriber, oldest first, while its queue has room.
    fn flush_undelivered(&self, state: &mut State, subscriber: &Subscriber) {
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(state.undelivered.len());
        let mut acks = self.lock_acks();
        while let Some(item) = state.undelivered.pop_front() {
            let fresh = now.duration_since(item.at) < self.undelivered_max_age;
            if fresh && subscriber.wants_event(&item.event.namespace, &item.event.event) {
                match subscriber.tx.try_send(BackendMessage::ClientEvent(item.event.clone())) {
                    Ok(()) => {
                        if let Some(p) = acks.pending.get_mut(&item.seq) {
                            p.holders.push(subscriber.id);
                            p.buffered = false;
                        }
                        continue;
                    }
                    Err(_) => kept.push_back(item),
                }
            } else {
                kept.push_back(item);
            }
        }
        state.undelivered = kept;
    }

    /// Removes a stream; the acks only it was holding fail at once.
    pub fn unsubscribe(&self, subscriber_id: u64) {
        {
            let mut state = self.lock_state();
            for members in state.groups.values_mut() {
                members.retain(|s| s.id != subscriber_id);
            }
            state.groups.retain(|_, members| !members.is_empty());
        }
        let orphaned: Vec<PendingAck> = {
            let mut acks = self.lock_acks();
            let seqs: Vec<u64> = acks
                .pending
                .iter_mut()
                .filter_map(|(seq, p)| {
                    let before = p.holders.len();
                    p.holders.remove(subscriber_id);
                    (before > 0 && p.holders.is_empty() && !p.buffered).then_some(*seq)
                })
                .collect();
            seqs.into_iter().filter_map(|seq| acks.remove(seq)).collect()
        };
        for p in orphaned {
            p.waiter.settle(
                &self.metrics,
                AckReply::error("backend_unavailable", "the backend stream handling this event went away"),
            );
        }
    }

    /// Closes every stream (shutdown): their receivers end once drained.
    pub fn close_all(&self) {
        self.lock_state().groups.clear();
    }

    /// Routes one client event. `ack` is where the backend's answer goes when the client
    /// asked for one (a refusal is answered at once). Counts refusals and drops. Never
    /// blocks.
    pub fn dispatch(&self, seq: u64, event: ClientEvent, ack: Option<AckWaiter>) -> DispatchOutcome {
        let event = Arc::new(event);
        let mut state = self.lock_state();
        let mut holders = Holders::default();
        let mut overloaded = false;
        let mut expired = Vec::new();
        for members in state.groups.values() {
            let Some(chosen) = choose(members, &event.socket_id, |s| s.wants_event(&event.namespace, &event.event))
            else {
                continue;
            };
            match chosen.tx.try_send(BackendMessage::ClientEvent(event.clone())) {
                Ok(()) => holders.push(chosen.id),
                Err(mpsc::error::TrySendError::Full(_)) => overloaded = true,
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        let outcome = if !holders.is_empty() {
            DispatchOutcome::Delivered
        } else if overloaded {
            DispatchOutcome::Overloaded
        } else {
            expired = self.expire_front(&mut state).1;
            if state.undelivered.len() < self.undelivered_capacity {
                state.undelivered.push_back(Undelivered { seq, event, at: Instant::now() });
                DispatchOutcome::Buffered
            } else {
                DispatchOutcome::Dropped
            }
        };
        // Registered while the state lock is held, so a subscriber flushing the buffer
        // (which needs that lock) always finds the pending ack to attach to.
        let refused = match (ack, outcome) {
            (Some(waiter), DispatchOutcome::Delivered | DispatchOutcome::Buffered) => {
                let buffered = outcome == DispatchOutcome::Buffered;
                self.lock_acks().insert(
                    seq,
                    PendingAck { waiter, holders, buffered },
                    self.ack_timeout,
                    &self.ack_timer,
                );
                None
            }
            (Some(waiter), DispatchOutcome::Overloaded) => {
                Some((waiter, AckReply::error("backend_overloaded", "the backend is not keeping up; retry later")))
            }
            (Some(waiter), DispatchOutcome::Dropped) => {
                Some((waiter, AckReply::error("no_backend", "no backend is subscribed to this event")))
            }
            (None, _) => None,
        };
        drop(state);
        match outcome {
            DispatchOutcome::Delivered | DispatchOutcome::Buffered => {}
            DispatchOutcome::Overloaded => self.metrics.error(ErrorKind::BackendOverloaded),
            DispatchOutcome::Dropped => self.metrics.undeliverable_dropped.inc(),
        }
        self.settle_expired(expired);
        if let Some((waiter, reply)) = refused {
            waiter.settle(&self.metrics, reply);
        }
        outcome
    }

    /// Cluster mode: remembers a client callback waiting for an event written to Redis.
    /// No stream holds it here; it ends with the backend's answer, a write failure or
    /// the timeout.
    pub fn await_ack(&self, seq: u64, waiter: AckWaiter) {
        self.lock_acks().insert(
            seq,
            PendingAck { waiter, holders: Holders::default(), buffered: false },
            self.ack_timeout,
            &self.ack_timer,
        );
    }

    /// Ends a waiting client callback with an error (its event could not be sent on).
    pub fn fail_ack(&self, seq: u64, reply: AckReply) {
        let pending = self.lock_acks().remove(seq);
        if let Some(p) = pending {
            p.waiter.settle(&self.metrics, reply);
        }
    }

    /// Whether an event id was minted by this instance (its client waits here).
    pub fn is_local_event(&self, event_id: &str) -> bool {
        self.seq_of(event_id).is_some()
    }

    /// Cluster mode: the local stream of `group` that should get a message read from
    /// Redis. Same choice rule as local dispatch: by socket (or user) hash among the
    /// streams that want it.
    pub fn pick(&self, group: &str, message: &BackendMessage) -> Option<Picked> {
        let state = self.lock_state();
        let members = state.groups.get(group)?;
        let (key, matching): (&str, Vec<&Subscriber>) = match message {
            BackendMessage::ClientEvent(e) => {
                (&e.socket_id, members.iter().filter(|s| s.wants_event(&e.namespace, &e.event)).collect())
            }
            BackendMessage::SocketConnected(c) => (
                c.user_id.as_deref().unwrap_or(&c.socket_id),
                members.iter().filter(|s| s.wants_lifecycle && s.wants_namespace(&c.namespace)).collect(),
            ),
            BackendMessage::SocketDisconnected(d) => (
                d.user_id.as_deref().unwrap_or(&d.socket_id),
                members.iter().filter(|s| s.wants_lifecycle && s.wants_namespace(&d.namespace)).collect(),
            ),
            BackendMessage::UserOnline(u) | BackendMessage::UserOffline(u) => {
                (u, members.iter().filter(|s| s.wants_lifecycle).collect())
            }
            BackendMessage::Subscribed { .. } => return None,
        };
        if matching.is_empty() {
            return None;
        }
        let chosen = matching[(hash_key(key) % matching.len() as u64) as usize];
        Some(Picked { subscriber: chosen.id, tx: chosen.tx.clone(), confirm_all: chosen.confirm_all })
    }

    /// Cluster mode with Redis out of reach: hands a message straight to this instance's
    /// streams, one per group that wants it. True if any stream took it.
    pub fn deliver_here(&self, message: &BackendMessage) -> bool {
        let groups: Vec<String> = self.lock_state().groups.keys().cloned().collect();
        let mut delivered = false;
        for group in groups {
            if let Some(picked) = self.pick(&group, message) {
                delivered |= picked.tx.try_send(message.clone()).is_ok();
            }
        }
        delivered
    }

    pub fn has_group(&self, group: &str) -> bool {
        self.lock_state().groups.contains_key(group)
    }

    pub fn has_groups(&self) -> bool {
        !self.lock_state().groups.is_empty()
    }

    pub fn has_subscriber(&self, subscriber_id: u64) -> bool {
        self.lock_state().groups.values().any(|m| m.iter().any(|s| s.id == subscriber_id))
    }

    /// The group a stream subscribed under.
    pub fn group_of(&self, subscriber_id: u64) -> Option<String> {
        self.lock_state()
            .groups
            .iter()
            .find(|(_, members)| members.iter().any(|s| s.id == subscriber_id))
            .map(|(g, _)| g.clone())
    }

    /// Delivers the backend's answer to the waiting client callback.
    pub fn complete_ack(&self, event_id: &str, reply: AckReply) -> Result<(), HubError> {
        let pending = self.seq_of(event_id).and_then(|seq| self.lock_acks().remove(seq));
        match pending {
            Some(p) => {
                p.waiter.settle(&self.metrics, reply);
                Ok(())
            }
            None => Err(HubError::NotFound(format!(
                "ack.event_id {:?}: no client is waiting for it (unknown, already answered, or timed out)",
                event_id.chars().take(64).collect::<String>()
            ))),
        }
    }

    /// Answers the waits whose time is up, whenever the oldest one's deadline passes.
    /// Runs for the router's life (started once, with the hub's tasks).
    pub async fn run_ack_timeouts(self: Arc<Self>) {
        loop {
            let now = Instant::now();
            let mut due = Vec::new();
            let next = {
                let mut acks = self.lock_acks();
                loop {
                    match acks.deadlines.front() {
                        Some(&(deadline, seq)) if deadline <= now => {
                            acks.deadlines.pop_front();
                            if let Some(p) = acks.pending.remove(&seq) {
                                due.push(p);
                            }
                        }
                        Some(&(deadline, _)) => break Some(deadline),
                        None => break None,
                    }
                }
            };
            for p in due {
                p.waiter.time_out(&self.metrics, p.buffered, self.ack_timeout);
            }
            match next {
                Some(deadline) => tokio::time::sleep_until(deadline.into()).await,
                None => self.ack_timer.notified().await,
            }
        }
    }

    /// Sends a lifecycle message to one lifecycle-subscribed stream of each group. Full
    /// queues drop it (counted): lifecycle news is never worth blocking a socket for.
    pub fn publish_lifecycle(&self, namespace: Option<&str>, key: &str, message: BackendMessage) {
        let state = self.lock_state();
        for members in state.groups.values() {
            let Some(chosen) =
                choose(members, key, |s| s.wants_lifecycle && namespace.is_none_or(|ns| s.wants_namespace(ns)))
            else {
                continue;
            };
            if chosen.tx.try_send(message.clone()).is_err() {
                self.lifecycle_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops buffered events older than the max age; returns how many.
    pub fn expire_undelivered(&self) -> u64 {
        let (dropped, waits) = self.expire_front(&mut self.lock_state());
        self.settle_expired(waits);
        dropped
    }

    /// Drops buffered events past their age: how many, and the waits left to answer
    /// (answered by the caller once it has released the state lock).
    fn expire_front(&self, state: &mut State) -> (u64, Vec<PendingAck>) {
        let now = Instant::now();
        let mut dropped = 0;
        let mut waits = Vec::new();
        while state.undelivered.front().is_some_and(|u| now.duration_since(u.at) >= self.undelivered_max_age) {
            if let Some(u) = state.undelivered.pop_front() {
                dropped += 1;
                if let Some(p) = self.lock_acks().remove(u.seq) {
                    waits.push(p);
                }
            }
        }
        (dropped, waits)
    }

    fn settle_expired(&self, waits: Vec<PendingAck>) {
        for p in waits {
            p.waiter
                .settle(&self.metrics, AckReply::error("no_backend", "no backend subscribed to this event in time"));
        }
    }

    pub fn undelivered_len(&self) -> usize {
        self.lock_state().undelivered.len()
    }

    pub fn pending_acks(&self) -> usize {
        self.lock_acks().pending.len()
    }

    pub fn lifecycle_dropped(&self) -> u64 {
        self.lifecycle_dropped.load(Ordering::Relaxed)
    }

    pub fn groups(&self) -> Vec<GroupInfo> {
        self.lock_state()
            .groups
            .iter()
            .map(|(group, members)| GroupInfo {
                group: group.clone(),
                streams: u32::try_from(members.len()).unwrap_or(u32::MAX),
                queued_events: members.iter().map(|s| (s.tx.max_capacity() - s.tx.capacity()) as u64).sum(),
            })
            .collect()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that
        // matters more than losing routing, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn lock_acks(&self) -> std::sync::MutexGuard<'_, Acks> {
        self.acks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const _: () = assert!(MAX_SUBSCRIBE_ITEMS <= MAX_LIST_LEN);

/// The member of a group that gets a message: among the members `wants` accepts, in
/// subscription order, the one at `hash(key) % count`. The same member as long as the
/// group does not change, so one socket's (or user's) messages keep their order.
fn choose<'a>(members: &'a [Subscriber], key: &str, wants: impl Fn(&Subscriber) -> bool) -> Option<&'a Subscriber> {
    if let [only] = members {
        return wants(only).then_some(only);
    }
    let count = members.iter().filter(|s| wants(s)).count();
    if count == 0 {
        return None;
    }
    let index = (hash_key(key) % count as u64) as usize;
    members.iter().filter(|s| wants(s)).nth(index)
}

/// The subscribers holding an event (one per group it went to): nearly always one, kept
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

fn hash_key(key: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::PayloadLimits;
    use tokio::sync::oneshot;

    fn router(queue: usize) -> EventRouter {
        EventRouter::new(&settings(queue), "i".into(), Arc::new(Metrics::new(&["/".into()])))
    }

    fn settings(queue: usize) -> HubSettings {
        HubSettings {
            namespaces: vec!["/".into()],
            payload_limits: PayloadLimits { max_bytes: 1 << 20, max_attachments: 4 },
            ack_timeout: Duration::from_secs(1),
            max_connections: 10,
            client_room_patterns: vec![],
            redacted_auth_fields: vec![],
            events_per_second: 10.0,
            event_burst: 10,
            flood_disconnect_after: 100,
            stream_queue: queue,
            undelivered_capacity: 2,
            undelivered_max_age: Duration::from_secs(60),
            unready_without_redis: false,
        }
    }

    fn event(router: &EventRouter, socket: &str, name: &str) -> (u64, ClientEvent) {
        let (seq, id) = router.next_event_id();
        (
            seq,
            ClientEvent {
                id,
                socket_id: socket.into(),
                user_id: None,
                namespace: "/".into(),
                event: name.into(),
                payload: Payload::default(),
                wants_ack: false,
                received_at: SystemTime::now(),
                handshake: Arc::default(),
            },
        )
    }

    fn sub(router: &EventRouter, group: &str, patterns: &[&str]) -> (u64, mpsc::Receiver<BackendMessage>) {
        let req = SubscribeRequest {
            group: group.into(),
            event_patterns: patterns.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let (id, mut rx) = router.subscribe(req, &["/".into()]).unwrap();
        assert!(matches!(rx.try_recv(), Ok(BackendMessage::Subscribed { .. })));
        (id, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<BackendMessage>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| match m {
                BackendMessage::ClientEvent(e) => Some(e.event.clone()),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn groups_each_get_a_copy_and_members_share() {
        let r = router(100);
        let (_, mut a1) = sub(&r, "a", &[]);
        let (_, mut a2) = sub(&r, "a", &[]);
        let (_, mut b) = sub(&r, "b", &["chat.*"]);
        for i in 0..50 {
            let (seq, e) = event(&r, &format!("s{i}"), "chat.msg");
            assert_eq!(r.dispatch(seq, e, None), DispatchOutcome::Delivered);
        }
        let (n1, n2) = (drain(&mut a1).len(), drain(&mut a2).len());
        assert_eq!(n1 + n2, 50);
        assert!(n1 > 0 && n2 > 0, "load not shared: {n1}/{n2}");
        assert_eq!(drain(&mut b).len(), 50);
    }

    #[test]
    fn full_queue_answers_overloaded_at_once() {
        let r = router(1);
        let (_, _rx) = r.subscribe(SubscribeRequest::default(), &["/".into()]).unwrap();
        // The Subscribed message fills the one slot.
        let (seq, e) = event(&r, "s", "x");
        let (tx, mut rx) = oneshot::channel();
        assert_eq!(r.dispatch(seq, e, Some(AckWaiter::Channel(tx))), DispatchOutcome::Overloaded);
        assert!(matches!(rx.try_recv(), Ok(AckReply::Error { code, .. }) if code == "backend_overloaded"));
    }

    #[test]
    fn undelivered_events_wait_for_a_subscriber_then_flow_in_order() {
        let r = router(10);
        for name in ["one", "two", "three"] {
            let (seq, e) = event(&r, "s", name);
            r.dispatch(seq, e, None);
        }
        assert_eq!(r.undelivered_len(), 2, "buffer is bounded");
        let (_, mut rx) = sub(&r, "g", &[]);
        assert_eq!(drain(&mut rx), ["one", "two"]);
        assert_eq!(r.undelivered_len(), 0);
    }

    #[test]
    fn acks_complete_once_and_fail_when_the_holder_leaves() {
        let r = router(10);
        let (id, _rx) = sub(&r, "g", &[]);
        let (seq, e) = event(&r, "s", "x");
        let event_id = e.id.clone();
        let (tx, mut ack) = oneshot::channel();
        r.dispatch(seq, e, Some(AckWaiter::Channel(tx)));
        r.complete_ack(&event_id, AckReply::Payload(Payload::default())).unwrap();
        assert_eq!(ack.try_recv(), Ok(AckReply::Payload(Payload::default())));
        assert!(r.complete_ack(&event_id, AckReply::Payload(Payload::default())).is_err());

        let (seq, e) = event(&r, "s", "x");
        let (tx, mut ack) = oneshot::channel();
        r.dispatch(seq, e, Some(AckWaiter::Channel(tx)));
        r.unsubscribe(id);
        assert!(matches!(ack.try_recv(), Ok(AckReply::Error { code, .. }) if code == "backend_unavailable"));
    }

    #[test]
    fn bad_subscriptions_are_refused() {
        let r = router(10);
        let bad_ns = SubscribeRequest { namespaces: vec!["/nope".into()], ..Default::default() };
        assert!(
            matches!(r.subscribe(bad_ns, &["/".into()]), Err(HubError::InvalidArgument { field, .. }) if field == "subscribe.namespaces")
        );
        let bad_pattern = SubscribeRequest { event_patterns: vec![String::new()], ..Default::default() };
        assert!(r.subscribe(bad_pattern, &["/".into()]).is_err());
    }
}
