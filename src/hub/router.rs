//! The event router: backend subscriptions (one per `Events` stream) and the messages
//! handed to them: client events and lifecycle news, from this instance's sockets or (in
//! cluster mode) read from the backplane. Waiting client callbacks are in [`AckBook`].
//!
//! Rules:
//! - Streams subscribed under the same group share the load; every group gets its own copy.
//! - Within a group, a socket's events always go to the same stream (chosen by hashing the
//!   socket id), so one socket's events reach the backend in the order it sent them.
//! - Every stream has a bounded queue. A full queue never blocks: the event is refused and
//!   the client's ack gets an "overloaded" error at once.
//! - Client events that no subscription matches wait in a bounded buffer for at most
//!   `undelivered_max_age`, then are dropped and counted.

use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

pub use super::acks::{AckBook, AckReply, AckWaiter};
use super::keyhash::key_hash;
use super::pattern::{Pattern, any_matches};
pub use super::stream::{
    BackendMessage, ClientEvent, Queued, Refused, SocketConnected, SocketDisconnected, StreamSender, SubscribeRequest,
};
use super::{HubError, HubSettings, MAX_LIST_LEN, MAX_NAME_LEN, Metrics};

/// A local stream chosen for a message read from the backplane.
pub struct Picked {
    pub subscriber: u64,
    pub sender: StreamSender,
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
    sender: StreamSender,
}

impl Subscriber {
    fn wants_event(&self, namespace: &str, event: &str) -> bool {
        self.wants_namespace(namespace) && any_matches(&self.patterns, event)
    }

    fn wants_namespace(&self, namespace: &str) -> bool {
        self.namespaces.is_empty() || self.namespaces.iter().any(|n| n == namespace)
    }
}

struct Undelivered {
    seq: u64,
    event: Arc<ClientEvent>,
    at: Instant,
    bytes: usize,
}

#[derive(Default)]
struct State {
    /// group name → its streams, in subscription order.
    groups: BTreeMap<String, Vec<Subscriber>>,
    undelivered: VecDeque<Undelivered>,
    /// Bytes the undelivered buffer holds.
    undelivered_bytes: usize,
}

impl State {
    fn pop_undelivered(&mut self) -> Option<Undelivered> {
        let item = self.undelivered.pop_front()?;
        self.undelivered_bytes -= item.bytes;
        Some(item)
    }
}

/// Per-group view for Status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupInfo {
    pub group: String,
    pub streams: u32,
    pub queued_events: u64,
    pub queued_bytes: u64,
}

pub struct EventRouter {
    state: Mutex<State>,
    /// Client callbacks waiting for their event's answer.
    acks: Arc<AckBook>,
    next_seq: AtomicU64,
    next_subscriber: AtomicU64,
    instance_id: String,
    stream_queue: usize,
    stream_queue_max_bytes: usize,
    undelivered_capacity: usize,
    undelivered_max_bytes: usize,
    undelivered_max_age: Duration,
    lifecycle_dropped: AtomicU64,
}

/// Most event patterns or namespaces one subscription may list.
const MAX_SUBSCRIBE_ITEMS: usize = 64;

impl EventRouter {
    pub fn new(settings: &HubSettings, instance_id: String, metrics: Arc<Metrics>) -> Self {
        Self {
            state: Mutex::default(),
            acks: Arc::new(AckBook::new(settings.ack_timeout, metrics)),
            next_seq: AtomicU64::new(1),
            next_subscriber: AtomicU64::new(1),
            instance_id,
            stream_queue: settings.stream_queue,
            stream_queue_max_bytes: settings.stream_queue_max_bytes,
            undelivered_capacity: settings.undelivered_capacity,
            undelivered_max_bytes: settings.undelivered_max_bytes,
            undelivered_max_age: settings.undelivered_max_age,
            lifecycle_dropped: AtomicU64::new(0),
        }
    }

