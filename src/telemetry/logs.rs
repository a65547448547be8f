//! Recent log entries in memory (the original design's `LogEntry`), for the log viewer and
//! `GET /api/v1/logs`, with a live feed for the dashboard.

use std::collections::VecDeque;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, OnceLock};

use serde::Serialize;
use tokio::sync::broadcast;
use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use super::redact::Redactor;

/// One log line as the viewer shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LogEntry {
    /// Increasing; lets a live client skip what it already has.
    pub seq: u64,
    /// RFC 3339.
    pub timestamp: String,
    /// "error", "warn", "info", "debug" or "trace".
    pub level: &'static str,
    pub message: String,
    /// The event's structured fields.
    pub meta: serde_json::Map<String, serde_json::Value>,
    /// The module that logged it.
    pub context: String,
}

/// Bounded buffer of the newest entries.
pub struct LogRing {
    entries: Mutex<VecDeque<LogEntry>>,
    capacity: usize,
    next_seq: Mutex<u64>,
    live: broadcast::Sender<LogEntry>,
}

/// Longest message or field value kept, in bytes; logs can carry client-sent text.
const MAX_TEXT: usize = 2048;

impl LogRing {
    pub fn new(capacity: usize) -> Self {
        let (live, _) = broadcast::channel(256);
        Self { entries: Mutex::new(VecDeque::with_capacity(capacity)), capacity, next_seq: Mutex::new(1), live }
    }

    pub fn push(&self, mut entry: LogEntry) {
        if let Ok(mut seq) = self.next_seq.lock() {
            entry.seq = *seq;
            *seq += 1;
        }
        if let Ok(mut entries) = self.entries.lock() {
            if entries.len() == self.capacity {
                entries.pop_front();
            }
            entries.push_back(entry.clone());
        }
        let _ = self.live.send(entry);
    }

    /// Newest first: at most `limit` entries at or above `min_level` whose message, context
    /// or fields contain `query` (case-insensitive).
    pub fn query(&self, min_level: Level, query: &str, limit: usize) -> Vec<LogEntry> {
        let needle = query.to_lowercase();
        let Ok(entries) = self.entries.lock() else { return Vec::new() };
        entries
            .iter()
            .rev()
            .filter(|e| level_rank(e.level) <= level_rank(level_name(min_level)))
            .filter(|e| needle.is_empty() || e.matches(&needle))
            .take(limit)
            .cloned()
            .collect()
    }

    pub fn subscribe(&self) -> broadcast::Receiver<LogEntry> {
        self.live.subscribe()
    }
}

impl LogEntry {
    fn matches(&self, needle: &str) -> bool {
        self.message.to_lowercase().contains(needle)
            || self.context.to_lowercase().contains(needle)
            || self.meta.values().any(|v| v.to_string().to_lowercase().contains(needle))
    }
}

pub fn level_name(level: Level) -> &'static str {
    match level {
        Level::ERROR => "error",
        Level::WARN => "warn",
        Level::INFO => "info",
        Level::DEBUG => "debug",
        Level::TRACE => "trace",
    }
}

fn level_rank(name: &str) -> u8 {
    match name {
        "error" => 0,
        "warn" => 1,
        "info" => 2,
        "debug" => 3,
        _ => 4,
    }
}

/// Parses a level name as the logs API takes it.
pub fn parse_level(name: &str) -> Option<Level> {
    match name.to_ascii_lowercase().as_str() {
        "error" => Some(Level::ERROR),
        "warn" | "warning" => Some(Level::WARN),
        "info" => Some(Level::INFO),
        "debug" => Some(Level::DEBUG),
        "trace" => Some(Level::TRACE),
        _ => None,
    }
}

static RING: OnceLock<Arc<LogRing>> = OnceLock::new();

/// The process's log ring (logging is process-wide). Empty until `telemetry::init` runs.
pub fn ring() -> Arc<LogRing> {
    RING.get_or_init(|| Arc::new(LogRing::new(1000))).clone()
}

pub(super) fn install(capacity: usize) -> Arc<LogRing> {
    RING.get_or_init(|| Arc::new(LogRing::new(capacity))).clone()
}

/// The `tracing` layer that feeds the ring (and so the logs API and the dashboard's live
/// feed), with credentials redacted like every other output.
pub struct RingLayer {
    pub ring: Arc<LogRing>,
    pub redactor: Arc<Redactor>,
}

impl<S: Subscriber> Layer<S> for RingLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut visitor = Fields::default();
        event.record(&mut visitor);
        // Redacted before clipping, so a clip never leaves half a secret behind.
        let scrub = |text: String| {
            clip(match self.redactor.redact(&text) {
                std::borrow::Cow::Borrowed(_) => text,
                std::borrow::Cow::Owned(clean) => clean,
            })
        };
        let mut meta = visitor.fields;
        for value in meta.values_mut() {
            if let serde_json::Value::String(text) = value {
                *text = scrub(std::mem::take(text));
            }
        }
        self.ring.push(LogEntry {
            seq: 0,
            timestamp: super::rfc3339_now(),
            level: level_name(*event.metadata().level()),
            message: scrub(visitor.message),
            meta,
            context: event.metadata().target().to_owned(),
        });
    }
}

#[derive(Default)]
struct Fields {
    message: String,
    fields: serde_json::Map<String, serde_json::Value>,
}

fn clip(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let mut text = String::new();
        let _ = write!(text, "{value:?}");
        self.record_str(field, &text);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.insert(field.name().to_owned(), serde_json::Value::String(value.to_owned()));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.fields.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.fields.insert(field.name().to_owned(), value.into());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(level: &'static str, message: &str) -> LogEntry {
        LogEntry {
            seq: 0,
            timestamp: String::new(),
            level,
            message: message.into(),
            meta: Default::default(),
            context: "socket_bridge::test".into(),
        }
    }

    #[test]
    fn ring_keeps_the_newest_and_filters() {
        let ring = LogRing::new(3);
        for (level, msg) in [("info", "one"), ("error", "two"), ("debug", "three"), ("warn", "Four")] {
            ring.push(entry(level, msg));
        }
        let all = ring.query(Level::TRACE, "", 10);
        assert_eq!(all.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["Four", "three", "two"]);
        assert_eq!(all[0].seq, 4);
        let warn_up = ring.query(Level::WARN, "", 10);
        assert_eq!(warn_up.iter().map(|e| e.message.as_str()).collect::<Vec<_>>(), ["Four", "two"]);
        assert_eq!(ring.query(Level::TRACE, "four", 10).len(), 1);
        assert_eq!(ring.query(Level::TRACE, "", 1).len(), 1);
    }
}
