//! The Socket.IO door: builds the socketioxide service from config and wires its
//! callbacks to the hub. Each handler extracts what it needs, calls the hub, and answers.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::ConnectInfo;
use serde_json::value::RawValue;
use socketioxide::extract::{SocketRef, TryData};
use socketioxide::handler::{ConnectHandler, MessageHandler, Value};
use socketioxide::layer::SocketIoLayer;
use socketioxide::socket::{DisconnectReason, Socket};
use socketioxide::{ParserConfig, SocketIo, TransportType};

use crate::config::Config;
use crate::http::sessions::SessionTicket;
use crate::hub::payload::{MAX_NESTING_DEPTH, nesting_depth};
use crate::hub::registry::{Connection, Handshake};
use crate::hub::{ConnectContext, ConnectRefusal, Hub, Io, MAX_NAME_LEN, Payload};
use crate::telemetry::metrics::ErrorKind;
use crate::telemetry::summary::Summary;

/// Builds the Socket.IO engine with the configured timings and limits. It serves this
/// instance's sockets only: the hub's backplane reaches other instances.
pub fn build(config: &Config) -> (SocketIoLayer, Io) {
    let s = &config.socketio;
    SocketIo::builder()
        .ping_interval(config.ping_interval())
        .ping_timeout(config.ping_timeout())
        .connect_timeout(config.connect_timeout())
        .ack_timeout(config.ack_timeout())
        .max_payload(s.max_payload_bytes)
        .max_buffer_size(s.max_buffer_size)
        // max_payload covers polling only; websocket messages have their own limits.
        .ws_max_message_size(usize::try_from(s.max_payload_bytes).unwrap_or(usize::MAX))
        .ws_max_frame_size(usize::try_from(s.max_payload_bytes).unwrap_or(usize::MAX))
        // Small read buffers: most client messages are tiny, and each idle websocket keeps
        // its read buffer for life, zero-filled and resident (4 KB by default). 1 KB instead
        // measured 3 to 4 KB less RSS per idle connection at 10,000 connections.
        .ws_read_buffer_size(1024)
        .with_parser(
            ParserConfig::common()
                .max_incoming_binaries(s.max_attachments)
                .max_incoming_binary_buf_size(usize::try_from(s.max_payload_bytes).unwrap_or(usize::MAX)),
        )
        .build_layer()
}

/// Registers every configured namespace with authentication and the hub's handlers.
pub fn register_namespaces(io: &Io, hub: &Arc<Hub>, namespaces: &[String], summary_interval: std::time::Duration) {
    let refusals = Summary::new(summary_interval, |r| {
        tracing::warn!(
            malformed = r.count("malformed"),
            invalid = r.count("invalid"),
            over_rate = r.count("over_rate"),
            interval_s = r.interval().as_secs(),
            "client events refused (malformed, over a limit, or refused events sent over the socket's rate)"
        );
    });
    for ns in namespaces {
        let on_connect = {
            let hub = hub.clone();
            move |socket: SocketRef| {
                let hub = hub.clone();
                async move { hub.after_connect(&socket) }
            }
        };
        let admit = {
            let (hub, refusals) = (hub.clone(), refusals.clone());
            move |socket: SocketRef, TryData(auth): TryData<serde_json::Value>| {
                let (hub, refusals) = (hub.clone(), refusals.clone());
                async move { admit(&hub, socket, auth.unwrap_or(serde_json::Value::Null), refusals).await }
            }
        };
        io.ns(ns.clone(), on_connect.with(admit));
    }
}

/// Connect middleware: authenticates, then registers the socket and its handlers. This
/// runs before socketioxide sends the client its CONNECT packet (the connect handler runs
/// after, in its own task), so no event the client sends once connected can arrive before
/// its handler is in place. Refusals become the client's `connect_error` with the reason.
async fn admit(
    hub: &Arc<Hub>,
    socket: SocketRef,
    auth: serde_json::Value,
    refusals: Summary,
) -> Result<(), ConnectRefusal> {
    let parts = socket.req_parts();
    // From now on the session answers only requests from the address that opened it:
    // its id (the socket id) is about to reach the backend, which may show it to others.
    if let Some(ticket) = parts.extensions.get::<SessionTicket>() {
        ticket.bind(&socket.id.to_string());
    }
    let header = |name: &str| {
        parts.headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().chars().take(512).collect::<String>()
    };
    let remote_address = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0.to_string()).unwrap_or_default();
    let transport = match socket.transport_type() {
        TransportType::Websocket => "websocket",
        TransportType::Polling => "polling",
    };
    let context = ConnectContext {
        socket_id: socket.id.to_string(),
        namespace: socket.ns().to_owned(),
        // Whole values (a cookie header can be long), bounded by the HTTP layer's limits.
        headers: hub
            .decider_headers()
            .filter_map(|name| {
                let value = parts.headers.get(name)?.to_str().ok()?;
                Some((name.to_owned(), value.to_owned()))
            })
            .collect(),
        client_address: remote_address.clone(),
        transport: transport.to_owned(),
    };
    let identity = hub.authorize(&auth, context).await?;
    let handshake = Handshake {
        user_agent: header("user-agent"),
        origin: header("origin"),
        remote_address,
        auth_json: hub.redact_auth(&auth),
        transport: transport.to_owned(),
    };
    let conn = hub.on_connect(&socket, identity, handshake).await;
    socket.on_fallback(EventForwarder { hub: hub.clone(), conn, refusals });
    let on_disconnect = {
        let hub = hub.clone();
        move |socket: SocketRef, reason: DisconnectReason| {
            let hub = hub.clone();
            async move { hub.on_disconnect(socket.ns(), &socket.id.to_string(), reason_text(reason)) }
        }
    };
    socket.on_disconnect(on_disconnect);
    Ok(())
}

