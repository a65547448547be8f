//! Socket.IO argument lists, carried losslessly between browsers and the backend.
//!
//! The backend sees a payload as `args_json` (a JSON array, one element per argument) plus
//! binary `attachments` that `args_json` references with Socket.IO placeholders
//! `{"_placeholder":true,"num":N}`. Arguments are kept as raw JSON text wherever possible,
//! so integers beyond 2^53, number formatting and key order survive the trip both ways.

use std::fmt;

use bytes::Bytes;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::ser::{SerializeMap, SerializeSeq, SerializeTuple};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::value::RawValue;

/// Limits applied to every payload that enters the bridge.
#[derive(Debug, Clone, Copy)]
pub struct PayloadLimits {
    /// Largest `args_json` plus attachments, in bytes.
    pub max_bytes: usize,
    /// Most binary attachments in one payload.
    pub max_attachments: usize,
}

/// Why a payload was refused. Each variant names what is wrong so the caller can fix it.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PayloadError {
    #[error("args_json is not valid JSON: {0}")]
    InvalidJson(String),
    #[error("args_json must be a JSON array (one element per argument)")]
    NotAnArray,
    #[error("payload is {size} bytes, over the limit of {max}")]
    TooLarge { size: usize, max: usize },
    #[error("{count} attachments, over the limit of {max}")]
    TooManyAttachments { count: usize, max: usize },
    #[error("placeholder refers to attachment {num}, but only {count} were sent")]
    MissingAttachment { num: u64, count: usize },
    #[error("attachment {num} is never referenced by a placeholder in args_json")]
    UnusedAttachment { num: usize },
}

/// A validated Socket.IO argument list. Serializable so instances can hand it to each
/// other; what an instance receives was validated by the instance that took it in.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Payload {
    args_json: String,
    attachments: Vec<Bytes>,
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Payload")
            .field("args_json_bytes", &self.args_json.len())
            .field("attachments", &self.attachments.len())
            .finish()
    }
}

impl Payload {
    /// Validates a payload that came from the backend. An empty `args_json` means no
    /// arguments.
    pub fn from_backend(
        args_json: String,
        attachments: Vec<Bytes>,
        limits: PayloadLimits,
    ) -> Result<Self, PayloadError> {
        let size = args_json.len() + attachments.iter().map(Bytes::len).sum::<usize>();
        if size > limits.max_bytes {
            return Err(PayloadError::TooLarge { size, max: limits.max_bytes });
        }
        if attachments.len() > limits.max_attachments {
            return Err(PayloadError::TooManyAttachments { count: attachments.len(), max: limits.max_attachments });
        }
        let args_json = if args_json.trim().is_empty() { "[]".to_owned() } else { args_json };
        let payload = Self { args_json, attachments };
        // Checking here means every later encode of this payload cannot fail. Without
        // attachments that is only "a JSON array", checked without building anything.
        if payload.attachments.is_empty() {
            check_array(&payload.args_json)?;
        } else {
            payload.wire_args()?;
        }
        Ok(payload)
    }

    /// A payload built from JSON the bridge itself produced (error answers and the like).
    pub fn from_json_args(args: &[serde_json::Value]) -> Self {
        Self { args_json: serde_json::to_string(args).unwrap_or_else(|_| "[]".to_owned()), attachments: Vec::new() }
    }

    /// Builds a payload from what a client sent: `raw_args` are the arguments' JSON texts as
    /// they appeared on the wire (placeholders included) and `attachments` the binary frames.
    pub fn from_client(raw_args: &[&RawValue], attachments: Vec<Bytes>) -> Self {
        let mut args_json = String::with_capacity(2 + raw_args.iter().map(|a| a.get().len() + 1).sum::<usize>());
        args_json.push('[');
        for (i, arg) in raw_args.iter().enumerate() {
            if i > 0 {
                args_json.push(',');
            }
            args_json.push_str(arg.get());
        }
        args_json.push(']');
        Self { args_json, attachments }
    }

    /// A payload this bridge validated before (kept in Redis by an instance of the same
    /// cluster); not parsed again.
    pub fn from_trusted_parts(args_json: String, attachments: Vec<Bytes>) -> Self {
        Self { args_json, attachments }
    }