    pub fn acks(&self) -> &Arc<AckBook> {
        &self.acks
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
    ) -> Result<(u64, String, mpsc::Receiver<Queued>), HubError> {
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
        let (sender, rx) = StreamSender::new(self.stream_queue, self.stream_queue_max_bytes);
        // The queue is empty, so this first message always fits.
        let _ = sender.offer(BackendMessage::Subscribed {
            subscriber_id: format!("{}-s{id}", self.instance_id),
            instance_id: self.instance_id.clone(),
        });
        let subscriber = Subscriber {
            id,
            patterns,
            namespaces: request.namespaces,
            wants_lifecycle: request.wants_lifecycle,
            confirm_all: request.confirm_all,
            sender,
        };
        let mut state = self.lock_state();
        self.flush_undelivered(&mut state, &subscriber);
        state.groups.entry(group.clone()).or_default().push(subscriber);
        Ok((id, group, rx))
    }

    /// Hands buffered events to a new subscriber, oldest first, while its queue has room.
    fn flush_undelivered(&self, state: &mut State, subscriber: &Subscriber) {
        let now = Instant::now();
        let mut kept = VecDeque::with_capacity(state.undelivered.len());
        let mut kept_bytes = 0;
        while let Some(item) = state.pop_undelivered() {
            let fresh = now.duration_since(item.at) < self.undelivered_max_age;
            if fresh
                && subscriber.wants_event(&item.event.namespace, &item.event.event)
                && subscriber.sender.offer(BackendMessage::ClientEvent(item.event.clone())).is_ok()
            {
                self.acks.held_by(item.seq, Some(subscriber.id));
                continue;
            }
            kept_bytes += item.bytes;
            kept.push_back(item);
        }
        state.undelivered = kept;
        state.undelivered_bytes = kept_bytes;
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
        self.acks.holder_gone(subscriber_id);
    }

    /// Closes every stream (shutdown): their receivers end once drained.
    pub fn close_all(&self) {
        self.lock_state().groups.clear();
    }

    /// Hands a client event to one stream of each group that wants it, or, when no group
    /// does, to the undelivered buffer. A callback waiting under `seq` learns which
    /// streams hold the event. Never blocks.
    pub fn dispatch(&self, seq: u64, event: Arc<ClientEvent>) -> DispatchOutcome {
        let mut state = self.lock_state();
        let mut delivered = false;
        let mut overloaded = false;
        for members in state.groups.values() {
            let Some(chosen) = choose(members, &event.socket_id, |s| s.wants_event(&event.namespace, &event.event))
            else {
                continue;
            };
            match chosen.sender.offer(BackendMessage::ClientEvent(event.clone())) {
                Ok(()) => {
                    delivered = true;
                    self.acks.held_by(seq, Some(chosen.id));
                }
                Err(Refused::Full) => overloaded = true,
                Err(Refused::Closed) => {}
            }
        }
        if delivered {
            return DispatchOutcome::Delivered;
        }
        if overloaded {
            return DispatchOutcome::Overloaded;
        }
        let (_, expired) = self.expire_front(&mut state);
        let bytes = event.payload.len() + event.event.len();
        let fits = state.undelivered.len() < self.undelivered_capacity
            && (state.undelivered.is_empty() || state.undelivered_bytes + bytes <= self.undelivered_max_bytes);
        let outcome = if fits {
            // Marked under the state lock, so a subscriber flushing the buffer (which
            // needs that lock) always finds it marked.
            self.acks.held_by(seq, None);
            state.undelivered_bytes += bytes;
            state.undelivered.push_back(Undelivered { seq, event, at: Instant::now(), bytes });
            DispatchOutcome::Buffered
        } else {
            DispatchOutcome::Dropped
        };
        drop(state);
        self.settle_expired(expired);
        outcome
    }

    /// Ends a waiting client callback with an error (its event could not be sent on).
    pub fn fail_ack(&self, seq: u64, reply: AckReply) {
        self.acks.settle(seq, reply);
    }

    /// A client callback starts waiting for the answer to event `seq`.
    pub fn await_ack(&self, seq: u64, waiter: AckWaiter) {
        self.acks.wait(seq, waiter);
    }

    /// Whether an event id was minted by this instance (its client waits here).
    pub fn is_local_event(&self, event_id: &str) -> bool {
        self.seq_of(event_id).is_some()
    }

