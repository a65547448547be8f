//! Credential redaction for every log line, whichever crate wrote it. The bridge's own
//! code never logs a credential, but its libraries do at debug and trace level: the
//! Socket.IO layer prints raw CONNECT packets (tokens, passwords), HTTP/2 tracing can
//! print headers. So the subscriber scrubs each formatted line before it reaches the
//! console, the log file, the in-memory ring and the dashboard's live feed:
//!
//! - `Bearer …` and `Basic …` credentials, in any case;
//! - anything shaped like a JWT (three base64url segments, or one starting `eyJ`);
//! - the configured secrets (API keys, admin password and its Basic form, JWT secret,
//!   Redis URL and password), wherever they appear and however they are escaped;
//! - the value of any key whose name contains one of `socketio.redacted_auth_fields`
//!   (`"password":"…"`, `\"token\":\"…\"`, `token=…`), at any level of string escaping.

use std::borrow::Cow;
use std::io;
use std::sync::Arc;

use tracing_subscriber::fmt::MakeWriter;

use regex::{Regex, RegexBuilder};

/// What replaces a credential.
pub const REDACTED: &str = "<redacted>";

/// Key fragments always hidden, whatever the configuration says.
const ALWAYS_HIDDEN: &[&str] = &["token", "password", "secret", "authorization", "api_key", "apikey"];

/// Scrubs text. Built once from the configuration.
pub struct Redactor {
    patterns: Regex,
    secrets: Option<Regex>,
    /// Lower-case key fragments whose values are hidden.
    fields: Vec<String>,
}

impl Redactor {
    /// From the configuration: every configured secret, and the handshake fields the
    /// operator asked to keep from the backend.
    pub fn from_config(config: &crate::config::Config) -> Self {
        use base64::Engine as _;
        let mut secrets: Vec<String> = config.grpc.api_keys.iter().map(|k| k.expose().to_owned()).collect();
        if let Some(password) = &config.dashboard.password {
            secrets.push(password.expose().to_owned());
            let basic = format!("{}:{}", config.dashboard.username, password.expose());
            secrets.push(base64::engine::general_purpose::STANDARD.encode(basic));
        }
        if let Some(secret) = &config.auth.jwt.secret {
            secrets.push(secret.expose().to_owned());
        }
        if let Some(url) = &config.redis.url {
            let url = url.expose();
            secrets.push(url.to_owned());
            // redis://user:password@host → the password alone too.
            if let Some((userinfo, _)) = url.split_once("://").and_then(|(_, rest)| rest.split_once('@'))
                && let Some((_, password)) = userinfo.split_once(':')
            {
                secrets.push(password.to_owned());
            }
        }
        Self::new(&secrets, &config.socketio.redacted_auth_fields)
    }

    /// `secrets`: exact strings to hide (shorter than 4 bytes: ignored); `fields`: key
    /// fragments whose values are hidden, on top of the built-in ones.
    pub fn new(secrets: &[String], fields: &[String]) -> Self {
        let patterns = RegexBuilder::new(concat!(
            // A scheme followed by its credential.
            r"(?i:\b(?:bearer|basic)(?:\s+|%20|\+))[A-Za-z0-9._~+/=:-]{6,}",
            // JWT-shaped: three base64url segments, the last one possibly empty (alg none).
            r"|\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]*(\.[A-Za-z0-9_-]*)?",
            r"|\b[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}",
        ))
        .build()
        .expect("valid redaction pattern");
        let mut literal: Vec<String> = Vec::new();
        for s in secrets.iter().filter(|s| s.len() >= 4) {
            literal.push(s.clone());
            // The same secret as it appears inside JSON strings and Debug output.
            let json = serde_json::to_string(s).unwrap_or_default();
            literal.push(json.trim_matches('"').to_owned());
            let debug = format!("{s:?}");
            literal.push(debug.trim_matches('"').to_owned());
        }
        literal.retain(|s| !s.is_empty());
        literal.sort_by_key(|s| std::cmp::Reverse(s.len()));
        literal.dedup();
        let secrets = (!literal.is_empty()).then(|| {
            let alternation = literal.iter().map(|s| regex::escape(s)).collect::<Vec<_>>().join("|");
            Regex::new(&alternation).expect("escaped literals form a valid pattern")
        });
        let mut all: Vec<String> = ALWAYS_HIDDEN.iter().map(|f| (*f).to_owned()).collect();
        all.extend(fields.iter().map(|f| f.to_ascii_lowercase()).filter(|f| !f.is_empty()));
        all.sort();
        all.dedup();
        Self { patterns, secrets, fields: all }
    }