    pub fn args_json(&self) -> &str {
        &self.args_json
    }

    pub fn attachments(&self) -> &[Bytes] {
        &self.attachments
    }

    pub fn into_parts(self) -> (String, Vec<Bytes>) {
        (self.args_json, self.attachments)
    }

    /// Size on the wire, for limits and metrics.
    pub fn len(&self) -> usize {
        self.args_json.len() + self.attachments.iter().map(Bytes::len).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.args_json == "[]" && self.attachments.is_empty()
    }

    /// The arguments to hand socketioxide, as `wire_args` builds them; without
    /// attachments borrowed straight from `args_json` (one parse, no copies).
    pub fn send_args(&self) -> Result<SendArgs<'_>, PayloadError> {
        if self.attachments.is_empty() {
            return match serde_json::from_str(&self.args_json) {
                Ok(args) => Ok(SendArgs::Borrowed(args)),
                // Name the fault as `wire_args` would (any JSON array parses above).
                Err(e) => check_array(&self.args_json).and(Err(PayloadError::InvalidJson(e.to_string()))),
            };
        }
        self.wire_args().map(SendArgs::Wire)
    }

    /// The argument list in the form socketioxide serializes: a tuple (so each element
    /// becomes one Socket.IO argument) whose binary leaves become attachments again.
    pub fn wire_args(&self) -> Result<WireArgs, PayloadError> {
        let raw: Vec<Box<RawValue>> = match serde_json::from_str::<Box<RawValue>>(&self.args_json) {
            Ok(v) if v.get().trim_start().starts_with('[') => {
                serde_json::from_str(v.get()).map_err(|e| PayloadError::InvalidJson(e.to_string()))?
            }
            Ok(_) => return Err(PayloadError::NotAnArray),
            Err(e) => return Err(PayloadError::InvalidJson(e.to_string())),
        };
        if self.attachments.is_empty() {
            return Ok(WireArgs(raw.into_iter().map(ArgValue::Raw).collect()));
        }
        let mut used = vec![false; self.attachments.len()];
        let args = raw
            .into_iter()
            .map(|arg| resolve_placeholders(arg, &self.attachments, &mut used))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(num) = used.iter().position(|u| !u) {
            return Err(PayloadError::UnusedAttachment { num });
        }
        Ok(WireArgs(args))
    }
}

/// Deepest nesting of arrays and objects allowed in a client event's arguments. Every
/// decoder on the way (the backend's JSON library, Redis in cluster mode, the clients that
/// receive what the backend sends on) pays stack for each level; serde_json itself stops
/// at 128. Application payloads stay far below 32 (the dashboard's and the examples' go
/// 4 deep).
pub const MAX_NESTING_DEPTH: usize = 32;

/// How deeply arrays and objects nest in a JSON text (0 for a scalar), brackets inside
/// strings ignored. One pass, no allocation; malformed text gets a number all the same
/// (the parser refuses it elsewhere).
pub fn nesting_depth(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// `text` is a JSON array: `InvalidJson` or `NotAnArray` otherwise, exactly as `wire_args`
/// says (the same parser errors), without allocating.
fn check_array(text: &str) -> Result<(), PayloadError> {
    serde_json::from_str::<de::IgnoredAny>(text).map_err(|e| PayloadError::InvalidJson(e.to_string()))?;
    if text.trim_start().starts_with('[') { Ok(()) } else { Err(PayloadError::NotAnArray) }
}

/// An argument list for socketioxide (see `Payload::send_args`): serializes exactly as
/// the payload's `WireArgs` would.
pub enum SendArgs<'a> {
    /// No attachments: each argument's JSON text, borrowed.
    Borrowed(Vec<&'a RawValue>),
    Wire(WireArgs),
}

impl Serialize for SendArgs<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            SendArgs::Borrowed(args) => {
                let mut tuple = serializer.serialize_tuple(args.len())?;
                for arg in args {
                    tuple.serialize_element(arg)?;
                }
                tuple.end()
            }
            SendArgs::Wire(wire) => wire.serialize(serializer),
        }
    }
}

