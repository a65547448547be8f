//! Base64 of binary packets in a long-polling body, rewritten into the one form
//! engineioxide decodes (see the parent module for why, and what upstream would need).

use super::SEPARATOR;

/// Why a binary packet's content is in no base64 form. Offsets count from the start of
/// the POST body.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotBase64 {
    #[error("binary packet has byte 0x{byte:02x} at offset {offset}, which is in no base64 alphabet")]
    Character { offset: usize, byte: u8 },
    #[error("binary packet has data after its '=' padding at offset {offset}")]
    DataAfterPadding { offset: usize },
    #[error("binary packet ending at offset {offset} has a single leftover base64 character")]
    Truncated { offset: usize },
}

/// An Engine.IO v4 polling payload (packets separated by 0x1e) with every binary packet's
/// base64 in the standard alphabet with padding and nothing else. `Ok(None)`: already so
/// (the common case, found with one pass over the binary packets and no copy).
pub fn normalize_payload(body: &[u8]) -> Result<Option<Vec<u8>>, NotBase64> {
    let mut out: Option<Vec<u8>> = None;
    let mut start = 0;
    loop {
        let end = memchr::memchr(SEPARATOR, &body[start..]).map_or(body.len(), |i| start + i);
        let packet = &body[start..end];
        match (packet.split_first(), &mut out) {
            (Some((b'b', data)), out) if !is_canonical(data) => {
                let out = out.get_or_insert_with(|| {
                    let mut v = Vec::with_capacity(body.len() + 3);
                    v.extend_from_slice(&body[..start]);
                    v
                });
                out.push(b'b');
                rewrite(data, start + 1, out)?;
            }
            (_, Some(out)) => out.extend_from_slice(packet),
            (_, None) => {}
        }
        if end == body.len() {
            return Ok(out);
        }
        if let Some(out) = &mut out {
            out.push(SEPARATOR);
        }
        start = end + 1;
    }
}

/// A character of the standard base64 alphabet. Written without branches so that the
/// check over a whole packet vectorizes.
fn is_standard(c: u8) -> bool {
    let lower = c | 0x20;
    (lower.wrapping_sub(b'a') < 26) | (c.wrapping_sub(b'0') < 10) | (c == b'+') | (c == b'/')
}

/// Standard alphabet, length a multiple of 4, at most two `=` at the end, and zero bits
/// after the last byte: exactly what engineioxide's strict decoder accepts.
fn is_canonical(data: &[u8]) -> bool {
    if !data.len().is_multiple_of(4) {
        return false;
    }
    let pad = data.iter().rev().take(2).take_while(|&&c| c == b'=').count();
    let body = &data[..data.len() - pad];
    if !body.iter().fold(true, |all, &c| all & is_standard(c)) {
        return false;
    }
    let last = body.last().map_or(0, |&c| VALUE[usize::from(c)]);
    match pad {
        1 => last & 0b11 == 0,
        2 => last & 0b1111 == 0,
        _ => true,
    }
}

/// What a byte is inside the base64 of a binary packet.
const DATA: u8 = 0;
const SPACE: u8 = 1;
const PAD: u8 = 2;
const INVALID: u8 = 3;

/// Every byte's class: the standard and URL-safe alphabets are data, ASCII whitespace is
/// skipped, `=` is padding.
const CLASS: [u8; 256] = {
    let mut t = [INVALID; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'+' | b'/' | b'-' | b'_' => DATA,
            b' ' | b'\t' | b'\n' | b'\r' | 0x0b | 0x0c => SPACE,
            b'=' => PAD,
            _ => INVALID,
        };
        c += 1;
    }
    t
};

/// Each data byte as its standard-alphabet character (`-` → `+`, `_` → `/`).
const STANDARD_CHAR: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        t[c] = match c as u8 {
            b'-' => b'+',
            b'_' => b'/',
            other => other,
        };
        c += 1;
    }
    t
};

/// Each alphabet character's 6-bit value (both alphabets).
const VALUE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        t[c] = match b {
            b'A'..=b'Z' => b - b'A',
            b'a'..=b'z' => b - b'a' + 26,
            b'0'..=b'9' => b - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => 0,
        };
        c += 1;
    }
    t
};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Appends `data` in the form engineioxide decodes to the bytes the reference server's
/// `Buffer.from(s, "base64")` yields for every real encoder's output: ASCII whitespace
/// anywhere (MIME line breaks, a trailing newline) dropped, the URL-safe alphabet mapped to
/// the standard one, padding restored, bits after the last byte cleared (Node ignores
/// them). No decoding: the data characters are copied. `offset` is where `data` starts in
/// the body, for the error.
fn rewrite(data: &[u8], offset: usize, out: &mut Vec<u8>) -> Result<(), NotBase64> {
    let at = out.len();
    if !copy_lines(data, out) {
        out.truncate(at);
        copy_any(data, offset, out)?;
    }
    let chars = out.len() - at;
    let keep_bits = match chars % 4 {
        1 => return Err(NotBase64::Truncated { offset: offset + data.len() }),
        2 => 0b11_0000,
        3 => 0b11_1100,
        _ => 0b11_1111,
    };
    if let Some(last) = out.len().checked_sub(1).filter(|&i| i >= at) {
        out[last] = ALPHABET[usize::from(VALUE[usize::from(out[last])] & keep_bits)];
    }
    out.resize(out.len() + (4 - chars % 4) % 4, b'=');
    Ok(())
}

