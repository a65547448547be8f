//! The backend side of the load generator: what a Go backend would do to each server.
//!
//! - socket-bridge: gRPC `Push` / `JoinRooms` over a few HTTP/2 channels, and one `Events`
//!   stream that answers every client event's ack.
//! - the Node and socketioxide peers: the original Node service's HTTP push endpoint
//!   (`POST .../push` with `{userId | roomId, event, payload}`) over a pool of keep-alive
//!   HTTP/1.1 connections.
//!
//! Every push carries one argument `{"t":<intended send time, ns>}` so the client can tell
//! the latency from the moment the backend meant to call.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::sync::{Mutex, mpsc, oneshot};
use tonic::transport::{Channel, Endpoint};

use crate::pb;
use crate::pb::bridge_service_client::BridgeServiceClient;

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Kind {
    Bridge,
    Sioxide,
    Node,
    /// The Node peer forwarding each client event to the backend over HTTP (the original
    /// design's event path); measured on the event round trip only.
    NodeFwd,
    /// The floor: pre-encoded frames, no Socket.IO logic.
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Bridge => "socket-bridge",
            Kind::Sioxide => "socketioxide",
            Kind::Node => "node",
            Kind::NodeFwd => "node-forward",
            Kind::Floor => "floor",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "bridge" | "socket-bridge" => Some(Kind::Bridge),
            "sioxide" | "socketioxide" => Some(Kind::Sioxide),
            "node" => Some(Kind::Node),
            "node-forward" | "nodefwd" => Some(Kind::NodeFwd),
            "floor" => Some(Kind::Floor),
            _ => None,
        }
    }

    pub fn is_node(self) -> bool {
        matches!(self, Kind::Node | Kind::NodeFwd)
    }
}

/// How a push reaches the server: gRPC `Push` (socket-bridge) or an HTTP POST.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
pub enum Door {
    #[default]
    Grpc,
    Rest,
}

pub enum Driver {
    /// gRPC clients, and a keep-alive pool for the REST push endpoint.
    Bridge {
        clients: Vec<BridgeServiceClient<Channel>>,
        next: AtomicU64,
        rest: HttpPool,
    },
    Http {
        pool: HttpPool,
        push_path: &'static str,
        join_path: &'static str,
    },
}

pub const EVENT: &str = "bench";

impl Driver {
    pub async fn connect(kind: Kind, http: SocketAddr, grpc: Option<SocketAddr>, pool: usize) -> anyhow::Result<Self> {
        match kind {
            Kind::Bridge => {
                let grpc = grpc.context("bridge needs a gRPC address")?;
                let mut clients = Vec::new();
                // A few HTTP/2 connections, as a backend's client pool would have.
                for _ in 0..4 {
                    let ch = Endpoint::from_shared(format!("http://{grpc}"))?
                        .tcp_nodelay(true)
                        .connect_timeout(Duration::from_secs(5))
                        .connect()
                        .await?;
                    clients.push(BridgeServiceClient::new(ch).max_decoding_message_size(8 << 20));
                }
                Ok(Driver::Bridge { clients, next: AtomicU64::new(0), rest: HttpPool::new(http, pool) })
            }
            Kind::Node | Kind::NodeFwd => Ok(Driver::Http {
                pool: HttpPool::new(http, pool),
                push_path: "/api/v1/push",
                join_path: "/api/v1/join",
            }),
            Kind::Sioxide | Kind::Floor => {
                Ok(Driver::Http { pool: HttpPool::new(http, pool), push_path: "/push", join_path: "/join" })
            }
        }
    }

    fn client(&self) -> Option<BridgeServiceClient<Channel>> {
        match self {
            Driver::Bridge { clients, next, .. } => {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize % clients.len();
                Some(clients[i].clone())
            }
            _ => None,
        }
    }

    pub async fn push_user(&self, user: u32, t_ns: u64, door: Door) -> anyhow::Result<()> {
        match self {
            Driver::Bridge { rest, .. } if door == Door::Rest => {
                let body = format!("{{\"userId\":\"u{user}\",\"event\":\"{EVENT}\",\"payload\":{{\"t\":{t_ns}}}}}");
                rest.post("/api/v1/push", body).await
            }
            Driver::Bridge { .. } => {
                let mut c = self.client().context("client")?;
                c.push(pb::PushRequest {
                    target: Some(pb::Target { kind: Some(pb::target::Kind::UserId(format!("u{user}"))) }),
                    event: EVENT.into(),
                    payload: Some(pb::Payload { args_json: format!("[{{\"t\":{t_ns}}}]"), attachments: vec![] }),
                    ..Default::default()
                })
                .await?;
                Ok(())
            }
            Driver::Http { pool, push_path, .. } => {
                let body = format!("{{\"userId\":\"u{user}\",\"event\":\"{EVENT}\",\"payload\":{{\"t\":{t_ns}}}}}");
                pool.post(push_path, body).await
            }
        }
    }

    pub async fn push_room(&self, room: &str, t_ns: u64) -> anyhow::Result<()> {
        match self {
            Driver::Bridge { .. } => {
                let mut c = self.client().context("client")?;
                c.push(pb::PushRequest {
                    target: Some(pb::Target { kind: Some(pb::target::Kind::Room(room.to_owned())) }),
                    event: EVENT.into(),
                    payload: Some(pb::Payload { args_json: format!("[{{\"t\":{t_ns}}}]"), attachments: vec![] }),
                    ..Default::default()
                })
                .await?;
                Ok(())
            }
            Driver::Http { pool, push_path, .. } => {
                let body = format!("{{\"roomId\":\"{room}\",\"event\":\"{EVENT}\",\"payload\":{{\"t\":{t_ns}}}}}");
                pool.post(push_path, body).await
            }
        }
    }

