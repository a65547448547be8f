//! A browser's life: admission and authentication, registration and rooms, its events on
//! their way to the backend, its own room requests, and its departure.

use std::sync::Arc;

use super::auth::{Admission, AuthError, Identity};
use super::backplane::EventRefusal;
use super::budget::OverBudget;
use super::deciders::{Answer, ConnectQuestion, JoinQuestion, Question, Undecided};
use super::pattern::any_matches;
use super::registry::{Connection, Handshake};
use super::router::{AckReply, AckWaiter, ClientEvent};
use super::{ClientAck, ErrorKind, Hub, Payload, Socket, is_internal_room, user_room, validate_name};

/// How long a socket disconnected for flooding keeps its transport, so that the refusals and
/// the disconnect notice already queued for it are written before it closes.
const FLOOD_NOTICE_GRACE: std::time::Duration = std::time::Duration::from_millis(200);

/// Client event that asks the bridge to join a room (allowed by `client_room_patterns`).
pub const JOIN_EVENT: &str = "bridge:join";
/// Client event that asks the bridge to leave a room.
pub const LEAVE_EVENT: &str = "bridge:leave";

/// Why a connection was refused; the text is what `connect_error` shows the browser.
#[derive(Debug, thiserror::Error)]
pub enum ConnectRefusal {
    #[error("{0}")]
    Auth(#[from] AuthError),
    #[error("the server is at its connection limit; retry later")]
    Full,
    #[error("the server is shutting down; reconnect to another instance")]
    Draining,
    #[error("the auth payload must be a JSON object")]
    InvalidAuth,
    #[error("the auth payload is {size} bytes, over the limit of {max}")]
    AuthTooLarge { size: usize, max: usize },
    /// The deciding backend refused, with its code and message (the message is what the
    /// client's `connect_error` shows).
    #[error("{message}")]
    Denied { code: String, message: String },
    /// No decision came (no decider, too slow, gone, overloaded): never an open door.
    #[error("{0}; retry later")]
    Undecided(Undecided),
}

/// What the door knows about a connecting client besides its `auth` payload.
pub struct ConnectContext {
    pub socket_id: String,
    pub namespace: String,
    /// The request headers a decider may see ([`Hub::decider_headers`]), lower-case names.
    pub headers: Vec<(String, String)>,
    pub client_address: String,
    pub transport: String,
}

impl Hub {
    /// Request headers a deciding backend sees: cookie, origin, user agent, and those
    /// `auth.backend.forward_headers` adds.
    pub fn decider_headers(&self) -> impl Iterator<Item = &str> {
        ["cookie", "origin", "user-agent"].into_iter().chain(self.settings.forward_headers.iter().map(String::as_str))
    }

    /// Decides whether a handshake may connect. Runs in the connect middleware, before the
    /// socket is part of any namespace.
    pub async fn authorize(
        &self,
        auth: &serde_json::Value,
        context: ConnectContext,
    ) -> Result<Identity, ConnectRefusal> {
        if !matches!(auth, serde_json::Value::Object(_) | serde_json::Value::Null) {
            self.metrics.error(ErrorKind::InvalidRequest);
            return Err(ConnectRefusal::InvalidAuth);
        }
        // The auth object is kept with the socket (what the backend may see of it) and
        // sent with SocketConnected: its size is the client's choice, so it is capped.
        let size = serde_json::to_vec(auth).map_or(usize::MAX, |v| v.len());
        if size > self.settings.max_auth_bytes {
            self.metrics.error(ErrorKind::InvalidRequest);
            return Err(ConnectRefusal::AuthTooLarge { size, max: self.settings.max_auth_bytes });
        }
        if self.is_draining() {
            return Err(ConnectRefusal::Draining);
        }
        if self.registry.len() >= self.settings.max_connections {
            self.metrics.error(ErrorKind::ConnectionLimit);
            return Err(ConnectRefusal::Full);
        }
        let admission = self.authenticator.admit(auth).map_err(|e| {
            self.metrics.error(ErrorKind::Auth);
            tracing::info!(reason = %e, "connection refused");
            ConnectRefusal::Auth(e)
        })?;
        let jwt_claims_json = match admission {
            Admission::Known(identity) => return Ok(identity),
            Admission::AskBackend { jwt_claims_json } => jwt_claims_json,
        };
        let question = ConnectQuestion {
            socket_id: context.socket_id,
            namespace: context.namespace,
            auth_json: if auth.is_null() { "{}".into() } else { auth.to_string() },
            headers: context.headers,
            client_address: context.client_address,
            transport: context.transport,
            jwt_claims_json,
        };
        let refused = |e: ConnectRefusal| {
            self.metrics.error(ErrorKind::Auth);
            tracing::info!(reason = %e, "connection refused");
            e
        };
        match self.decide(Question::Connect(question)).await {
            Ok(Answer::Allow { user_id, rooms, data_json }) => self.allowed_identity(user_id, rooms, data_json),
            Ok(Answer::Deny { code, message, .. }) => {
                self.metrics.error(ErrorKind::Auth);
                tracing::info!(code = %code, reason = %message, "connection refused by the deciding backend");
                Err(ConnectRefusal::Denied { code, message })
            }
            Err(undecided) => Err(refused(ConnectRefusal::Undecided(undecided))),
        }
    }