    /// The local stream of `group` that should get a message read from the backplane.
    /// Same choice rule as `dispatch`: by socket (or user) hash among the streams that
    /// want it.
    pub fn pick(&self, group: &str, message: &BackendMessage) -> Option<Picked> {
        let state = self.lock_state();
        let members = state.groups.get(group)?;
        let chosen = match message {
            BackendMessage::ClientEvent(e) => choose(members, &e.socket_id, |s| s.wants_event(&e.namespace, &e.event)),
            BackendMessage::SocketConnected(c) => {
                let key = c.user_id.as_deref().unwrap_or(&c.socket_id);
                choose(members, key, |s| s.wants_lifecycle && s.wants_namespace(&c.namespace))
            }
            BackendMessage::SocketDisconnected(d) => {
                let key = d.user_id.as_deref().unwrap_or(&d.socket_id);
                choose(members, key, |s| s.wants_lifecycle && s.wants_namespace(&d.namespace))
            }
            BackendMessage::UserOnline(u) | BackendMessage::UserOffline(u) => choose(members, u, |s| s.wants_lifecycle),
            BackendMessage::Subscribed { .. } => return None,
        };
        chosen.map(|s| Picked { subscriber: s.id, sender: s.sender.clone(), confirm_all: s.confirm_all })
    }

