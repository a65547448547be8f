use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use socket_bridge::config::{Cli, Config};
use socket_bridge::telemetry::ConsoleStream;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = if cli.health_check { Config::read(&cli) } else { Config::load(&cli) };
    let config = match config {
        Ok(config) => config,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if cli.print_config {
        println!("{}", config.to_redacted_toml());
        return ExitCode::SUCCESS;
    }
    if cli.check_config {
        return check_config(&config);
    }
    if cli.health_check {
        return health_check(config.http_addr());
    }
    let stream = if cli.log_stdout { ConsoleStream::Stdout } else { ConsoleStream::Stderr };
    let redactor = socket_bridge::telemetry::redact::Redactor::from_config(&config);
    let _telemetry = match socket_bridge::telemetry::init(&config.log, stream, redactor) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match socket_bridge::run(config, socket_bridge::shutdown::os_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e, "socket-bridge failed to start");
            ExitCode::FAILURE
        }
    }
}

/// What start-up would refuse, found without binding anything: the settings (already
/// validated by `Config::load`), then the JWT verification key and the TLS files, which
/// are read only when the bridge starts.
fn check_config(config: &Config) -> ExitCode {
    let mut problems = Vec::new();
    if let Err(e) = socket_bridge::hub::auth::Authenticator::from_config(&config.auth) {
        problems.push(format!("auth: {e}"));
    }
    if let Err(e) = socket_bridge::grpc::tls_config(config) {
        problems.push(format!("grpc: {e}"));
    }
    if problems.is_empty() {
        println!(
            "configuration OK: http {} grpc {} auth {} {}",
            config.http.listen,
            config.grpc.listen,
            format!("{:?}", config.auth.mode).to_lowercase(),
            if config.redis.url.is_some() { "cluster mode (redis)" } else { "embedded mode" }
        );
        ExitCode::SUCCESS
    } else {
        eprintln!("invalid configuration:\n  {}", problems.join("\n  "));
        ExitCode::from(2)
    }
}

/// `GET /health` on the configured HTTP listener with a plain HTTP/1.1 request. A
/// wildcard listen address (`0.0.0.0`, `[::]`) is asked on loopback of the same family.
fn health_check(listen: SocketAddr) -> ExitCode {
    const LIMIT: Duration = Duration::from_secs(3);
    let mut addr = listen;
    if addr.ip().is_unspecified() {
        addr.set_ip(match addr {
            SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let answer = (|| -> std::io::Result<String> {
        let mut conn = TcpStream::connect_timeout(&addr, LIMIT)?;
        conn.set_read_timeout(Some(LIMIT))?;
        conn.set_write_timeout(Some(LIMIT))?;
        write!(conn, "GET /health HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")?;
        // The status line is all that matters; 64 bytes hold it.
        let mut head = [0u8; 64];
        let mut len = 0;
        while len < head.len() && !head[..len].contains(&b'\n') {
            match conn.read(&mut head[len..])? {
                0 => break,
                n => len += n,
            }
        }
        Ok(String::from_utf8_lossy(&head[..len]).lines().next().unwrap_or_default().to_owned())
    })();
    match answer {
        Ok(status) if status.starts_with("HTTP/1.1 200") => {
            println!("healthy: {addr} answered {status}");
            ExitCode::SUCCESS
        }
        Ok(status) => {
            eprintln!("unhealthy: {addr} answered {status:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("unhealthy: {addr}: {e}");
            ExitCode::FAILURE
        }
    }
}
