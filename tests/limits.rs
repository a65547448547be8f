//! What clients and backends can make the bridge hold, and what it tells them when it
//! refuses: bytes of client events on their way to backends, pushes a slow client cannot
//! take, the handshake sent to backends, and sockets whose token expired. Against the real
//! binary, with figures printed.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;
use tokio_tungstenite::tungstenite::Message;

const WS: Option<&[&str]> = Some(&["websocket"]);

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

const MIB: u64 = 1 << 20;

/// Ten anonymous sockets send 1 MB events as fast as the bridge takes them, first with no
/// backend subscribed, then with a backend that subscribes and never reads. Memory stays
/// within the configured byte caps, every refused event is answered with its error code,
/// and a well-behaved client keeps getting its pushes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn client_events_cannot_hold_more_memory_than_the_byte_caps() {
    const TOTAL_CAP: u64 = 64 * MIB;
    const MARGIN: u64 = 96 * MIB;
    let bridge = Bridge::start(&settings(&[
        &format!("events.max_bytes={TOTAL_CAP}"),
        "events.undelivered_max_bytes=33554432",
        "events.stream_queue_max_bytes=16777216",
        "socketio.events_per_second=100000",
        "socketio.event_burst=100000",
        "socketio.flood_disconnect_after=1000000000",
    ]))
    .await;
    let mut grpc = bridge.client().await;
    let mut d = Driver::spawn().await;
    d.connect("good", &bridge.url(), json!({"userId": "good"}), WS).await;
    // The good client's usual latency, before any attack.
    let mut usual = Vec::new();
    for i in 0..20u32 {
        let t0 = Instant::now();
        grpc.push(push_request(T::UserId("good".into()), "warm", &format!("[{i}]"))).await.expect("push");
        d.event("good", "warm").await;
        usual.push(t0.elapsed());
    }
    usual.sort();
    let mut attackers = Vec::new();
    for _ in 0..10 {
        attackers.push(raw_socket(&bridge, json!({})).await);
    }
    let baseline = bridge.rss();
    let big = format!("42{{n}}[\"big\",\"{}\"]", "x".repeat(1_000_000 - 16));
    let codes: Arc<std::sync::Mutex<BTreeMap<String, u64>>> = Arc::default();
    let sent = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(tokio::sync::Notify::new());
    let mut tasks = Vec::new();
    for ws in attackers {
        let (mut write, mut read) = ws.split();
        let (codes, sent, big, stop) = (codes.clone(), sent.clone(), big.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let reader = async {
                while let Some(Ok(m)) = read.next().await {
                    let text = m.to_text().unwrap_or_default();
                    if let Some(rest) = text.strip_prefix("43") {
                        let args: Value = rest.trim_start_matches(char::is_numeric).parse().unwrap_or(Value::Null);
                        let code = args[0]["error"]["code"].as_str().unwrap_or("answered").to_owned();
                        *codes.lock().unwrap().entry(code).or_default() += 1;
                    }
                }
            };
            let writer = async {
                for n in 1u64.. {
                    let frame = big.replacen("{n}", &n.to_string(), 1);
                    if write.send(Message::text(frame)).await.is_err() {
                        break;
                    }
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            };
            tokio::select! {
                _ = reader => {}
                _ = writer => {}
                _ = stop.notified() => {}
            }
        }));
    }
    // The well-behaved client's pushes, one every 100 ms, timed from push to arrival.
    let mut latencies = Vec::new();
    let mut peak = baseline;
    let mut backend = None;
    let started = Instant::now();
    for i in 0..300u32 {
        if i == 200 {
            // Phase two: a backend subscribes and never reads its stream.
            let mut c = bridge.client().await;
            backend = Some(Backend::subscribe(&mut c, subscribe_all("idle", false)).await);
        }
        let t0 = Instant::now();
        let push = push_request(T::UserId("good".into()), "tick", &format!("[{i}]"));
        let r = grpc.push(push).await.expect("push").into_inner();
        assert_eq!(r.sockets_reached, 1, "push {i} reached the good client: {r:?}");
        d.event("good", "tick").await;
        latencies.push(t0.elapsed());
        peak = peak.max(bridge.rss());
        tokio::time::sleep(Duration::from_millis(100).saturating_sub(t0.elapsed())).await;
    }
    let elapsed = started.elapsed();
    for _ in 0..tasks.len() {
        stop.notify_waiters();
    }
    for t in tasks {
        let _ = t.await;
    }
    drop(backend);
    latencies.sort();
    let pct = |p: f64| latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)];
    let codes = codes.lock().unwrap().clone();
    let sent = sent.load(Ordering::Relaxed);
    eprintln!(
        "{sent} events of 1 MB in {:.1} s from 10 sockets; answers: {codes:?}; RSS baseline {} MiB, peak {} MiB \
         (bound {} MiB); good client's pushes before the attack: p50 {:?}, max {:?}; during it: p50 {:?}, \
         p99 {:?}, max {:?}",
        elapsed.as_secs_f64(),
        baseline / MIB,
        peak / MIB,
        (baseline + TOTAL_CAP + MARGIN) / MIB,
        usual[usual.len() / 2],
        usual.last().unwrap(),
        pct(0.5),
        pct(0.99),
        latencies.last().unwrap()
    );
    assert!(sent > 200, "the attack sent too little to test anything: {sent}");
    assert!(
        peak <= baseline + TOTAL_CAP + MARGIN,
        "RSS peaked at {} MiB, over baseline {} MiB + events.max_bytes {} MiB + margin {} MiB",
        peak / MIB,
        baseline / MIB,
        TOTAL_CAP / MIB,
        MARGIN / MIB
    );
    let refused: u64 = codes.iter().filter(|(c, _)| *c != "answered").map(|(_, n)| *n).sum();
    assert!(refused > 0, "nothing was refused: {codes:?}");
    for code in codes.keys() {
        // no_backend: nobody subscribed and the undelivered buffer is full; backend_overloaded:
        // a byte or count limit; ack_timeout: taken by the backend that never reads.
        let documented = ["no_backend", "backend_overloaded", "ack_timeout"];
        assert!(documented.contains(&code.as_str()), "undocumented answer {code:?}");
    }
    assert!(bridge.metric(r#"socket_bridge_errors_total{kind="backend_overloaded"}"#).await > 0.0);
}

/// Pushes to a slow client one after another: each is either handed to the socket or
/// reported not handed to it (`buffer_full`), the counts add up exactly, and the client
/// receives exactly those reported reached. With a ttl, the pushes it could not take are
/// kept and arrive, in order, once it reads again, or on its next connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_gets_every_push_or_its_report_says_why() {
    let bridge = Bridge::start(&settings(&[
        "offline.max_messages_per_user=2000",
        "offline.max_bytes_per_user=134217728",
        "offline.max_bytes=268435456",
    ]))
    .await;
    let grpc = bridge.client().await;
    let pad = "p".repeat(32 * 1024);
    let burst = |user: &str, ttl: bool| {
        let (mut grpc, user, pad) = (grpc.clone(), user.to_owned(), pad.clone());
        async move {
            let mut reached = BTreeSet::new();
            let mut not = BTreeMap::new();
            for i in 0..1000u32 {
                let mut push = push_request(T::UserId(user.clone()), "burst", &format!("[{i},\"{pad}\"]"));
                if ttl {
                    push.options = Some(proto::PushOptions {
                        ttl: Some(prost_types::Duration { seconds: 60, nanos: 0 }),
                        ..Default::default()
                    });
                }
                let r = grpc.push(push).await.expect("push").into_inner();
                assert_eq!(
                    r.sockets_reached + r.sockets_not_reached,
                    1,
                    "push {i} to {user}'s one socket is reached or reported: {r:?}"
                );
                assert_eq!(r.not_reached.len() as u32, r.sockets_not_reached, "named: {r:?}");
                if r.sockets_reached == 1 {
                    reached.insert(i);
                }
                for n in r.not_reached {
                    assert_eq!(n.reason, "buffer_full", "push {i}: {n:?}");
                    assert_eq!(n.kept, ttl, "kept exactly when it has a ttl: push {i}: {n:?}");
                    not.insert(i, n);
                }
            }
            (reached, not)
        }
    };
    /// Reads `burst` events until `want` of them arrived (or nothing more comes).
    async fn read_burst(ws: &mut Ws, want: usize) -> Vec<u32> {
        let mut got = Vec::new();
        while got.len() < want {
            let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(10), ws.next()).await else { break };
            let text = m.to_text().unwrap_or_default();
            if text == "2" {
                ws.send(Message::text("3".to_string())).await.unwrap();
            } else if let Some(args) = text.strip_prefix("42") {
                let v: Value = args.parse().unwrap();
                if v[0] == "burst" {
                    got.push(v[1].as_u64().unwrap() as u32);
                }
            }
        }
        got
    }

    // Without a ttl: what was not reached is reported and counted, never delivered.
    let mut ws = raw_socket(&bridge, json!({"userId": "slow"})).await;
    let (reached, not) = burst("slow", false).await;
    let dropped = bridge.metric(r#"socket_bridge_dropped_messages_total{reason="socket_buffer_full"}"#).await;
    eprintln!("no ttl: {} of 1000 reached, {} reported buffer_full (metric {dropped})", reached.len(), not.len());
    assert!(!not.is_empty(), "the client never fell behind; nothing was tested");
    assert_eq!(dropped as usize, not.len(), "every push not reached is counted");
    let got = read_burst(&mut ws, reached.len()).await;
    assert_eq!(got.iter().copied().collect::<BTreeSet<_>>(), reached, "exactly the reached pushes arrive");
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order");
    drop(ws);

    // With a ttl: kept, and delivered in order once the client reads again.
    let mut ws = raw_socket(&bridge, json!({"userId": "slow2"})).await;
    let (reached, kept) = burst("slow2", true).await;
    eprintln!("ttl, client drains: {} reached at once, {} kept", reached.len(), kept.len());
    assert!(!kept.is_empty());
    let got = read_burst(&mut ws, 1000).await;
    assert_eq!(got, (0..1000).collect::<Vec<_>>(), "all 1000, in order, each once");
    drop(ws);

    // With a ttl, and the client goes away without reading: kept for its next connect.
    let ws = raw_socket(&bridge, json!({"userId": "slow3"})).await;
    let (reached, kept) = burst("slow3", true).await;
    drop(ws);
    eventually_gone(&bridge, "slow3").await;
    let mut ws = raw_socket(&bridge, json!({"userId": "slow3"})).await;
    let again = read_burst(&mut ws, kept.len()).await;
    eprintln!(
        "ttl, client reconnects: {} reached the dead connection, {} kept, {} redelivered",
        reached.len(),
        kept.len(),
        again.len()
    );
    assert_eq!(again, kept.keys().copied().collect::<Vec<_>>(), "the kept pushes, in order, on the next connect");
    assert!(read_burst(&mut ws, 1).await.is_empty(), "nothing more");
}

