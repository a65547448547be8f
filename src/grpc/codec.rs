//! The protobuf codec of the generated services: prost's, except for requests whose
//! strings are not UTF-8. prost refuses those while decoding and tonic answers `INTERNAL`
//! with prost's internal message path; the caller sent bad input, so the bridge answers
//! `INVALID_ARGUMENT` naming the field as the API's other errors do (proto field names,
//! repeated fields with their index: `pushes[2].payload.args_json`), with a
//! `google.rpc.BadRequest` detail.

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Buf;
use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FileDescriptorSet};
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic::{Code, Status};
use tonic_prost::{ProstCodec, ProstEncoder};
use tonic_types::{ErrorDetails, StatusExt};

/// The codec named in `build.rs` for every generated service and client.
#[derive(Debug, Clone)]
pub struct ProtoCodec<T, U>(ProstCodec<T, U>);

impl<T, U> Default for ProtoCodec<T, U> {
    fn default() -> Self {
        Self(ProstCodec::default())
    }
}

impl<T, U> Codec for ProtoCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = ProtoDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        self.0.encoder()
    }

    fn decoder(&mut self) -> Self::Decoder {
        ProtoDecoder(std::marker::PhantomData)
    }
}

#[derive(Debug, Clone, Default)]
pub struct ProtoDecoder<U>(std::marker::PhantomData<U>);

impl<U: Message + Default> Decoder for ProtoDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        let len = buf.remaining();
        // A message arrives in one contiguous buffer; decoding from the slice keeps the
        // bytes at hand to find the faulty field if decoding fails.
        if buf.chunk().len() >= len {
            let result = U::decode(&buf.chunk()[..len]);
            let status = result.as_ref().err().map(|e| decode_status(e, &buf.chunk()[..len]));
            buf.advance(len);
            return match (result, status) {
                (Ok(message), _) => Ok(Some(message)),
                (Err(_), Some(status)) => Err(status),
                (Err(e), None) => Err(Status::internal(e.to_string())),
            };
        }
        U::decode(buf).map(Some).map_err(|e| decode_status(&e, &[]))
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

const NOT_UTF8: &str = "invalid string value: data is not UTF-8 encoded";

/// The status for a decode error: `INVALID_ARGUMENT` naming the field for a string that
/// is not UTF-8, `INTERNAL` (tonic's choice) for anything else.
fn decode_status(error: &prost::DecodeError, raw: &[u8]) -> Status {
    let text = error.to_string();
    if !text.ends_with(NOT_UTF8) {
        return Status::internal(text);
    }
    // prost names the messages from the innermost out: "A.x: B.y: <description>"; the
    // outermost is the request type.
    let outermost = text
        .trim_start_matches("failed to decode Protobuf message: ")
        .split(": ")
        .filter_map(|part| part.split_once('.'))
        .filter(|(message, field)| is_ident(message) && is_ident(field))
        .last()
        .map(|(message, _)| message.to_owned());
    let field = outermost
        .and_then(|m| {
            let index = descriptors();
            let name = index.by_simple_name.get(&m)?;
            let mut path = Vec::new();
            first_invalid_string(index, name, raw, &mut path, 0).then(|| path.join("."))
        })
        .unwrap_or_else(|| "request".to_owned());
    let message = "must be valid UTF-8".to_owned();
    Status::with_error_details(
        Code::InvalidArgument,
        format!("{field}: {message}"),
        ErrorDetails::with_bad_request_violation(field, message),
    )
}

fn is_ident(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// The API's message types, by full name (`.socketbridge.v1.PushRequest`) and by simple
/// name (as prost's errors give them).
struct Index {
    by_full_name: HashMap<String, DescriptorProto>,
    by_simple_name: HashMap<String, String>,
}

fn descriptors() -> &'static Index {
    static INDEX: OnceLock<Index> = OnceLock::new();
    INDEX.get_or_init(|| {
        let mut index = Index { by_full_name: HashMap::new(), by_simple_name: HashMap::new() };
        let set = FileDescriptorSet::decode(crate::proto::FILE_DESCRIPTOR_SET).unwrap_or_default();
        fn add(index: &mut Index, scope: &str, message: &DescriptorProto) {
            let full = format!("{scope}.{}", message.name());
            for nested in &message.nested_type {
                add(index, &full, nested);
            }
            index.by_simple_name.entry(message.name().to_owned()).or_insert_with(|| full.clone());
            index.by_full_name.insert(full, message.clone());
        }
        for file in &set.file {
            let scope = if file.package().is_empty() { String::new() } else { format!(".{}", file.package()) };
            for message in &file.message_type {
                add(&mut index, &scope, message);
            }
        }
        index
    })
}

