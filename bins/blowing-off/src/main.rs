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
mod exit;
mod output;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(cli.log_level()));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(output::LogOutput)
        .log_internal_errors(false)
        .init();
    match commands::run(cli).await {
        Ok(code) => code.into(),
        Err(e) => exit::report(&e).into(),
    }
}
