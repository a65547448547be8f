//! The REST door: it delivers and refuses exactly as gRPC does, every error status has the
//! documented body, rate limits answer 429 with Retry-After, request ids are echoed and
//! logged, and no credential reaches the logs.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;

fn args(extra: &[&str]) -> Vec<String> {
    let mut a = jwt_args();
    a.extend(fast_timings());
    a.extend(settings(extra));
    a
}

/// One push case, expressed for both doors.
struct Case {
    name: &'static str,
    grpc: proto::PushRequest,
    rest: Value,
}

fn case(
    name: &'static str,
    target: T,
    rest_target: Value,
    options: Option<proto::PushOptions>,
    rest_options: Value,
) -> Case {
    let mut grpc = push_request(target, name, r#"[{"case":"x"}]"#);
    grpc.options = options;
    let mut rest = json!({"event": name, "payload": {"case": "x"}, "options": rest_options});
    rest.as_object_mut().unwrap().extend(rest_target.as_object().unwrap().clone());
    Case { name, grpc, rest }
}

/// Which driver sockets received `event` (socket name → args), within a short window.
async fn deliveries(d: &mut Driver, names: &[&str], event: &str) -> BTreeMap<String, Value> {
    let mut got = BTreeMap::new();
    for n in names {
        if let Some(v) = d
            .try_expect(|v| v["type"] == "event" && v["id"] == *n && v["event"] == event, Duration::from_millis(300))
            .await
        {
            got.insert(n.to_string(), v["args"].clone());
        }
    }
    got
}

#[tokio::test]
async fn rest_and_grpc_give_the_same_deliveries_and_error_meaning() {
    let bridge = Bridge::start(&args(&[])).await;
    let mut client = bridge.client().await;
    let mut d = Driver::spawn().await;
    let url = bridge.url();
    let ws = Some(&["websocket"][..]);
    d.connect("a1", &url, json!({"token": token("alice", &["team"])}), ws).await;
    d.connect("a2", &url, json!({"token": token("alice", &[])}), ws).await;
    let b = d.connect("b", &url, json!({"token": token("bob", &["team"])}), ws).await;
    d.connect("c", &url, json!({"token": token("carol", &[])}), ws).await;
    d.send(json!({"cmd": "on_ack_reply", "id": "a1", "event": "acked", "reply": [{"ok": 1}]})).await;
    let names = ["a1", "a2", "b", "c"];

    let cases = vec![
        case("user", T::UserId("alice".into()), json!({"userId": "alice"}), None, json!({})),
        case("room", T::Room("team".into()), json!({"roomId": "team"}), None, json!({})),
        case("socket", T::SocketId(b.clone()), json!({"socketId": b}), None, json!({})),
        case("all", T::Everyone(true), json!({"broadcast": true}), None, json!({})),
        case(
            "volatile",
            T::UserId("alice".into()),
            json!({"userId": "alice"}),
            Some(proto::PushOptions { volatile: true, ..Default::default() }),
            json!({"volatile": true}),
        ),
        case(
            "acked",
            T::UserId("alice".into()),
            json!({"userId": "alice"}),
            ack_timeout_options(300),
            json!({"timeout": 300}),
        ),
        case("unknown_user", T::UserId("nobody".into()), json!({"userId": "nobody"}), None, json!({})),
    ];
    for c in cases {
        let g = client.push(c.grpc).await.unwrap().into_inner();
        let g_seen = deliveries(&mut d, &names, c.name).await;
        let (status, _, r) = bridge.rest("POST", "/api/v1/push", Some(API_KEY), Some(&c.rest)).await;
        assert_eq!(status, 200, "{}: {r}", c.name);
        let r_seen = deliveries(&mut d, &names, c.name).await;
        assert_eq!(g.sockets_reached as u64, r["socketsReached"].as_u64().unwrap(), "{}: sockets reached", c.name);
        assert_eq!(g_seen, r_seen, "{}: same sockets got the same arguments", c.name);
        assert_eq!(g_seen.len() as u32, g.sockets_reached, "{}", c.name);
        let g_acks: BTreeMap<String, i32> = g.acks.iter().map(|a| (a.socket_id.clone(), a.status)).collect();
        let r_acks: BTreeMap<String, i32> = r["acks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                let status = match a["status"].as_str().unwrap() {
                    "acked" => proto::AckStatus::Acked,
                    "timeout" => proto::AckStatus::Timeout,
                    _ => proto::AckStatus::Failed,
                };
                (a["socketId"].as_str().unwrap().to_owned(), status as i32)
            })
            .collect();
        assert_eq!(g_acks, r_acks, "{}: same ack outcomes", c.name);
        if c.name == "acked" {
            let acked = r["acks"].as_array().unwrap().iter().find(|a| a["status"] == "acked").unwrap();
            assert_eq!(acked["args"], json!([{"ok": 1}]));
        }
    }

    // Invalid input: the same field is named by both doors.
    let invalid: Vec<(proto::PushRequest, Value, &str, &str)> = vec![
        (push_request(T::UserId("alice".into()), "", "[]"), json!({"userId": "alice", "event": ""}), "event", "event"),
        (
            push_request(T::Room("user:alice".into()), "x", "[]"),
            json!({"roomId": "user:alice", "event": "x"}),
            "target.room",
            "roomId",
        ),
        (
            push_request(T::SocketId("nope".into()), "x", "[]"),
            json!({"socketId": "nope", "event": "x"}),
            "target.socket_id",
            "socketId",
        ),
        (
            proto::PushRequest { namespace: "n".repeat(129), ..push_request(T::Everyone(true), "x", "[]") },
            json!({"broadcast": true, "namespace": "n".repeat(129), "event": "x"}),
            "namespace",
            "namespace",
        ),
    ];
    for (g, r, g_field, r_field) in invalid {
        let err = client.push(g).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        use tonic_types::StatusExt;
        assert_eq!(err.get_error_details().bad_request().unwrap().field_violations[0].field, g_field);
        let (status, _, body) = bridge.rest("POST", "/api/v1/push", Some(API_KEY), Some(&r)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR");
        assert_eq!(body["error"]["details"][0]["field"], r_field, "{body}");
        // Same message text after the field name.
        let g_msg = err.message().split_once(": ").unwrap().1.to_owned();
        assert_eq!(body["error"]["details"][0]["message"], g_msg);
    }
    // A namespace that is not configured: not found through both doors.
    let err = client
        .push(proto::PushRequest { namespace: "/missing".into(), ..push_request(T::Everyone(true), "x", "[]") })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
    let (status, _, body) = bridge
        .rest(
            "POST",
            "/api/v1/push",
            Some(API_KEY),
            Some(&json!({"broadcast": true, "namespace": "/missing", "event": "x"})),
        )
        .await;
    assert_eq!((status, body["error"]["code"].as_str()), (404, Some("NOT_FOUND")));
    assert_eq!(body["error"]["message"], err.message());
    d.exit().await;
}

