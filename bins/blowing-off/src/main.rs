//! `blowing-off`: the command-line client of The Goodies. Parses, sets up logging, runs one
//! command, maps the outcome to an exit code (see `exit.rs`).

/// `println!` that ends the process quietly on a closed pipe (see `output::write_out`).
macro_rules! outln {
    ($($arg:tt)*) => {
        $crate::output::write_out(format_args!("{}\n", format_args!($($arg)*)))
    };
}

/// `eprintln!` that ends the process quietly on a closed pipe (see `output::write_err`).
macro_rules! errln {
    ($($arg:tt)*) => {
        $crate::output::write_err(format_args!("{}\n", format_args!($($arg)*)))
    };
}

mod cli;
mod commands;
mod config;
mod exit;
mod output;
mod progress;

use std::io::IsTerminal;
use std::process::ExitCode;

use clap::FromArgMatches;

/// Parses the command line. Help and version go to stdout through the writers that end
/// quietly on a closed pipe (`blowing-off --help | head -1`); usage errors go to stderr
/// with exit code 2.
fn parse() -> Result<cli::Cli, ExitCode> {
    let parsed = cli::command()
        .try_get_matches()
        .and_then(|m| cli::Cli::from_arg_matches(&m));
    match parsed {
        Ok(cli) => Ok(cli),
        Err(e) => {
            let text = if std::io::stdout().is_terminal() {
                e.render().ansi().to_string()
            } else {
                e.render().to_string()
            };
            if e.use_stderr() {
                output::write_err(format_args!("{text}"));
                Err(ExitCode::from(exit::Exit::Usage as u8))
            } else {
                output::write_out(format_args!("{text}"));
                Err(ExitCode::SUCCESS)
            }
        }
    }
}

/// Whether log lines on stderr are coloured.
fn colour(choice: cli::Color) -> bool {
    match choice {
        cli::Color::Always => true,
        cli::Color::Never => false,
        cli::Color::Auto => {
            std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = match parse() {
        Ok(cli) => cli,
        Err(code) => return code,
    };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_filter()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::LogOutput)
        .with_ansi(colour(cli.color))
        .log_internal_errors(false)
        .init();
    let json = cli.json;
    match commands::run(cli).await {
        Ok(code) => code.into(),
        Err(e) => exit::report(&e, json).into(),
    }
}
