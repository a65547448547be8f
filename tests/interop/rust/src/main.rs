//! The interop scenario (see tests/interop/scenario.mjs) with the stock Rust client
//! rust_socketio (async). Settings come from the environment (INTEROP_URL,
//! INTEROP_TRANSPORT, INTEROP_TOKEN, INTEROP_TOKEN_BYE, INTEROP_BAD_TOKEN, INTEROP_WAIT_MS);
//! every check prints one JSON line {"check", "observed"} or {"check", "error"}.
//!
//! What the client's API hands over is reported as it is, with one reading: an ack's
//! arguments arrive as one JSON array (`Payload::Text(vec![[...]])`), which is unwrapped.

use std::time::Duration;

use futures_util::FutureExt;
use rust_socketio::asynchronous::{Client, ClientBuilder};
use rust_socketio::{Event, Payload, TransportType};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio::time::Instant;

const TEXT: &str = "héllo ✓";

/// What a socket received, in order: (name, arguments as JSON).
type Item = (String, Value);

struct Inbox {
    rx: mpsc::UnboundedReceiver<Item>,
    wait: Duration,
}

impl Inbox {
    async fn next(&mut self, name: &str) -> Result<Value, String> {
        let deadline = Instant::now() + self.wait;
        let mut seen = Vec::new();
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some((n, args))) if n == name => return Ok(args),
                Ok(Some((n, args))) if n == "error" => seen.push(format!("error {args}")),
                Ok(Some((n, _))) => seen.push(n),
                _ => return Err(format!("no {name} within {} ms; got {seen:?}", self.wait.as_millis())),
            }
        }
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set"))
}

