//! The Engine.IO edge in front of socketioxide, through the real binary with a raw
//! Engine.IO v4 long-polling client: binary packets in every base64 form the reference
//! server accepts reach the backend byte for byte, and every request the Engine.IO layer
//! refuses is counted and logged with its reason, at most once per interval.

mod common;

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE};
use common::*;
use serde_json::Value;
use socket_bridge::proto;

const REFUSED_LINE: &str = "Engine.IO request refused";

fn refused(reason: &str, transport: &str) -> String {
    format!(r#"socket_bridge_engineio_refused_total{{reason="{reason}",transport="{transport}"}}"#)
}

/// A raw Engine.IO v4 long-polling session connected to namespace "/".
struct Polling {
    http: reqwest::Client,
    url: String,
    sid: String,
}

impl Polling {
    async fn open(bridge: &Bridge, user: &str) -> Polling {
        let http = reqwest::Client::new();
        let base = format!("{}/socket.io/?EIO=4&transport=polling", bridge.url());
        let open = http.get(&base).send().await.unwrap().text().await.unwrap();
        let handshake: Value = serde_json::from_str(open.strip_prefix('0').expect("open packet")).unwrap();
        let sid = handshake["sid"].as_str().unwrap().to_owned();
        let p = Polling { http, url: format!("{base}&sid={sid}"), sid };
        assert_eq!(p.post(format!("40{{\"userId\":\"{user}\"}}").into_bytes()).await, (200, "ok".to_string()));
        p.packets_until(|p| p.starts_with("40{\"sid\"")).await;
        p
    }

    async fn post(&self, body: Vec<u8>) -> (u16, String) {
        let res = tokio::time::timeout(
            WAIT,
            self.http.post(&self.url).header("content-type", "text/plain;charset=UTF-8").body(body).send(),
        )
        .await
        .expect("POST answered in time")
        .unwrap();
        (res.status().as_u16(), res.text().await.unwrap_or_default())
    }

    /// One long-poll GET: status and packets (pings are answered).
    async fn get(&self) -> (u16, Vec<String>) {
        let res = tokio::time::timeout(WAIT, self.http.get(&self.url).send()).await.expect("GET in time").unwrap();
        let status = res.status().as_u16();
        let body = res.text().await.unwrap_or_default();
        let packets: Vec<String> =
            if body.is_empty() { vec![] } else { body.split('\x1e').map(str::to_owned).collect() };
        if packets.iter().any(|p| p == "2") {
            self.post(b"3".to_vec()).await;
        }
        (status, packets)
    }

    /// Polls until a packet matches; returns the packets from that one on.
    async fn packets_until(&self, pred: impl Fn(&str) -> bool) -> Vec<String> {
        let deadline = Instant::now() + WAIT;
        let mut seen = Vec::new();
        while Instant::now() < deadline {
            let (status, packets) = self.get().await;
            assert_eq!(status, 200, "session alive; seen {seen:?}");
            if let Some(i) = packets.iter().position(|p| pred(p)) {
                return packets[i..].to_vec();
            }
            seen.extend(packets);
        }
        panic!("no matching packet within {WAIT:?}; seen {seen:?}")
    }
}

/// 0..=255 and on: every byte value, the packet separator 0x1e included. 301 bytes, so the
/// standard encoding ends with padding.
fn data() -> Vec<u8> {
    (0..=255u8).cycle().take(301).collect()
}

/// `line_end` after every 76 characters and at the end, like MIME and Android's
/// `Base64.DEFAULT` (the Java client's encoder).
fn wrapped(encoded: &str, line_end: &str) -> String {
    encoded.as_bytes().chunks(76).map(|c| format!("{}{line_end}", std::str::from_utf8(c).unwrap())).collect()
}

#[tokio::test]
async fn binary_over_long_polling_is_accepted_in_every_base64_form_the_reference_accepts() {
    let bridge = Bridge::start(&[]).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("edge", false)).await;
    let session = Polling::open(&bridge, "pat").await;
    let data = data();
    let forms = [
        ("standard", STANDARD.encode(&data)),
        ("MIME, LF line breaks and trailing newline (Android Base64.DEFAULT)", wrapped(&STANDARD.encode(&data), "\n")),
        ("MIME, CRLF line breaks", wrapped(&STANDARD.encode(&data), "\r\n")),
        ("trailing newline only", format!("{}\n", STANDARD.encode(&data))),
        ("no padding", STANDARD_NO_PAD.encode(&data)),
        ("URL-safe alphabet", URL_SAFE.encode(&data)),
    ];
    for (form, encoded) in &forms {
        let body = format!("451-[\"bin\",\"{form}\",{{\"_placeholder\":true,\"num\":0}}]\x1eb{encoded}");
        assert_eq!(session.post(body.into_bytes()).await, (200, "ok".to_string()), "{form}");
        let event = backend.next_event().await;
        assert_eq!(event.event, "bin");
        let payload = event.payload.unwrap();
        assert!(payload.args_json.contains(*form), "{form}: events arrive in order");
        assert_eq!(payload.attachments, vec![data.clone()], "{form}: the exact bytes reach the backend");
    }

    // Two attachments in two forms in one POST, with an ack: the answer comes back on the
    // same session (it was never closed).
    let body = format!(
        "452-0[\"ask\",{{\"_placeholder\":true,\"num\":0}},{{\"_placeholder\":true,\"num\":1}}]\x1eb{}\x1eb{}",
        wrapped(&STANDARD.encode(&data), "\n"),
        URL_SAFE.encode(b"second")
    );
    assert_eq!(session.post(body.into_bytes()).await, (200, "ok".to_string()));
    let event = backend.next_event().await;
    assert!(event.wants_ack);
    assert_eq!(event.payload.unwrap().attachments, vec![data.clone(), b"second".to_vec()]);
    backend.ack(&event.id, r#"[{"_placeholder":true,"num":0}]"#, vec![data.clone()]).await;
    let answer = session.packets_until(|p| p.starts_with("461-0[")).await;
    let binary = answer.get(1).and_then(|p| p.strip_prefix('b')).expect("attachment after the ack");
    assert_eq!(STANDARD.decode(binary).unwrap(), data, "the ack's binary arrives intact");
    assert_eq!(bridge.metric(&refused("bad_packet", "polling")).await, 0.0);
}

#[tokio::test]
async fn refused_engine_io_requests_are_counted_and_logged_with_their_reason_once_per_interval() {
    let bridge = Bridge::start(&[]).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("edge", true)).await;
    let session = Polling::open(&bridge, "mal").await;
    let sid = session.sid.clone();

    // A binary packet with a byte in no base64 alphabet: engineioxide refuses the POST and
    // closes the session; the log names the byte.
    let body = "451-[\"bin\",{\"_placeholder\":true,\"num\":0}]\x1ebAQ!D";
    let offset = body.find('!').unwrap();
    let (status, _) = session.post(body.as_bytes().to_vec()).await;
    assert_eq!(status, 400);
    let gone = loop {
        if let proto::events_response::Kind::SocketDisconnected(d) = backend.next().await {
            break d;
        }
    };
    assert_eq!(gone.reason, "parse error");
    // The session is gone: the next poll is refused too.
    assert_eq!(session.get().await.0, 400);
    // A websocket request without Sec-WebSocket-Key, and an unsupported protocol version.
    let http = reqwest::Client::new();
    let ws = http.get(format!("{}/socket.io/?EIO=4&transport=websocket", bridge.url())).send().await.unwrap();
    assert_eq!(ws.status().as_u16(), 400);
    let v3 = http.get(format!("{}/socket.io/?EIO=3&transport=polling", bridge.url())).send().await.unwrap();
    assert_eq!(v3.status().as_u16(), 400);

    assert_eq!(bridge.metric(&refused("bad_packet", "polling")).await, 1.0);
    assert_eq!(bridge.metric(&refused("unknown_session", "polling")).await, 1.0);
    assert_eq!(bridge.metric(&refused("bad_websocket_key", "websocket")).await, 1.0);
    assert_eq!(bridge.metric(&refused("unsupported_protocol", "polling")).await, 1.0);

    let lines = |bridge: &Bridge| -> Vec<Value> {
        bridge.logs().iter().filter_map(|l| serde_json::from_str::<Value>(l).ok()).collect::<Vec<_>>()
    };
    let detailed: Vec<Value> = lines(&bridge)
        .into_iter()
        .filter(|v| v["message"].as_str().is_some_and(|m| m.starts_with(REFUSED_LINE)))
        .collect();
    assert_eq!(detailed.len(), 1, "one line for the interval, the first refusal: {detailed:#?}");
    let first = &detailed[0];
    assert_eq!(first["reason"], "bad_packet");
    assert_eq!(first["status"], 400);
    assert_eq!(first["method"], "POST");
    assert_eq!(first["transport"], "polling");
    assert_eq!(
        first["detail"],
        format!("binary packet has byte 0x21 at offset {offset}, which is in no base64 alphabet").as_str()
    );
    assert!(first["peer"].as_str().is_some_and(|p| p.starts_with("127.0.0.1:")));

    // The three left out are summed up once the interval is over.
    let deadline = Instant::now() + Duration::from_secs(30);
    let summary = loop {
        let found = lines(&bridge)
            .into_iter()
            .find(|v| v["message"].as_str().is_some_and(|m| m.contains("not logged one by one")));
        if let Some(line) = found {
            break line;
        }
        assert!(Instant::now() < deadline, "no summary of the refusals left out");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(summary["refused"], 3);
    assert_eq!(summary["by_reason"], "unknown_session=1,unsupported_protocol=1,bad_websocket_key=1");
    for line in [first, &summary] {
        assert!(!line.to_string().contains(&sid), "a refusal line never names the session: {line}");
    }
}

#[tokio::test]
async fn polling_bodies_are_read_only_up_to_the_payload_limit_and_refused_beyond_it() {
    let bridge = Bridge::start(&settings(&["socketio.max_payload_bytes=2000"])).await;
    let mut client = bridge.client_with_key(None).await;
    let mut backend = Backend::subscribe(&mut client, subscribe_all("edge", false)).await;

    // Within the limit, a wrapped binary is normalized and accepted.
    let session = Polling::open(&bridge, "lim").await;
    let data: Vec<u8> = (0..=255u8).cycle().take(1200).collect();
    let body =
        format!("451-[\"bin\",{{\"_placeholder\":true,\"num\":0}}]\x1eb{}", wrapped(&STANDARD.encode(&data), "\n"));
    assert!(body.len() <= 2000, "{}", body.len());
    assert_eq!(session.post(body.into_bytes()).await, (200, "ok".to_string()));
    assert_eq!(backend.next_event().await.payload.unwrap().attachments, vec![data]);

    // Beyond it, engineioxide answers 413 and closes the session, as without the edge.
    let body = format!("42[\"big\",\"{}\"]", "x".repeat(5000));
    assert_eq!(session.post(body.into_bytes()).await.0, 413);
    assert_eq!(bridge.metric(&refused("payload_too_large", "polling")).await, 1.0);
    assert_eq!(session.get().await.0, 400, "the session was closed");
    assert!(backend.quiet_for(Duration::from_millis(200)).await.is_none(), "nothing of the refused body went on");
}
