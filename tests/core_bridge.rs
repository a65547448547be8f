//! The core bridge in embedded mode: start-up, reflection and health; pushes to users,
//! rooms and sockets; client events and acks with exact JSON and binary; order, load sharing
//! and groups on the Events stream; lifecycle and presence; bad input; SIGTERM. Each over
//! websocket and, where the transport matters, long-polling. The bridge is the real binary;
//! browsers are stock `socket.io-client` sockets in Node.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;
use tonic::Code;

// ---- start, reflection, health --------------------------------------------------------------

#[tokio::test]
async fn reflection_lists_services_and_health_is_serving() {
    let bridge = Bridge::start(&[]).await;
    let channel = bridge.channel().await;

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = tonic_reflection::pb::v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut answers = reflection.server_reflection_info(tokio_stream::iter(vec![request])).await.unwrap().into_inner();
    let answer = answers.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = answer.message_response else { panic!("{answer:?}") };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["socketbridge.v1.BridgeService", "grpc.health.v1.Health", "grpc.reflection.v1.ServerReflection"] {
        assert!(names.iter().any(|n| n == expected), "{expected} not in {names:?}");
    }

    let mut health = tonic_health::pb::health_client::HealthClient::new(channel);
    for service in ["", "socketbridge.v1.BridgeService"] {
        let status = health
            .check(tonic_health::pb::HealthCheckRequest { service: service.into() })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(
            status,
            tonic_health::pb::health_check_response::ServingStatus::Serving as i32,
            "service {service:?}"
        );
    }
}

/// The README's start command, run as written (ports moved to free ones by environment).
#[tokio::test]
async fn readme_start_command_brings_the_bridge_up() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).unwrap();
    let start = readme
        .lines()
        .skip_while(|l| !l.contains("<!-- start-command -->"))
        .nth(2)
        .expect("README start command after the start-command marker")
        .to_owned();
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c").arg(&start).current_dir(env!("CARGO_MANIFEST_DIR"));
    cmd.env("SOCKET_BRIDGE_HTTP__LISTEN", "127.0.0.1:0")
        .env("SOCKET_BRIDGE_GRPC__LISTEN", "127.0.0.1:0")
        .env("SOCKET_BRIDGE_LOG__FORMAT", "json");
    let bridge = Bridge::spawn(cmd).await;
    let status = http_get(bridge.http, "/health").await;
    assert!(status.contains("\"ok\""), "{status}");
    let mut client = bridge.client_with_key(None).await;
    let s = client.status(proto::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(s.connections, 0);
}

/// A plain HTTP/1.0 GET, enough for the operator endpoints.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut out)).await.expect("response in time").unwrap();
    out
}

// ---- pushes, over websocket and long-polling ------------------------------------------------