/// The common case, fast: standard-alphabet lines separated by `\n`, `\r\n` or spaces,
/// with padding at the end (the Java client's MIME lines). Copies line by line; false,
/// with some of `data` appended, for anything else.
fn copy_lines(data: &[u8], out: &mut Vec<u8>) -> bool {
    let tail = data.iter().rev().take_while(|&&c| matches!(c, b'=' | b'\n' | b'\r' | b' ')).count();
    let mut rest = &data[..data.len() - tail];
    while !rest.is_empty() {
        let end = memchr::memchr3(b'\n', b'\r', b' ', rest).unwrap_or(rest.len());
        let line = &rest[..end];
        if !line.iter().fold(true, |all, &c| all & is_standard(c)) {
            return false;
        }
        out.extend_from_slice(line);
        rest = rest.get(end + 1..).unwrap_or_default();
    }
    // At most two `=` in the tail, and no data after them.
    data[data.len() - tail..].iter().filter(|&&c| c == b'=').count() <= 2
}

/// Any form: byte by byte, without branches (every byte is written, only data characters
/// advance the cursor), mapping the URL-safe alphabet.
fn copy_any(data: &[u8], offset: usize, out: &mut Vec<u8>) -> Result<(), NotBase64> {
    let at = out.len();
    out.resize(at + data.len() + 1, 0);
    let (mut n, mut invalid, mut padded, mut data_after_pad) = (at, false, false, false);
    for &c in data {
        let class = CLASS[usize::from(c)];
        out[n] = STANDARD_CHAR[usize::from(c)];
        let is_data = class == DATA;
        n += usize::from(is_data);
        data_after_pad |= padded & is_data;
        padded |= class == PAD;
        invalid |= class == INVALID;
    }
    out.truncate(n);
    if invalid || data_after_pad {
        out.truncate(at);
        return Err(first_error(data, offset));
    }
    Ok(())
}

