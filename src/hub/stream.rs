//! What travels on a backend's `Events` stream (client events, lifecycle news, the
//! backend's subscribe), and the queue in front of each stream, bounded in messages and in
//! bytes.

use std::sync::Arc;
use std::time::SystemTime;

use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

use super::Payload;
use super::budget::Charge;
use super::registry::{Connection, Handshake};

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
    /// The bytes it holds of the socket's and the bridge's budget, returned when the
    /// event is let go.
    pub charge: Charge,
}

#[derive(Debug)]
pub struct SocketConnected {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub namespace: String,
    pub handshake: Arc<Handshake>,
    pub rooms: Vec<String>,
    pub connected_at: SystemTime,
    /// What a deciding backend attached (JSON; empty: none).
    pub data_json: String,
}

impl SocketConnected {
    pub fn of(conn: &Connection, rooms: Vec<String>) -> Self {
        Self {
            socket_id: conn.socket_id.clone(),
            user_id: conn.user_id.clone(),
            namespace: conn.namespace.clone(),
            handshake: conn.handshake.clone(),
            rooms,
            connected_at: conn.connected_at,
            data_json: conn.data_json.clone(),
        }
    }
}

#[derive(Debug)]
pub struct SocketDisconnected {
    pub socket_id: String,
    pub user_id: Option<String>,
    pub namespace: String,
    pub reason: String,
}

impl SocketDisconnected {
    pub fn of(conn: &Connection, reason: &str) -> Self {
        Self {
            socket_id: conn.socket_id.clone(),
            user_id: conn.user_id.clone(),
            namespace: conn.namespace.clone(),
            reason: reason.to_owned(),
        }
    }
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

impl BackendMessage {
    /// Bytes it holds in memory, roughly: what the queues' byte limits count.
    pub fn size(&self) -> usize {
        const OVERHEAD: usize = 64;
        OVERHEAD
            + match self {
                BackendMessage::ClientEvent(e) => {
                    e.id.len() + e.socket_id.len() + e.namespace.len() + e.event.len() + e.payload.len()
                }
                BackendMessage::SocketConnected(c) => {
                    let h = &c.handshake;
                    let handshake = h.user_agent.len() + h.remote_address.len() + h.origin.len() + h.auth_json.len();
                    c.socket_id.len() + c.namespace.len() + handshake + c.rooms.iter().map(String::len).sum::<usize>()
                }
                BackendMessage::SocketDisconnected(d) => d.socket_id.len() + d.namespace.len() + d.reason.len(),
                BackendMessage::UserOnline(u) | BackendMessage::UserOffline(u) => u.len(),
                BackendMessage::Subscribed { subscriber_id, instance_id } => subscriber_id.len() + instance_id.len(),
            }
    }
}

/// A message in a stream's queue, holding its bytes of the stream's budget until the
/// stream takes it out.
pub struct Queued {
    pub message: BackendMessage,
    _bytes: Option<OwnedSemaphorePermit>,
}

/// Why a stream did not take a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Its queue is full, in count or in bytes.
    Full,
    /// The stream is gone.
    Closed,
}

/// The sending side of one backend stream's queue: bounded in messages and in bytes, so
/// a backend that stops reading holds at most `events.stream_queue` messages and
/// `events.stream_queue_max_bytes` bytes here.
#[derive(Clone)]
pub struct StreamSender {
    tx: mpsc::Sender<Queued>,
    bytes: Arc<Semaphore>,
    max_bytes: usize,
}

impl StreamSender {
    pub(super) fn new(queue: usize, max_bytes: usize) -> (Self, mpsc::Receiver<Queued>) {
        let (tx, rx) = mpsc::channel(queue);
        (Self { tx, bytes: Arc::new(Semaphore::new(max_bytes)), max_bytes }, rx)
    }

    /// Bytes a message takes of the budget: its size, at most the whole budget (so one
    /// message larger than the budget still fits an empty queue).
    fn cost(&self, message: &BackendMessage) -> u32 {
        u32::try_from(message.size().min(self.max_bytes)).unwrap_or(u32::MAX)
    }

    /// Queues a message now, or refuses it.
    pub fn offer(&self, message: BackendMessage) -> Result<(), Refused> {
        if self.tx.is_closed() {
            return Err(Refused::Closed);
        }
        let permit = self.bytes.clone().try_acquire_many_owned(self.cost(&message)).map_err(|_| Refused::Full)?;
        self.tx.try_send(Queued { message, _bytes: Some(permit) }).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Refused::Full,
            mpsc::error::TrySendError::Closed(_) => Refused::Closed,
        })
    }

    /// Queues a message, waiting while the queue is full (the caller holds it elsewhere
    /// meanwhile, e.g. in Redis). Err when the stream is gone.
    pub async fn send(&self, message: BackendMessage) -> Result<(), Refused> {
        let permit = self.bytes.clone().acquire_many_owned(self.cost(&message)).await.map_err(|_| Refused::Closed)?;
        self.tx.send(Queued { message, _bytes: Some(permit) }).await.map_err(|_| Refused::Closed)
    }

    pub(super) fn queued(&self) -> u64 {
        (self.tx.max_capacity() - self.tx.capacity()) as u64
    }

    pub(super) fn queued_bytes(&self) -> u64 {
        self.max_bytes.saturating_sub(self.bytes.available_permits()) as u64
    }
}
