//! The backend decides who connects and who joins: a backend on the `Authorize` stream
//! answers each question; the stock client sees the outcome over websocket and
//! long-polling. No decider, a slow decider and a decider that goes away mid-question all
//! refuse; nothing reaches `Events` from a socket that was never allowed. The cluster-mode
//! case runs on a single Redis and on a Redis Cluster.

mod common;

use std::time::{Duration, Instant};

use common::cluster::{PROPAGATION, start_instances};
use common::redis_server::{TestRedis, Topology};
use common::*;
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::authorize_request::Kind as Q;
use socket_bridge::proto::authorize_response::Kind as A;
use socket_bridge::proto::target::Kind as T;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const POLLING: Option<&[&str]> = Some(&["polling"]);

/// A backend on the Authorize stream.
struct Decider {
    tx: mpsc::Sender<proto::AuthorizeRequest>,
    rx: tonic::Streaming<proto::AuthorizeResponse>,
}

impl Decider {
    async fn subscribe(bridge: &Bridge, connects: bool, joins: bool) -> Decider {
        let mut client = bridge.client().await;
        let (tx, rx) = mpsc::channel(64);
        let subscribe = proto::AuthorizeSubscribe { connects, joins, namespaces: vec![] };
        tx.send(proto::AuthorizeRequest { kind: Some(Q::Subscribe(subscribe)) }).await.unwrap();
        let mut rx = client.authorize(ReceiverStream::new(rx)).await.expect("authorize").into_inner();
        match rx.message().await.expect("first message").and_then(|m| m.kind) {
            Some(A::Subscribed(_)) => {}
            other => panic!("expected AuthorizeSubscribed, got {other:?}"),
        }
        Decider { tx, rx }
    }

    async fn next(&mut self) -> A {
        tokio::time::timeout(WAIT, self.rx.message())
            .await
            .expect("a question in time")
            .expect("stream ok")
            .and_then(|m| m.kind)
            .expect("question")
    }

    async fn connect_question(&mut self) -> proto::ConnectRequest {
        match self.next().await {
            A::Connect(q) => q,
            other => panic!("expected a connect question, got {other:?}"),
        }
    }

    async fn join_question(&mut self) -> proto::JoinRequest {
        match self.next().await {
            A::Join(q) => q,
            other => panic!("expected a join question, got {other:?}"),
        }
    }

    async fn allow(&self, id: &str, user: &str, rooms: &[&str], data: Value) {
        let allow = proto::ConnectAllow {
            user_id: user.into(),
            rooms: rooms.iter().map(|r| r.to_string()).collect(),
            data_json: data.to_string(),
        };
        let d = proto::ConnectDecision { id: id.into(), result: Some(proto::connect_decision::Result::Allow(allow)) };
        self.tx.send(proto::AuthorizeRequest { kind: Some(Q::Connect(d)) }).await.unwrap();
    }

    async fn deny(&self, id: &str, code: &str, message: &str) {
        let deny =
            proto::ConnectDeny { code: code.into(), message: message.into(), data_json: "{\"retry\":false}".into() };
        let d = proto::ConnectDecision { id: id.into(), result: Some(proto::connect_decision::Result::Deny(deny)) };
        self.tx.send(proto::AuthorizeRequest { kind: Some(Q::Connect(d)) }).await.unwrap();
    }

    async fn join(&self, id: &str, allow: bool) {
        let d = proto::JoinDecision {
            id: id.into(),
            allow,
            code: if allow { String::new() } else { "members_only".into() },
            message: if allow { String::new() } else { "this room is for members".into() },
        };
        self.tx.send(proto::AuthorizeRequest { kind: Some(Q::Join(d)) }).await.unwrap();
    }
}

fn backend_mode(extra: &[&str]) -> Vec<String> {
    let mut pairs = vec![
        "auth.mode=backend".to_string(),
        format!("grpc.api_keys=[\"{API_KEY}\"]"),
        "auth.backend.timeout_ms=1500".to_string(),
    ];
    pairs.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = pairs.iter().map(String::as_str).collect();
    let mut args = settings(&refs);
    args.extend(fast_timings());
    args
}

/// Connects with a session cookie and an auth object, over `transports`, and returns what
/// the decider was asked.
async fn connect_asked(
    d: &mut Driver,
    decider: &mut Decider,
    id: &str,
    bridge: &Bridge,
    transports: Option<&[&str]>,
) -> proto::ConnectRequest {
    d.send(json!({
        "cmd": "connect", "id": id, "url": bridge.url(), "transports": transports,
        "auth": {"ticket": format!("t-{id}")},
        "extra_headers": {"cookie": format!("session=s-{id}"), "authorization": "Bearer not-forwarded"},
    }))
    .await;
    decider.connect_question().await
}