/// The first byte that makes `data` no base64 at all (only called once `rewrite` found one).
fn first_error(data: &[u8], offset: usize) -> NotBase64 {
    let mut padded = false;
    for (i, &c) in data.iter().enumerate() {
        match CLASS[usize::from(c)] {
            INVALID => return NotBase64::Character { offset: offset + i, byte: c },
            DATA if padded => return NotBase64::DataAfterPadding { offset: offset + i },
            PAD => padded = true,
            _ => {}
        }
    }
    NotBase64::Truncated { offset: offset + data.len() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;

    fn norm(body: &str) -> String {
        match normalize_payload(body.as_bytes()).unwrap() {
            Some(v) => String::from_utf8(v).unwrap(),
            None => body.to_owned(),
        }
    }

    #[test]
    fn canonical_payloads_are_left_alone() {
        for body in [
            "",
            "4hello",
            "2",
            "b",
            "bAQID",
            "bAQI=",
            "bAQ==",
            "451-[\"e\",{\"_placeholder\":true,\"num\":0}]\x1ebAQID\x1e3",
        ] {
            assert_eq!(normalize_payload(body.as_bytes()), Ok(None), "{body:?}");
        }
    }

    #[test]
    fn mime_line_breaks_and_trailing_newlines_are_removed() {
        let data: Vec<u8> = (0..=255u8).cycle().take(200).collect();
        let canonical = STANDARD.encode(&data);
        // Android's Base64.DEFAULT: a line break every 76 characters and one at the end.
        let mime: String =
            canonical.as_bytes().chunks(76).map(|c| format!("{}\n", std::str::from_utf8(c).unwrap())).collect();
        let body = format!("451-[\"bin\",{{\"_placeholder\":true,\"num\":0}}]\x1eb{mime}\x1e42[\"t\"]");
        assert_eq!(
            norm(&body),
            format!("451-[\"bin\",{{\"_placeholder\":true,\"num\":0}}]\x1eb{canonical}\x1e42[\"t\"]")
        );
        assert_eq!(norm("bAQ\r\nID\r\n"), "bAQID");
        assert_eq!(norm("b AQ\tID "), "bAQID");
    }

    #[test]
    fn missing_padding_url_safe_alphabet_and_trailing_bits_become_standard() {
        assert_eq!(norm("bAQI"), "bAQI=");
        assert_eq!(norm("bAQ"), "bAQ==");
        assert_eq!(norm("bAQ="), "bAQ==");
        assert_eq!(norm("b-_-_"), "b+/+/");
        // Node ignores bits after the last byte; the strict decoder refuses them.
        assert_eq!(norm("bAR=="), "bAQ==");
        assert_eq!(norm("bAQJ="), "bAQI=");
        // Every packet of a payload, wherever it is.
        assert_eq!(norm("bAQ\n\x1ebAQ\n\x1e4x"), "bAQ==\x1ebAQ==\x1e4x");
        assert_eq!(norm("4x\x1ebAQ\n"), "4x\x1ebAQ==");
    }

    #[test]
    fn normalized_payloads_decode_to_what_the_reference_decodes() {
        // (input, the bytes Node's Buffer.from(input, "base64") yields)
        let cases: [(&str, &[u8]); 6] = [
            ("AQID", &[1, 2, 3]),
            ("AQ\nID\n", &[1, 2, 3]),
            ("AQI", &[1, 2]),
            ("-_-_", &[0xfb, 0xff, 0xbf]),
            ("AQI=\n", &[1, 2]),
            ("", &[]),
        ];
        for (input, want) in cases {
            let out = norm(&format!("b{input}"));
            assert_eq!(STANDARD.decode(&out[1..]).unwrap(), want, "{input:?}");
        }
    }

    #[test]
    fn text_packets_are_never_touched() {
        // A text packet may hold anything, including what would be bad base64.
        assert_eq!(norm("42[\"a b\\n=\"]\x1ebAQ\n"), "42[\"a b\\n=\"]\x1ebAQ==");
        assert_eq!(normalize_payload("42[\"x y\"]".as_bytes()), Ok(None));
    }

    #[test]
    fn bytes_in_no_base64_form_are_named_precisely() {
        assert_eq!(normalize_payload(b"bAQ!D"), Err(NotBase64::Character { offset: 3, byte: b'!' }));
        assert_eq!(normalize_payload(b"4x\x1ebAQ==AQ=="), Err(NotBase64::DataAfterPadding { offset: 8 }));
        assert_eq!(normalize_payload(b"bAQIDB"), Err(NotBase64::Truncated { offset: 6 }));
        assert_eq!(
            NotBase64::Character { offset: 3, byte: b'!' }.to_string(),
            "binary packet has byte 0x21 at offset 3, which is in no base64 alphabet"
        );
    }

    proptest::proptest! {
        /// Whatever form a real encoder gives the bytes, the rewritten packet is accepted by
        /// the strict decoder engineioxide uses and decodes to the same bytes.
        #[test]
        fn every_encoder_form_decodes_to_the_same_bytes(
            data in proptest::collection::vec(proptest::num::u8::ANY, 0..600),
            line in 1usize..100,
            crlf: bool,
            trailing_newline: bool,
            url_safe: bool,
            unpadded: bool,
        ) {
            use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            let encoded = match (url_safe, unpadded) {
                (false, false) => STANDARD.encode(&data),
                (false, true) => STANDARD_NO_PAD.encode(&data),
                (true, false) => URL_SAFE.encode(&data),
                (true, true) => URL_SAFE_NO_PAD.encode(&data),
            };
            let end = if crlf { "\r\n" } else { "\n" };
            let mut wrapped = encoded.as_bytes().chunks(line).map(|c| std::str::from_utf8(c).unwrap()).collect::<Vec<_>>().join(end);
            if trailing_newline {
                wrapped.push_str(end);
            }
            let out = norm(&format!("42[\"x\"]\x1eb{wrapped}"));
            let (text, binary) = out.split_once('\x1e').unwrap();
            proptest::prop_assert_eq!(text, "42[\"x\"]");
            proptest::prop_assert_eq!(STANDARD.decode(&binary[1..]).unwrap(), data);
        }

        /// Any body: no panic, and the answer is either "unchanged", a rewrite, or a named error.
        #[test]
        fn any_body_is_handled_without_panicking(body in proptest::collection::vec(proptest::num::u8::ANY, 0..300)) {
            if let Ok(Some(out)) = normalize_payload(&body) {
                for packet in out.split(|&b| b == SEPARATOR).filter(|p| p.first() == Some(&b'b')) {
                    proptest::prop_assert!(STANDARD.decode(&packet[1..]).is_ok());
                }
            }
        }
    }
}
