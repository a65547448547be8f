//! What differs between one instance and many, behind one interface.
//!
//! The hub runs one code path for every operation and asks its [`Backplane`] only what
//! depends on how many instances there are:
//!
//! - presence and the connection index: who is online anywhere, and which instance holds a
//!   user's or a socket's sockets ([`Backplane::locate`]);
//! - offline messages kept for users with no socket anywhere;
//! - the outbox towards backend streams: a client event or lifecycle news reaches one
//!   stream per backend group, wherever that stream is connected;
//! - remote acks: a backend's answer reaching the instance whose client waits for it;
//! - node membership (Status);
//! - how an operation on sockets reaches other instances ([`Backplane::relay`]): the hub
//!   applies every [`NodeRequest`] to its own sockets itself, and the backplane carries it
//!   to the other instances that hold targets, which apply it the same way
//!   ([`crate::hub::Hub::apply_local`]).
//!
//! [`EmbeddedBackplane`](super::embedded::EmbeddedBackplane) is one instance in memory;
//! `cluster::RedisBackplane` is many instances over Redis. Both pass the same contract
//! tests (`tests/backplane_contract.rs`).

use std::sync::{Arc, Weak};
use std::time::SystemTime;

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

pub use super::offline::{OfflineMessage, OfflineOutcome};
pub use super::questions::{Answer, DecisionKind, Question, Undecided};
use super::registry::{Connection, Handshake, Presence, Registry};
use super::router::{AckReply, ClientEvent, EventRouter};
use super::{Hub, HubError, Metrics, Payload, SocketAck, Target};
use crate::shutdown::Shutdown;

/// What a backplane reaches of this instance, handed over once the hub exists.
#[derive(Clone)]
pub struct NodeHandle {
    pub instance_id: String,
    pub router: Arc<EventRouter>,
    pub registry: Arc<Registry>,
    pub metrics: Arc<Metrics>,
    /// The hub itself, to apply requests from other instances. Weak: the hub owns the
    /// backplane.
    pub hub: Weak<Hub>,
}

/// Whether the instances can reach each other, as readiness and Status report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reach {
    /// One instance, nothing to reach.
    Alone,
    /// Connected to the other instances (Redis is up).
    Up,
    /// Cut off: this instance serves its own sockets only.
    Down,
}

impl Reach {
    /// The name readiness and Status use ("redis": …).
    pub fn as_str(self) -> &'static str {
        match self {
            Reach::Alone => "disabled",
            Reach::Up => "up",
            Reach::Down => "down",
        }
    }
}

/// A live instance, as Status reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeInfo {
    pub instance_id: String,
    pub connections: u64,
    pub last_seen: SystemTime,
}

/// Where an operation must travel besides this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Remote {
    /// Nowhere else: every target is here (or nowhere).
    None,
    /// These instances (never this one).
    Nodes(Vec<String>),
    /// The other instances that have sockets in this room (of this namespace).
    Room { namespace: String, room: String },
    /// Every other instance.
    All,
}

/// Where a target's sockets are, besides this instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Located {
    pub remote: Remote,
    /// Sockets of the target on other instances, when the backplane knows them exactly
    /// (user and socket targets); None for rooms and everyone.
    pub remote_sockets: Option<u32>,
}

impl Located {
    pub const HERE_ONLY: Located = Located { remote: Remote::None, remote_sockets: Some(0) };
}

/// Why the outbox refused a client event; the client's callback gets the reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventRefusal {
    /// No backend group exists to take it (and the undelivered buffer is full, or there is
    /// none).
    NoBackend,
    /// The streams or queues that would take it are full.
    Overloaded,
}

/// An operation on sockets, applied by every instance that holds targets to its own
/// sockets. Travels between instances, so it carries plain data.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum NodeRequest {
    Emit(EmitRequest),
    ChangeRooms {
        namespace: String,
        target: Target,
        rooms: Vec<String>,
        join: bool,
    },
    Disconnect {
        namespace: String,
        target: Target,
        reason: String,
    },
    ListRooms {
        namespace: String,
    },
    ListConnections {
        namespace: String,
        filter: super::ConnectionFilter,
        after: Option<String>,
        limit: usize,
    },
    /// A connect or join for this instance's deciders.
    Decide(Question),
}

/// A push as each instance applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EmitRequest {
    pub namespace: String,
    pub target: Target,
    pub event: String,
    pub payload: Payload,
    pub volatile: bool,
    pub except_rooms: Vec<String>,
    pub except_sockets: Vec<String>,
    /// Wait this long for each socket's ack (milliseconds).
    pub ack_timeout_ms: Option<u64>,
    /// A push with a ttl that cannot be written to a socket is kept for it.
    pub ttl_ms: Option<u64>,
    /// When that ttl ends (wall clock, milliseconds since the Unix epoch), fixed by the
    /// instance that took the push.
    pub expires_at_ms: Option<u64>,
}

/// One instance's answer to a [`NodeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum NodeReply {
    Emitted(EmitOutcome),
    /// Sockets the operation applied to.
    Count(u32),
    /// Rooms with their member counts on the answering instance.
    Rooms(Vec<(String, u32)>),
    Connections(Vec<ConnectionView>),
    /// A decider's answer, or why none came.
    Decided(Result<Answer, Undecided>),
    /// The request could not be applied there (namespace missing, instance draining).
    #[default]
    Refused,
}