    /// A backend's allow, checked as a token would be: a valid user id, valid rooms, and
    /// data that is JSON within the auth size limit. A malformed allow refuses the client
    /// (the backend's bug must not become a client's privilege).
    fn allowed_identity(
        &self,
        user_id: Option<String>,
        rooms: Vec<String>,
        data_json: String,
    ) -> Result<Identity, ConnectRefusal> {
        let bad = |why: String| {
            tracing::warn!(reason = why, "a deciding backend allowed a connect with a malformed answer; refused");
            self.metrics.error(ErrorKind::Auth);
            ConnectRefusal::Undecided(Undecided::Malformed)
        };
        let user_id = user_id.filter(|u| !u.is_empty());
        if let Some(u) = &user_id {
            crate::names::check_user_id(u).map_err(|e| bad(format!("user_id {e}")))?;
        }
        if rooms.len() > super::auth::MAX_CLAIM_ROOMS {
            return Err(bad(format!("more than {} rooms", super::auth::MAX_CLAIM_ROOMS)));
        }
        for room in &rooms {
            crate::names::check_room(room).map_err(|e| bad(format!("room {e}")))?;
        }
        if data_json.len() > self.settings.max_auth_bytes
            || (!data_json.is_empty() && serde_json::from_str::<serde::de::IgnoredAny>(&data_json).is_err())
        {
            return Err(bad("data_json is not JSON within socketio.max_auth_bytes".into()));
        }
        Ok(Identity { user_id, rooms, expires_at: None, data_json })
    }

    /// The handshake `auth` payload as the backend may see it: secret fields removed.
    pub fn redact_auth(&self, auth: &serde_json::Value) -> String {
        match auth {
            serde_json::Value::Object(map) => {
                let kept: serde_json::Map<_, _> = map
                    .iter()
                    .filter(|(k, _)| !self.settings.redacted_auth_fields.iter().any(|f| f == *k))
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect();
                serde_json::Value::Object(kept).to_string()
            }
            serde_json::Value::Null => "{}".into(),
            other => other.to_string(),
        }
    }

    /// A socket passed its middleware: put it in its rooms, register it, tell the backend.
    /// Returns the registered connection (the socket's event handler keeps it) once other
    /// instances can find the socket, so a push made after the client saw its CONNECT
    /// reaches it wherever the push is made (the wait is bounded by the backplane).
    pub async fn on_connect(&self, socket: &Socket, identity: Identity, handshake: Handshake) -> Arc<Connection> {
        let socket_id = socket.id.to_string();
        let namespace = socket.ns().to_owned();
        if let (Some(after), Some(expires_at)) = (self.settings.end_expired_sockets_after, identity.expires_at) {
            let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
            expiries.insert((expires_at + after, namespace.clone(), socket_id.clone()));
        }
        // Rooms the token (or backend) granted: other instances' pushes to them must find
        // this socket from its first packet on.
        let granted = identity.rooms;
        if !granted.is_empty() {
            socket.join(granted.clone());
            self.backplane.rooms_joined(&namespace, &granted).await;
        }
        let mut rooms = granted;
        if let Some(user) = &identity.user_id {
            socket.join(user_room(user));
            rooms.push(user_room(user));
        }
        let mut conn = Connection::new(
            socket_id.clone(),
            namespace,
            identity.user_id.clone(),
            handshake,
            self.settings.events_per_second,
            self.settings.event_burst,
        );
        conn.data_json = identity.data_json;
        let conn = Arc::new(conn);
        let presence = self.registry.register(conn.clone());
        self.metrics.connects.inc();
        tracing::debug!(
            socket_id,
            namespace = conn.namespace,
            user_id = identity.user_id.as_deref().unwrap_or(""),
            "socket connected"
        );
        self.backplane.socket_connected(conn.clone(), rooms, presence).await;
        conn
    }