fn check_error_body(body: &Value, code: &str, request_id: Option<&str>) {
    let e = &body["error"];
    assert_eq!(e["code"], code, "{body}");
    assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{body}");
    let ts = e["timestamp"].as_str().expect("timestamp");
    assert!(ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "RFC 3339: {ts}");
    match request_id {
        Some(id) => assert_eq!(e["requestId"], id),
        None => assert!(e["requestId"].as_str().is_some_and(|id| id.len() >= 8)),
    }
}

#[tokio::test]
async fn every_error_status_has_the_documented_body() {
    let bridge = Bridge::start(&args(&["http.max_body_bytes=2048"])).await;
    let http = reqwest::Client::new();
    let push_url = format!("{}/api/v1/push", bridge.url());
    let auth = format!("Bearer {API_KEY}");

    // 400: each invalid field named in details.
    let resp = http
        .post(&push_url)
        .header("authorization", &auth)
        .header("x-request-id", "rid-400")
        .json(&json!({"userId": "a", "event": "x", "options": {"timeout": "soon"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(resp.headers()["x-request-id"], "rid-400");
    let body: Value = resp.json().await.unwrap();
    check_error_body(&body, "VALIDATION_ERROR", Some("rid-400"));
    assert_eq!(
        body["error"]["details"],
        json!([{"field": "options.timeout", "message": "invalid type: string \"soon\", expected a JSON number"}])
    );
    let (status, _, body) = bridge.rest("POST", "/api/v1/push", Some(API_KEY), Some(&json!({"event": "x"}))).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["details"][0]["field"], "userId");
    let (status, _, body) = bridge
        .rest("POST", "/api/v1/push", Some(API_KEY), Some(&json!({"userId": "a", "event": "x", "extra": 1})))
        .await;
    assert_eq!(status, 400);
    assert_eq!(body["error"]["details"][0]["field"], "extra", "unknown fields are named: {body}");

    // 401
    for key in [None, Some("not-the-key-0123456789")] {
        let (status, _, body) =
            bridge.rest("POST", "/api/v1/push", key, Some(&json!({"userId": "a", "event": "x"}))).await;
        assert_eq!(status, 401);
        check_error_body(&body, "UNAUTHORIZED", None);
        assert!(body["error"].get("details").is_none());
    }
    // 404
    let (status, _, body) = bridge.rest("GET", "/api/v1/nothing-here", Some(API_KEY), None).await;
    assert_eq!(status, 404);
    check_error_body(&body, "NOT_FOUND", None);
    // 413
    let big = json!({"userId": "a", "event": "x", "payload": "y".repeat(4096)});
    let (status, _, body) = bridge.rest("POST", "/api/v1/push", Some(API_KEY), Some(&big)).await;
    assert_eq!(status, 413);
    check_error_body(&body, "PAYLOAD_TOO_LARGE", None);
    // 415
    let resp =
        http.post(&push_url).header("authorization", &auth).body(r#"{"userId":"a","event":"x"}"#).send().await.unwrap();
    assert_eq!(resp.status(), 415);
    check_error_body(&resp.json().await.unwrap(), "UNSUPPORTED_MEDIA_TYPE", None);
    // 500: see the unit test http::tests::status_500_a_panicking_handler_answers_in_the_error_format.

    // 503 while draining: a push with an ack timeout holds the drain open.
    let mut d = Driver::spawn().await;
    d.connect("s", &bridge.url(), json!({"token": token("sue", &[])}), Some(&["websocket"])).await;
    d.send(json!({"cmd": "on_ack_reply", "id": "s", "event": "hold", "reply": ["ok"], "delay_ms": 1500})).await;
    let mut client = bridge.client().await;
    let mut hold = push_request(T::UserId("sue".into()), "hold", "[]");
    hold.options = ack_timeout_options(3000);
    let held = tokio::spawn(async move { client.push(hold).await });
    d.event("s", "hold").await;
    bridge.signal(libc::SIGTERM);
    eventually("the bridge drains (GET /ready answers 503)", WAIT, || async {
        let (status, _, body) = bridge.rest("GET", "/ready", None, None).await;
        if status == 503 { Ok(()) } else { Err(format!("{status} {body}")) }
    })
    .await;
    let (status, headers, body) =
        bridge.rest("POST", "/api/v1/push", Some(API_KEY), Some(&json!({"userId": "sue", "event": "x"}))).await;
    assert_eq!(status, 503, "{body}");
    check_error_body(&body, "SERVICE_UNAVAILABLE", headers.get("x-request-id").and_then(|v| v.to_str().ok()));
    let (status, _, body) = bridge.rest("GET", "/ready", None, None).await;
    assert_eq!((status, body), (503, json!({"ready": false, "draining": true, "redis": "disabled"})));
    held.await.unwrap().expect("the held push still completes");
    d.exit().await;
}

#[tokio::test]
async fn too_many_requests_has_retry_after() {
    let bridge = Bridge::start(&args(&["http.rate_per_key_per_second=1", "http.burst_per_key=2"])).await;
    let mut last = (0, Default::default(), Value::Null);
    for _ in 0..3 {
        last = bridge.rest("GET", "/api/v1/status", Some(API_KEY), None).await;
    }
    let (status, headers, body) = last;
    assert_eq!(status, 429);
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=2).contains(&retry), "Retry-After {retry}");
    check_error_body(&body, "RATE_LIMITED", headers.get("x-request-id").and_then(|v| v.to_str().ok()));
}

#[tokio::test]
async fn a_thousand_requests_over_the_key_limit_get_429_and_other_keys_pass() {
    let other_key = "second-api-key-0123456789";
    let mut a = fast_timings();
    a.extend(settings(&[
        "auth.mode=jwt",
        &format!("auth.jwt.secret={JWT_SECRET}"),
        &format!("grpc.api_keys=[\"{API_KEY}\", \"{other_key}\"]"),
        "http.rate_per_key_per_second=1",
        "http.burst_per_key=10",
        "http.rate_per_ip_per_second=100000",
        "http.burst_per_ip=100000",
    ]));
    let bridge = Bridge::start(&a).await;
    let http = reqwest::Client::new();
    let url = format!("{}/api/v1/status", bridge.url());
    let started = Instant::now();
    let requests = (0..1010).map(|_| {
        let req = http.get(&url).header("authorization", format!("Bearer {API_KEY}")).send();
        async move {
            let resp = req.await.expect("answer");
            (resp.status().as_u16(), resp.headers().get("retry-after").is_some())
        }
    });
    let answers: Vec<(u16, bool)> = futures::stream::iter(requests).buffer_unordered(32).collect().await;
    let elapsed = started.elapsed().as_secs_f64();
    let ok = answers.iter().filter(|(s, _)| *s == 200).count();
    let limited: Vec<_> = answers.iter().filter(|(s, _)| *s == 429).collect();
    assert_eq!(ok + limited.len(), answers.len(), "only 200 and 429");
    let allowed = 10 + elapsed.ceil() as usize;
    assert!(ok <= allowed, "{ok} passed, at most {allowed} allowed");
    // The bucket refills one a second, so a slow machine lets a few more through.
    assert!(limited.len() >= answers.len() - allowed, "{} limited of {}", limited.len(), answers.len());
    assert!(limited.iter().all(|(_, retry)| *retry), "every 429 has Retry-After");
    let (status, _, _) = bridge.rest("GET", "/api/v1/status", Some(other_key), None).await;
    assert_eq!(status, 200, "another key still passes");
}

use futures::StreamExt;

#[tokio::test]
async fn no_key_token_or_authorization_value_is_logged() {
    let bridge = Bridge::start(&args(&[])).await;
    let wrong = "wrong-key-never-logged-0123";
    let tok = token("tina", &[]);
    bridge.rest("GET", "/api/v1/status", Some(wrong), None).await;
    bridge.rest("GET", "/api/v1/status", Some(API_KEY), None).await;
    bridge.rest("POST", "/api/v1/push", Some(&tok), Some(&json!({"userId": "x", "event": "e"}))).await;
    let mut d = Driver::spawn().await;
    d.connect("t", &bridge.url(), json!({"token": tok}), Some(&["polling"])).await;
    d.connect_error("bad", &bridge.url(), json!({"token": format!("{tok}x")})).await;
    d.exit().await;
    // The refused connect is the last thing logged: once it is in, the log is complete.
    bridge.logged("the refused connect is logged", |v| v["message"] == "connection refused").await;
    let logs = bridge.logs().join("\n");
    assert!(logs.contains("request refused"), "refusals are logged");
    for secret in [wrong, API_KEY, JWT_SECRET, &tok, "Bearer "] {
        assert!(!logs.contains(secret), "{secret:.12}… appears in the logs");
    }
}

#[tokio::test]
async fn request_ids_are_echoed_and_appear_in_that_requests_log_lines() {
    let bridge = Bridge::start(&args(&[])).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/api/v1/push", bridge.url()))
        .header("x-request-id", "trace-me-42")
        .json(&json!({"event": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "trace-me-42");
    let v = bridge.logged("the refusal is logged", |v| v["message"] == "request refused").await;
    assert_eq!(v["span"]["request_id"], "trace-me-42", "{v}");
}

#[tokio::test]
async fn openapi_document_is_served_and_lists_the_endpoints() {
    let bridge = Bridge::start(&[]).await;
    let (status, _, doc) = bridge.rest("GET", "/api/v1/openapi.json", None, None).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for path in ["/api/v1/push", "/api/v1/push/batch", "/api/v1/status", "/health", "/ready"] {
        assert!(doc["paths"].get(path).is_some(), "{path} missing");
    }
    assert!(doc["components"]["schemas"].get("PushBody").is_some());
}

#[tokio::test]
async fn batch_push_answers_each_item() {
    let bridge = Bridge::start(&[]).await;
    let mut d = Driver::spawn().await;
    d.connect("u", &bridge.url(), json!({"userId": "uma"}), Some(&["websocket"])).await;
    // One malformed push refuses the whole batch, naming it; nothing is delivered.
    let bad = json!({"pushes": [{"userId": "uma", "event": "one", "payload": 1}, {"userId": "uma", "event": ""}]});
    let (status, _, r) = bridge.rest("POST", "/api/v1/push/batch", None, Some(&bad)).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"]["details"][0]["field"], "pushes[1].event");
    assert!(d.no_event("u", "one", Duration::from_millis(200)).await);
    // A valid batch: each push answers on its own, including run-time failures.
    let body = json!({"pushes": [
        {"userId": "uma", "event": "one", "payload": 1},
        {"roomId": "nobody-here", "event": "two"},
        {"broadcast": true, "namespace": "/unconfigured", "event": "three"}
    ]});
    let (status, _, r) = bridge.rest("POST", "/api/v1/push/batch", None, Some(&body)).await;
    assert_eq!(status, 200, "{r}");
    let results = r["results"].as_array().unwrap();
    assert_eq!(results[0]["result"]["socketsReached"], 1);
    assert_eq!(results[1]["result"]["socketsReached"], 0);
    assert_eq!(results[2]["error"]["code"], "NOT_FOUND");
    assert_eq!(d.event("u", "one").await["args"], json!([1]));
    d.exit().await;
}

/// The REST door and gRPC refuse and accept exactly the same room names, event names and
/// payload sizes: both defer to the hub's one set of rules, and the OpenAPI document states
/// the same patterns.
#[tokio::test]
async fn rest_and_grpc_accept_and_refuse_the_same_names_and_sizes() {
    let bridge = Bridge::start(&args(&["socketio.max_payload_bytes=1000"])).await;
    let mut grpc = bridge.client().await;
    let longest = "r".repeat(256);
    let too_long = "r".repeat(257);
    let wide = "é".repeat(256);
    let rooms: &[(&str, &str)] = &[
        ("plain", "team"),
        ("256 characters", &longest),
        ("257 characters", &too_long),
        ("256 two-byte characters", &wide),
        ("empty", ""),
        ("user prefix", "user:bob"),
        ("socket prefix", "socket:AAAAAAAAAAAAAAAA"),
        ("control character", "a\u{7}b"),
        ("C1 control character", "a\u{85}b"),
        ("prefix-like", "users:bob"),
    ];
    let events: &[(&str, &str)] = &[
        ("plain", "chat.message"),
        ("reserved", "connect"),
        ("reserved", "disconnecting"),
        ("reserved-like", "connected"),
        ("257 characters", &too_long),
        ("control character", "x\ny"),
        ("empty", ""),
    ];
    let mut checked = 0;
    let mut outcomes = Vec::new();
    for (what, room) in rooms {
        let via_grpc =
            grpc.push(push_request(T::Room((*room).into()), "e", "[1]")).await.map(|_| ()).map_err(|s| s.code());
        let (status, _, body) = bridge
            .rest("POST", "/api/v1/push", Some(API_KEY), Some(&json!({"roomId": room, "event": "e", "payload": 1})))
            .await;
        assert_eq!(via_grpc.is_ok(), status == 200, "room {what} ({room:?}): gRPC {via_grpc:?}, REST {status} {body}");
        outcomes.push(format!("room {what}: {}", if status == 200 { "accepted" } else { "refused" }));
        checked += 1;
    }
    for (what, event) in events {
        let via_grpc =
            grpc.push(push_request(T::Room("team".into()), event, "[1]")).await.map(|_| ()).map_err(|s| s.code());
        let (status, _, body) = bridge
            .rest("POST", "/api/v1/push", Some(API_KEY), Some(&json!({"roomId": "team", "event": event, "payload": 1})))
            .await;
        assert_eq!(
            via_grpc.is_ok(),
            status == 200,
            "event {what} ({event:?}): gRPC {via_grpc:?}, REST {status} {body}"
        );
        outcomes.push(format!("event {what}: {}", if status == 200 { "accepted" } else { "refused" }));
        checked += 1;
    }
    // Sizes: the payload limit counts the argument list's bytes, "[" and "]" included.
    for len in [990usize, 996, 997, 998, 1000, 1001] {
        let text = "x".repeat(len.saturating_sub(4));
        let args_json = format!("[{}]", json!(text));
        let via_grpc = grpc.push(push_request(T::Room("team".into()), "e", &args_json)).await.map(|_| ());
        let (status, _, body) = bridge
            .rest(
                "POST",
                "/api/v1/push",
                Some(API_KEY),
                Some(&json!({"roomId": "team", "event": "e", "payload": text})),
            )
            .await;
        assert_eq!(
            via_grpc.is_ok(),
            status == 200,
            "payload of {} bytes: gRPC {via_grpc:?}, REST {status} {body}",
            args_json.len()
        );
        outcomes.push(format!(
            "payload {} bytes: {}",
            args_json.len(),
            if status == 200 { "accepted" } else { "refused" }
        ));
        checked += 1;
    }
    eprintln!("{checked} cases, same outcome through both doors:\n  {}", outcomes.join("\n  "));
    assert!(outcomes.iter().any(|o| o.ends_with("accepted")) && outcomes.iter().any(|o| o.ends_with("refused")));
    // The document states the hub's own patterns.
    let (_, _, doc) = bridge.rest("GET", "/api/v1/openapi.json", None, None).await;
    let room = &doc["components"]["schemas"]["PushBody"]["properties"]["roomId"];
    assert_eq!(room["pattern"], json!(socket_bridge::names::room_pattern()));
    assert_eq!(room["maxLength"], json!(socket_bridge::names::MAX_NAME_LEN));
    let event = &doc["components"]["schemas"]["PushBody"]["properties"]["event"];
    assert_eq!(event["pattern"], json!(socket_bridge::names::event_pattern()));
}
