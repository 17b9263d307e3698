//! The `funkygibbon-mock` binary: parse flags, set up logs, serve until SIGINT or SIGTERM,
//! map errors to exit codes.
//!
//! Logs go to stderr. Once the server is ready, stdout gets one JSON line naming the
//! bound address (`{"event":"listening","addr":"127.0.0.1:41234","url":"http://127.0.0.1:41234"}`)
//! and `--ready-file` is written with the address, so scripts need not read logs.
//!
//! Before any thread starts, the allocator is set up to give memory back
//! (`funkygibbon_mock::memory::tune_allocator`, docs/SERVER.md "Memory").

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Parser;
use funkygibbon_mock::{serve_with_handle, shutdown_signal, Cli, LogFormat, ServerError};

#[global_allocator]
static GLOBAL: funkygibbon_mock::memory::Allocator = funkygibbon_mock::memory::Allocator;

/// mimalloc's options set before the first allocation, which Rust's runtime makes before
/// `main` (`funkygibbon_mock::memory::tune_early`).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
#[used]
#[link_section = ".init_array"]
static TUNE_ALLOCATOR_EARLY: extern "C" fn() = funkygibbon_mock::memory::tune_early;

fn main() -> ExitCode {
    // Process-wide and best before threads exist: the runtime's threads then share the
    // allocator's few arenas.
    funkygibbon_mock::memory::tune_allocator();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("funkygibbon-mock: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async_main())
}

async fn async_main() -> ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    let ready_file = cli.ready_file.clone();
    match run(cli).await {
        Ok(()) => {
            if let Some(path) = &ready_file {
                let _ = std::fs::remove_file(path);
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!(error = %e.report(), "funkygibbon-mock failed");
            // Also plainly, whatever the log filter and format.
            eprintln!("funkygibbon-mock: {}", e.report());
            ExitCode::from(e.exit_code())
        }
    }
}

async fn run(cli: Cli) -> Result<(), ServerError> {
    let config = cli.to_config();
    let listener = tokio::net::TcpListener::bind(cli.listen)
        .await
        .map_err(|source| ServerError::Bind {
            addr: cli.listen.to_string(),
            source,
        })?;
    let addr = listener.local_addr()?;
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel();
    let server = tokio::spawn(serve_with_handle(
        listener,
        config,
        shutdown_signal(),
        ready_tx,
    ));
    // Sent once the store is open and the server built; dropped when start-up failed.
    if ready_rx.await.is_ok() {
        if let Some(path) = &cli.ready_file {
            write_ready_file(path, &addr.to_string())?;
        }
        let line = serde_json::json!({
            "event": "listening",
            "addr": addr.to_string(),
            "url": format!("{scheme}://{addr}"),
        });
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    server.await?
}

/// Writes the address to a file beside the target and renames it into place, so a
/// reader never sees a half-written file.
fn write_ready_file(path: &Path, addr: &str) -> Result<(), ServerError> {
    let mut tmp = PathBuf::from(path);
    tmp.as_mut_os_string().push(".tmp");
    let fail = |e: std::io::Error| {
        ServerError::Config(format!(
            "cannot write the ready file {}: {e}",
            path.display()
        ))
    };
    std::fs::write(&tmp, format!("{addr}\n")).map_err(fail)?;
    std::fs::rename(&tmp, path).map_err(fail)
}
