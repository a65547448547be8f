//! Observability: `/metrics` and the alert rules pass promtool and every metric they name
//! exists; counters move by exactly the deliveries and failures; log files rotate; the log
//! API filters and needs the admin credentials.

mod common;

use std::collections::BTreeSet;

use common::*;
use serde_json::{Value, json};
use socket_bridge::proto;
use socket_bridge::proto::target::Kind as T;

const ADMIN_PASSWORD: &str = "admin-pass-4321";

fn admin_args(extra: &[&str]) -> Vec<String> {
    let mut a = settings(&[&format!("dashboard.password={ADMIN_PASSWORD}")]);
    a.extend(settings(extra));
    a
}

async fn scrape(bridge: &Bridge) -> String {
    bridge.metrics().await.unwrap()
}

/// The value of one sample line, e.g. `socket_bridge_errors_total{kind="auth"}`; 0 if absent.
fn sample(text: &str, series: &str) -> f64 {
    metric_sample(text, series).unwrap_or(0.0)
}

fn promtool() -> &'static str {
    // run-all.sh installs Debian's `prometheus` package, which ships promtool.
    assert!(
        std::process::Command::new("promtool").arg("--version").output().is_ok(),
        "promtool missing: apt-get install prometheus"
    );
    "promtool"
}

#[tokio::test]
async fn promtool_accepts_metrics_and_rules_and_every_referenced_metric_exists() {
    let bridge = Bridge::start(&[]).await;
    // Some traffic, so labelled series exist.
    let mut client = bridge.client_with_key(None).await;
    let _backend = Backend::subscribe(&mut client, subscribe_all("obs", true)).await;
    let mut d = Driver::spawn().await;
    d.connect("o", &bridge.url(), json!({"userId": "olga"}), Some(&["websocket"])).await;
    client.push(push_request(T::UserId("olga".into()), "hi", "[]")).await.unwrap();
    d.event("o", "hi").await;
    let text = scrape(&bridge).await;

    let mut check = tokio::process::Command::new(promtool())
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    check.stdin.take().unwrap().write_all(text.as_bytes()).await.unwrap();
    let out = check.wait_with_output().await.unwrap();
    assert!(
        out.status.success(),
        "promtool check metrics:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rules = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/observability/alerts.yml");
    let out = std::process::Command::new(promtool()).args(["check", "rules", rules]).output().unwrap();
    assert!(out.status.success(), "promtool check rules: {}", String::from_utf8_lossy(&out.stdout));

    let exposed: BTreeSet<String> = text
        .lines()
        .filter(|l| l.starts_with("# TYPE "))
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect();
    let grafana =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/examples/observability/grafana-dashboard.json"))
            .unwrap();
    let rules_text = std::fs::read_to_string(rules).unwrap();
    let mut referenced = BTreeSet::new();
    for source in [&grafana, &rules_text] {
        for (i, _) in source.match_indices("socket_bridge_").chain(source.match_indices("process_resident")) {
            let name: String = source[i..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .fold(name.clone(), |n, s| n.strip_suffix(s).map(str::to_owned).unwrap_or(n));
            referenced.insert(base);
        }
    }
    assert!(referenced.len() >= 10, "{referenced:?}");
    let missing: Vec<_> = referenced.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "referenced but not exposed: {missing:?}");
    d.exit().await;
}

#[tokio::test]
async fn counters_move_by_exactly_the_deliveries_and_failures() {
    let mut args = jwt_args();
    args.extend(admin_args(&[]));
    let bridge = Bridge::start(&args).await;
    let mut client = bridge.client().await;
    let mut d = Driver::spawn().await;
    for (id, user) in [("m1", "mia"), ("m2", "mia"), ("n1", "noah")] {
        d.connect(id, &bridge.url(), json!({"token": token(user, &[])}), Some(&["websocket"])).await;
    }
    let before = scrape(&bridge).await;
    let sent = r#"socket_bridge_messages_sent_total{door="grpc",namespace="/"}"#;
    let rest_sent = r#"socket_bridge_messages_sent_total{door="rest",namespace="/"}"#;
    let pushes = 5;
    let mut deliveries = 0;
    for _ in 0..pushes {
        deliveries +=
            client.push(push_request(T::UserId("mia".into()), "p", "[]")).await.unwrap().into_inner().sockets_reached;
        deliveries += client
            .push(push_request(T::UserId("nobody".into()), "p", "[]"))
            .await
            .unwrap()
            .into_inner()
            .sockets_reached;
    }
    assert_eq!(deliveries, 10, "5 pushes to a user with 2 sockets, 5 to nobody");
    let (status, _, r) =
        bridge.rest("POST", "/api/v1/push", Some(API_KEY), Some(&json!({"broadcast": true, "event": "b"}))).await;
    assert_eq!((status, r["socketsReached"].as_u64()), (200, Some(3)));
    let auth = r#"socket_bridge_errors_total{kind="auth"}"#;
    d.connect_error("bad", &bridge.url(), json!({"token": "not-a-jwt"})).await;

    let after = scrape(&bridge).await;
    assert_eq!(sample(&after, sent) - sample(&before, sent), 10.0, "grpc deliveries");
    assert_eq!(sample(&after, rest_sent) - sample(&before, rest_sent), 3.0, "rest deliveries");
    assert_eq!(sample(&after, auth) - sample(&before, auth), 1.0, "one failed auth");
    let ok = r#"socket_bridge_push_requests_total{door="grpc",result="ok"}"#;
    assert_eq!(sample(&after, ok) - sample(&before, ok), 10.0);
    assert_eq!(sample(&after, "socket_bridge_connections"), 3.0);
    d.exit().await;
}