/// Byte i is i mod 256: every value, the polling separator 0x1e included.
fn bytes(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

fn binary(b: &[u8]) -> Value {
    let digest: String = Sha256::digest(b).iter().map(|x| format!("{x:02x}")).collect();
    json!({ "$binary": format!("sha256:{digest}"), "length": b.len() })
}

fn args(payload: Payload) -> Value {
    match payload {
        Payload::Binary(b) => json!([binary(&b)]),
        Payload::Text(values) => Value::Array(values),
        #[allow(deprecated)]
        Payload::String(s) => json!([s]),
    }
}

fn report(check: &str, result: Result<Value, String>) {
    let line = match result {
        Ok(observed) => json!({ "check": check, "observed": observed }),
        Err(error) => json!({ "check": check, "error": error }),
    };
    println!("{line}");
}

async fn connect(auth: Value, wait: Duration) -> Result<(Client, Inbox), String> {
    let (tx, rx) = mpsc::unbounded_channel::<Item>();
    let transport = match env("INTEROP_TRANSPORT").as_str() {
        "websocket" => TransportType::Websocket,
        "polling" => TransportType::Polling,
        _ => TransportType::Any,
    };
    let (any, connected, closed, failed) = (tx.clone(), tx.clone(), tx.clone(), tx);
    let client = ClientBuilder::new(env("INTEROP_URL"))
        .transport_type(transport)
        .reconnect(false)
        .auth(auth)
        .on_any(move |event, payload, _| {
            let tx = any.clone();
            async move {
                tx.send((event.to_string(), args(payload))).ok();
            }
            .boxed()
        })
        .on(Event::Connect, move |_, _| {
            let tx = connected.clone();
            async move {
                tx.send(("connect".into(), json!([]))).ok();
            }
            .boxed()
        })
        .on(Event::Close, move |_, _| {
            let tx = closed.clone();
            async move {
                tx.send(("close".into(), json!([]))).ok();
            }
            .boxed()
        })
        .on(Event::Error, move |payload, _| {
            let tx = failed.clone();
            async move {
                tx.send(("error".into(), args(payload))).ok();
            }
            .boxed()
        })
        .connect()
        .await
        .map_err(|e| format!("connect failed: {e}"))?;
    Ok((client, Inbox { rx, wait }))
}

/// The arguments every payload kind sends (the same in every client of the suite). The
/// client's API sends either JSON values or one binary, so the mixed kind cannot be sent.
fn payload(kind: &str) -> Result<Payload, String> {
    match kind {
        "text" => Ok(Payload::Text(vec![json!(TEXT), json!({"n": 42, "list": [1, "two", null, true]})])),
        "binary" => Ok(Payload::Binary(bytes(1000).into())),
        "binary_large" => Ok(Payload::Binary(bytes(200_000).into())),
        _ => Err("the client's API cannot send binary and other arguments in one event".into()),
    }
}

/// Connection attempts that never connected (the check "connect_retries").
static FAILED_CONNECTS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A socket connected with `auth`: up to three attempts, each waiting for "connect".
async fn connect_retrying(auth: Value, wait: Duration) -> Result<(Client, Inbox), String> {
    let mut attempt = 0;
    loop {
        let result = async {
            let (client, mut inbox) = connect(auth.clone(), wait).await?;
            inbox.next("connect").await?;
            Ok::<_, String>((client, inbox))
        }
        .await;
        match result {
            Ok(pair) => return Ok(pair),
            Err(e) => {
                FAILED_CONNECTS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                attempt += 1;
                if attempt == 3 {
                    return Err(e);
                }
            }
        }
    }
}

/// The main user's socket and what it received.
struct Session {
    client: Client,
    inbox: Inbox,
}

/// The main user's socket, connected; with `auth`, the arguments of its "auth" event too.
async fn open_main(wait: Duration, auth: bool) -> Result<(Session, Value), String> {
    let credentials = json!({ "token": env("INTEROP_TOKEN"), "locale": "fr", "note": "ünïcödé ✓" });
    let (client, mut inbox) = connect_retrying(credentials, wait).await?;
    let first = if auth { inbox.next("auth").await? } else { Value::Null };
    Ok((Session { client, inbox }, first))
}

#[tokio::main]
async fn main() {
    let wait = Duration::from_millis(env("INTEROP_WAIT_MS").parse().expect("INTEROP_WAIT_MS"));
    let mut main = match open_main(wait, true).await {
        Ok((session, first)) => {
            report("connect_auth", Ok(first));
            session
        }
        Err(e) => {
            report("connect_auth", Err(e));
            return;
        }
    };
    // Each check runs on a new socket, so that a client bug that breaks a session (or
    // garbles it) shows in its own check only.
    macro_rules! check {
        ($name:expr, $body:expr) => {{
            main.client.disconnect().await.ok();
            match open_main(wait, false).await {
                Ok((fresh, _)) => {
                    main = fresh;
                    let result: Result<Value, String> = $body.await;
                    report(&$name, result);
                }
                Err(e) => report(&$name, Err(format!("connect: {e}"))),
            }
        }};
    }
    for kind in ["text", "binary", "binary_mixed"] {
        check!(format!("push_{kind}"), async {
            main.client.emit(format!("push-me:{kind}"), Payload::Text(vec![])).await.map_err(|e| e.to_string())?;
            main.inbox.next(&format!("pushed:{kind}")).await
        });
    }
    for kind in ["text", "binary", "binary_mixed", "binary_large"] {
        check!(format!("emit_{kind}"), async {
            main.client.emit(format!("echo:{kind}"), payload(kind)?).await.map_err(|e| e.to_string())?;
            main.inbox.next(&format!("echo-back:{kind}")).await
        });
    }
    let (ack_tx, ack_rx) = mpsc::unbounded_channel::<Item>();
    let mut acks = Inbox { rx: ack_rx, wait };
    for kind in ["text", "binary", "binary_mixed"] {
        check!(format!("ack_{kind}"), async {
            let tx = ack_tx.clone();
            let name = format!("ack:{kind}");
            main.client
                .emit_with_ack(format!("ask:{kind}"), payload(kind)?, wait, move |reply, _| {
                    let (tx, name) = (tx.clone(), name.clone());
                    async move {
                        let reply = match args(reply) {
                            Value::Array(mut v) if v.len() == 1 && v[0].is_array() => v.remove(0),
                            other => other,
                        };
                        tx.send((name, reply)).ok();
                    }
                    .boxed()
                })
                .await
                .map_err(|e| e.to_string())?;
            acks.next(&format!("ack:{kind}")).await
        });
    }
    check!("server_disconnect", async {
        main.client.emit("disconnect-me", Payload::Text(vec![])).await.map_err(|e| e.to_string())?;
        let notice = main.inbox.next("bridge:disconnect").await?;
        main.inbox.next("close").await?;
        Ok(json!({ "notice": notice, "reason": "close" }))
    });
    main.client.disconnect().await.ok();

    let r = async {
        let (bye, mut bye_inbox) = connect_retrying(json!({ "token": env("INTEROP_TOKEN_BYE") }), wait).await?;
        bye.disconnect().await.map_err(|e| e.to_string())?;
        bye_inbox.next("close").await?;
        Ok(json!({ "reason": "close" }))
    }
    .await;
    report("client_disconnect", r);

    let r = async {
        let (bad, mut bad_inbox) = connect(json!({ "token": env("INTEROP_BAD_TOKEN") }), wait).await?;
        let error = bad_inbox.next("error").await?;
        bad.disconnect().await.ok();
        // The client hands the CONNECT_ERROR packet over as text after a fixed prefix.
        let text = error[0].as_str().unwrap_or_default();
        let data = text.strip_prefix("Received an ConnectError frame: ").ok_or(format!("unexpected error {text:?}"))?;
        let data: Value = serde_json::from_str(data).map_err(|e| format!("{e}: {data}"))?;
        Ok(json!({ "message": data["message"] }))
    }
    .await;
    report("connect_refused", r);
    report("connect_retries", Ok(json!(FAILED_CONNECTS.load(std::sync::atomic::Ordering::Relaxed))));
}