/// Walks the wire format of a `message` and fills `path` with the first string field that
/// is not UTF-8; false if there is none (or the bytes do not parse).
fn first_invalid_string(index: &Index, message: &str, mut data: &[u8], path: &mut Vec<String>, depth: usize) -> bool {
    if depth > 64 {
        return false;
    }
    let Some(descriptor) = index.by_full_name.get(message) else { return false };
    let mut seen: HashMap<i32, usize> = HashMap::new();
    while !data.is_empty() {
        let Ok(key) = prost::encoding::decode_varint(&mut data) else { return false };
        let (tag, wire_type) = ((key >> 3) as i32, key & 7);
        let value: &[u8] = match wire_type {
            0 => {
                if prost::encoding::decode_varint(&mut data).is_err() {
                    return false;
                }
                continue;
            }
            1 | 5 => {
                let n = if wire_type == 1 { 8 } else { 4 };
                if data.len() < n {
                    return false;
                }
                data = &data[n..];
                continue;
            }
            2 => {
                let Ok(len) = prost::encoding::decode_varint(&mut data) else { return false };
                let Ok(len) = usize::try_from(len) else { return false };
                if data.len() < len {
                    return false;
                }
                let (value, rest) = data.split_at(len);
                data = rest;
                value
            }
            _ => return false,
        };
        let Some(field) = descriptor.field.iter().find(|f| f.number() == tag) else { continue };
        let occurrence = seen.entry(tag).or_default();
        let name = if field.label() == Label::Repeated {
            format!("{}[{occurrence}]", field.name())
        } else {
            field.name().to_owned()
        };
        *occurrence += 1;
        match field.r#type() {
            Type::String if std::str::from_utf8(value).is_err() => {
                path.push(name);
                return true;
            }
            Type::Message => {
                path.push(name);
                if first_invalid_string(index, field.type_name(), value, path, depth + 1) {
                    return true;
                }
                path.pop();
            }
            _ => {}
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto;

    /// A message's bytes with the string at `needle` replaced by invalid UTF-8 of the same
    /// length.
    fn corrupt(bytes: Vec<u8>, needle: &str) -> Vec<u8> {
        let at = bytes.windows(needle.len()).position(|w| w == needle.as_bytes()).expect("needle");
        let mut bytes = bytes;
        bytes[at] = 0xff;
        bytes
    }

    fn decode<U: Message + Default + std::fmt::Debug>(bytes: &[u8]) -> Status {
        let error = U::decode(bytes).unwrap_err();
        decode_status(&error, bytes)
    }

    #[test]
    fn invalid_utf8_names_the_field_with_its_path() {
        let push = proto::PushRequest {
            target: Some(proto::Target { kind: Some(proto::target::Kind::UserId("ann".into())) }),
            event: "evt-name".into(),
            payload: Some(proto::Payload { args_json: "[\"zzz\"]".into(), attachments: vec![] }),
            ..Default::default()
        };
        let status = decode::<proto::PushRequest>(&corrupt(push.encode_to_vec(), "evt-name"));
        assert_eq!((status.code(), status.message()), (Code::InvalidArgument, "event: must be valid UTF-8"));
        let status = decode::<proto::PushRequest>(&corrupt(push.encode_to_vec(), "zzz"));
        assert_eq!(status.message(), "payload.args_json: must be valid UTF-8");
        let status = decode::<proto::PushRequest>(&corrupt(push.encode_to_vec(), "ann"));
        assert_eq!(status.message(), "target.user_id: must be valid UTF-8");
        let details = status.get_error_details();
        assert_eq!(details.bad_request().unwrap().field_violations[0].field, "target.user_id");

        let batch = proto::PushBatchRequest { pushes: vec![push.clone(), push.clone()] };
        let mut bytes = batch.encode_to_vec();
        let second = bytes.windows(3).rposition(|w| w == b"zzz").unwrap();
        bytes[second] = 0xff;
        let status = decode::<proto::PushBatchRequest>(&bytes);
        assert_eq!(status.message(), "pushes[1].payload.args_json: must be valid UTF-8");
    }

    #[test]
    fn other_decode_errors_stay_internal() {
        let status = decode::<proto::PushRequest>(&[0x0a, 0xff]);
        assert_eq!(status.code(), Code::Internal);
    }
}