async fn connected_or_refused(d: &mut Driver, id: &str) -> Value {
    d.expect(&format!("connect or connect_error {id}"), |v| {
        v["id"] == id && (v["type"] == "connect" || v["type"] == "connect_error")
    })
    .await
}

#[tokio::test]
async fn the_backend_allows_with_its_user_rooms_and_data_and_denies_with_its_message() {
    let bridge = Bridge::start(&backend_mode(&[])).await;
    let mut decider = Decider::subscribe(&bridge, true, false).await;
    let mut client = bridge.client().await;
    let mut events = Backend::subscribe(&mut client, subscribe_all("watch", true)).await;
    let mut d = Driver::spawn().await;
    for (id, transports) in [("ws", WS), ("poll", POLLING)] {
        let q = connect_asked(&mut d, &mut decider, id, &bridge, transports).await;
        assert_eq!(q.namespace, "/");
        assert_eq!(serde_json::from_str::<Value>(&q.auth_json).unwrap(), json!({"ticket": format!("t-{id}")}));
        assert_eq!(q.headers.get("cookie").map(String::as_str), Some(format!("session=s-{id}").as_str()), "{q:?}");
        assert!(!q.headers.contains_key("authorization"), "only the headers that matter: {q:?}");
        assert!(q.client_address.starts_with("127.0.0.1:"), "{q:?}");
        let expected_transport = if id == "ws" { "websocket" } else { "polling" };
        assert_eq!(q.transport, expected_transport);
        decider.allow(&q.id, &format!("user-{id}"), &["team"], json!({"plan": "pro", "via": id})).await;
        let v = connected_or_refused(&mut d, id).await;
        assert_eq!(v["type"], "connect", "{v}");
        let sid = v["sid"].as_str().unwrap().to_owned();
        // The backend's identity, rooms and data, in SocketConnected and ListConnections.
        let connected = loop {
            if let proto::events_response::Kind::SocketConnected(c) = events.next().await {
                break c;
            }
        };
        assert_eq!(
            (connected.socket_id.as_str(), connected.user_id.as_str()),
            (sid.as_str(), format!("user-{id}").as_str())
        );
        assert!(connected.rooms.contains(&"team".to_string()), "{connected:?}");
        assert_eq!(serde_json::from_str::<Value>(&connected.data_json).unwrap(), json!({"plan": "pro", "via": id}));
        let list = proto::ListConnectionsRequest {
            filter: Some(proto::list_connections_request::Filter::UserId(format!("user-{id}"))),
            ..Default::default()
        };
        let listed = call("ListConnections", client.list_connections(list)).await.connections;
        assert_eq!(listed.len(), 1);
        assert_eq!(serde_json::from_str::<Value>(&listed[0].data_json).unwrap(), json!({"plan": "pro", "via": id}));
        let r =
            call("push to team", client.push(push_request(T::Room("team".into()), "to_team", &format!("[\"{id}\"]"))))
                .await;
        assert!(r.sockets_reached >= 1, "{r:?}");
        d.event(id, "to_team").await;
    }
    // Denied: the client's connect_error carries the backend's message.
    for (id, transports) in [("no-ws", WS), ("no-poll", POLLING)] {
        let q = connect_asked(&mut d, &mut decider, id, &bridge, transports).await;
        decider.deny(&q.id, "session_expired", "Please sign in again").await;
        let v = connected_or_refused(&mut d, id).await;
        assert_eq!(
            (v["type"].as_str(), v["message"].as_str()),
            (Some("connect_error"), Some("Please sign in again")),
            "{v}"
        );
    }
    // Nothing of the refused sockets reached Events.
    while let Some(kind) = events.quiet_for(Duration::from_millis(500)).await {
        if let proto::events_response::Kind::SocketConnected(c) = kind {
            assert!(!c.user_id.is_empty() && c.user_id.starts_with("user-"), "only allowed sockets: {c:?}");
        }
    }
    d.exit().await;
}

