//! Settings: what the bridge can be configured with, as plain types with their defaults
//! ([`Config`] and one struct per section). Reading them is [`load`]'s (defaults, then a
//! TOML file, then `SOCKET_BRIDGE_*` environment variables, then command-line flags);
//! checking what the types cannot say is [`validate`]'s. Everything is validated once at
//! start; each bad setting gets its own message naming it. This module knows no rule of
//! the hub: naming rules come from [`crate::names`].

mod load;
mod network;
mod sections;
mod validate;

pub use network::{Network, NetworkError, canonical};
pub use sections::*;

use std::{fmt, net::SocketAddr, path::PathBuf, time::Duration};

use clap::Parser;
use serde::{Deserialize, Serialize};

/// Command line of the `socket-bridge` binary.
#[derive(Debug, Parser)]
#[command(name = "socket-bridge", version, about = "Real-time gateway between Socket.IO browsers and Go backends")]
pub struct Cli {
    /// TOML configuration file.
    #[arg(long, env = "SOCKET_BRIDGE_CONFIG")]
    pub config: Option<PathBuf>,
    /// HTTP listener (Socket.IO, health, REST); port 0 picks a free port.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// gRPC listener; port 0 picks a free port.
    #[arg(long)]
    pub grpc_listen: Option<String>,
    /// Any setting as `section.key=value` (TOML value syntax; bare words are strings).
    /// Repeatable. Wins over the file and the environment.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    pub overrides: Vec<String>,
    /// Print the effective configuration (secrets hidden) and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Check the effective configuration (file, environment and flags, JWT keys and TLS
    /// files included) without starting: exit 0, or print every problem and exit 2.
    #[arg(long)]
    pub check_config: bool,
    /// Ask the bridge at `http.listen` for `GET /health`: exit 0 on 200, 1 otherwise. The
    /// container image's health check, so the image needs no HTTP client of its own.
    #[arg(long, conflicts_with_all = ["print_config", "check_config"])]
    pub health_check: bool,
    /// Write console log lines to stdout instead of stderr (the container image sets it).
    #[arg(long, env = "SOCKET_BRIDGE_LOG_STDOUT")]
    pub log_stdout: bool,
}

/// A string that never appears in logs or debug output.
#[derive(Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"<redacted>\"")
    }
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub grpc: GrpcConfig,
    pub auth: AuthConfig,
    pub socketio: SocketIoSettings,
    pub events: EventsConfig,
    pub shutdown: ShutdownConfig,
    pub log: LogConfig,
    pub dashboard: DashboardConfig,
    pub redis: RedisConfig,
    pub offline: OfflineConfig,
}

/// A setting that parsed but cannot be used as it is (a key file that cannot be read, an
/// unknown algorithm, a log directory that cannot be made): which setting, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct SettingError {
    pub setting: &'static str,
    pub reason: String,
}

impl SettingError {
    pub fn new(setting: &'static str, reason: impl std::fmt::Display) -> Self {
        Self { setting, reason: reason.to_string() }
    }
}

/// Every problem found in the configuration, one line each.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration:\n  {}", .0.join("\n  "))]
pub struct ConfigError(pub Vec<String>);

impl Config {
    pub fn http_addr(&self) -> SocketAddr {
        validate::parse_addr(&self.http.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 3000)))
    }

    pub fn grpc_addr(&self) -> SocketAddr {
        validate::parse_addr(&self.grpc.listen).unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 50051)))
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_millis(self.socketio.ping_interval_ms)
    }
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio.ping_timeout_ms)
    }
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio.connect_timeout_ms)
    }
    pub fn ack_timeout(&self) -> Duration {
        Duration::from_millis(self.socketio.ack_timeout_ms)
    }
    pub fn header_read_timeout(&self) -> Duration {
        Duration::from_millis(self.http.header_read_timeout_ms)
    }
    pub fn summary_interval(&self) -> Duration {
        Duration::from_millis(self.log.summary_interval_ms)
    }
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.http.request_timeout_ms)
    }
    pub fn grace_period(&self) -> Duration {
        Duration::from_millis(self.shutdown.grace_period_ms)
    }
    pub fn undelivered_max_age(&self) -> Duration {
        Duration::from_millis(self.events.undelivered_max_age_ms)
    }
}

impl Config {
    /// The effective configuration as TOML, with every secret replaced.
    pub fn to_redacted_toml(&self) -> String {
        let mut copy = self.clone();
        for key in &mut copy.grpc.api_keys {
            *key = Secret::new("<redacted>");
        }
        if copy.dashboard.password.is_some() {
            copy.dashboard.password = Some(Secret::new("<redacted>"));
        }
        if copy.auth.jwt.secret.is_some() {
            copy.auth.jwt.secret = Some(Secret::new("<redacted>"));
        }
        if copy.redis.url.is_some() {
            copy.redis.url = Some(Secret::new("<redacted>"));
        }
        toml::to_string_pretty(&copy).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_embedded() {
        let c = Config::from_toml("").unwrap();
        assert_eq!(c.http.listen, "127.0.0.1:3000");
        assert_eq!(c.grpc.listen, "127.0.0.1:50051");
        assert_eq!(c.auth.mode, AuthMode::Dev);
    }

    #[test]
    fn secrets_are_hidden_from_debug() {
        let c = Config::from_toml("[grpc]\napi_keys = [\"super-secret-key-123456\"]\n").unwrap();
        assert!(!format!("{c:?}").contains("super-secret"));
    }
}
