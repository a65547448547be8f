//! The "ceiling" peer: a minimal socketioxide 0.18 server that does what the benchmark
//! asks of socket-bridge and nothing more, on the same engine settings the bridge uses
//! (ws read buffer 1024 B, TCP_NODELAY, same ping timings) and with the same owned request
//! heads (socketioxide keeps each socket's request parts, which otherwise pin hyper's 8 KB
//! read buffer). What socket-bridge costs on top of its own Socket.IO layer, in CPU and in
//! memory per connection, is the difference between the two.
//!
//! - every socket joins `user:<auth.userId>` on connect;
//! - client event `bench` with an ack is answered at once with `{"ok":true}` (no backend hop);
//! - `POST /push` takes the original Node service's PushRequest
//!   `{userId | roomId, event, payload}` and emits `payload` (kept as raw JSON, one
//!   argument) to the user room or the room;
//! - `POST /join` `{room}` puts every connected socket into `room`.
//!
//! Usage: sioxide-peer --listen 127.0.0.1:PORT --ping-interval-ms N --ping-timeout-ms N

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::Deserialize;
use serde_json::value::RawValue;
use socketioxide::SocketIo;
use socketioxide::extract::{AckSender, SocketRef, TryData};

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PushRequest {
    user_id: Option<String>,
    room_id: Option<String>,
    event: String,
    payload: Box<RawValue>,
}

#[derive(Deserialize)]
struct JoinRequest {
    room: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Auth {
    user_id: Option<String>,
}

async fn push(State(io): State<SocketIo>, Json(req): Json<PushRequest>) -> Json<serde_json::Value> {
    let room = match (req.user_id, req.room_id) {
        (Some(u), _) => format!("user:{u}"),
        (None, Some(r)) => r,
        (None, None) => return Json(serde_json::json!({"error": "userId or roomId required"})),
    };
    let ok = io.to(room).emit(&req.event, &req.payload).await.is_ok();
    Json(serde_json::json!({ "success": ok }))
}

async fn join(State(io): State<SocketIo>, Json(req): Json<JoinRequest>) -> Json<serde_json::Value> {
    let n = io.sockets().len();
    let _ = io.join(req.room).await;
    Json(serde_json::json!({ "sockets": n }))
}

/// The request with owned copies of its URI and headers, as socket-bridge serves it, so
/// the parts socketioxide keeps for the socket's life do not hold hyper's read buffer.
fn owned_head(request: axum::extract::Request) -> axum::extract::Request {
    let (mut parts, body) = request.into_parts();
    let mut headers = axum::http::HeaderMap::with_capacity(parts.headers.len());
    for (name, value) in parts.headers.iter() {
        if let (Ok(n), Ok(v)) = (
            axum::http::HeaderName::from_bytes(name.as_str().as_bytes()),
            axum::http::HeaderValue::from_bytes(value.as_bytes()),
        ) {
            headers.append(n, v);
        }
    }
    parts.headers = headers;
    if let Ok(uri) = parts.uri.to_string().parse() {
        parts.uri = uri;
    }
    axum::extract::Request::from_parts(parts, body)
}

fn arg(name: &str, default: &str) -> String {
    let args: Vec<String> = std::env::args().collect();
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1).cloned()).unwrap_or_else(|| default.to_owned())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let listen: SocketAddr = arg("--listen", "127.0.0.1:3100").parse()?;
    let ping_interval = Duration::from_millis(arg("--ping-interval-ms", "25000").parse()?);
    let ping_timeout = Duration::from_millis(arg("--ping-timeout-ms", "20000").parse()?);
    let (layer, io) = SocketIo::builder()
        .ping_interval(ping_interval)
        .ping_timeout(ping_timeout)
        .ws_read_buffer_size(1024)
        .build_layer();
    io.ns("/", async |socket: SocketRef, TryData(auth): TryData<Auth>| {
        if let Ok(Auth { user_id: Some(user) }) = auth {
            socket.join(format!("user:{user}"));
        }
        socket.on("bench", async |ack: AckSender| {
            let _ = ack.send(&serde_json::json!({"ok": true}));
        });
    });
    let app = axum::Router::new()
        .route("/push", post(push))
        .route("/join", post(join))
        .route("/health", get(|| async { "ok" }))
        .with_state(io)
        .layer(layer)
        .layer(tower::util::MapRequestLayer::new(owned_head));
    // TCP_NODELAY on every connection, as socket-bridge and Node's `ws` do: without it
    // Nagle coalesces small frames under fan-out (cheaper per message, but a push can wait
    // for the client's delayed ACK).
    let listener = tokio::net::TcpListener::bind(listen).await?.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    axum::serve(listener, app).await?;
    Ok(())
}
