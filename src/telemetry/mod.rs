//! Logging and metrics. `RUST_LOG` wins over `log.level` when set.
//!
//! Log lines go to the console (human or JSON), optionally to a size- and day-rotated JSON
//! file with a retention count, and always to an in-memory ring for the log viewer.

pub mod logs;
pub mod memory;
pub mod metrics;
pub mod redact;
pub mod summary;

use std::sync::Arc;

use rolling_file::{BasicRollingFileAppender, RollingConditionBasic};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::{LogConfig, LogFormat};
use redact::{Redacting, Redactor};

/// Keeps the file writer's background thread alive; drop it last (it flushes).
pub struct Telemetry {
    _file: Option<tracing_appender::non_blocking::WorkerGuard>,
}

/// Sets up logging. Every line, from any crate and at any level, passes through
/// `redactor` before it is written anywhere (console, file, ring, live feed).
pub fn init(config: &LogConfig, redactor: Redactor) -> Result<Telemetry, String> {
    let redactor = Arc::new(redactor);
    // An empty RUST_LOG counts as unset: it would otherwise silence every line.
    let filter = std::env::var("RUST_LOG")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .and_then(|v| EnvFilter::try_new(v).ok())
        .unwrap_or_else(|| EnvFilter::new(&config.level));
    let console = match config.format {
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_writer(Redacting::new(std::io::stderr, redactor.clone()))
            .boxed(),
        LogFormat::Human => {
            tracing_subscriber::fmt::layer().with_writer(Redacting::new(std::io::stderr, redactor.clone())).boxed()
        }
    };
    let (file, guard) = match &config.file {
        Some(path) => {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| format!("log.file {}: {e}", dir.display()))?;
            }
            let mut condition = RollingConditionBasic::new().max_size(config.file_max_bytes);
            if config.file_rotate_daily {
                condition = condition.daily();
            }
            let appender = BasicRollingFileAppender::new(path, condition, config.file_keep)
                .map_err(|e| format!("log.file {}: {e}", path.display()))?;
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
        .map_err(|e| format!("logging was already set up: {e}"))?;
    Ok(Telemetry { _file: guard })
}

pub fn rfc3339_now() -> String {
    rfc3339(std::time::SystemTime::now())
}

/// A time as RFC 3339 UTC with milliseconds.
pub fn rfc3339(at: std::time::SystemTime) -> String {
    let now = at.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let secs = now.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        (rem % 3600) / 60,
        rem % 60,
        now.subsec_millis()
    )
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_454), (2026, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert!(rfc3339_now().ends_with('Z'));
    }
}