    /// `text` with every credential replaced by [`REDACTED`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out: Cow<'a, str> = Cow::Borrowed(text);
        if let Some(secrets) = &self.secrets
            && secrets.is_match(&out)
        {
            out = Cow::Owned(secrets.replace_all(&out, REDACTED).into_owned());
        }
        if self.patterns.is_match(&out) {
            // The scheme goes too: a log line with "Bearer " in it is a credential to
            // every scanner that looks for one.
            let replaced = self.patterns.replace_all(&out, REDACTED).into_owned();
            out = Cow::Owned(replaced);
        }
        if let Some(hidden) = self.hide_field_values(&out) {
            out = Cow::Owned(hidden);
        }
        out
    }

    /// Replaces the values of sensitive keys; None when there are none.
    fn hide_field_values(&self, text: &str) -> Option<String> {
        let lower = text.to_ascii_lowercase();
        let bytes = text.as_bytes();
        // (start, end) of each value to hide, in order, not overlapping.
        let mut spans: Vec<(usize, usize)> = Vec::new();
        for field in &self.fields {
            let mut from = 0;
            while let Some(at) = lower[from..].find(field.as_str()) {
                let start = from + at;
                from = start + field.len();
                if !whole_segment(bytes, start, start + field.len()) {
                    continue;
                }
                if let Some(span) = value_after_key(bytes, start, start + field.len()) {
                    spans.push(span);
                    from = from.max(span.1);
                }
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_unstable();
        let mut out = String::with_capacity(text.len());
        let mut last = 0;
        for (start, end) in spans {
            if start < last {
                continue;
            }
            out.push_str(&text[last..start]);
            out.push_str(REDACTED);
            last = end;
        }
        out.push_str(&text[last..]);
        Some(out)
    }
}

/// A `MakeWriter` whose writers redact each formatted line before passing it on. The
/// formatting layers write one whole event per `write` call.
pub struct Redacting<M> {
    inner: M,
    redactor: Arc<Redactor>,
}

impl<M> Redacting<M> {
    pub fn new(inner: M, redactor: Arc<Redactor>) -> Self {
        Self { inner, redactor }
    }
}

impl<'a, M: MakeWriter<'a>> MakeWriter<'a> for Redacting<M> {
    type Writer = RedactingWriter<'a, M::Writer>;

    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter { inner: self.inner.make_writer(), redactor: &self.redactor }
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        RedactingWriter { inner: self.inner.make_writer_for(meta), redactor: &self.redactor }
    }
}

pub struct RedactingWriter<'a, W> {
    inner: W,
    redactor: &'a Redactor,
}

impl<W: io::Write> io::Write for RedactingWriter<'_, W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match std::str::from_utf8(buf) {
            Ok(text) => self.inner.write_all(self.redactor.redact(text).as_bytes())?,
            // Formatted events are strings; anything else passes as it is.
            Err(_) => self.inner.write_all(buf)?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// The fragment at `start..end` is a whole segment of its key: `token`, `access_token`,
/// `authToken`, `passwordHash`, but not the `pin` of `pingInterval`.
fn whole_segment(text: &[u8], start: usize, end: usize) -> bool {
    let starts = start == 0
        || !is_key_char(text[start - 1])
        || matches!(text[start - 1], b'_' | b'-')
        || (text[start].is_ascii_uppercase() && text[start - 1].is_ascii_lowercase());
    let ends = end == text.len()
        || !is_key_char(text[end])
        || matches!(text[end], b'_' | b'-')
        || (text[end].is_ascii_uppercase() && text[end - 1].is_ascii_lowercase());
    starts && ends
}

fn is_key_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

