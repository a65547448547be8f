//! Reading the configuration: defaults, then a TOML file, then `SOCKET_BRIDGE_*`
//! environment variables (`SECTION__KEY`), then `--set section.key=value` flags; later
//! sources win. The merged table is parsed once (serde names unknown or mistyped keys) and
//! validated.

use super::{Cli, Config, ConfigError};

const ENV_PREFIX: &str = "SOCKET_BRIDGE_";

impl Config {
    /// Reads the file named by the CLI, the environment and the flags, then validates.
    pub fn load(cli: &Cli) -> Result<Self, ConfigError> {
        let config = Self::read(cli)?;
        config.validate()?;
        Ok(config)
    }

    /// Reads the settings as [`Config::load`] does, without validating them: for
    /// `--health-check`, which needs only the listen address and must not fail on rules
    /// about other settings (those were checked when the bridge started).
    pub fn read(cli: &Cli) -> Result<Self, ConfigError> {
        let mut table = match &cli.config {
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?;
                text.parse::<toml::Table>().map_err(|e| ConfigError(vec![format!("{}: {e}", path.display())]))?
            }
            None => toml::Table::new(),
        };
        let mut errors = Vec::new();
        // Environment: SOCKET_BRIDGE_SOCKETIO__PING_INTERVAL_MS=300 sets socketio.ping_interval_ms.
        let mut env: Vec<(String, String)> = std::env::vars()
            .filter_map(|(k, v)| {
                let key = k.strip_prefix(ENV_PREFIX)?;
                key.contains("__").then(|| (key.to_lowercase().replace("__", "."), v))
            })
            .collect();
        env.sort();
        for (key, value) in env {
            set_path(&mut table, &key, &value, &mut errors);
        }
        if let Some(v) = &cli.http_listen {
            set_path(&mut table, "http.listen", &format!("\"{v}\""), &mut errors);
        }
        if let Some(v) = &cli.grpc_listen {
            set_path(&mut table, "grpc.listen", &format!("\"{v}\""), &mut errors);
        }
        for item in &cli.overrides {
            match item.split_once('=') {
                Some((key, value)) => set_path(&mut table, key.trim(), value, &mut errors),
                None => errors.push(format!("--set {item}: expected KEY=VALUE")),
            }
        }
        if !errors.is_empty() {
            return Err(ConfigError(errors));
        }
        Self::parse_table(table)
    }

    /// Parses and validates a TOML document.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        let table = text.parse::<toml::Table>().map_err(|e| ConfigError(vec![e.to_string()]))?;
        let config = Self::parse_table(table)?;
        config.validate()?;
        Ok(config)
    }

    fn parse_table(table: toml::Table) -> Result<Self, ConfigError> {
        // Re-parsing the text gives serde errors that name the offending key.
        let text = toml::to_string(&table).map_err(|e| ConfigError(vec![e.to_string()]))?;
        let config: Config =
            toml::from_str(&text).map_err(|e| ConfigError(vec![e.message().to_owned() + &key_hint(&e, &text)]))?;
        Ok(config)
    }
}

/// Sets `a.b.c = value` in a TOML table, creating sections on the way.
fn set_path(table: &mut toml::Table, key: &str, raw: &str, errors: &mut Vec<String>) {
    let value = match format!("v = {raw}").parse::<toml::Table>() {
        Ok(mut t) => t.remove("v").unwrap_or(toml::Value::String(raw.to_owned())),
        Err(_) => toml::Value::String(raw.to_owned()),
    };
    let mut parts: Vec<&str> = key.split('.').collect();
    let Some(last) = parts.pop() else { return };
    let mut current = table;
    for part in parts {
        let entry = current.entry(part.to_owned()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match entry {
            toml::Value::Table(t) => current = t,
            _ => {
                errors.push(format!("{key}: {part} is not a section"));
                return;
            }
        }
    }
    current.insert(last.to_owned(), value);
}

/// Names the key at the error's position, since serde's message alone may not.
fn key_hint(e: &toml::de::Error, text: &str) -> String {
    let Some(span) = e.span() else { return String::new() };
    let line_start = text[..span.start.min(text.len())].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[line_start..].find('\n').map_or(text.len(), |i| line_start + i);
    let section = text[..line_start]
        .lines()
        .rev()
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').to_owned());
    let line = &text[line_start..line_end];
    let key = line.split('=').next().unwrap_or("").trim();
    match section {
        Some(s) if !key.is_empty() && !line.starts_with('[') => format!(" (at {s}.{key})"),
        Some(s) => format!(" (in [{s}])"),
        None if !key.is_empty() => format!(" (at {key})"),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_and_mistyped_settings_are_named() {
        let e = Config::from_toml("[socketio]\nping_intervall_ms = 3\n").unwrap_err().to_string();
        assert!(e.contains("ping_intervall_ms"), "{e}");
        let e = Config::from_toml("[socketio]\nping_interval_ms = \"x\"\n").unwrap_err().to_string();
        assert!(e.contains("socketio.ping_interval_ms"), "{e}");
    }

    #[test]
    fn overrides_take_toml_values_or_strings() {
        let mut table = toml::Table::new();
        let mut errors = Vec::new();
        set_path(&mut table, "socketio.ping_interval_ms", "300", &mut errors);
        set_path(&mut table, "log.level", "debug", &mut errors);
        set_path(&mut table, "socketio.namespaces", "[\"/\", \"/admin\"]", &mut errors);
        assert!(errors.is_empty());
        let c = Config::parse_table(table).unwrap();
        c.validate().unwrap();
        assert_eq!(c.socketio.ping_interval_ms, 300);
        assert_eq!(c.log.level, "debug");
        assert_eq!(c.socketio.namespaces, ["/", "/admin"]);
    }
}
