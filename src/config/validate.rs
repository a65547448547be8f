//! What the types alone cannot say: addresses, ranges, secrets required by a mode, key
//! material that matches the algorithms. Every problem is collected, so an operator fixes
//! the file in one go.

use std::net::SocketAddr;

use super::{AuthMode, Config, ConfigError};

impl Config {
    /// Checks what types alone cannot. Collects every problem rather than stopping at the
    /// first, so an operator fixes the file in one go.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let mut errors = Vec::new();
        let mut err = |field: &str, msg: &str| errors.push(format!("{field}: {msg}"));

        let http = parse_addr(&self.http.listen).map_err(|e| err("http.listen", &e)).ok();
        let grpc = parse_addr(&self.grpc.listen).map_err(|e| err("grpc.listen", &e)).ok();
        if self.auth.mode == AuthMode::Dev && !self.auth.allow_dev_on_public_interface {
            for (field, addr) in [("http.listen", http), ("grpc.listen", grpc)] {
                if addr.is_some_and(|a| !a.ip().is_loopback()) {
                    err(
                        field,
                        "dev auth lets anyone claim any user id; listen on loopback, use auth.mode = \"jwt\", or set auth.allow_dev_on_public_interface = true",
                    );
                }
            }
        }
        if self.auth.mode != AuthMode::Dev && self.grpc.api_keys.is_empty() {
            err("grpc.api_keys", "at least one API key is required outside dev mode");
        }
        let public = [http, grpc].into_iter().flatten().any(|a| !a.ip().is_loopback());
        if self.auth.mode == AuthMode::Dev && public && self.grpc.api_keys.is_empty() {
            err(
                "grpc.api_keys",
                "at least one API key is required when a listener is beyond loopback: dev mode lets clients choose their user id, but the gRPC and REST APIs still need keys",
            );
        }
        for (i, key) in self.grpc.api_keys.iter().enumerate() {
            if key.expose().len() < 16 {
                err(&format!("grpc.api_keys[{i}]"), "must be at least 16 characters");
            }
        }
        match (&self.grpc.tls_cert_file, &self.grpc.tls_key_file) {
            (Some(_), None) => err("grpc.tls_key_file", "required with grpc.tls_cert_file"),
            (None, Some(_)) => err("grpc.tls_cert_file", "required with grpc.tls_key_file"),
            _ => {}
        }
        if self.grpc.tls_client_ca_file.is_some() && self.grpc.tls_cert_file.is_none() {
            err("grpc.tls_client_ca_file", "mutual TLS needs grpc.tls_cert_file and grpc.tls_key_file");
        }
        if self.grpc.max_message_bytes < 1024 {
            err("grpc.max_message_bytes", "must be at least 1024");
        }
        let b = &self.auth.backend;
        if !(100..=60_000).contains(&b.timeout_ms) {
            err("auth.backend.timeout_ms", "must be between 100 and 60000");
        }
        if b.forward_headers.len() > 32
            || b.forward_headers.iter().any(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_err())
        {
            err("auth.backend.forward_headers", "at most 32 valid header names");
        }
        if self.auth.mode == AuthMode::Jwt || (self.auth.mode == AuthMode::Backend && b.require_jwt) {
            self.validate_jwt(&mut err);
        }
        let s = &self.socketio;
        if s.namespaces.is_empty() {
            err("socketio.namespaces", "list at least one namespace, e.g. [\"/\"]");
        }
        for ns in &s.namespaces {
            if !ns.starts_with('/') || ns.len() > 128 {
                err("socketio.namespaces", &format!("{ns:?} must start with '/' and be at most 128 bytes"));
            }
        }
        for (field, value) in [
            ("socketio.ping_interval_ms", s.ping_interval_ms),
            ("socketio.ping_timeout_ms", s.ping_timeout_ms),
            ("socketio.connect_timeout_ms", s.connect_timeout_ms),
            ("socketio.ack_timeout_ms", s.ack_timeout_ms),
            ("socketio.max_payload_bytes", s.max_payload_bytes),
            ("events.undelivered_max_age_ms", self.events.undelivered_max_age_ms),
            ("shutdown.grace_period_ms", self.shutdown.grace_period_ms),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        if self.events.stream_batch_window_ms > 100 {
            err("events.stream_batch_window_ms", "must be at most 100 (it delays every event of a busy stream)");
        }
        for (field, value) in [
            ("http.rate_per_key_per_second", self.http.rate_per_key_per_second),
            ("http.burst_per_key", self.http.burst_per_key),
            ("http.rate_per_ip_per_second", self.http.rate_per_ip_per_second),
            ("http.burst_per_ip", self.http.burst_per_ip),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        if self.http.max_body_bytes < 1024 {
            err("http.max_body_bytes", "must be at least 1024");
        }
        for (field, value) in [
            ("http.header_read_timeout_ms", self.http.header_read_timeout_ms),
            ("http.idle_timeout_ms", self.http.idle_timeout_ms),
            ("grpc.first_request_timeout_ms", self.grpc.first_request_timeout_ms),
            ("grpc.idle_timeout_ms", self.grpc.idle_timeout_ms),
            ("log.summary_interval_ms", self.log.summary_interval_ms),
            ("dashboard.rate_per_address_per_second", u64::from(self.dashboard.rate_per_address_per_second)),
            ("dashboard.burst_per_address", u64::from(self.dashboard.burst_per_address)),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        for proxy in &self.http.trusted_proxies {
            if let Err(e) = super::Network::parse(proxy) {
                err("http.trusted_proxies", &format!("{proxy:?}: {e}"));
            }
        }
        for origin in &self.socketio.cors_origins {
            if origin == "*" {
                err("socketio.cors_origins", "\"*\": leave the list empty to allow every origin (without credentials)");
            } else if !(origin.starts_with("http://") || origin.starts_with("https://") || origin == "null")
                || origin.ends_with('/')
                || axum::http::HeaderValue::from_str(origin).is_err()
            {
                err(
                    "socketio.cors_origins",
                    &format!(
                        "{origin:?} is not an origin like https://app.example.com (scheme, host, optional port, no path)"
                    ),
                );
            }
        }
        if self.http.request_timeout_ms == 0 {
            err("http.request_timeout_ms", "must be greater than 0");
        }
        if !(256..=1 << 20).contains(&s.max_auth_bytes) {
            err("socketio.max_auth_bytes", "must be between 256 and 1048576");
        }
        if !(1..=65_536).contains(&s.max_buffer_size) {
            err("socketio.max_buffer_size", "must be between 1 and 65536");
        }
        if s.max_connections == 0 {
            err("socketio.max_connections", "must be greater than 0");
        }
        if s.max_sessions == 0 {
            err("socketio.max_sessions", "must be greater than 0");
        }
        if !(s.events_per_second > 0.0 && s.events_per_second.is_finite()) {
            err("socketio.events_per_second", "must be a positive number");
        }
        if s.flood_disconnect_after == 0 {
            err("socketio.flood_disconnect_after", "must be greater than 0");
        }
        if s.event_burst == 0 {
            err("socketio.event_burst", "must be greater than 0");
        }
        for p in &s.client_room_patterns {
            if let Err(e) = crate::names::pattern::Pattern::new(p) {
                err("socketio.client_room_patterns", &format!("{p:?}: {e}"));
            } else if crate::names::is_internal_room(p) || p.starts_with('*') {
                err("socketio.client_room_patterns", &format!("{p:?} could match internal rooms (\"user:\" prefix)"));
            }
        }
        if self.events.stream_queue == 0 {
            err("events.stream_queue", "must be greater than 0");
        }
        for (field, value) in [
            ("events.stream_queue_max_bytes", self.events.stream_queue_max_bytes),
            ("events.undelivered_max_bytes", self.events.undelivered_max_bytes),
            ("events.max_bytes", self.events.max_bytes),
            ("events.max_bytes_per_socket", self.events.max_bytes_per_socket),
        ] {
            if !(1024..=4 << 30).contains(&value) {
                err(field, "must be between 1024 and 4294967296");
            }
        }
        if self.log.file_max_bytes < 1024 {
            err("log.file_max_bytes", "must be at least 1024");
        }
        if self.log.file_keep == 0 {
            err("log.file_keep", "must be at least 1");
        }
        if self.log.ring_capacity == 0 || self.log.ring_capacity > 100_000 {
            err("log.ring_capacity", "must be 1 to 100000");
        }
        if let Some(p) = &self.dashboard.password
            && p.expose().len() < 8
        {
            err("dashboard.password", "must be at least 8 characters");
        }
        if self.offline.max_messages_per_user == 0 {
            err("offline.max_messages_per_user", "must be greater than 0");
        }
        if self.offline.max_bytes_per_user < 1024 {
            err("offline.max_bytes_per_user", "must be at least 1024");
        }
        if self.offline.max_bytes < self.offline.max_bytes_per_user {
            err("offline.max_bytes", "must be at least offline.max_bytes_per_user");
        }
        self.validate_redis(&mut err);
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log.level) {
            err("log.level", &e.to_string());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigError(errors)) }
    }