#[tokio::test]
async fn log_files_rotate_at_the_configured_size_and_old_ones_are_removed() {
    let dir = std::env::temp_dir().join(format!("sb-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let file = dir.join("bridge.log");
    let bridge = Bridge::start(&admin_args(&[
        &format!("log.file=\"{}\"", file.display()),
        "log.file_max_bytes=4096",
        "log.file_keep=2",
        "log.file_rotate_daily=false",
    ]))
    .await;
    // Each refused request logs a line of ~300 bytes: 120 of them is ~9 rotations' worth.
    for i in 0..120 {
        bridge.rest("GET", &format!("/nothing/{i}"), None, None).await;
    }
    // Lines reach the files through a background writer: wait until the last one is there.
    eventually("the last refused request is in the log files", WAIT, || async {
        let files = std::fs::read_dir(&dir).map_err(|e| e.to_string())?;
        let last = files.flatten().any(|f| std::fs::read_to_string(f.path()).is_ok_and(|t| t.contains("/nothing/119")));
        if last { Ok(()) } else { Err("not yet".to_string()) }
    })
    .await;
    let mut names: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["bridge.log", "bridge.log.1", "bridge.log.2"], "two rotated files kept, older ones removed");
    for name in ["bridge.log.1", "bridge.log.2"] {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        assert!(text.len() <= 4096 + 1024, "{name} is {} bytes", text.len());
        assert!(text.len() >= 2048, "{name} rotated early: {} bytes", text.len());
        for line in text.lines() {
            serde_json::from_str::<Value>(line).unwrap_or_else(|e| panic!("{name}: not a JSON line ({e}): {line}"));
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn log_api_serves_the_newest_entries_with_working_filters() {
    let bridge = Bridge::start(&admin_args(&["log.level=debug"])).await;
    let http = reqwest::Client::new();
    let get = |q: &str| {
        let req = http.get(format!("{}/api/v1/logs{q}", bridge.url())).basic_auth("admin", Some(ADMIN_PASSWORD));
        async move {
            let resp = req.send().await.unwrap();
            assert_eq!(resp.status(), 200);
            resp.json::<Value>().await.unwrap()["entries"].as_array().unwrap().clone()
        }
    };
    let resp = http.get(format!("{}/api/v1/logs", bridge.url())).send().await.unwrap();
    assert_eq!(resp.status(), 401, "refused without credentials");
    let resp = http
        .get(format!("{}/api/v1/logs", bridge.url()))
        .basic_auth("admin", Some("wrong-password"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    for i in 0..5 {
        bridge.rest("GET", &format!("/marker-{i}"), None, None).await;
    }
    let mut d = Driver::spawn().await;
    d.connect("l", &bridge.url(), json!({"userId": "lee"}), Some(&["websocket"])).await;
    d.send(json!({"cmd": "emit", "id": "l", "event": "needle-event", "args": []})).await;
    eventually("the client event is in the log API", WAIT, || async {
        let found = get("?level=debug&q=needle-event").await;
        if found.is_empty() { Err("not yet".to_string()) } else { Ok(()) }
    })
    .await;

    let newest = get("?limit=3").await;
    assert_eq!(newest.len(), 3);
    let seqs: Vec<u64> = newest.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] > w[1]), "newest first: {seqs:?}");
    let found = get("?level=debug&q=NEEDLE-EVENT").await;
    assert_eq!(found.len(), 1, "{found:?}");
    assert_eq!(found[0]["message"], "client event");
    assert_eq!(found[0]["meta"]["event"], "needle-event");
    assert_eq!(found[0]["level"], "debug");
    assert!(get("?level=info&q=needle-event").await.is_empty(), "debug lines hidden at level info");
    let refused = get("?level=info&q=request%20refused&limit=1000").await;
    assert!(refused.len() >= 5);
    assert!(refused.iter().all(|e| e["level"] == "info" && e["timestamp"].as_str().unwrap().ends_with('Z')));
    for bad in ["?level=loud", "?limit=0", "?limit=100000", "?unknown=1"] {
        let resp = http
            .get(format!("{}/api/v1/logs{bad}", bridge.url()))
            .basic_auth("admin", Some(ADMIN_PASSWORD))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    d.exit().await;
}

#[tokio::test]
async fn dashboard_and_its_data_need_the_admin_credentials() {
    let bridge = Bridge::start(&admin_args(&[])).await;
    let http = reqwest::Client::new();
    for path in ["/dashboard", "/dashboard/api/snapshot", "/dashboard/api/stream"] {
        let resp = http.get(format!("{}{path}", bridge.url())).send().await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Basic realm=\"socket-bridge\"");
    }
    let resp = http
        .get(format!("{}/dashboard/api/snapshot", bridge.url()))
        .basic_auth("admin", Some(ADMIN_PASSWORD))
        .send()
        .await
        .unwrap();
    let snap: Value = resp.json().await.unwrap();
    assert_eq!(snap["activeConnections"], 0);
    assert!(snap["nodes"].as_array().unwrap().len() == 1);
    // Without a configured password nothing gets in.
    let open = Bridge::start(&[]).await;
    let resp = http.get(format!("{}/dashboard", open.url())).basic_auth("admin", Some("")).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let _ = proto::StatusRequest {};
}