/// One argument, ready for socketioxide's serializer.
#[derive(Debug, Clone)]
pub enum ArgValue {
    /// Verbatim JSON with no binary inside.
    Raw(Box<RawValue>),
    /// A binary leaf; socketioxide turns it back into a placeholder plus attachment.
    Binary(Bytes),
    Array(Vec<ArgValue>),
    Object(Vec<(String, ArgValue)>),
}

/// An argument list that serializes as a tuple, which socketioxide spreads into separate
/// Socket.IO arguments (a `Vec` would become a single array argument).
#[derive(Debug, Clone, Default)]
pub struct WireArgs(pub Vec<ArgValue>);

impl Serialize for WireArgs {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut tuple = serializer.serialize_tuple(self.0.len())?;
        for arg in &self.0 {
            tuple.serialize_element(arg)?;
        }
        tuple.end()
    }
}

impl Serialize for ArgValue {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            ArgValue::Raw(raw) => raw.serialize(serializer),
            ArgValue::Binary(bytes) => serializer.serialize_bytes(bytes),
            ArgValue::Array(items) => {
                let mut seq = serializer.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            ArgValue::Object(entries) => {
                let mut map = serializer.serialize_map(Some(entries.len()))?;
                for (k, v) in entries {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

impl WireArgs {
    /// Back to the backend's form: placeholders numbered in depth-first order, as the
    /// Socket.IO JS encoder numbers them.
    pub fn into_payload(self) -> Payload {
        let mut attachments = Vec::new();
        let mut out = String::from("[");
        for (i, arg) in self.0.into_iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            write_arg(arg, &mut out, &mut attachments);
        }
        out.push(']');
        Payload { args_json: out, attachments }
    }
}

fn write_arg(arg: ArgValue, out: &mut String, attachments: &mut Vec<Bytes>) {
    match arg {
        ArgValue::Raw(raw) => out.push_str(raw.get()),
        ArgValue::Binary(bytes) => {
            out.push_str(&format!("{{\"_placeholder\":true,\"num\":{}}}", attachments.len()));
            attachments.push(bytes);
        }
        ArgValue::Array(items) => {
            out.push('[');
            for (i, item) in items.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_arg(item, out, attachments);
            }
            out.push(']');
        }
        ArgValue::Object(entries) => {
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::to_string(&k).unwrap_or_else(|_| "\"\"".into()));
                out.push(':');
                write_arg(v, out, attachments);
            }
            out.push('}');
        }
    }
}

/// Replaces placeholders inside one raw argument with the attachments they name. Only
/// containers are taken apart; scalars stay verbatim.
fn resolve_placeholders(
    raw: Box<RawValue>,
    attachments: &[Bytes],
    used: &mut [bool],
) -> Result<ArgValue, PayloadError> {
    let text = raw.get().trim_start();
    let invalid = |e: serde_json::Error| PayloadError::InvalidJson(e.to_string());
    if text.starts_with('[') {
        let items: Vec<Box<RawValue>> = serde_json::from_str(raw.get()).map_err(invalid)?;
        let items =
            items.into_iter().map(|item| resolve_placeholders(item, attachments, used)).collect::<Result<_, _>>()?;
        Ok(ArgValue::Array(items))
    } else if text.starts_with('{') {
        let RawEntries(entries) = serde_json::from_str(raw.get()).map_err(invalid)?;
        if let Some(num) = placeholder_num(&entries) {
            let index = usize::try_from(num)
                .ok()
                .filter(|i| *i < attachments.len())
                .ok_or(PayloadError::MissingAttachment { num, count: attachments.len() })?;
            used[index] = true;
            return Ok(ArgValue::Binary(attachments[index].clone()));
        }
        let entries = entries
            .into_iter()
            .map(|(k, v)| Ok((k, resolve_placeholders(v, attachments, used)?)))
            .collect::<Result<_, PayloadError>>()?;
        Ok(ArgValue::Object(entries))
    } else {
        Ok(ArgValue::Raw(raw))
    }
}