/// What one instance did with a push.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct EmitOutcome {
    /// Sockets the push was handed to.
    pub reached: u32,
    /// With an ack timeout: each socket's answer.
    pub acks: Vec<SocketAck>,
    /// Sockets the push could not be handed to, and why.
    pub not_written: Vec<NotWritten>,
    /// Not-written sockets of room and everyone pushes, counted only (a broadcast does
    /// not say which sockets failed).
    pub not_written_uncounted: u32,
}

/// A socket a push could not be written to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotWritten {
    pub socket_id: String,
    /// `buffer_full`, or `closed` (the socket left while the push was on its way).
    pub reason: String,
    /// A ttl push kept for this socket's user, delivered when it drains or reconnects.
    pub kept: bool,
}

/// A connection as listings show it, from whichever instance holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConnectionView {
    pub socket_id: String,
    pub namespace: String,
    pub user_id: Option<String>,
    pub connected_at_ms: u64,
    pub handshake: Handshake,
    pub rooms: Vec<String>,
    /// What a deciding backend attached (JSON; empty: none).
    pub data_json: String,
}

/// The backplane: what differs between one instance and many (see the module doc).
///
/// Methods that run on every client event or connect are synchronous and never wait on
/// the network; the rest return boxed futures so the hub can hold either implementation
/// behind one `Arc<dyn Backplane>`.
pub trait Backplane: Send + Sync + 'static {
    /// Called once by the hub as it is built.
    fn attach(&self, node: NodeHandle);

    /// Starts background work (connections, readers, heartbeats) until `shutdown`.
    fn start(&self, shutdown: Shutdown);

    fn reach(&self) -> Reach;

    /// Live instances (this one included); empty when unknown.
    fn nodes(&self) -> BoxFuture<'_, Result<Vec<NodeInfo>, HubError>>;

    /// Shutdown, after every socket was unregistered: waits until what was queued reached
    /// the other instances, then leaves.
    fn leave(&self) -> BoxFuture<'_, ()>;

    /// A socket registered here. `local` is the presence change this instance saw; the
    /// backplane decides the cluster-wide one and tells the backends (UserOnline,
    /// SocketConnected) in order with the socket's events. The future resolves once
    /// other instances can find the socket (bounded; at once when they cannot be
    /// reached).
    fn socket_connected(&self, conn: Arc<Connection>, rooms: Vec<String>, local: Presence) -> BoxFuture<'static, ()>;

    /// A socket left this instance (see `socket_connected`).
    fn socket_disconnected(&self, conn: Arc<Connection>, reason: &str, local: Presence);

    /// Sockets of this instance joined these rooms (never internal ones). Resolves once
    /// operations on those rooms made anywhere reach this instance: a push made after a
    /// join returned reaches the socket. (Interest in rooms left empty is dropped by the
    /// backplane itself, later.)
    fn rooms_joined<'a>(&'a self, namespace: &'a str, rooms: &'a [String]) -> BoxFuture<'a, ()>;

    /// Where a target's sockets are besides this instance.
    fn locate<'a>(&'a self, namespace: &'a str, target: &'a Target) -> BoxFuture<'a, Result<Located, HubError>>;

    /// Keeps a push for `user` if they have no socket anywhere (checked atomically with
    /// connects: a user connecting meanwhile either finds it or gets it live).
    fn store_offline<'a>(
        &'a self,
        user: &'a str,
        message: OfflineMessage,
    ) -> BoxFuture<'a, Result<OfflineOutcome, HubError>>;

    /// Keeps a ttl push a connected socket could not take (its buffer was full), for the
    /// user's next connect: unlike `store_offline`, whether the user is online does not
    /// matter.
    fn keep_undelivered<'a>(&'a self, user: &'a str, message: OfflineMessage) -> BoxFuture<'a, OfflineOutcome>;

    /// What was kept for a socket's user in its namespace, oldest first, taken in order
    /// after the socket's connect (so a push racing the connect is never missed).
    fn take_offline(&self, conn: &Connection) -> BoxFuture<'static, Vec<OfflineMessage>>;

    /// A client event for the backends. A client callback waiting on it is already
    /// registered with the router under `seq`.
    fn send_event(&self, seq: u64, event: Arc<ClientEvent>) -> Result<(), EventRefusal>;

    /// This instance's deciders changed: (decides connects, decides joins) now.
    fn deciders_changed(&self, kinds: (bool, bool));

    /// Other instances with a decider for `kind`.
    fn decider_nodes(&self, kind: DecisionKind) -> BoxFuture<'_, Result<Vec<String>, HubError>>;

    /// A backend stream of `group` subscribed on this instance.
    fn group_subscribed<'a>(&'a self, group: &'a str) -> BoxFuture<'a, ()>;

    /// A backend of `group` answered or confirmed `event_id`. Returns whether the event's
    /// client asked for an answer, when the backplane tracked the event (None: not one of
    /// its tracked events).
    fn event_settled(&self, group: &str, event_id: &str) -> Option<bool>;

    /// Carries a backend's answer to the instance whose client waits for `event_id`
    /// (not this one).
    fn forward_ack(&self, event_id: &str, reply: AckReply) -> Result<(), HubError>;

    /// Carries `request` to other instances and gathers their answers (`wait`), or sends
    /// it without waiting. Answers from instances that do not reply within the
    /// backplane's request timeout are missing from the result.
    fn relay(&self, to: Remote, request: NodeRequest, wait: Wait) -> BoxFuture<'_, Result<Vec<NodeReply>, HubError>>;
}

/// Whether `relay` waits for answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Fire and forget.
    No,
    /// Wait for every addressed instance's answer, at most this long beyond the
    /// backplane's own request timeout (an ack timeout).
    Answers { extra: std::time::Duration },
}
