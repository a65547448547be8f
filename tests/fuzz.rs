//! Property-based fuzzing of every decoder the project writes itself: argument lists and
//! attachments, client event packets, event/room patterns, REST request bodies, the
//! config file, and the credential headers. Each property must hold for any input: no
//! panic, and where the input is accepted, a round trip that loses nothing.
//!
//! `PROPTEST_CASES` sets the number of cases (256 by default); `bash tests/fuzz.sh SECONDS`
//! runs them for longer. A failing input proptest finds is saved under
//! `tests/fuzz.proptest-regressions` and replayed first on every later run.

use bytes::Bytes;
use proptest::prelude::*;
use socket_bridge::config::{Config, Secret};
use socket_bridge::hub::auth::{AdminCredentials, ApiKeys};
use socket_bridge::hub::pattern::Pattern;
use socket_bridge::hub::{Payload, PayloadLimits};

const LIMITS: PayloadLimits = PayloadLimits { max_bytes: 1 << 16, max_attachments: 8 };

/// Arbitrary JSON values, nested a few levels, with placeholders mixed in.
fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(serde_json::Value::from),
        ".{0,12}".prop_map(serde_json::Value::from),
        (0u64..10).prop_map(|n| serde_json::json!({"_placeholder": true, "num": n})),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(serde_json::Value::from),
            prop::collection::btree_map(".{0,6}", inner, 0..4)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    /// Any text as args_json: never panics; accepted payloads survive encode/decode.
    #[test]
    fn fuzz_args_json_never_panics(text in ".{0,200}", n in 0usize..4) {
        let attachments = vec![Bytes::from_static(b"x"); n];
        if let Ok(p) = Payload::from_backend(text, attachments, LIMITS) {
            let back = p.wire_args().expect("validated payloads encode").into_payload();
            prop_assert_eq!(back.attachments().len(), p.attachments().len());
        }
    }

    /// Valid argument lists with placeholders: the round trip keeps every value and byte.
    #[test]
    fn fuzz_args_roundtrip_is_lossless(args in prop::collection::vec(json_value(), 0..5), n in 0usize..10) {
        let attachments: Vec<Bytes> = (0..n).map(|i| Bytes::from(vec![i as u8; i + 1])).collect();
        let text = serde_json::to_string(&args).unwrap();
        match Payload::from_backend(text.clone(), attachments.clone(), LIMITS) {
            Ok(p) => {
                let back = p.wire_args().unwrap().into_payload();
                let again = back.wire_args().unwrap().into_payload();
                prop_assert_eq!(back.args_json(), again.args_json(), "encoding is stable");
                prop_assert_eq!(back.attachments().len(), attachments.len());
                if attachments.is_empty() {
                    let a: serde_json::Value = serde_json::from_str(back.args_json()).unwrap();
                    let b: serde_json::Value = serde_json::from_str(&text).unwrap();
                    prop_assert_eq!(a, b);
                }
            }
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    /// Any text as a client's event packet body.
    #[test]
    fn fuzz_client_event_packet_never_panics(text in ".{0,200}") {
        if let Some((event, args)) = socket_bridge::socketio::split_event(&text) {
            let p = Payload::from_client(&args, vec![]);
            prop_assert!(serde_json::from_str::<serde_json::Value>(p.args_json()).is_ok());
            prop_assert!(text.contains(&event) || event.is_empty() || text.contains('\\'));
        }
    }

    /// Patterns: never panic, `*` alone matches all, a literal matches only itself.
    #[test]
    fn fuzz_patterns(pattern in "[a-c*]{1,12}", name in "[a-c]{0,16}") {
        let p = Pattern::new(&pattern).unwrap();
        let _ = p.matches(&name);
        prop_assert!(Pattern::new("*").unwrap().matches(&name));
        if !name.is_empty() {
            prop_assert!(Pattern::new(&name).unwrap().matches(&name));
        }
        // Reference: the glob as a regex-free recursive matcher on small inputs.
        prop_assert_eq!(p.matches(&name), reference_glob(pattern.as_bytes(), name.as_bytes()));
    }

    /// REST push bodies: any JSON object never panics the decoder.
    #[test]
    fn fuzz_rest_push_body(value in json_value()) {
        let _ = serde_json::from_value::<socket_bridge::http::api::PushBody>(value);
    }

    /// Any text as a config file: a Config or a list of named problems, never a panic.
    #[test]
    fn fuzz_config_file(text in "(\\[[a-z.]{1,12}\\]\\n)?([a-z_.]{1,16} = (\\d{1,6}|\"[ -~]{0,10}\"|true|\\[\\])\\n){0,6}") {
        match Config::from_toml(&text) {
            Ok(c) => prop_assert!(c.validate().is_ok()),
            Err(e) => prop_assert!(!e.0.is_empty()),
        }
    }

    /// Credential headers: only the exact key or user:password passes.
    #[test]
    fn fuzz_credential_headers(header in ".{0,64}") {
        let keys = ApiKeys::new(&[Secret::new("the-right-key-0123456789")]);
        prop_assert_eq!(keys.accepts(Some(&header)), header == "Bearer the-right-key-0123456789");
        let admin = AdminCredentials::new("admin", Some(&Secret::new("pass-word-1")));
        prop_assert!(!admin.accepts(Some(&header)) || header.starts_with("Basic "));
    }
}

fn reference_glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (None, Some(_)) => false,
        (Some(b'*'), _) => reference_glob(&p[1..], s) || (!s.is_empty() && reference_glob(p, &s[1..])),
        (Some(c), Some(d)) if c == d => reference_glob(&p[1..], &s[1..]),
        _ => false,
    }
}
