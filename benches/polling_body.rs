//! What the Engine.IO edge (`http::polling`) costs on the long-polling POST path, printed as
//! figures (no assertion on time):
//!
//! 1. `normalize_payload` alone, per body kind: time per call and throughput;
//! 2. the layer in front of a service that reads the body (what engineioxide does), against
//!    that service alone: time per request;
//! 3. for scale, POST round trips through a real bridge (`socket_bridge::start` on
//!    loopback): a text event, a binary in standard base64, the same binary the way the
//!    Java client sends it (MIME lines), which is the case the layer rewrites.
//!
//! `cargo bench --bench polling_body` measures; under `cargo test` (no `--bench`) it runs a
//! few iterations of each as a smoke test.

use std::convert::Infallible;
use std::hint::black_box;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{Request, Response};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use socket_bridge::http::polling::{EngineIoEdgeLayer, normalize_payload};
use tower::{Layer, ServiceExt};

const PLACEHOLDER: &str = r#"{"_placeholder":true,"num":0}"#;

fn binary(n: usize) -> Vec<u8> {
    (0..n).map(|i| i as u8).collect()
}

/// Android's `Base64.DEFAULT`: a newline every 76 characters and at the end.
fn mime(data: &[u8]) -> String {
    STANDARD.encode(data).as_bytes().chunks(76).map(|c| format!("{}\n", std::str::from_utf8(c).unwrap())).collect()
}

fn binary_event(encoded: &str) -> Vec<u8> {
    format!("451-[\"bin\",{PLACEHOLDER}]\x1eb{encoded}").into_bytes()
}

fn bodies() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("text event, 60 B", br#"42["chat",{"room":"lobby","text":"hello there, everyone"}]"#.to_vec()),
        ("text event, 10 KB", format!("42[\"chat\",\"{}\"]", "x".repeat(10_000)).into_bytes()),
        ("1 KB binary, standard base64", binary_event(&STANDARD.encode(binary(1000)))),
        ("1 KB binary, MIME lines (Java)", binary_event(&mime(&binary(1000)))),
        ("100 KB binary, standard base64", binary_event(&STANDARD.encode(binary(100_000)))),
        ("100 KB binary, MIME lines (Java)", binary_event(&mime(&binary(100_000)))),
        ("700 KB binary, MIME lines (Java)", binary_event(&mime(&binary(700_000)))),
    ]
}

fn per_call(elapsed: Duration, n: u32) -> f64 {
    elapsed.as_secs_f64() * 1e6 / f64::from(n)
}

fn normalize_figures(scale: f64) {
    println!("\n1. normalize_payload alone");
    println!("{:<36} {:>10} {:>12} {:>10}", "body", "bytes", "µs per call", "MB/s");
    for (name, body) in bodies() {
        let n = ((20_000_000.0 / (body.len() as f64 + 100.0)) * scale).clamp(3.0, 200_000.0) as u32;
        let start = Instant::now();
        for _ in 0..n {
            black_box(normalize_payload(black_box(&body)).unwrap());
        }
        let us = per_call(start.elapsed(), n);
        println!("{name:<36} {:>10} {us:>12.2} {:>10.0}", body.len(), body.len() as f64 / us);
    }
}

async fn layer_figures(scale: f64) {
    println!("\n2. the layer in front of a body-reading service, per POST");
    println!("{:<36} {:>14} {:>14} {:>12}", "body", "service µs", "+ layer µs", "layer µs");
    // Reads the whole body and answers "ok", as engineioxide's POST handler does.
    let inner = tower::service_fn(|req: Request<Body>| async move {
        let bytes = axum::body::to_bytes(req.into_body(), usize::MAX).await.unwrap_or_default();
        black_box(bytes);
        Ok::<_, Infallible>(Response::new(Body::from("ok")))
    });
    let counter =
        prometheus::IntCounterVec::new(prometheus::Opts::new("bench_refused", "bench"), &["reason", "transport"])
            .unwrap();
    let edge = EngineIoEdgeLayer::new(1_000_000, counter).layer(inner);
    let uri = "/socket.io/?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAA";
    for (name, body) in bodies() {
        let n = ((4_000_000.0 / (body.len() as f64 + 2000.0)) * scale).clamp(3.0, 50_000.0) as u32;
        let request = || Request::post(uri).body(Body::from(body.clone())).unwrap();
        let mut timings = [0.0; 2];
        for (i, timing) in timings.iter_mut().enumerate() {
            let start = Instant::now();
            for _ in 0..n {
                let response = if i == 0 {
                    inner.oneshot(request()).await.unwrap().map(Body::new)
                } else {
                    edge.clone().oneshot(request()).await.unwrap()
                };
                black_box(response);
            }
            *timing = per_call(start.elapsed(), n);
        }
        println!("{name:<36} {:>14.2} {:>14.2} {:>12.2}", timings[0], timings[1], timings[1] - timings[0]);
    }
}

async fn bridge_figures(scale: f64) {
    println!("\n3. POST round trips through a real bridge (loopback, one polling session)");
    let config = socket_bridge::config::Config::from_toml(
        r#"
[http]
listen = "127.0.0.1:0"
[grpc]
listen = "127.0.0.1:0"
[socketio]
events_per_second = 1000000.0
event_burst = 1000000
flood_disconnect_after = 1000000
[events]
undelivered_capacity = 100
"#,
    )
    .expect("bench config");
    let server = socket_bridge::start(config).await.expect("bridge");
    let http = reqwest::Client::new();
    let base = format!("http://{}/socket.io/?EIO=4&transport=polling", server.http_addr);
    let open = http.get(&base).send().await.unwrap().text().await.unwrap();
    let sid = serde_json::from_str::<serde_json::Value>(&open[1..]).unwrap()["sid"].as_str().unwrap().to_owned();
    let url = format!("{base}&sid={sid}");
    let post = |body: Vec<u8>| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            let res =
                http.post(&url).header("content-type", "text/plain;charset=UTF-8").body(body).send().await.unwrap();
            assert_eq!(res.status(), 200, "{}", res.text().await.unwrap_or_default());
        }
    };
    post(br#"40{"userId":"bench"}"#.to_vec()).await;
    // Keep one GET pending (the client's long poll), as a real client does.
    let poller = {
        let (http, url) = (http.clone(), url.clone());
        tokio::spawn(async move {
            while let Ok(res) = http.get(&url).send().await {
                let body = res.text().await.unwrap_or_default();
                if body.split('\x1e').any(|p| p == "2") {
                    let _ = http.post(&url).body("3").send().await;
                }
            }
        })
    };
    println!("{:<36} {:>10} {:>14}", "body", "bytes", "µs per POST");
    for (name, body) in bodies().into_iter().filter(|(n, _)| !n.starts_with("700")) {
        let n = ((2_000_000.0 / (body.len() as f64 + 5000.0)) * scale).clamp(3.0, 2000.0) as u32;
        for _ in 0..n.min(20) {
            post(body.clone()).await;
        }
        let start = Instant::now();
        for _ in 0..n {
            post(body.clone()).await;
        }
        println!("{name:<36} {:>10} {:>14.1}", body.len(), per_call(start.elapsed(), n));
    }
    poller.abort();
    server.shutdown().await;
}

fn main() {
    let measure = std::env::args().any(|a| a == "--bench");
    let scale = if measure { 1.0 } else { 0.001 };
    println!(
        "Engine.IO edge cost ({})",
        if measure { "measured" } else { "smoke run: a few iterations, figures meaningless" }
    );
    normalize_figures(scale);
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    runtime.block_on(layer_figures(scale));
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(bridge_figures(scale));
}