/// Receives every client event. Implemented as a `MessageHandler` (rather than an async
/// closure, which socketioxide spawns as its own task) so that routing happens in the
/// socket's read loop and events keep the order the client sent them in. It holds the
/// socket's registered connection, so no event looks it up.
#[derive(Clone)]
struct EventForwarder {
    hub: Arc<Hub>,
    conn: Arc<Connection>,
    /// Refused events, logged as one line per interval (a client can send them at will).
    refusals: Summary,
}

/// Marker for the `MessageHandler` impl above.
struct Forwarded;

impl MessageHandler<socketioxide::adapter::LocalAdapter, Forwarded> for EventForwarder {
    fn call(&self, socket: Arc<Socket>, value: Value, ack_id: Option<i64>) {
        let ack = ack_id.map(|id| crate::hub::ClientAck::new(socket.clone(), id));
        let socket = SocketRef::from(socket);
        let Value::Str(text, attachments) = value else {
            // The text parser never hands over anything else.
            return self.refuse(&socket, ack, Refused::Malformed("not a text packet"));
        };
        let Some((event, args)) = split_event(text.as_str()) else {
            // socketioxide read the event name from the start of the packet; what follows
            // is not a JSON array (trailing garbage, an unterminated value).
            return self.refuse(&socket, ack, Refused::Malformed("the event's data is not one JSON array"));
        };
        if event.chars().count() > MAX_NAME_LEN {
            return self.refuse(
                &socket,
                ack,
                Refused::Invalid {
                    code: "invalid_event",
                    message: format!(
                        "event name is {} characters, over the limit of {MAX_NAME_LEN}",
                        event.chars().count()
                    ),
                },
            );
        }
        if let Some(depth) = args.iter().map(|a| nesting_depth(a.get())).max()
            && depth > MAX_NESTING_DEPTH
        {
            return self.refuse(
                &socket,
                ack,
                Refused::Invalid {
                    code: "invalid_payload",
                    message: format!("arguments nest {depth} levels deep, over the limit of {MAX_NESTING_DEPTH}"),
                },
            );
        }
        let payload = Payload::from_client(&args, attachments.map(Vec::from).unwrap_or_default());
        // Placeholders must name attachments that arrived (and every attachment must be
        // named); a packet that lies about them is malformed, as the reference server
        // treats it: the connection is closed. (Without attachments there is nothing to
        // check: the arguments were parsed above, and placeholders then stay plain JSON.)
        if !payload.attachments().is_empty()
            && let Err(e) = payload.wire_args()
        {
            tracing::info!(socket_id = %socket.id, error = %e, "malformed client event; closing the connection");
            socket.disconnect().ok();
            return;
        }
        self.hub.on_client_event(&socket, &self.conn, event, payload, ack);
    }
}

/// Why a client event was not forwarded.
enum Refused {
    /// The packet breaks the protocol: the socket is disconnected (the reference server
    /// closes the whole connection; socketioxide lets a handler only leave the namespace).
    Malformed(&'static str),
    /// A well-formed event over a limit: refused with an error to its callback, if any.
    Invalid { code: &'static str, message: String },
}

impl EventForwarder {
    /// Refuses a client event visibly: counted, logged with the reason (one summary line
    /// per interval, the details at debug level), and either the callback gets the error
    /// or the socket is disconnected. Refused events use up the socket's event rate like
    /// any other; a socket that sends them faster than that is disconnected.
    fn refuse(&self, socket: &SocketRef, ack: Option<crate::hub::ClientAck>, refused: Refused) {
        self.hub.metrics().error(ErrorKind::InvalidEvent);
        let over_rate = self.conn.take_event_token().is_err();
        match refused {
            Refused::Malformed(reason) => {
                self.refusals.add("malformed", 1, None);
                tracing::debug!(socket_id = %socket.id, reason, "malformed client event; disconnecting the socket");
                socket.clone().disconnect().ok();
            }
            Refused::Invalid { .. } if over_rate => {
                self.refusals.add("over_rate", 1, None);
                self.hub.metrics().error(ErrorKind::Flood);
                tracing::debug!(socket_id = %socket.id, "refused events over the socket's rate; disconnecting the socket");
                socket.clone().disconnect().ok();
            }
            Refused::Invalid { code, message } => {
                self.refusals.add("invalid", 1, None);
                tracing::debug!(socket_id = %socket.id, code, reason = %message, "client event refused");
                self.hub.router().acks().answer(ack, crate::hub::router::AckReply::error(code, message));
            }
        }
    }
}

/// `[event, ...args]` → the event name and each argument as the raw JSON the client sent.
/// None for anything else (socketioxide has already checked the packet's framing).
pub fn split_event(text: &str) -> Option<(String, Vec<&RawValue>)> {
    let mut items = serde_json::from_str::<Vec<&RawValue>>(text).ok()?;
    if items.is_empty() {
        return None;
    }
    let event = serde_json::from_str::<String>(items.remove(0).get()).ok()?;
    Some((event, items))
}

/// The reason strings the reference Socket.IO server uses, so backends see familiar text.
fn reason_text(reason: DisconnectReason) -> &'static str {
    match reason {
        DisconnectReason::TransportClose => "transport close",
        DisconnectReason::MultipleHttpPollingError | DisconnectReason::TransportError => "transport error",
        DisconnectReason::PacketParsingError => "parse error",
        DisconnectReason::HeartbeatTimeout => "ping timeout",
        DisconnectReason::ClientNSDisconnect => "client namespace disconnect",
        DisconnectReason::ServerNSDisconnect => "server namespace disconnect",
        DisconnectReason::ClosingServer => "server shutting down",
    }
}