    fn validate_redis(&self, err: &mut impl FnMut(&str, &str)) {
        let r = &self.redis;
        if let Some(url) = &r.url {
            let u = url.expose();
            let schemes = ["redis://", "rediss://", "redis+unix://", "redis+cluster://", "rediss+cluster://"];
            if !schemes.iter().any(|s| u.starts_with(s)) {
                err(
                    "redis.url",
                    "must start with redis://, rediss://, redis+unix://, redis+cluster:// or rediss+cluster://",
                );
            }
        }
        // Braces would change which Redis Cluster slot a key's hash tag picks.
        if r.prefix.is_empty()
            || r.prefix.len() > 64
            || r.prefix.contains(['#', ' ', '{', '}'])
            || r.prefix.contains(char::is_control)
        {
            err("redis.prefix", "must be 1 to 64 bytes without spaces, '#', braces or control characters");
        }
        if !(1..=256).contains(&r.partitions) {
            err("redis.partitions", "must be 1 to 256");
        }
        if r.stream_max_len < 1000 {
            err("redis.stream_max_len", "must be at least 1000");
        }
        for (field, value) in [
            ("redis.request_timeout_ms", r.request_timeout_ms),
            ("redis.claim_idle_ms", r.claim_idle_ms),
            ("redis.node_timeout_ms", r.node_timeout_ms),
        ] {
            if value == 0 {
                err(field, "must be greater than 0");
            }
        }
        if r.node_timeout_ms < 2_000 {
            err("redis.node_timeout_ms", "must be at least 2000 (instances report every second)");
        }
        for ns in &self.socketio.namespaces {
            if r.url.is_some() && ns.contains('#') {
                err("socketio.namespaces", &format!("{ns:?}: '#' is not allowed in cluster mode"));
            }
        }
    }