    /// The client has its CONNECT packet: it can now receive what was kept for it.
    pub fn after_connect(self: &Arc<Self>, socket: &Socket) {
        let Some(conn) = self.registry.get(socket.ns(), &socket.id.to_string()) else { return };
        if conn.user_id.is_none() {
            return;
        }
        let kept = self.backplane.take_offline(&conn);
        let (hub, socket) = (self.clone(), socket.clone());
        tokio::spawn(async move { hub.deliver_kept(&conn, &socket, kept.await) });
    }

    /// Registry entries whose socket socketioxide no longer knows (it failed between the
    /// middleware and the CONNECT packet, where no disconnect handler runs) are removed
    /// as disconnected, so presence never sticks.
    pub fn reconcile_registry(&self) -> usize {
        let stale: Vec<(String, String)> = self
            .registry
            .older_than(std::time::Duration::from_secs(5))
            .into_iter()
            .filter(|c| {
                let known = c
                    .socket_id
                    .parse()
                    .ok()
                    .and_then(|sid| self.io.of(c.namespace.as_str()).and_then(|op| op.get_socket(sid)));
                known.is_none()
            })
            .map(|c| (c.namespace.clone(), c.socket_id.clone()))
            .collect();
        for (namespace, socket_id) in &stale {
            self.on_disconnect(namespace, socket_id, "transport error");
        }
        stale.len()
    }

    /// Ends the sockets whose credential expired (`auth.disconnect_on_token_expiry`).
    pub(super) fn end_expired_sockets(&self) {
        let now = std::time::SystemTime::now();
        let due: Vec<(std::time::SystemTime, String, String)> = {
            let mut expiries = self.expiries.lock().unwrap_or_else(|e| e.into_inner());
            let later = expiries.split_off(&(now, String::new(), String::new()));
            std::mem::replace(&mut *expiries, later).into_iter().collect()
        };
        for (_, namespace, socket_id) in due {
            let socket = super::push::socket_id_of(&socket_id)
                .and_then(|sid| self.io.of(namespace.as_str()).and_then(|op| op.get_socket(sid)));
            if let Some(socket) = socket {
                tracing::info!(socket_id, "socket's token expired; disconnecting it");
                self.metrics.error(ErrorKind::Auth);
                let _ = socket.emit(super::push::DISCONNECT_EVENT, &serde_json::json!({ "reason": "token expired" }));
                let _ = socket.disconnect();
            }
        }
    }

    pub fn on_disconnect(&self, namespace: &str, socket_id: &str, reason: &str) {
        let Some((conn, presence)) = self.registry.unregister(namespace, socket_id) else { return };
        self.forward_owed(&conn);
        self.metrics.disconnects.with_label_values(&[reason]).inc();
        tracing::debug!(socket_id, reason, "socket disconnected");
        self.backplane.socket_disconnected(conn, reason, presence);
    }

    /// A client emitted an event. Called synchronously from the socket's read loop, so the
    /// order events are routed in is the order the client sent them. `conn` is the
    /// socket's registered connection (from `on_connect`).
    pub fn on_client_event(
        self: &Arc<Self>,
        socket: &Socket,
        conn: &Connection,
        event: String,
        payload: Payload,
        ack: Option<ClientAck>,
    ) {
        if !conn.is_registered() {
            return;
        }
        // A socket disconnected for flooding keeps its transport for a moment (below);
        // what it sends meanwhile is counted as over its rate, not routed or answered.
        if conn.is_flooded() {
            self.metrics.error(ErrorKind::RateLimited);
            return;
        }
        let socket_id = conn.socket_id.as_str();
        self.metrics.client_event_received(&conn.namespace);
        tracing::debug!(socket_id, event = %event, "client event");
        if let Err(strikes) = conn.take_event_token() {
            self.metrics.error(ErrorKind::RateLimited);
            // Once: a token refilled during the grace period below must not start a
            // second count.
            if strikes >= self.settings.flood_disconnect_after && conn.mark_flooded() {
                self.metrics.error(ErrorKind::Flood);
                tracing::info!(socket_id, strikes, "socket disconnected for flooding");
                let _ = socket.emit(super::push::DISCONNECT_EVENT, &serde_json::json!({ "reason": "flooding" }));
                // Closing the transport drops what its writer has not sent yet: the refusals
                // answered above and the notice would be lost on a busy instance. The socket
                // gets a moment to send them; its further events are dropped unanswered.
                let socket = socket.clone();
                tokio::spawn(async move {
                    tokio::time::sleep(FLOOD_NOTICE_GRACE).await;
                    let _ = socket.disconnect();
                });
                return;
            }
            self.router.acks().answer(ack, AckReply::error("rate_limited", "too many events; slow down"));
            return;
        }
        if event == JOIN_EVENT || event == LEAVE_EVENT {
            self.client_room_request(socket, conn, event == JOIN_EVENT, &payload, ack);
            return;
        }
        // Charged before anything is built: an event over the budget is refused whole.
        let charge = match self.budget.charge(&conn.pending_bytes, payload.len() + event.len()) {
            Ok(charge) => charge,
            Err(over) => {
                self.metrics.error(ErrorKind::BackendOverloaded);
                let message = match over {
                    OverBudget::Socket => "this socket's earlier events still wait for the backend; retry later",
                    OverBudget::Total => "the backend is not keeping up; retry later",
                };
                self.router.acks().answer(ack, AckReply::error("backend_overloaded", message));
                return;
            }
        };
        let (seq, id) = self.router.next_event_id();
        let client_event = Arc::new(ClientEvent {
            id,
            socket_id: conn.socket_id.clone(),
            user_id: conn.user_id.clone(),
            namespace: conn.namespace.clone(),
            event,
            payload,
            wants_ack: ack.is_some(),
            received_at: super::now_wall(),
            charge,
        });
        // The router answers the callback: the backend's reply (from whichever instance
        // got it), a refusal below, or the timeout.
        let waiting = ack.is_some();
        if let Some(ack) = ack {
            self.router.await_ack(seq, AckWaiter::client(ack));
        }
        if let Err(refusal) = self.backplane.send_event(seq, client_event) {
            let reply = match refusal {
                EventRefusal::NoBackend => {
                    self.metrics.undeliverable_dropped.inc();
                    self.metrics.error(ErrorKind::NoBackend);
                    AckReply::error("no_backend", "no backend is subscribed to this event")
                }
                EventRefusal::Overloaded => {
                    self.metrics.error(ErrorKind::BackendOverloaded);
                    AckReply::error("backend_overloaded", "the backend is not keeping up; retry later")
                }
            };
            if waiting {
                self.router.fail_ack(seq, reply);
            }
        }
    }

