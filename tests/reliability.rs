//! Reliability and security: faults, hostile clients and auth attacks against the real
//! binary. Each test names what it shows.

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::Message;

/// Reads until the server closes the connection; true if it did within `limit`.
async fn closed_within<S>(ws: &mut S, limit: Duration) -> bool
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    tokio::time::timeout(limit, async {
        loop {
            match ws.next().await {
                None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return,
                Some(Ok(_)) => {}
            }
        }
    })
    .await
    .is_ok()
}

// ---- hostile clients ----------------------------------------------------------------------

#[tokio::test]
async fn hostile_event_flood_is_throttled_then_disconnected_and_counted() {
    let bridge = Bridge::start(&settings(&[
        "socketio.events_per_second=20",
        "socketio.event_burst=10",
        "socketio.flood_disconnect_after=40",
    ]))
    .await;
    let mut client = bridge.client_with_key(None).await;
    let _backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    let mut d = Driver::spawn().await;
    d.connect("flood", &bridge.url(), json!({"userId": "fred"}), Some(&["websocket"])).await;
    d.connect("calm", &bridge.url(), json!({"userId": "carl"}), Some(&["websocket"])).await;
    d.send(json!({"cmd": "emit_many", "id": "flood", "event": "spam", "count": 200, "ack": true})).await;
    let throttled = d
        .expect("a rate_limited answer", |v| {
            v["type"] == "ack" && v["id"] == "flood" && v["args"][0]["error"]["code"] == "rate_limited"
        })
        .await;
    assert_eq!(throttled["args"][0]["error"]["message"], "too many events; slow down");
    let gone = d.expect("flooder disconnected", |v| v["type"] == "disconnect" && v["id"] == "flood").await;
    assert_eq!(gone["reason"], "io server disconnect");
    assert_eq!(bridge.metric(r#"socket_bridge_errors_total{kind="flood_disconnect"}"#).await, 1.0);
    // The notice reached the flooder before its transport closed, and what it sent after
    // the notice was neither answered nor routed, only counted as over its rate (about 190
    // of its 200 events: all but the burst).
    let flood: Vec<&Value> = d.backlog().iter().filter(|v| v["id"] == "flood").collect();
    let notice = flood
        .iter()
        .position(|v| v["type"] == "event" && v["event"] == "bridge:disconnect")
        .unwrap_or_else(|| panic!("no flood notice before the disconnect: {flood:?}"));
    assert_eq!(flood[notice]["args"][0]["reason"], "flooding");
    assert!(!flood[notice..].iter().any(|v| v["type"] == "ack"), "answered after the notice: {flood:?}");
    let over_rate = bridge.metric(r#"socket_bridge_errors_total{kind="rate_limited"}"#).await;
    assert!(over_rate >= 150.0, "events over the rate counted: {over_rate}");
    // The calm client is unaffected.
    let r = client.push(push_request(T::UserId("carl".into()), "still-here", "[]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    d.event("calm", "still-here").await;
    d.exit().await;
}

#[tokio::test]
async fn hostile_oversized_payload_and_too_many_attachments_close_only_that_connection() {
    let bridge = Bridge::start(&settings(&["socketio.max_payload_bytes=2000", "socketio.max_attachments=2"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    let mut bystander = raw_socket(&bridge, json!({"userId": "bob"})).await;

    let mut big = raw_socket(&bridge, json!({"userId": "mallory"})).await;
    big.send(Message::text(format!("42[\"big\",\"{}\"]", "x".repeat(5000)))).await.unwrap();
    assert!(closed_within(&mut big, Duration::from_secs(5)).await, "oversized message closes the connection");

    let mut bins = raw_socket(&bridge, json!({"userId": "mallory"})).await;
    bins.send(Message::text("453-[\"bins\",{\"_placeholder\":true,\"num\":0},{\"_placeholder\":true,\"num\":1},{\"_placeholder\":true,\"num\":2}]".to_string())).await.unwrap();
    assert!(closed_within(&mut bins, Duration::from_secs(5)).await, "too many attachments close the connection");

    // The bystander still works both ways.
    bystander.send(Message::text("42[\"hello\",1]".to_string())).await.unwrap();
    let e = backend.next_event().await;
    assert_eq!(
        (e.event.as_str(), e.user_id.as_str()),
        ("hello", "bob"),
        "no event of the hostile clients reached the backend"
    );
    client.push(push_request(T::UserId("bob".into()), "ok", "[]")).await.unwrap();
    let got = tokio::time::timeout(WAIT, async {
        loop {
            let m = bystander.next().await.unwrap().unwrap();
            if m.to_text().unwrap_or("").starts_with("42[\"ok\"") {
                return m;
            }
        }
    })
    .await;
    assert!(got.is_ok());
}

#[tokio::test]
async fn hostile_malformed_packets_close_the_connection_and_change_nothing() {
    let bridge = Bridge::start(&[]).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", true)).await;
    let cases = [
        "9",                        // unknown Engine.IO packet type
        "4Z[\"x\"]",                // unknown Socket.IO packet type
        "42{\"not\":\"an array\"}", // event payload not an array
        "42[1,2]",                  // event name not a string
        "43abc[\"x\"]",             // ack with an invalid id
        "42[\"unterminated",        // broken JSON
    ];
    for case in cases {
        let mut ws = raw_socket(&bridge, json!({"userId": "mal"})).await;
        ws.send(Message::text(case.to_string())).await.unwrap();
        assert!(closed_within(&mut ws, Duration::from_secs(5)).await, "{case:?} should close the connection");
    }
    // Only lifecycle messages reached the backend: no event from a malformed packet.
    while let Some(kind) = backend.quiet_for(Duration::from_millis(300)).await {
        assert!(!matches!(kind, proto::events_response::Kind::ClientEvent(_)), "{kind:?}");
    }
    let s = client.status(proto::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.connections, 0, "every malformed connection is gone");
}

#[tokio::test]
async fn hostile_slowloris_connections_are_cut_and_others_are_served() {
    let bridge = Bridge::start(&settings(&["http.header_read_timeout_ms=500"])).await;
    let mut slow = Vec::new();
    for _ in 0..50 {
        let mut s = tokio::net::TcpStream::connect(bridge.http).await.unwrap();
        s.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
        slow.push(s);
    }
    let (status, _, _) = bridge.rest("GET", "/health", None, None).await;
    assert_eq!(status, 200, "served while slow clients hang");
    let started = Instant::now();
    for mut s in slow {
        let mut buf = [0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
            .await
            .expect("server ends the slow connection");
        // Either a 408 response or a plain close; never a served request.
        let text = String::from_utf8_lossy(&buf[..n.unwrap_or(0)]).into_owned();
        assert!(text.is_empty() || text.starts_with("HTTP/1.1 408"), "{text}");
    }
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn hostile_rapid_connect_disconnect_cycles_leave_no_state_and_memory_returns() {
    let bridge = Bridge::start(&[]).await;
    let client = bridge.client_with_key(None).await;
    let warm = |n: usize| {
        let bridge = &bridge;
        async move {
            for i in 0..n {
                let mut ws = raw_socket(bridge, json!({"userId": format!("u{}", i % 50)})).await;
                ws.send(Message::text("41".to_string())).await.unwrap();
                let _ = ws.close(None).await;
            }
        }
    };
    // Closing a socket is asynchronous on the server: wait until every one is gone.
    let all_gone = |what: &'static str| {
        let client = client.clone();
        eventually(what, WAIT, move || {
            let mut client = client.clone();
            async move {
                let s = client.status(proto::StatusRequest {}).await.map_err(|e| e.to_string())?.into_inner();
                let rooms = client
                    .list_rooms(proto::ListRoomsRequest { include_internal: true, ..Default::default() })
                    .await
                    .map_err(|e| e.to_string())?
                    .into_inner();
                if (s.connections, s.unique_users) == (0, 0) && rooms.rooms.is_empty() {
                    Ok(s)
                } else {
                    Err(format!("{} sockets, {} users, rooms {:?}", s.connections, s.unique_users, rooms.rooms))
                }
            }
        })
    };
    warm(200).await;
    let baseline = all_gone("the warm-up's sockets are gone").await.rss_bytes;
    warm(2000).await;
    let s = all_gone("no socket, user or room left behind").await;
    let growth = s.rss_bytes.saturating_sub(baseline);
    eprintln!("RSS after warm-up {baseline} B, after 2000 more cycles {} B (+{growth} B)", s.rss_bytes);
    assert!(growth < 8 << 20, "memory grew by {growth} bytes over 2000 cycles");
}

// ---- faults --------------------------------------------------------------------------------

#[tokio::test]
async fn fault_backend_stream_killed_midflight_fails_pending_acks_at_once() {
    let bridge = Bridge::start(&settings(&["socketio.ack_timeout_ms=10000"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    let mut d = Driver::spawn().await;
    d.connect("c", &bridge.url(), json!({"userId": "cy"}), Some(&["websocket"])).await;
    for req in 0..5u64 {
        d.send(json!({"cmd": "emit", "id": "c", "event": "work", "req": req, "ack": true, "args": [req]})).await;
    }
    for _ in 0..5 {
        backend.next_event().await;
    }
    let killed = Instant::now();
    drop(backend);
    for req in 0..5u64 {
        let ack = d.ack("c", req).await;
        assert_eq!(ack["args"][0]["error"]["code"], "backend_unavailable", "{ack}");
    }
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "answered in {:?}, not after the 10 s timeout",
        killed.elapsed()
    );
    d.exit().await;
}

#[tokio::test]
async fn fault_backend_that_stops_reading_fills_its_queue_and_other_groups_keep_flowing() {
    let bridge = Bridge::start(&settings(&[
        "events.stream_queue=8",
        "socketio.events_per_second=10000",
        "socketio.event_burst=10000",
        "socketio.ack_timeout_ms=3000",
    ]))
    .await;
    let mut client = bridge.client_with_key(None).await;
    let _stuck = Backend::subscribe(&mut client, subscription("slow", &["slow.*"], false)).await; // never read again
    let mut fast = Backend::subscribe(&mut client, subscription("fast", &["fast.*"], false)).await;
    let mut d = Driver::spawn().await;
    d.connect("c", &bridge.url(), json!({"userId": "cleo"}), Some(&["websocket"])).await;
    // Big events: the stream's transport buffers (HTTP/2 send buffer and window, about
    // about 2 MB measured) fill first, then the bridge's own bounded queue refuses the rest.
    let filler = "x".repeat(16 * 1024);
    let total = 200u64;
    for req in 0..total {
        d.send(json!({"cmd": "emit", "id": "c", "event": "slow.job", "req": req, "ack": true, "args": [filler]})).await;
    }
    let mut overloaded = 0;
    for req in 0..total {
        let ack = d.ack("c", req).await;
        if ack["args"][0]["error"]["code"] == "backend_overloaded" {
            overloaded += 1;
        }
    }
    eprintln!("{overloaded} of {total} events refused with backend_overloaded");
    assert!(overloaded >= 40, "only {overloaded} of {total} events were refused while the backend read nothing");
    assert!(bridge.metric("socket_bridge_event_queue_depth").await <= 8.0 + 1.0, "queue stays bounded");
    // The other group still flows and answers.
    d.send(json!({"cmd": "emit", "id": "c", "event": "fast.job", "req": 100, "ack": true, "args": []})).await;
    let e = fast.next_event().await;
    fast.ack(&e.id, "[\"done\"]", vec![]).await;
    assert_eq!(d.ack("c", 100).await["args"], json!(["done"]));
    d.exit().await;
}

#[tokio::test]
async fn fault_connection_limit_refuses_new_clients_and_keeps_existing_ones() {
    let bridge = Bridge::start(&settings(&["socketio.max_connections=3"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut d = Driver::spawn().await;
    for i in 0..3 {
        d.connect(&format!("s{i}"), &bridge.url(), json!({"userId": format!("u{i}")}), Some(&["websocket"])).await;
    }
    let refused = d.connect_error("extra", &bridge.url(), json!({"userId": "late"})).await;
    assert_eq!(refused, "the server is at its connection limit; retry later");
    let r = client.push(push_request(T::Everyone(true), "all", "[]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 3);
    for i in 0..3 {
        d.event(&format!("s{i}"), "all").await;
    }
    assert_eq!(bridge.metric(r#"socket_bridge_errors_total{kind="connection_limit"}"#).await, 1.0);
    d.exit().await;
}

// ---- auth attacks ----------------------------------------------------------------------------

fn rsa_args(extra: &[&str]) -> Vec<String> {
    let public = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa_public.pem");
    let mut a = settings(&[
        "auth.mode=jwt",
        "auth.jwt.algorithms=[\"RS256\"]",
        &format!("auth.jwt.public_key_file=\"{public}\""),
    ]);
    a.extend(settings(&[&format!("grpc.api_keys=[\"{API_KEY}\"]")]));
    a.extend(settings(extra));
    a
}

fn rs256(claims: Value) -> String {
    let pem = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa_private.pem")).unwrap();
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(&pem).unwrap(),
    )
    .unwrap()
}

#[tokio::test]
async fn auth_attacks_key_confusion_claims_and_time_are_refused() {
    let bridge =
        Bridge::start(&rsa_args(&["auth.jwt.issuer=\"https://issuer.test\"", "auth.jwt.audience=\"bridge\""])).await;
    let mut d = Driver::spawn().await;
    let url = bridge.url();
    let now = jsonwebtoken::get_current_timestamp();
    let good = json!({"sub": "ann", "exp": now + 300, "iss": "https://issuer.test", "aud": "bridge"});
    d.connect("ok", &url, json!({"token": rs256(good.clone())}), Some(&["websocket"])).await;

    // HS256 signed with the RSA public key as the HMAC secret: the classic key confusion.
    let public = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa_public.pem")).unwrap();
    let confused =
        jsonwebtoken::encode(&jsonwebtoken::Header::default(), &good, &jsonwebtoken::EncodingKey::from_secret(&public))
            .unwrap();
    assert_eq!(
        d.connect_error("hs", &url, json!({"token": confused})).await,
        "token algorithm \"HS256\" is not allowed"
    );
    let mut wrong_aud = good.clone();
    wrong_aud["aud"] = json!("someone-else");
    assert_eq!(
        d.connect_error("aud", &url, json!({"token": rs256(wrong_aud)})).await,
        "token audience is not accepted"
    );
    let mut wrong_iss = good.clone();
    wrong_iss["iss"] = json!("https://evil.test");
    assert_eq!(d.connect_error("iss", &url, json!({"token": rs256(wrong_iss)})).await, "token issuer is not accepted");
    let mut early = good.clone();
    early["nbf"] = json!(now + 600);
    assert_eq!(d.connect_error("nbf", &url, json!({"token": rs256(early)})).await, "token is not valid yet");
    let mut expired = good.clone();
    expired["exp"] = json!(now - 600);
    assert_eq!(d.connect_error("exp", &url, json!({"token": rs256(expired)})).await, "token has expired");
    let none = format!("{}.{}.", b64url(r#"{"alg":"none"}"#), b64url(&good.to_string()));
    assert_eq!(d.connect_error("none", &url, json!({"token": none})).await, "token algorithm \"none\" is not allowed");
    // Ann's token cannot get her into Bob's room.
    d.send(json!({"cmd": "emit", "id": "ok", "event": "bridge:join", "req": 1, "ack": true, "args": ["user:bob"]}))
        .await;
    assert_eq!(d.ack("ok", 1).await["args"][0]["error"]["code"], "forbidden_room");
    let mut client = bridge.client().await;
    let r = client.push(push_request(T::UserId("bob".into()), "private", "[]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 0);
    d.exit().await;
}

#[tokio::test]
async fn cors_refuses_origins_not_on_the_list() {
    let bridge = Bridge::start(&settings(&["socketio.cors_origins=[\"http://app.example\"]"])).await;
    let http = reqwest::Client::new();
    let url = format!("{}/socket.io/?EIO=4&transport=polling", bridge.url());
    let good = http.get(&url).header("origin", "http://app.example").send().await.unwrap();
    assert_eq!(
        good.headers().get("access-control-allow-origin").map(|v| v.to_str().unwrap()),
        Some("http://app.example")
    );
    let bad = http.get(&url).header("origin", "http://evil.example").send().await.unwrap();
    assert!(bad.headers().get("access-control-allow-origin").is_none(), "{:?}", bad.headers());
    let preflight = http
        .request(reqwest::Method::OPTIONS, &url)
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST")
        .send()
        .await
        .unwrap();
    assert!(preflight.headers().get("access-control-allow-origin").is_none());
}

#[tokio::test]
async fn fault_sigterm_under_load_drains_inflight_pushes_and_exits_zero_in_the_grace_period() {
    let mut bridge = Bridge::start(&settings(&["shutdown.grace_period_ms=5000"])).await;
    let mut d = Driver::spawn().await;
    for i in 0..20 {
        d.connect(&format!("s{i}"), &bridge.url(), json!({"userId": format!("u{}", i % 5)}), Some(&["websocket"]))
            .await;
        d.send(json!({"cmd": "on_ack_reply", "id": format!("s{i}"), "event": "job", "reply": ["ok"], "delay_ms": 300}))
            .await;
    }
    // Four pushers keep pushes with acks in flight the whole time.
    let mut pushers = Vec::new();
    for p in 0..4 {
        let mut client = bridge.client_with_key(None).await;
        pushers.push(tokio::spawn(async move {
            let (mut completed, mut refused) = (0u32, 0u32);
            for n in 0..1000 {
                let mut req = push_request(T::UserId(format!("u{}", (p + n) % 5)), "job", "[]");
                req.options = ack_timeout_options(3000);
                match client.push(req).await {
                    Ok(r) => {
                        let r = r.into_inner();
                        assert!(
                            r.acks.iter().all(|a| a.status == proto::AckStatus::Acked as i32),
                            "an in-flight push lost its acks: {r:?}"
                        );
                        completed += 1;
                    }
                    // After the drain starts: refused cleanly, or the listener is gone.
                    Err(s)
                        if matches!(
                            s.code(),
                            tonic::Code::Unavailable | tonic::Code::Cancelled | tonic::Code::Unknown
                        ) =>
                    {
                        refused += 1;
                        break;
                    }
                    Err(s) => panic!("unexpected error during drain: {s:?}"),
                }
            }
            (completed, refused)
        }));
    }
    // The load runs for a while before the signal (the scenario, not a wait for a result).
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let signalled = Instant::now();
    bridge.signal(libc::SIGTERM);
    let status = bridge.wait_exit(Duration::from_secs(8)).await.expect("exits");
    let took = signalled.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(took < Duration::from_secs(5) + Duration::from_millis(500), "took {took:?}");
    let mut completed = 0;
    for p in pushers {
        let (c, r) = p.await.unwrap();
        assert_eq!(r, 1, "each pusher was refused once, after the drain began");
        completed += c;
    }
    assert!(completed >= 4, "pushes completed before and during the drain: {completed}");
    eprintln!("{completed} pushes with acks completed, drain took {took:?}");
    for i in 0..20 {
        let v = d.expect("told to go", |v| v["type"] == "disconnect" && v["id"] == format!("s{i}")).await;
        assert_eq!(v["reason"], "transport close");
    }
    d.exit().await;
}

/// Cluster mode under load: Redis is killed (SIGKILL) and restarted empty while pushes
/// run through instance A at a steady rate, half to a user on A, half to a user on B.
/// Every push to A's own user must succeed and arrive, in order, through the outage;
/// cross-instance pushes resume by themselves once Redis is back; client events from B
/// reach the backend on A again after it heals. Figures go to stderr for RELIABILITY.md.
#[tokio::test]
async fn fault_redis_killed_and_restarted_under_load_local_delivery_never_stops_and_cluster_heals() {
    use common::redis_server::RedisServer;
    let mut redis = RedisServer::start().await;
    let url = redis.url();
    let cluster = |extra: &[&str]| {
        let mut args = settings(&[&format!("redis.url={url}"), "redis.node_timeout_ms=3000"]);
        args.extend(settings(extra));
        args
    };
    let a = Bridge::start(&cluster(&[])).await;
    // B asks to be taken out of the load balancer while Redis is gone; A (the default) not.
    let b = Bridge::start(&cluster(&["redis.unready_when_down=true"])).await;
    async fn ready_status(bridge: &Bridge) -> u16 {
        bridge.readiness().await.map_or(0, |(status, _)| status)
    }
    let mut d = Driver::spawn().await;
    d.connect("local@A", &a.url(), json!({"userId": "ann"}), Some(&["websocket"])).await;
    d.connect("remote@B", &b.url(), json!({"userId": "bob"}), Some(&["websocket"])).await;
    let mut client = a.client_with_key(None).await;
    // Both instances know each other before the load starts.
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = client.push(push_request(T::UserId("bob".into()), "warmup", "[0]")).await.unwrap().into_inner();
        if r.sockets_reached == 1
            && d.try_expect(|v| v["event"] == "warmup", Duration::from_millis(300)).await.is_some()
        {
            break;
        }
        assert!(Instant::now() < deadline, "the two instances never formed a cluster");
    }

    // 200 pushes a second for 8 s; Redis dies at 2 s and comes back, empty, at 4.5 s.
    let pusher = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        let (mut local_ok, mut remote_ok, mut remote_refused, mut failures) = (0u64, Vec::new(), 0u64, Vec::new());
        for n in 0..1600u64 {
            tick.tick().await;
            let (user, local) = if n % 2 == 0 { ("ann", true) } else { ("bob", false) };
            let started = Instant::now();
            match client.push(push_request(T::UserId(user.into()), "load", &format!("[{n}]"))).await {
                Ok(r) if local && r.get_ref().sockets_reached == 1 => local_ok += 1,
                Ok(r) if !local => remote_ok.push((n, r.get_ref().sockets_reached)),
                Ok(r) => failures.push(format!("push {n} to ann reached {} sockets", r.get_ref().sockets_reached)),
                Err(s) if local => failures.push(format!("push {n} to ann failed: {s:?}")),
                Err(_) => remote_refused += 1,
            }
            assert!(started.elapsed() < Duration::from_secs(3), "push {n} hung for {:?}", started.elapsed());
        }
        (local_ok, remote_ok, remote_refused, failures)
    });
    tokio::time::sleep(Duration::from_secs(2)).await;
    redis.stop().await;
    let down_at = Instant::now();
    while a.redis_state().await != "down" {
        assert!(down_at.elapsed() < Duration::from_secs(10), "readiness never showed the loss");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    eprintln!("readiness showed the loss after {:?}", down_at.elapsed());
    assert_eq!(ready_status(&a).await, 200, "A still serves its clients: ready");
    while b.redis_state().await != "down" {
        assert!(down_at.elapsed() < Duration::from_secs(10), "B's readiness never showed the loss");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(ready_status(&b).await, 503, "B asked to be unready without Redis");
    tokio::time::sleep(Duration::from_millis(2500).saturating_sub(down_at.elapsed())).await;
    redis.restart().await;
    let up_at = Instant::now();
    let (local_ok, remote_ok, remote_refused, failures) = pusher.await.unwrap();
    assert!(failures.is_empty(), "pushes to the instance's own user failed: {failures:?}");
    assert_eq!(local_ok, 800, "every push to ann through A succeeded");
    for bridge in [&a, &b] {
        while bridge.redis_state().await != "up" {
            assert!(up_at.elapsed() < Duration::from_secs(15), "an instance never reconnected to redis");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(ready_status(bridge).await, 200, "ready again once Redis is back");
    }

    // Every local push arrived, in order; the cross-instance ones before the kill and
    // after the heal arrived, the ones in between may not have.
    let mut local = Vec::new();
    let mut remote = Vec::new();
    while let Some(v) = d.try_expect(|v| v["event"] == "load", Duration::from_millis(1500)).await {
        let n = v["args"][0].as_u64().unwrap();
        if v["id"] == "local@A" { local.push(n) } else { remote.push(n) }
    }
    let expected: Vec<u64> = (0..1600).step_by(2).collect();
    assert_eq!(local, expected, "ann got every push through A, in order");
    let heal_deadline = Instant::now() + Duration::from_secs(20);
    let mut client = a.client_with_key(None).await;
    loop {
        client.push(push_request(T::UserId("bob".into()), "after", "[1]")).await.unwrap();
        if d.try_expect(|v| v["event"] == "after" && v["id"] == "remote@B", Duration::from_millis(500)).await.is_some()
        {
            break;
        }
        assert!(Instant::now() < heal_deadline, "cross-instance delivery never resumed");
    }
    let lost_remote: Vec<(u64, u32)> = remote_ok.iter().copied().filter(|(n, _)| !remote.contains(n)).collect();
    let missing: Vec<u64> = (1..1600).step_by(2).filter(|n| !remote.contains(n)).collect();
    // Pushes go out every 5 ms from t=0; Redis died at 2 s and was back at about 4.5 s.
    let gap_ms = missing.first().zip(missing.last()).map(|(f, l)| (f * 5, l * 5));
    eprintln!(
        "redis outage: {local_ok}/800 local pushes delivered in order; cross-instance: {} delivered, \
         {remote_refused} answered with an error (sent between t={gap_ms:?} ms while redis was unreachable or the \
         cluster re-formed), {} answered OK and lost",
        remote.len(),
        lost_remote.len(),
    );
    // While Redis is lost and until the instances have registered their sockets again, a
    // push to a user on another instance is refused, never answered "reached 0".
    assert!(
        lost_remote.is_empty(),
        "cross-instance pushes answered OK (push, sockets reached) and lost: {lost_remote:?}"
    );
    // Client events from B reach the backend on A again once the cluster has healed.
    let mut backend_client = a.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut backend_client, subscribe_all("after-outage", false)).await;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        d.send(json!({"cmd": "emit", "id": "remote@B", "event": "ping", "args": [1]})).await;
        if let Some(proto::events_response::Kind::ClientEvent(e)) = backend.quiet_for(Duration::from_millis(500)).await
        {
            assert_eq!(e.event, "ping");
            break;
        }
        assert!(Instant::now() < deadline, "events from B never reached the backend on A after the outage");
    }
    d.exit().await;
}