/// Waits until the bridge no longer lists a user's sockets.
async fn eventually_gone(bridge: &Bridge, user: &str) {
    let mut grpc = bridge.client().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let list = proto::ListConnectionsRequest {
            filter: Some(proto::list_connections_request::Filter::UserId(user.into())),
            ..Default::default()
        };
        if grpc.list_connections(list).await.expect("list").into_inner().connections.is_empty() {
            return;
        }
        assert!(Instant::now() < deadline, "{user}'s socket still listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The handshake (with the client's auth object) reaches the backend once, in
/// SocketConnected, not with every event; an auth object over the limit is refused at
/// connect with a message that says so.
#[tokio::test]
async fn the_handshake_reaches_the_backend_once_and_its_size_is_capped() {
    let bridge = Bridge::start(&settings(&["socketio.max_auth_bytes=8192"])).await;
    let mut grpc = bridge.client().await;
    let mut backend = Backend::subscribe(&mut grpc, subscribe_all("g", true)).await;
    let mut d = Driver::spawn().await;
    let filler = "f".repeat(6000);
    d.connect("big", &bridge.url(), json!({"userId": "hank", "profile": filler}), WS).await;
    let connected = loop {
        if let proto::events_response::Kind::SocketConnected(c) = backend.next().await {
            break c;
        }
    };
    assert!(connected.handshake.as_ref().is_some_and(|h| h.auth_json.contains(&filler)), "the handshake, once");
    for i in 0..50 {
        d.send(json!({"cmd": "emit", "id": "big", "event": "small", "args": [i]})).await;
    }
    let mut bytes = 0;
    for _ in 0..50 {
        let e = backend.next_event().await;
        bytes += prost::Message::encoded_len(&e);
    }
    eprintln!("50 events of a client with a 6 KB auth object: {bytes} bytes to the backend");
    assert!(bytes < 50 * 200, "events do not carry the handshake: {bytes} bytes for 50 small events");
    let too_big = "t".repeat(9000);
    let message = d.connect_error("huge", &bridge.url(), json!({"userId": "ivy", "profile": too_big})).await;
    assert!(message.contains("auth payload is") && message.contains("over the limit of 8192"), "{message}");
    d.exit().await;
}

/// With `auth.disconnect_on_token_expiry`, a socket whose token expires is told why and
/// disconnected; without it, it stays.
#[tokio::test]
async fn a_socket_whose_token_expires_is_disconnected_when_configured() {
    let short_token = |user: &str| {
        let exp = jsonwebtoken::get_current_timestamp() + 2;
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &json!({ "sub": user, "exp": exp }),
            &jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        )
        .expect("token")
    };
    let mut on = jwt_args();
    on.extend(settings(&["auth.disconnect_on_token_expiry=true"]));
    let strict = Bridge::start(&on).await;
    let lenient = Bridge::start(&jwt_args()).await;
    let mut d = Driver::spawn().await;
    d.connect("strict", &strict.url(), json!({"token": short_token("sam")}), WS).await;
    d.connect("lenient", &lenient.url(), json!({"token": short_token("len")}), WS).await;
    let told = d.event("strict", "bridge:disconnect").await;
    assert_eq!(told["args"][0]["reason"], "token expired", "{told}");
    d.expect("strict disconnected", |v| v["type"] == "disconnect" && v["id"] == "strict").await;
    // The lenient bridge's socket outlives its token (by design of that setting).
    assert!(d.no_event("lenient", "bridge:disconnect", Duration::from_secs(2)).await);
    let mut grpc = lenient.client().await;
    let r = grpc.push(push_request(T::UserId("len".into()), "still", "[]")).await.expect("push").into_inner();
    assert_eq!(r.sockets_reached, 1, "still connected after its token expired");
    d.exit().await;
}

#[tokio::test]
async fn a_ttl_push_the_offline_store_cannot_keep_is_refused_and_counted() {
    let bridge = Bridge::start(&settings(&["offline.max_messages_per_user=2"])).await;
    let mut grpc = bridge.client().await;
    let ttl_push = |i: u32| {
        let mut push = push_request(T::UserId("olga".into()), "note", &format!("[{i}]"));
        push.options = ttl_options(60_000);
        push
    };
    for i in 0..2 {
        let r = call("kept", grpc.push(ttl_push(i))).await;
        assert!(r.stored_offline && r.sockets_reached == 0, "{r:?}");
    }
    let refused = grpc.push(ttl_push(2)).await.expect_err("the third does not fit the user's share");
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused:?}");
    assert!(refused.message().contains("nothing was kept"), "{refused:?}");
    assert_eq!(bridge.metric(r#"socket_bridge_dropped_messages_total{reason="offline_full"}"#).await, 1.0);
    // Exactly the two it accepted arrive, in order, when the user connects.
    let mut d = Driver::spawn().await;
    d.connect("olga", &bridge.url(), json!({"userId": "olga"}), WS).await;
    for i in 0..2 {
        let v = d.event("olga", "note").await;
        assert_eq!(v["args"], json!([i]), "{v}");
    }
    assert!(d.no_event("olga", "note", Duration::from_millis(500)).await, "nothing else was kept");
    d.exit().await;
}