    /// `bridge:join` / `bridge:leave` with a room name as first argument. A room matching
    /// `socketio.client_room_patterns` is granted; with `auth.backend.decide_joins`, a
    /// deciding backend is asked about any other (not internal) room, and a socket may
    /// leave any room that is not internal. A join is answered once pushes to the room made
    /// anywhere reach the socket.
    fn client_room_request(
        self: &Arc<Self>,
        socket: &Socket,
        conn: &Connection,
        join: bool,
        payload: &Payload,
        ack: Option<ClientAck>,
    ) {
        let refused = |code: &str, message: String| AckReply::error(code, message);
        let room = serde_json::from_str::<Vec<serde_json::Value>>(payload.args_json())
            .ok()
            .and_then(|args| args.into_iter().next())
            .and_then(|v| v.as_str().map(str::to_owned));
        let Some(room) = room else {
            let reply = refused("invalid_argument", "the first argument must be the room name".into());
            return self.router.acks().answer(ack, reply);
        };
        if let Err(message) = validate_name(&room) {
            return self.router.acks().answer(ack, refused("invalid_argument", format!("room {message}")));
        }
        let patterns = &self.settings.client_room_patterns;
        let granted = !patterns.is_empty() && any_matches(patterns, &room);
        let decided = self.settings.decide_joins;
        if is_internal_room(&room) || !(granted || decided) {
            self.metrics.error(ErrorKind::ForbiddenRoom);
            let reply = refused("forbidden_room", "this room cannot be joined or left by clients".into());
            return self.router.acks().answer(ack, reply);
        }
        let ok = AckReply::Payload(Payload::from_json_args(&[serde_json::json!({ "ok": true })]));
        if !join {
            socket.leave(room);
            return self.router.acks().answer(ack, ok);
        }
        let question = (!granted).then(|| JoinQuestion {
            socket_id: conn.socket_id.clone(),
            user_id: conn.user_id.clone(),
            namespace: conn.namespace.clone(),
            room: room.clone(),
            data_json: conn.data_json.clone(),
        });
        let (hub, socket) = (self.clone(), socket.clone());
        tokio::spawn(async move {
            if let Some(question) = question {
                let refusal = match hub.decide(Question::Join(question)).await {
                    Ok(Answer::Allow { .. }) => None,
                    Ok(Answer::Deny { code, message, .. }) => Some(AckReply::error(&code, message)),
                    Err(undecided) => Some(AckReply::error(undecided.code(), undecided.to_string())),
                };
                if let Some(reply) = refusal {
                    hub.metrics.error(ErrorKind::ForbiddenRoom);
                    return hub.router.acks().answer(ack, reply);
                }
            }
            socket.join(room.clone());
            hub.backplane.rooms_joined(socket.ns(), &[room]).await;
            hub.router.acks().answer(ack, ok);
        });
    }
}