#[tokio::test]
async fn no_decider_a_slow_one_or_one_that_goes_away_refuses_and_the_next_decider_serves() {
    let bridge = Bridge::start(&backend_mode(&[])).await;
    let mut client = bridge.client().await;
    let mut events = Backend::subscribe(&mut client, subscribe_all("watch", true)).await;
    let mut d = Driver::spawn().await;
    // No decider at all: refused at once.
    let started = Instant::now();
    let message = d.connect_error("nobody", &bridge.url(), json!({})).await;
    assert_eq!(message, "no backend is subscribed to decide; retry later");
    eprintln!("no decider: refused in {:?}", started.elapsed());
    // A decider that never answers: refused after auth.backend.timeout_ms (1.5 s).
    let mut slow = Decider::subscribe(&bridge, true, false).await;
    let started = Instant::now();
    let q = connect_asked(&mut d, &mut slow, "slow", &bridge, WS).await;
    let v = connected_or_refused(&mut d, "slow").await;
    assert_eq!(v["message"], "the backend did not decide in time; retry later", "{v}");
    eprintln!("slow decider: refused after {:?}", started.elapsed());
    // The answer that comes too late changes nothing.
    slow.allow(&q.id, "late", &[], json!(null)).await;
    // A decider that goes away holding a question: that connect is refused at once.
    let q = connect_asked(&mut d, &mut slow, "orphan", &bridge, WS).await;
    assert!(!q.id.is_empty());
    let started = Instant::now();
    drop(slow);
    let v = connected_or_refused(&mut d, "orphan").await;
    assert_eq!(v["message"], "the backend deciding went away; retry later", "{v}");
    eprintln!("decider gone: refused {:?} after it went", started.elapsed());
    // The next decider serves new connects.
    let mut next = Decider::subscribe(&bridge, true, false).await;
    let q = connect_asked(&mut d, &mut next, "fine", &bridge, WS).await;
    next.allow(&q.id, "fine", &[], json!({})).await;
    assert_eq!(connected_or_refused(&mut d, "fine").await["type"], "connect");
    // Events saw only the allowed socket.
    let mut connected = Vec::new();
    while let Some(kind) = events.quiet_for(Duration::from_millis(500)).await {
        if let proto::events_response::Kind::SocketConnected(c) = kind {
            connected.push(c.user_id);
        }
    }
    assert_eq!(connected, ["fine"], "nothing from sockets that were never allowed");
    d.exit().await;
}

#[tokio::test]
async fn the_backend_decides_joins_the_room_patterns_do_not_grant() {
    let bridge =
        Bridge::start(&backend_mode(&["auth.backend.decide_joins=true", "socketio.client_room_patterns=[\"open:*\"]"]))
            .await;
    let mut decider = Decider::subscribe(&bridge, true, true).await;
    let mut d = Driver::spawn().await;
    let q = connect_asked(&mut d, &mut decider, "j", &bridge, WS).await;
    decider.allow(&q.id, "jo", &[], json!({"tier": "gold"})).await;
    assert_eq!(connected_or_refused(&mut d, "j").await["type"], "connect");
    // A pattern room: granted without asking.
    d.send(json!({"cmd": "emit", "id": "j", "event": "bridge:join", "args": ["open:1"], "req": 1, "ack": true})).await;
    assert_eq!(d.ack("j", 1).await["args"], json!([{"ok": true}]));
    // Any other room: the backend is asked, with the socket's data.
    d.send(json!({"cmd": "emit", "id": "j", "event": "bridge:join", "args": ["vip"], "req": 2, "ack": true})).await;
    let q = decider.join_question().await;
    assert_eq!((q.room.as_str(), q.user_id.as_str()), ("vip", "jo"));
    assert_eq!(serde_json::from_str::<Value>(&q.data_json).unwrap(), json!({"tier": "gold"}));
    decider.join(&q.id, true).await;
    assert_eq!(d.ack("j", 2).await["args"], json!([{"ok": true}]));
    let mut client = bridge.client().await;
    let r = call("push to vip", client.push(push_request(T::Room("vip".into()), "in_vip", "[1]"))).await;
    assert_eq!(r.sockets_reached, 1);
    d.event("j", "in_vip").await;
    // Denied: the client's ack gets the backend's code and message.
    d.send(json!({"cmd": "emit", "id": "j", "event": "bridge:join", "args": ["secret"], "req": 3, "ack": true})).await;
    let q = decider.join_question().await;
    decider.join(&q.id, false).await;
    let ack = d.ack("j", 3).await;
    assert_eq!(ack["args"][0]["error"], json!({"code": "members_only", "message": "this room is for members"}));
    let r = call("push to secret", client.push(push_request(T::Room("secret".into()), "x", "[]"))).await;
    assert_eq!(r.sockets_reached, 0, "not joined");
    // Internal rooms are never asked about.
    d.send(json!({"cmd": "emit", "id": "j", "event": "bridge:join", "args": ["user:other"], "req": 4, "ack": true}))
        .await;
    assert_eq!(d.ack("j", 4).await["args"][0]["error"]["code"], "forbidden_room");
    d.exit().await;
}