/// Given a key fragment at `start..end`, finds the value that follows the whole key:
/// `"key": "value"` (at any escaping level: the closing quote has exactly as many
/// backslashes before it as the opening one), `key=value`, `"key": 123`, or the Debug
/// forms `String("value")` / `Str(b"value")`. Returns the value's byte span, quotes
/// excluded.
fn value_after_key(text: &[u8], start: usize, end: usize) -> Option<(usize, usize)> {
    // Widen to the whole key (access_token, client_secret …).
    let mut key_end = end;
    while key_end < text.len() && is_key_char(text[key_end]) {
        key_end += 1;
    }
    let mut key_start = start;
    while key_start > 0 && is_key_char(text[key_start - 1]) {
        key_start -= 1;
    }
    // The key itself may be quoted (with escaped quotes): skip backslashes and one quote.
    let mut i = key_end;
    while i < text.len() && text[i] == b'\\' {
        i += 1;
    }
    if i < text.len() && text[i] == b'"' {
        i += 1;
    }
    while i < text.len() && text[i] == b' ' {
        i += 1;
    }
    if i >= text.len() || !(text[i] == b':' || text[i] == b'=') {
        return None;
    }
    let _ = key_start;
    i += 1;
    while i < text.len() && text[i] == b' ' {
        i += 1;
    }
    // Debug wrappers around a string value.
    for wrapper in [&b"String("[..], b"Str(b", b"Str(", b"Some("] {
        if text[i..].starts_with(wrapper) {
            i += wrapper.len();
        }
    }
    if i < text.len() && text[i] == b'b' && text.get(i + 1) == Some(&b'"') {
        i += 1;
    }
    // A quoted value: the opening quote's backslash count is the escaping level.
    let mut level = 0;
    let mut j = i;
    while j < text.len() && text[j] == b'\\' {
        level += 1;
        j += 1;
    }
    if j < text.len() && text[j] == b'"' {
        let value_start = j + 1;
        let mut k = value_start;
        while k < text.len() {
            if text[k] == b'"' {
                let mut run = 0;
                while run < k - value_start && text[k - 1 - run] == b'\\' {
                    run += 1;
                }
                if run == level {
                    return Some((value_start, k - level));
                }
            }
            k += 1;
        }
        // Unterminated (the line was clipped): hide the rest.
        return Some((value_start, text.len()));
    }
    if level > 0 {
        return None;
    }
    // A bare value: up to a delimiter.
    let value_start = i;
    let mut k = i;
    while k < text.len() && !matches!(text[k], b',' | b'}' | b']' | b')' | b'&' | b' ' | b'\n' | b'"' | b'\\') {
        k += 1;
    }
    (k > value_start).then_some((value_start, k))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(
            &["api-key-0123456789abcdef".to_owned(), "adm\"in-pass".to_owned()],
            &["pin".to_owned(), "token".to_owned()],
        )
    }

    const JWT: &str = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbm4iLCJleHAiOjk5OTk5OTk5OTl9.c2lnbmF0dXJlLXNpZ25hdHVyZQ";

    #[test]
    fn schemes_jwts_and_configured_secrets_are_hidden() {
        let r = redactor();
        assert_eq!(r.redact("sent Bearer abc.def-ghi"), "sent <redacted>");
        assert_eq!(
            r.redact(r#"headers {"authorization": "Bearer abcdefgh"}"#),
            r#"headers {"authorization": "<redacted>"}"#
        );
        assert_eq!(r.redact("BASIC YWRtaW46cGFzcw=="), "<redacted>");
        assert_eq!(r.redact("basic auth required"), "basic auth required");
        assert_eq!(r.redact(&format!("got {JWT} here")), "got <redacted> here");
        assert_eq!(r.redact("eyJhbGciOiJub25lIn0.eyJzdWIiOiJhIn0."), "<redacted>");
        assert_eq!(r.redact("key api-key-0123456789abcdef!"), "key <redacted>!");
        assert_eq!(r.redact(r#"{"p":"adm\"in-pass"}"#), r#"{"p":"<redacted>"}"#);
        assert_eq!(r.redact("plain text, version 1.2.3"), "plain text, version 1.2.3");
    }

    #[test]
    fn sensitive_keys_lose_their_values_at_every_escaping_level() {
        let r = redactor();
        assert_eq!(r.redact(r#"{"token":"t0k","userId":"ann"}"#), r#"{"token":"<redacted>","userId":"ann"}"#);
        assert_eq!(
            r.redact(r#"auth: Some(Str(b"{\"userId\":\"ann\",\"pin\":\"12\\\"34\"}"))"#),
            r#"auth: Some(Str(b"{\"userId\":\"ann\",\"pin\":\"<redacted>\"}"))"#
        );
        assert_eq!(
            r.redact(r#"{"message":"auth {\\\"password\\\":\\\"hunter2\\\"}"}"#),
            r#"{"message":"auth {\\\"password\\\":\\\"<redacted>\\\"}"}"#
        );
        assert_eq!(r.redact(r#"{"access_token": "xyz", "n": 1}"#), r#"{"access_token": "<redacted>", "n": 1}"#);
        assert_eq!(r.redact("url ?token=abc&x=1"), "url ?token=<redacted>&x=1");
        assert_eq!(r.redact(r#"Object {"pin": String("4321")}"#), r#"Object {"pin": String("<redacted>")}"#);
        assert_eq!(r.redact(r#"{"pin": 4321}"#), r#"{"pin": <redacted>}"#);
        assert_eq!(
            r.redact(r#"{"authToken":"x1","passwordHash":"x2"}"#),
            r#"{"authToken":"<redacted>","passwordHash":"<redacted>"}"#
        );
        // Names that merely mention a word, or contain it inside a longer word, are left alone.
        assert_eq!(r.redact("token algorithm is not allowed"), "token algorithm is not allowed");
        assert_eq!(r.redact(r#"{"pingInterval":25000,"tokens":3}"#), r#"{"pingInterval":25000,"tokens":3}"#);
    }
}