/// `{"_placeholder":true,"num":N}` in either key order, nothing else.
fn placeholder_num(entries: &[(String, Box<RawValue>)]) -> Option<u64> {
    if entries.len() != 2 {
        return None;
    }
    let get = |key: &str| entries.iter().find(|(k, _)| k == key).map(|(_, v)| v.get().trim());
    match (get("_placeholder"), get("num")) {
        (Some("true"), Some(num)) => num.parse().ok(),
        _ => None,
    }
}

/// A JSON object's entries in document order, values left raw.
struct RawEntries(Vec<(String, Box<RawValue>)>);

impl<'de> Deserialize<'de> for RawEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = RawEntries;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawEntries, A::Error> {
                let mut entries = Vec::with_capacity(map.size_hint().unwrap_or(4));
                while let Some((k, v)) = map.next_entry::<String, Box<RawValue>>()? {
                    entries.push((k, v));
                }
                Ok(RawEntries(entries))
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

/// A client's acknowledgement arguments, decoded through socketioxide's deserializer
/// (which hands binary placeholders over as byte buffers).
#[derive(Debug, Default)]
pub struct ClientAckArgs(pub WireArgs);

impl<'de> Deserialize<'de> for ClientAckArgs {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct ArgsVisitor;
        impl<'de> Visitor<'de> for ArgsVisitor {
            type Value = ClientAckArgs;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("acknowledgement arguments")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ClientAckArgs, A::Error> {
                let mut args = Vec::new();
                while let Some(arg) = seq.next_element_seed(ArgSeed)? {
                    args.push(arg);
                }
                Ok(ClientAckArgs(WireArgs(args)))
            }
        }
        // A tuple makes socketioxide hand over every argument rather than only the first.
        deserializer.deserialize_tuple(usize::MAX, ArgsVisitor)
    }
}

struct ArgSeed;

impl<'de> DeserializeSeed<'de> for ArgSeed {
    type Value = ArgValue;
    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<ArgValue, D::Error> {
        deserializer.deserialize_any(ArgVisitor)
    }
}

struct ArgVisitor;

fn raw_scalar<E: de::Error, T: Serialize>(value: T) -> Result<ArgValue, E> {
    let text = serde_json::to_string(&value).map_err(E::custom)?;
    RawValue::from_string(text).map(ArgValue::Raw).map_err(E::custom)
}