    /// Puts every connected socket into `room`.
    pub async fn join_all(&self, room: &str) -> anyhow::Result<()> {
        match self {
            Driver::Bridge { .. } => {
                let mut c = self.client().context("client")?;
                c.join_rooms(pb::JoinRoomsRequest {
                    target: Some(pb::Target { kind: Some(pb::target::Kind::Everyone(true)) }),
                    rooms: vec![room.to_owned()],
                    ..Default::default()
                })
                .await?;
                Ok(())
            }
            Driver::Http { pool, join_path, .. } => pool.post(join_path, format!("{{\"room\":\"{room}\"}}")).await,
        }
    }

    /// Asks the Node peer to collect garbage before an RSS reading (no-op elsewhere).
    pub async fn collect_garbage(&self) {
        if let Driver::Http { pool, push_path: "/api/v1/push", .. } = self {
            let _ = pool.post("/api/v1/gc", "{}".into()).await;
        }
    }

    /// Opens the `Events` stream (bridge only) and answers every client event's ack with
    /// `[{"ok":true}]`, like a backend handler would. Returns the number of acks sent.
    pub async fn start_event_backend(&self) -> anyhow::Result<Arc<AtomicU64>> {
        let answered = Arc::new(AtomicU64::new(0));
        let Some(mut client) = self.client() else { return Ok(answered) };
        let (tx, rx) = mpsc::channel::<pb::EventsRequest>(65536);
        tx.send(pb::EventsRequest {
            kind: Some(pb::events_request::Kind::Subscribe(pb::Subscribe {
                group: "bench".into(),
                event_patterns: vec![EVENT.into()],
                ..Default::default()
            })),
        })
        .await?;
        let mut inbound = client.events(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        let count = answered.clone();
        tokio::spawn(async move {
            while let Ok(Some(msg)) = inbound.message().await {
                if let Some(pb::events_response::Kind::ClientEvent(e)) = msg.kind
                    && e.wants_ack
                {
                    let ack = pb::EventsRequest {
                        kind: Some(pb::events_request::Kind::Ack(pb::Ack {
                            event_id: e.id,
                            result: Some(pb::ack::Result::Payload(pb::Payload {
                                args_json: "[{\"ok\":true}]".into(),
                                attachments: vec![],
                            })),
                        })),
                    };
                    if tx.send(ack).await.is_err() {
                        break;
                    }
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
        Ok(answered)
    }
}

type Job = (&'static str, String, oneshot::Sender<anyhow::Result<()>>);

/// A fixed number of keep-alive HTTP/1.1 connections taking requests from one queue, so
/// at most `size` requests are at the server at once.
pub struct HttpPool {
    tx: mpsc::UnboundedSender<Job>,
}

impl HttpPool {
    pub fn new(addr: SocketAddr, size: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for _ in 0..size {
            let rx = rx.clone();
            tokio::spawn(async move {
                let mut conn: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
                loop {
                    let job = { rx.lock().await.recv().await };
                    let Some((path, body, reply)) = job else { return };
                    let mut result = Err(anyhow::anyhow!("not sent"));
                    for _attempt in 0..2 {
                        if conn.as_ref().is_none_or(|c| c.is_closed()) {
                            conn = open_http(addr).await.ok();
                        }
                        let Some(c) = conn.as_mut() else { continue };
                        result = send(c, addr, path, body.clone()).await;
                        if result.is_ok() {
                            break;
                        }
                        conn = None;
                    }
                    let _ = reply.send(result);
                }
            });
        }
        Self { tx }
    }

    pub async fn post(&self, path: &'static str, body: String) -> anyhow::Result<()> {
        let (reply, rx) = oneshot::channel();
        self.tx.send((path, body, reply)).map_err(|_| anyhow::anyhow!("pool closed"))?;
        rx.await?
    }
}

async fn open_http(addr: SocketAddr) -> anyhow::Result<hyper::client::conn::http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(send)
}

async fn send(
    c: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    addr: SocketAddr,
    path: &str,
    body: String,
) -> anyhow::Result<()> {
    c.ready().await?;
    let req = hyper::Request::post(path)
        .header("host", addr.to_string())
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))?;
    let resp = c.send_request(req).await?;
    let status = resp.status();
    let _ = resp.into_body().collect().await?;
    if !status.is_success() {
        bail!("HTTP {status}");
    }
    Ok(())
}

/// The backend the forwarding Node peer calls: `POST /event` with the client event, answered
/// with the ack arguments `[{"ok":true}]` over keep-alive HTTP/1.1, as a Go backend's handler
/// would. Runs in the generator (like socket-bridge's `Events` stream backend). Returns the
/// number of events answered.
pub async fn start_http_event_backend(addr: SocketAddr) -> anyhow::Result<Arc<AtomicU64>> {
    use hyper::service::service_fn;
    let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?;
    let answered = Arc::new(AtomicU64::new(0));
    let count = answered.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { return };
            let _ = stream.set_nodelay(true);
            let count = count.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let count = count.clone();
                    async move {
                        // Read the whole event (a handler would decode it).
                        let _ = req.into_body().collect().await;
                        count.fetch_add(1, Ordering::Relaxed);
                        hyper::Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(b"[{\"ok\":true}]")))
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(answered)
}
