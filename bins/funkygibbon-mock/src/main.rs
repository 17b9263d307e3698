//! The `funkygibbon-mock` binary: parse flags, set up logs, serve until ctrl-c or SIGTERM, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use funkygibbon_mock::{serve, shutdown_signal, Cli, ServerError};

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stdout());
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .init();
    let run = async {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .map_err(|source| ServerError::Bind {
                addr: cli.listen.to_string(),
                source,
            })?;
        serve(listener, cli.to_config(), shutdown_signal()).await
    };
    match run.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %e.report(), "funkygibbon-mock failed");
            ExitCode::from(e.exit_code())
        }
    }
}
