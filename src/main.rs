use std::process::ExitCode;

use clap::Parser;
use socket_bridge::config::{Cli, Config};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(&cli) {
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
    let redactor = socket_bridge::telemetry::redact::Redactor::from_config(&config);
    let _telemetry = match socket_bridge::telemetry::init(&config.log, redactor) {
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