async fn in_cluster_mode_a_decider_on_one_instance_decides_connects_on_another(topology: Topology) {
    let redis = TestRedis::start(topology).await;
    let backend: Vec<String> = backend_mode(&[]);
    let extra: Vec<&str> = backend.iter().filter(|a| *a != "--set").map(String::as_str).collect();
    let nodes = start_instances(&redis.url(), &[&extra, &extra, &extra]).await;
    let mut decider = Decider::subscribe(&nodes[0], true, false).await;
    let mut d = Driver::spawn().await;
    // B learns of A's decider with the heartbeat: until then B refuses with no_decider;
    // each attempt is a new client.
    let deadline = Instant::now() + PROPAGATION;
    let mut attempt = 0;
    let (q, id) = loop {
        attempt += 1;
        let id = format!("far-{attempt}");
        d.send(json!({"cmd": "connect", "id": id, "url": nodes[1].url(), "transports": ["websocket"], "auth": {}}))
            .await;
        match tokio::time::timeout(Duration::from_secs(3), decider.rx.message()).await {
            Ok(Ok(Some(proto::AuthorizeResponse { kind: Some(A::Connect(q)) }))) => break (q, id),
            _ => {
                let v = connected_or_refused(&mut d, &id).await;
                assert_eq!(v["type"], "connect_error", "{v}");
                assert!(Instant::now() < deadline, "A's decider never asked about a connect on B");
            }
        }
    };
    let far = id.as_str();
    decider.allow(&q.id, "faraway", &["far-team"], json!({"from": "A"})).await;
    assert_eq!(connected_or_refused(&mut d, far).await["type"], "connect");
    let mut c = nodes[2].client().await;
    let r = call("push via C to far-team", c.push(push_request(T::Room("far-team".into()), "hello", "[1]"))).await;
    assert_eq!(r.sockets_reached, 0, "room pushes count the calling instance's sockets");
    d.event(far, "hello").await;
    let r = call("push via C to faraway", c.push(push_request(T::UserId("faraway".into()), "hi", "[2]"))).await;
    assert_eq!(r.sockets_reached, 1);
    d.event(far, "hi").await;
    d.exit().await;
}

#[tokio::test]
async fn a_deny_reaches_the_client_bounded_and_never_empty() {
    let bridge = Bridge::start(&backend_mode(&[])).await;
    let mut decider = Decider::subscribe(&bridge, true, false).await;
    let mut d = Driver::spawn().await;
    let long = "x".repeat(100_000);
    for (id, code, message, expected) in
        [("long", long.as_str(), long.as_str(), "x".repeat(1024)), ("empty", "", "", "not allowed".to_string())]
    {
        let q = connect_asked(&mut d, &mut decider, id, &bridge, WS).await;
        decider.deny(&q.id, code, message).await;
        let v = connected_or_refused(&mut d, id).await;
        assert_eq!((v["type"].as_str(), v["message"].as_str()), (Some("connect_error"), Some(expected.as_str())));
    }
    // The log names the code, bounded too.
    let logs = bridge.logs().join("\n");
    let refused: Vec<&str> =
        logs.lines().filter(|l| l.contains("connection refused by the deciding backend")).collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(refused.iter().all(|l| l.len() < 4096), "log lines stay bounded");
    assert!(refused.iter().any(|l| l.contains(r#""code":"denied""#)), "{refused:?}");
    d.exit().await;
}

#[tokio::test]
async fn draining_ends_the_decider_stream_so_shutdown_does_not_wait_for_it() {
    let mut args = backend_mode(&["shutdown.grace_period_ms=20000"]);
    args.extend(fast_timings());
    let mut bridge = Bridge::start(&args).await;
    let mut decider = Decider::subscribe(&bridge, true, true).await;
    bridge.signal(libc::SIGTERM);
    let ended = tokio::time::timeout(WAIT, decider.rx.message()).await.expect("the decider stream ends on drain");
    assert!(matches!(ended, Ok(None)), "ended cleanly: {ended:?}");
    let status = bridge.wait_exit(WAIT).await.expect("exits without waiting out the 20 s grace period");
    assert!(status.success(), "{status:?}");
}

crate::on_each_topology!(in_cluster_mode_a_decider_on_one_instance_decides_connects_on_another);