    fn validate_jwt(&self, err: &mut impl FnMut(&str, &str)) {
        let jwt = &self.auth.jwt;
        if jwt.algorithms.is_empty() {
            err("auth.jwt.algorithms", "list at least one algorithm");
        }
        let mut families = Vec::new();
        for alg in &jwt.algorithms {
            match alg.parse::<jsonwebtoken::Algorithm>() {
                Ok(a) => families.push(a.family()),
                Err(_) => err(
                    "auth.jwt.algorithms",
                    &format!(
                        "{alg:?} is not a supported algorithm (HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA)"
                    ),
                ),
            }
        }
        families.dedup();
        if families.len() > 1 {
            err("auth.jwt.algorithms", "all algorithms must use the same key type (HMAC, RSA, EC or Ed25519)");
        }
        match families.first() {
            Some(jsonwebtoken::AlgorithmFamily::Hmac) => match &jwt.secret {
                Some(s) if s.expose().len() >= 32 => {}
                Some(_) => err("auth.jwt.secret", "must be at least 32 bytes"),
                None => err("auth.jwt.secret", "required for HS* algorithms"),
            },
            Some(_) if jwt.public_key_pem.is_none() && jwt.public_key_file.is_none() => err(
                "auth.jwt.public_key_pem",
                "a public key (or auth.jwt.public_key_file) is required for this algorithm",
            ),
            _ => {}
        }
    }
}

pub(super) fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.parse().map_err(|_| format!("{text:?} is not an address like 127.0.0.1:3000"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_is_reported() {
        let e = Config::from_toml(
            "[auth]\nmode = \"jwt\"\n[auth.jwt]\nalgorithms = [\"HS256\", \"RS256\"]\n[socketio]\nping_timeout_ms = 0\nnamespaces = [\"chat\"]\n",
        )
        .unwrap_err();
        let all = e.0.join("\n");
        for field in [
            "grpc.api_keys",
            "auth.jwt.algorithms",
            "auth.jwt.secret",
            "socketio.ping_timeout_ms",
            "socketio.namespaces",
        ] {
            assert!(all.contains(field), "{field} missing from {all}");
        }
    }

    #[test]
    fn the_event_batch_window_is_bounded() {
        let e = Config::from_toml("[events]\nstream_batch_window_ms = 101\n").unwrap_err();
        assert!(e.0.iter().any(|l| l.starts_with("events.stream_batch_window_ms: must be at most 100")), "{e}");
        assert_eq!(
            Config::from_toml("[events]\nstream_batch_window_ms = 0\n").unwrap().events.stream_batch_window_ms,
            0
        );
    }

    #[test]
    fn dev_mode_refuses_public_listen_unless_forced() {
        let e = Config::from_toml("[http]\nlisten = \"0.0.0.0:3000\"\n").unwrap_err();
        assert!(e.0[0].starts_with("http.listen"), "{e}");
        let forced = "[http]\nlisten = \"0.0.0.0:3000\"\n[auth]\nallow_dev_on_public_interface = true\n";
        let e = Config::from_toml(forced).unwrap_err();
        assert!(e.0.iter().any(|l| l.starts_with("grpc.api_keys: at least one API key is required")), "{e}");
        Config::from_toml(&format!("{forced}[grpc]\napi_keys = [\"a-long-enough-api-key\"]\n")).unwrap();
    }

    #[test]
    fn trusted_proxies_and_origins_are_checked() {
        let e = Config::from_toml("[http]\ntrusted_proxies = [\"10.0.0.0/33\", \"nope\"]\n").unwrap_err();
        assert_eq!(e.0.iter().filter(|l| l.starts_with("http.trusted_proxies")).count(), 2, "{e}");
        let e = Config::from_toml("[socketio]\ncors_origins = [\"*\", \"https://a.example/\"]\n").unwrap_err();
        assert_eq!(e.0.iter().filter(|l| l.starts_with("socketio.cors_origins")).count(), 2, "{e}");
        Config::from_toml("[http]\ntrusted_proxies = [\"10.0.0.0/8\", \"::1\"]\n[socketio]\ncors_origins = [\"https://a.example:8443\"]\n").unwrap();
    }

    #[test]
    fn client_room_patterns_cannot_reach_internal_rooms() {
        let e = Config::from_toml("[socketio]\nclient_room_patterns = [\"user:*\"]\n").unwrap_err();
        assert!(e.0[0].contains("internal"), "{e}");
    }
}
