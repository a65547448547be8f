//! Logging and metrics. `RUST_LOG` wins over `log.level` when set.
//!
//! Log lines go to the console (human or JSON, on stderr or stdout; coloured only at a
//! terminal), optionally to a size- and day-rotated JSON file with a retention count, and
//! always to an in-memory ring for the log viewer.

pub mod logs;
pub mod memory;
pub mod metrics;
pub mod redact;
pub mod summary;

use std::sync::Arc;

use std::io::IsTerminal;

use rolling_file::{BasicRollingFileAppender, RollingConditionBasic};
use tracing_subscriber::fmt::writer::BoxMakeWriter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat, SettingError};
use redact::{Redacting, Redactor};

/// Why logging could not start.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error(transparent)]
    Setting(#[from] SettingError),
    #[error("logging was already set up: {0}")]
    AlreadySetUp(String),
}

/// Keeps the file writer's background thread alive; drop it last (it flushes).
pub struct Telemetry {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Where console log lines go. stderr by default; the container image chooses stdout, the
/// stream container log collectors read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConsoleStream {
    Stderr,
    Stdout,
}

impl ConsoleStream {
    fn writer(self) -> BoxMakeWriter {
        match self {
            Self::Stderr => BoxMakeWriter::new(std::io::stderr),
            Self::Stdout => BoxMakeWriter::new(std::io::stdout),
        }
    }

    /// Colour codes only for a person at a terminal: redirected to a file, a pipe, journald
    /// or a container log driver they would land in every line as raw escape bytes. Honours
    /// `NO_COLOR` (no-color.org) at a terminal too.
    fn wants_colour(self) -> bool {
        let terminal = match self {
            Self::Stderr => std::io::stderr().is_terminal(),
            Self::Stdout => std::io::stdout().is_terminal(),
        };
        terminal && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
    }
}

/// The Redis client logs warnings for every command that finds a Redis Cluster node gone
/// (several per push while a master fails over: over a thousand lines in four seconds at
/// 50 pushes a second in `tests/cluster_faults.rs`), where the bridge's own lines already
/// say what failed (heartbeats, event writes; pushes are answered with the error). So the
/// client's lines are kept to errors unless the filter names the `redis` crate.
fn quiet_redis_client(filter: EnvFilter, spec: &str) -> EnvFilter {
    if spec.split(',').any(|d| d.trim().starts_with("redis")) {
        return filter;
    }
    match "redis=error".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    }
}

/// Sets up logging. Every line, from any crate and at any level, passes through
/// `redactor` before it is written anywhere (console, file, ring, live feed).
pub fn init(config: &LogConfig, stream: ConsoleStream, redactor: Redactor) -> Result<Telemetry, TelemetryError> {
    let redactor = Arc::new(redactor);
    // An empty RUST_LOG counts as unset: it would otherwise silence every line.
    let spec = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty() && EnvFilter::try_new(v).is_ok())
        .unwrap_or_else(|| config.level.clone());
    let filter = quiet_redis_client(EnvFilter::new(&spec), &spec);
    let console = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_ansi(false)
            .with_writer(Redacting::new(stream.writer(), redactor.clone()))
            .boxed(),
        LogFormat::Human => tracing_subscriber::fmt::layer()
            .with_ansi(stream.wants_colour())
            .with_writer(Redacting::new(stream.writer(), redactor.clone()))
            .boxed(),
    };
    let (file, guard) = match &config.file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| SettingError::file("log.file", dir, e))?;
            }
            let mut condition = RollingConditionBasic::new().max_size(config.file_max_bytes);
            if config.file_rotate_daily {
                condition = condition.daily();
            }
            let appender = BasicRollingFileAppender::new(path, condition, config.file_keep)
                .map_err(|e| SettingError::file("log.file", path, e))?;
            let (writer, guard) = tracing_appender::non_blocking(appender);
            let layer = tracing_subscriber::fmt::layer()
                .json()
                .flatten_event(true)
                .with_current_span(true)
                .with_span_list(false)
                .with_ansi(false)
                .with_writer(Redacting::new(writer, redactor.clone()))
                .boxed();
            (Some(layer), Some(guard))
        }
        None => (None, None),
    };
    let ring = logs::install(config.ring_capacity);
    tracing_subscriber::registry()
        .with(filter)
        .with(console)
        .with(file)
        .with(logs::RingLayer { ring, redactor })
        .try_init()
        .map_err(|e| TelemetryError::AlreadySetUp(e.to_string()))?;
    Ok(Telemetry { _file: guard })
}

pub fn rfc3339_now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 UTC with milliseconds, e.g. `2026-12-07T04:18:12.837Z`.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(at).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_redis_client_logs_errors_only_unless_the_filter_names_it() {
        let shown = |spec: &str| quiet_redis_client(EnvFilter::new(spec), spec).to_string();
        assert!(shown("info").contains("redis=error"), "{}", shown("info"));
        assert!(shown("warn,socket_bridge=debug").contains("redis=error"));
        assert!(!shown("info,redis=debug").contains("redis=error"));
        assert!(!shown("info, redis::cluster_handling=warn").contains("redis=error"));
    }

    #[test]
    fn dates_are_rfc3339() {
        let at = |ms: u64| std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
        assert_eq!(rfc3339(at(0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400_123)), "2000-02-29T00:00:00.123Z");
        assert!(rfc3339_now().ends_with('Z'));
    }
}