impl<'de> Visitor<'de> for ArgVisitor {
    type Value = ArgValue;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("any JSON value or binary")
    }
    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ArgValue, E> {
        raw_scalar(v)
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ArgValue, E> {
        raw_scalar(v)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ArgValue, E> {
        raw_scalar(v)
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ArgValue, E> {
        raw_scalar(v)
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<ArgValue, E> {
        raw_scalar(v)
    }
    fn visit_unit<E: de::Error>(self) -> Result<ArgValue, E> {
        raw_scalar(())
    }
    fn visit_none<E: de::Error>(self) -> Result<ArgValue, E> {
        raw_scalar(())
    }
    fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<ArgValue, E> {
        Ok(ArgValue::Binary(Bytes::copy_from_slice(v)))
    }
    fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<ArgValue, E> {
        Ok(ArgValue::Binary(Bytes::from(v)))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<ArgValue, A::Error> {
        let mut items = Vec::new();
        while let Some(item) = seq.next_element_seed(ArgSeed)? {
            items.push(item);
        }
        Ok(ArgValue::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ArgValue, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            let value = map.next_value_seed(ArgSeed)?;
            entries.push((key, value));
        }
        Ok(ArgValue::Object(entries))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: PayloadLimits = PayloadLimits { max_bytes: 1024, max_attachments: 4 };

    fn roundtrip(args_json: &str, attachments: Vec<Bytes>) -> Payload {
        Payload::from_backend(args_json.to_owned(), attachments, LIMITS)
            .and_then(|p| p.wire_args())
            .map(WireArgs::into_payload)
            .unwrap()
    }

    #[test]
    fn big_integers_and_key_order_survive() {
        let json = r#"[{"z":12345678901234567890123,"a":[1.50,{"n":null}]},"x"]"#;
        assert_eq!(roundtrip(json, vec![]).args_json(), json);
    }

    #[test]
    fn placeholders_resolve_to_attachments_in_depth_first_order() {
        let json = r#"[{"b":{"num":1,"_placeholder":true},"a":{"_placeholder":true,"num":0}}]"#;
        let p = roundtrip(json, vec![Bytes::from_static(b"zero"), Bytes::from_static(b"one")]);
        assert_eq!(p.args_json(), r#"[{"b":{"_placeholder":true,"num":0},"a":{"_placeholder":true,"num":1}}]"#);
        assert_eq!(p.attachments(), &[Bytes::from_static(b"one"), Bytes::from_static(b"zero")]);
    }

    #[test]
    fn bad_payloads_are_named() {
        let err = |json: &str, att: Vec<Bytes>| Payload::from_backend(json.into(), att, LIMITS);
        assert_eq!(err("{}", vec![]), Err(PayloadError::NotAnArray));
        assert!(matches!(err("[1,", vec![]), Err(PayloadError::InvalidJson(_))));
        assert_eq!(
            err(r#"[{"_placeholder":true,"num":3}]"#, vec![Bytes::new()]),
            Err(PayloadError::MissingAttachment { num: 3, count: 1 })
        );
        assert_eq!(err("[]", vec![Bytes::new()]), Err(PayloadError::UnusedAttachment { num: 0 }));
        assert_eq!(
            err(&format!("[\"{}\"]", "x".repeat(2000)), vec![]),
            Err(PayloadError::TooLarge { size: 2004, max: 1024 })
        );
        assert_eq!(err("[]", vec![Bytes::new(); 5]), Err(PayloadError::TooManyAttachments { count: 5, max: 4 }));
    }

    #[test]
    fn empty_args_json_means_no_arguments() {
        let p = Payload::from_backend(String::new(), vec![], LIMITS).unwrap();
        assert_eq!(p.args_json(), "[]");
        assert!(p.wire_args().unwrap().0.is_empty());
    }

    #[test]
    fn quick_checks_name_faults_as_the_full_parse_does() {
        for text in [
            "",
            " ",
            "[1,",
            "{}",
            "1",
            "\"x\"",
            "[1]]",
            "[1] x",
            "[\"\\u12\"]",
            "[nul]",
            "[1,]",
            " [ 1 , {\"a\":[]} ] ",
        ] {
            let full = Payload { args_json: text.to_owned(), attachments: vec![] }.wire_args().map(|_| ());
            assert_eq!(check_array(text), full, "{text:?}");
            let p = Payload { args_json: text.to_owned(), attachments: vec![] };
            assert_eq!(p.send_args().map(|_| ()), full, "{text:?}");
        }
    }

    #[test]
    fn borrowed_args_serialize_as_wire_args() {
        let p = Payload::from_backend(r#"[ {"z":1e400,"a":[1.50]} , "x",null]"#.into(), vec![], LIMITS).unwrap();
        let wire = serde_json::to_string(&p.wire_args().unwrap()).unwrap();
        assert_eq!(serde_json::to_string(&p.send_args().unwrap()).unwrap(), wire);
    }

    #[test]
    fn client_args_are_joined_verbatim() {
        let a: Box<RawValue> = serde_json::from_str(r#"{"k": 1e400}"#).unwrap();
        let b: Box<RawValue> = serde_json::from_str("9007199254740993").unwrap();
        let p = Payload::from_client(&[&a, &b], vec![]);
        assert_eq!(p.args_json(), r#"[{"k": 1e400},9007199254740993]"#);
    }

    #[test]
    fn nesting_depth_counts_arrays_and_objects_but_not_brackets_in_strings() {
        assert_eq!(nesting_depth("1"), 0);
        assert_eq!(nesting_depth("[]"), 1);
        assert_eq!(nesting_depth(r#"{"a":[{"b":[1]}]}"#), 4);
        assert_eq!(nesting_depth(r#"["[[[[\"]]]]", {"k": "{{{"}]"#), 2);
        assert_eq!(nesting_depth(&format!("{}{}", "[".repeat(40), "]".repeat(40))), 40);
    }
}