    /// Hands a message straight to this instance's streams, one per group that wants it
    /// (the backplane cannot carry it elsewhere right now). True if any stream took it.
    pub fn deliver_here(&self, message: &BackendMessage) -> bool {
        let groups: Vec<String> = self.lock_state().groups.keys().cloned().collect();
        let mut delivered = false;
        for group in groups {
            if let Some(picked) = self.pick(&group, message) {
                delivered |= picked.sender.offer(message.clone()).is_ok();
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
        if self.seq_of(event_id).is_some_and(|seq| self.acks.settle(seq, reply)) {
            return Ok(());
        }
        Err(HubError::NotFound(format!(
            "ack.event_id {:?}: no client is waiting for it (unknown, already answered, or timed out)",
            event_id.chars().take(64).collect::<String>()
        )))
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
            if chosen.sender.offer(message.clone()).is_err() {
                self.lifecycle_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Drops buffered events older than the max age; returns how many.
    pub fn expire_undelivered(&self) -> u64 {
        let (dropped, expired) = self.expire_front(&mut self.lock_state());
        self.settle_expired(expired);
        dropped
    }

    /// Drops buffered events past their age: how many, and the sequences of those whose
    /// callbacks are answered by the caller once it has released the state lock.
    fn expire_front(&self, state: &mut State) -> (u64, Vec<u64>) {
        let now = Instant::now();
        let mut expired = Vec::new();
        while state.undelivered.front().is_some_and(|u| now.duration_since(u.at) >= self.undelivered_max_age) {
            if let Some(u) = state.pop_undelivered() {
                expired.push(u.seq);
            }
        }
        (expired.len() as u64, expired)
    }

    fn settle_expired(&self, expired: Vec<u64>) {
        for seq in expired {
            self.acks.settle(seq, AckReply::error("no_backend", "no backend subscribed to this event in time"));
        }
    }

    pub fn undelivered_len(&self) -> usize {
        self.lock_state().undelivered.len()
    }

    pub fn pending_acks(&self) -> usize {
        self.acks.len()
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
                queued_events: members.iter().map(|s| s.sender.queued()).sum(),
                queued_bytes: members.iter().map(|s| s.sender.queued_bytes()).sum(),
            })
            .collect()
    }

    fn lock_state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that
        // matters more than losing routing, so poisoning is ignored.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

const _: () = assert!(MAX_SUBSCRIBE_ITEMS <= MAX_LIST_LEN);

/// The member of a group that gets a message: among the members `wants` accepts, in
/// subscription order, the one at `key_hash(key) % count`. The same member as long as the
/// group does not change, so one socket's (or user's) messages keep their order.
fn choose<'a>(members: &'a [Subscriber], key: &str, wants: impl Fn(&Subscriber) -> bool) -> Option<&'a Subscriber> {
    if let [only] = members {
        return wants(only).then_some(only);
    }
    let count = members.iter().filter(|s| wants(s)).count();
    if count == 0 {
        return None;
    }
    let index = (key_hash(key) % count as u64) as usize;
    members.iter().filter(|s| wants(s)).nth(index)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hub::budget::Charge;
    use crate::hub::{Payload, PayloadLimits};
    use std::time::SystemTime;
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
            max_auth_bytes: 8192,
            events_per_second: 10.0,
            event_burst: 10,
            flood_disconnect_after: 100,
            stream_queue: queue,
            stream_queue_max_bytes: 1 << 20,
            undelivered_capacity: 2,
            undelivered_max_bytes: 1 << 20,
            event_max_bytes: 1 << 20,
            event_max_bytes_per_socket: 1 << 20,
            end_expired_sockets_after: None,
            decision_timeout: Duration::from_secs(1),
            decide_joins: false,
            forward_headers: Vec::new(),
            owed: crate::hub::offline::OfflineLimits {
                max_messages_per_user: 10,
                max_bytes_per_user: 1 << 20,
                max_bytes: 1 << 20,
            },
            undelivered_max_age: Duration::from_secs(60),
            stream_batch_window: Duration::ZERO,
            unready_without_redis: false,
        }
    }

    fn event(router: &EventRouter, socket: &str, name: &str) -> (u64, Arc<ClientEvent>) {
        let (seq, id) = router.next_event_id();
        (
            seq,
            Arc::new(ClientEvent {
                id,
                socket_id: socket.into(),
                user_id: None,
                namespace: "/".into(),
                event: name.into(),
                payload: Payload::default(),
                wants_ack: false,
                received_at: SystemTime::now(),
                charge: Charge::none(),
            }),
        )
    }

    fn sub(router: &EventRouter, group: &str, patterns: &[&str]) -> (u64, mpsc::Receiver<Queued>) {
        let req = SubscribeRequest {
            group: group.into(),
            event_patterns: patterns.iter().map(|p| p.to_string()).collect(),
            ..Default::default()
        };
        let (id, _, mut rx) = router.subscribe(req, &["/".into()]).unwrap();
        assert!(matches!(rx.try_recv(), Ok(Queued { message: BackendMessage::Subscribed { .. }, .. })));
        (id, rx)
    }

    fn drain(rx: &mut mpsc::Receiver<Queued>) -> Vec<String> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|q| match q.message {
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
            assert_eq!(r.dispatch(seq, e), DispatchOutcome::Delivered);
        }
        let (n1, n2) = (drain(&mut a1).len(), drain(&mut a2).len());
        assert_eq!(n1 + n2, 50);
        assert!(n1 > 0 && n2 > 0, "load not shared: {n1}/{n2}");
        assert_eq!(drain(&mut b).len(), 50);
    }

    #[test]
    fn full_queue_refuses_at_once() {
        let r = router(1);
        let (_, _, _rx) = r.subscribe(SubscribeRequest::default(), &["/".into()]).unwrap();
        // The Subscribed message fills the one slot.
        let (seq, e) = event(&r, "s", "x");
        assert_eq!(r.dispatch(seq, e), DispatchOutcome::Overloaded);
    }

    #[test]
    fn undelivered_events_wait_for_a_subscriber_then_flow_in_order() {
        let r = router(10);
        for name in ["one", "two", "three"] {
            let (seq, e) = event(&r, "s", name);
            r.dispatch(seq, e);
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
        r.await_ack(seq, AckWaiter::Reply(tx));
        r.dispatch(seq, e);
        r.complete_ack(&event_id, AckReply::Payload(Payload::default())).unwrap();
        assert_eq!(ack.try_recv(), Ok(AckReply::Payload(Payload::default())));
        assert!(r.complete_ack(&event_id, AckReply::Payload(Payload::default())).is_err());

        let (seq, e) = event(&r, "s", "x");
        let (tx, mut ack) = oneshot::channel();
        r.await_ack(seq, AckWaiter::Reply(tx));
        r.dispatch(seq, e);
        r.unsubscribe(id);
        assert!(matches!(ack.try_recv(), Ok(AckReply::Error { code, .. }) if code == "backend_unavailable"));
    }

    #[test]
    fn a_buffered_event_answers_its_client_when_it_expires_unread() {
        let mut s = settings(10);
        s.undelivered_max_age = Duration::ZERO;
        let r = EventRouter::new(&s, "i".into(), Arc::new(Metrics::new(&["/".into()])));
        let (seq, e) = event(&r, "s", "x");
        let (tx, mut ack) = oneshot::channel();
        r.await_ack(seq, AckWaiter::Reply(tx));
        assert_eq!(r.dispatch(seq, e), DispatchOutcome::Buffered);
        assert_eq!(r.expire_undelivered(), 1);
        assert!(matches!(ack.try_recv(), Ok(AckReply::Error { code, .. }) if code == "no_backend"));
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