async fn pushes_reach_exactly_their_targets(transports: &[&str]) {
    let mut args = jwt_args();
    args.extend(fast_timings());
    let bridge = Bridge::start(&args).await;
    let mut client = bridge.client().await;
    let mut d = Driver::spawn().await;
    let url = bridge.url();
    let t = Some(transports);
    let a1 = d.connect("a1", &url, json!({"token": token("alice", &["team"])}), t).await;
    let _a2 = d.connect("a2", &url, json!({"token": token("alice", &[])}), t).await;
    let b = d.connect("b", &url, json!({"token": token("bob", &["team"])}), t).await;
    let _c = d.connect("c", &url, json!({"token": token("carol", &[])}), t).await;

    // To a user: both of alice's sockets, nobody else.
    let r = client.push(push_request(T::UserId("alice".into()), "to_user", r#"[{"n":1}]"#)).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 2);
    for id in ["a1", "a2"] {
        assert_eq!(d.event(id, "to_user").await["args"], json!([{"n": 1}]));
    }
    // To a room: exactly its members.
    let r = client.push(push_request(T::Room("team".into()), "to_room", "[1,2]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 2);
    assert_eq!(d.event("a1", "to_room").await["args"], json!([1, 2]));
    assert_eq!(d.event("b", "to_room").await["args"], json!([1, 2]));
    // To one socket.
    let r = client.push(push_request(T::SocketId(b.clone()), "to_socket", "[]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    d.event("b", "to_socket").await;
    // Everyone, except the room "team" and except socket a2: only carol.
    let mut req = push_request(T::Everyone(true), "to_rest", r#"["x"]"#);
    req.options = Some(proto::PushOptions {
        except_rooms: vec!["team".into()],
        except_socket_ids: vec![_a2.clone()],
        ..Default::default()
    });
    let r = client.push(req).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 1);
    d.event("c", "to_rest").await;

    // ack_timeout: alice's a1 answers, a2 never does.
    d.send(json!({"cmd": "on_ack_reply", "id": "a1", "event": "ask", "reply": [{"answer": 42, "deep": {"list": [1, "two"]}}]})).await;
    let mut req = push_request(T::UserId("alice".into()), "ask", r#"["question?"]"#);
    req.options = ack_timeout_options(500);
    let r = client.push(req).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 2);
    assert_eq!(r.acks.len(), 2);
    let acked = r.acks.iter().find(|a| a.socket_id == a1).expect("a1 ack");
    assert_eq!(acked.status, proto::AckStatus::Acked as i32);
    let payload: Value = serde_json::from_str(&acked.payload.as_ref().unwrap().args_json).unwrap();
    assert_eq!(payload, json!([{"answer": 42, "deep": {"list": [1, "two"]}}]));
    let silent = r.acks.iter().find(|a| a.socket_id != a1).unwrap();
    assert_eq!(silent.status, proto::AckStatus::Timeout as i32);

    // Nothing else arrived anywhere: no stray deliveries.
    assert!(d.no_event("c", "to_user", Duration::from_millis(200)).await);
    assert!(d.no_event("c", "to_room", Duration::from_millis(10)).await);
    assert!(d.no_event("a1", "to_socket", Duration::from_millis(10)).await);
    assert!(d.no_event("a1", "to_rest", Duration::from_millis(10)).await);
    assert!(d.no_event("b", "to_rest", Duration::from_millis(10)).await);
    d.exit().await;
}

#[tokio::test]
async fn pushes_reach_exactly_their_targets_over_websocket() {
    pushes_reach_exactly_their_targets(&["websocket"]).await;
}

#[tokio::test]
async fn pushes_reach_exactly_their_targets_over_long_polling() {
    pushes_reach_exactly_their_targets(&["polling"]).await;
}

// ---- client events, backend acks ------------------------------------------------------------

async fn client_ack_roundtrip(transports: &[&str]) {
    let mut args = jwt_args();
    args.extend(fast_timings());
    let bridge = Bridge::start(&args).await;
    let mut client = bridge.client().await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("app", false)).await;
    let mut d = Driver::spawn().await;
    d.connect("u", &bridge.url(), json!({"token": token("ursula", &[])}), Some(transports)).await;

    let big = r#"{"id":12345678901234567890123,"nested":{"a":[1,{"b":null}],"f":1.5e300}}"#;
    d.send(json!({"cmd": "emit", "id": "u", "event": "rpc", "req": 1, "ack": true,
        "args": [{"nested": {"a": [1, {"b": null}]}, "max": 9007199254740991u64}, {"$binary": b64(b"\x00\x01\xfe\xff")}]})).await;
    let e = backend.next_event().await;
    assert_eq!(e.event, "rpc");
    assert_eq!(e.user_id, "ursula");
    assert!(e.wants_ack);
    let p = e.payload.unwrap();
    let sent: Value = serde_json::from_str(&p.args_json).unwrap();
    assert_eq!(
        sent,
        json!([{"nested": {"a": [1, {"b": null}]}, "max": 9007199254740991u64}, {"_placeholder": true, "num": 0}])
    );
    assert_eq!(p.attachments, vec![b"\x00\x01\xfe\xff".to_vec()]);

    backend.ack(&e.id, &format!(r#"[{big},{{"_placeholder":true,"num":0}}]"#), vec![b"\xde\xad".to_vec()]).await;
    let ack = d.ack("u", 1).await;
    assert_eq!(ack["args"][0]["nested"], json!({"a": [1, {"b": null}], "f": 1.5e300}));
    assert_eq!(ack["args"][1], json!({"$binary": b64(b"\xde\xad")}));
    d.exit().await;

    // The exact text of big integers, seen in the raw packet the client received.
    let mut d = Driver::spawn().await;
    d.send(json!({"cmd": "connect", "id": "raw", "url": bridge.url(), "auth": {"token": token("ursula", &[])}, "transports": transports, "raw_packets": true})).await;
    d.expect("raw connect", |v| v["type"] == "connect").await;
    d.send(json!({"cmd": "emit", "id": "raw", "event": "rpc", "req": 2, "ack": true, "args": []})).await;
    let e = backend.next_event().await;
    backend.ack(&e.id, &format!("[{big}]"), vec![]).await;
    let packet = d
        .expect("raw ack packet", |v| v["type"] == "packet" && v["data"].as_str().is_some_and(|s| s.starts_with('3')))
        .await;
    assert!(packet["data"].as_str().unwrap().contains("12345678901234567890123"), "{packet}");
    d.ack("raw", 2).await;
    d.exit().await;
}

#[tokio::test]
async fn client_ack_carries_exact_json_and_binary_over_websocket() {
    client_ack_roundtrip(&["websocket"]).await;
}

#[tokio::test]
async fn client_ack_carries_exact_json_and_binary_over_long_polling() {
    client_ack_roundtrip(&["polling"]).await;
}

#[tokio::test]
async fn without_subscriber_the_callback_gets_an_error_within_the_timeout() {
    let mut args = fast_timings();
    args.extend(settings(&["socketio.ack_timeout_ms=400"]));
    let bridge = Bridge::start(&args).await;
    let mut d = Driver::spawn().await;
    d.connect("x", &bridge.url(), json!({"userId": "xavier"}), Some(&["websocket"])).await;
    let started = std::time::Instant::now();
    d.send(json!({"cmd": "emit", "id": "x", "event": "nobody_listens", "req": 1, "ack": true, "args": [1]})).await;
    let ack = d.ack("x", 1).await;
    let waited = started.elapsed();
    assert_eq!(ack["args"][0]["error"]["code"], "no_backend", "{ack}");
    assert!(ack["args"][0]["error"]["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert!(waited < Duration::from_secs(3), "answered after {waited:?}");
    d.exit().await;
}

// ---- order, load sharing, groups ------------------------------------------------------------

#[tokio::test]
async fn thousand_events_arrive_in_order() {
    thousand_events_in_order_with_batch_window("1").await;
}

/// Held back into batches or sent one by one, a socket's events keep their order.
#[tokio::test]
async fn thousand_events_arrive_in_order_unbatched_and_in_wide_batches() {
    thousand_events_in_order_with_batch_window("0").await;
    thousand_events_in_order_with_batch_window("50").await;
}

async fn thousand_events_in_order_with_batch_window(window_ms: &str) {
    let window = format!("events.stream_batch_window_ms={window_ms}");
    let bridge =
        Bridge::start(&settings(&["socketio.events_per_second=100000", "socketio.event_burst=5000", &window])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("g", false)).await;
    let mut d = Driver::spawn().await;
    d.connect("s", &bridge.url(), json!({"userId": "sam"}), Some(&["websocket"])).await;
    d.send(json!({"cmd": "emit_many", "id": "s", "event": "seq", "count": 1000})).await;
    for i in 0..1000 {
        let e = backend.next_event().await;
        assert_eq!(e.payload.unwrap().args_json, format!("[{i}]"), "event {i} out of order ({window})");
    }
    d.exit().await;
}

#[tokio::test]
async fn streams_in_a_group_share_and_every_group_gets_a_copy() {
    let bridge = Bridge::start(&[]).await;
    let mut client = bridge.client_with_key(None).await;
    let mut g1a = Backend::subscribe(&mut client, subscribe_all("workers", false)).await;
    let mut g1b = Backend::subscribe(&mut client, subscribe_all("workers", false)).await;
    let mut g2 = Backend::subscribe(&mut client, subscribe_all("audit", false)).await;
    let mut d = Driver::spawn().await;
    let sockets = 12;
    for i in 0..sockets {
        d.connect(&format!("s{i}"), &bridge.url(), json!({"userId": format!("u{i}")}), Some(&["websocket"])).await;
        d.send(json!({"cmd": "emit", "id": format!("s{i}"), "event": "work", "args": [i]})).await;
    }
    let mut audit = Vec::new();
    for _ in 0..sockets {
        audit.push(g2.next_event().await.socket_id);
    }
    let (mut a, mut b) = (0, 0);
    for _ in 0..sockets {
        tokio::select! {
            Some(Ok(m)) = g1a.rx.next_message() => { if matches!(m.kind, Some(proto::events_response::Kind::ClientEvent(_))) { a += 1 } }
            Some(Ok(m)) = g1b.rx.next_message() => { if matches!(m.kind, Some(proto::events_response::Kind::ClientEvent(_))) { b += 1 } }
        }
    }
    assert_eq!(a + b, sockets, "each event goes to exactly one stream of the group");
    assert!(a > 0 && b > 0, "the group's streams share the load: {a} / {b}");
    assert_eq!(audit.len(), sockets, "the second group gets every event");
    assert!(
        g1a.quiet_for(Duration::from_millis(200)).await.is_none()
            && g1b.quiet_for(Duration::from_millis(10)).await.is_none()
    );
    d.exit().await;
}

trait NextMessage {
    async fn next_message(&mut self) -> Option<Result<proto::EventsResponse, tonic::Status>>;
}

impl NextMessage for tonic::Streaming<proto::EventsResponse> {
    async fn next_message(&mut self) -> Option<Result<proto::EventsResponse, tonic::Status>> {
        self.message().await.transpose()
    }
}

// ---- lifecycle and presence -----------------------------------------------------------------

#[tokio::test]
async fn connects_disconnects_and_presence_fire_once_per_transition() {
    let bridge = Bridge::start(&fast_timings()).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("life", true)).await;
    let mut d = Driver::spawn().await;
    use proto::events_response::Kind as K;

    let s1 =
        d.connect("p1", &bridge.url(), json!({"userId": "pat", "token": "secret-value"}), Some(&["websocket"])).await;
    match backend.next().await {
        K::UserOnline(u) => assert_eq!(u.user_id, "pat"),
        other => panic!("expected UserOnline, got {other:?}"),
    }
    match backend.next().await {
        K::SocketConnected(c) => {
            assert_eq!(c.socket_id, s1);
            let auth: Value = serde_json::from_str(&c.handshake.unwrap().auth_json).unwrap();
            assert_eq!(auth, json!({"userId": "pat"}), "secret fields are removed");
        }
        other => panic!("expected SocketConnected, got {other:?}"),
    }
    d.connect("p2", &bridge.url(), json!({"userId": "pat"}), Some(&["polling"])).await;
    assert!(matches!(backend.next().await, K::SocketConnected(_)), "second socket: no second UserOnline");

    d.send(json!({"cmd": "disconnect", "id": "p1"})).await;
    match backend.next().await {
        K::SocketDisconnected(x) => {
            assert_eq!(x.socket_id, s1);
            // The client sends its DISCONNECT packet and then closes the transport; either
            // may be seen first when the machine is busy.
            assert!(x.reason == DISCONNECT_REASON_CLIENT || x.reason == "transport close", "{}", x.reason);
        }
        other => panic!("expected SocketDisconnected, got {other:?}"),
    }
    d.send(json!({"cmd": "disconnect", "id": "p2"})).await;
    assert!(matches!(backend.next().await, K::SocketDisconnected(_)));
    match backend.next().await {
        K::UserOffline(u) => assert_eq!(u.user_id, "pat"),
        other => panic!("expected UserOffline, got {other:?}"),
    }
    assert!(backend.quiet_for(Duration::from_millis(300)).await.is_none(), "no duplicate transitions");
    d.exit().await;
}

const DISCONNECT_REASON_CLIENT: &str = "client namespace disconnect";

// ---- bad input changes nothing --------------------------------------------------------------

#[tokio::test]
async fn bad_tokens_get_a_clear_connect_error() {
    let bridge = Bridge::start(&jwt_args()).await;
    let mut d = Driver::spawn().await;
    let url = bridge.url();
    let now = jsonwebtoken::get_current_timestamp();
    let sign = |claims: Value, secret: &str| {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
        )
        .unwrap()
    };
    let expired = sign(json!({"sub": "a", "exp": now - 300}), JWT_SECRET);
    assert_eq!(d.connect_error("e", &url, json!({"token": expired})).await, "token has expired");
    let forged = sign(json!({"sub": "a", "exp": now + 300}), "some-other-secret-of-enough-length!!");
    assert_eq!(d.connect_error("f", &url, json!({"token": forged})).await, "token signature is invalid");
    let none = format!(
        "{}.{}.",
        b64url(r#"{"alg":"none","typ":"JWT"}"#),
        b64url(&format!(r#"{{"sub":"a","exp":{}}}"#, now + 300))
    );
    assert_eq!(d.connect_error("n", &url, json!({"token": none})).await, "token algorithm \"none\" is not allowed");
    assert_eq!(d.connect_error("m", &url, json!({})).await, "authentication required: pass the JWT as auth.token");

    let mut client = bridge.client().await;
    let s = client.status(proto::StatusRequest {}).await.unwrap().into_inner();
    assert_eq!((s.connections, s.unique_users), (0, 0), "refused clients change nothing");
    d.exit().await;
}

#[tokio::test]
async fn api_key_is_required_and_never_logged() {
    let bridge = Bridge::start(&jwt_args()).await;
    let wrong = "wrong-key-that-must-not-be-logged";
    for key in [None, Some(wrong)] {
        let mut client = bridge.client_with_key(key).await;
        let err = client.status(proto::StatusRequest {}).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
        assert!(!err.message().contains(wrong));
        let err = client.push(push_request(T::Everyone(true), "x", "[]")).await.unwrap_err();
        assert_eq!(err.code(), Code::Unauthenticated);
    }
    bridge.client().await.status(proto::StatusRequest {}).await.expect("right key works");
    // Refusals are logged: all four are in the log before it is searched for secrets.
    let logs = eventually("refusals are logged (all four)", WAIT, || async {
        let logs = bridge.logs().join("\n");
        let refused = logs.matches("gRPC call refused").count();
        if refused >= 4 { Ok(logs) } else { Err(format!("{refused} refusals logged")) }
    })
    .await;
    for secret in [wrong, API_KEY, JWT_SECRET] {
        assert!(!logs.contains(secret), "{secret} leaked into logs");
    }
}

fn field_violation(status: &tonic::Status) -> String {
    use tonic_types::StatusExt;
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    bad.field_violations.first().map(|v| v.field.clone()).unwrap_or_default()
}

#[tokio::test]
async fn invalid_arguments_name_the_field_and_change_nothing() {
    let bridge = Bridge::start(&settings(&["socketio.max_payload_bytes=1000"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut d = Driver::spawn().await;
    d.connect("v", &bridge.url(), json!({"userId": "val"}), Some(&["websocket"])).await;

    let cases: Vec<(proto::PushRequest, &str)> = vec![
        (push_request(T::UserId("val".into()), "", "[]"), "event"),
        (push_request(T::UserId("val".into()), "ev", r#"{"not":"array"}"#), "payload.args_json"),
        (push_request(T::UserId("val".into()), "ev", "[1,"), "payload.args_json"),
        (push_request(T::UserId("val".into()), "ev", &format!("[\"{}\"]", "x".repeat(2000))), "payload.args_json"),
        (push_request(T::Room("user:val".into()), "ev", "[]"), "target.room"),
        (push_request(T::SocketId("not-a-sid".into()), "ev", "[]"), "target.socket_id"),
        (proto::PushRequest { target: None, ..push_request(T::Everyone(true), "ev", "[]") }, "target"),
        (proto::PushRequest { namespace: "x".repeat(200), ..push_request(T::Everyone(true), "ev", "[]") }, "namespace"),
    ];
    for (req, field) in cases {
        let err = client.push(req).await.expect_err(field);
        assert_eq!(err.code(), Code::InvalidArgument, "{field}: {err:?}");
        assert_eq!(field_violation(&err), field, "{err:?}");
    }
    let err = client
        .push(proto::PushRequest { namespace: "/nope".into(), ..push_request(T::Everyone(true), "ev", "[]") })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "an unconfigured namespace is not found: {err:?}");
    let err = client
        .join_rooms(proto::JoinRoomsRequest {
            target: Some(proto::Target { kind: Some(T::UserId("val".into())) }),
            namespace: String::new(),
            rooms: vec!["user:other".into()],
        })
        .await
        .unwrap_err();
    assert_eq!(field_violation(&err), "rooms");
    assert!(d.no_event("v", "ev", Duration::from_millis(200)).await, "nothing was delivered");
    let rooms = client
        .list_rooms(proto::ListRoomsRequest { include_internal: true, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(rooms.rooms.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["user:val"], "no room was created");
    d.exit().await;
}

#[tokio::test]
async fn clients_cannot_join_internal_rooms() {
    let bridge = Bridge::start(&settings(&["socketio.client_room_patterns=[\"public:*\"]"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut d = Driver::spawn().await;
    let sid = d.connect("m", &bridge.url(), json!({"userId": "mallory"}), Some(&["websocket"])).await;
    d.send(json!({"cmd": "emit", "id": "m", "event": "bridge:join", "req": 1, "ack": true, "args": ["user:alice"]}))
        .await;
    assert_eq!(d.ack("m", 1).await["args"][0]["error"]["code"], "forbidden_room");
    d.send(json!({"cmd": "emit", "id": "m", "event": "bridge:join", "req": 2, "ack": true, "args": ["secret-room"]}))
        .await;
    assert_eq!(d.ack("m", 2).await["args"][0]["error"]["code"], "forbidden_room");
    d.send(json!({"cmd": "emit", "id": "m", "event": "bridge:join", "req": 3, "ack": true, "args": ["public:lobby"]}))
        .await;
    assert_eq!(d.ack("m", 3).await["args"][0], json!({"ok": true}));

    let by_room = |room: &str| proto::ListConnectionsRequest {
        filter: Some(proto::list_connections_request::Filter::Room(room.into())),
        ..Default::default()
    };
    let alice_room = client.list_connections(by_room("user:alice")).await.unwrap().into_inner();
    assert!(alice_room.connections.is_empty(), "mallory is not in alice's room");
    let lobby = client.list_connections(by_room("public:lobby")).await.unwrap().into_inner();
    assert_eq!(lobby.connections.iter().map(|c| c.socket_id.as_str()).collect::<Vec<_>>(), [sid.as_str()]);
    // Pushing to alice does not reach mallory.
    let r = client.push(push_request(T::UserId("alice".into()), "private", "[]")).await.unwrap().into_inner();
    assert_eq!(r.sockets_reached, 0);
    assert!(d.no_event("m", "private", Duration::from_millis(200)).await);
    d.exit().await;
}

// ---- SIGTERM --------------------------------------------------------------------------------

#[tokio::test]
async fn sigterm_finishes_the_inflight_push_and_exits_zero() {
    let mut args = fast_timings();
    args.extend(settings(&["shutdown.grace_period_ms=5000"]));
    let mut bridge = Bridge::start(&args).await;
    let mut client = bridge.client_with_key(None).await;
    let mut d = Driver::spawn().await;
    d.connect("t", &bridge.url(), json!({"userId": "tess"}), Some(&["websocket"])).await;
    d.send(json!({"cmd": "on_ack_reply", "id": "t", "event": "slow", "reply": ["done"], "delay_ms": 1000})).await;

    let mut req = push_request(T::UserId("tess".into()), "slow", "[]");
    req.options = ack_timeout_options(4000);
    let push = tokio::spawn(async move { client.push(req).await });
    d.event("t", "slow").await;
    let signalled = std::time::Instant::now();
    bridge.signal(libc::SIGTERM);

    let r = push.await.unwrap().expect("in-flight push completes").into_inner();
    assert_eq!(r.acks.len(), 1);
    assert_eq!(r.acks[0].status, proto::AckStatus::Acked as i32);
    assert_eq!(r.acks[0].payload.as_ref().unwrap().args_json, r#"["done"]"#);
    let status = bridge.wait_exit(Duration::from_secs(8)).await.expect("exits within the grace period");
    assert!(status.success(), "exit status {status:?}");
    assert!(signalled.elapsed() < Duration::from_secs(6));
    let reason = d.expect("client told to go", |v| v["type"] == "disconnect" && v["id"] == "t").await;
    assert_eq!(reason["reason"], "transport close", "a transport close makes the client reconnect elsewhere");
    d.exit().await;
}
