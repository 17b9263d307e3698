//! What the CLI tests share: a real server on its own thread, and the binary run as a
//! fresh process.

#![allow(dead_code, reason = "each test binary uses part of the support")]

use std::path::Path;
use std::process::{Command, Output};

use funkygibbon_mock::{serve_with_handle, ServerConfig};

/// The admin password of every test server.
pub const PASSWORD: &str = "cli-password";

/// Runs a server (settings adjusted by `adjust`) on its own thread until the returned
/// sender is dropped; returns its URL.
pub fn start_server_with(
    dir: &Path,
    adjust: impl FnOnce(ServerConfig) -> ServerConfig + Send + 'static,
) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.set_nonblocking(true).expect("nonblocking");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let db = format!("sqlite://{}", dir.join("server.db").display());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let (ready, is_ready) = tokio::sync::oneshot::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
            let config = adjust(
                ServerConfig::new(db)
                    .with_admin_password(PASSWORD)
                    .with_jwt_secret("cli-secret"),
            );
            let _ = serve_with_handle(
                listener,
                config,
                async move {
                    let _ = stopped.await;
                },
                ready,
            )
            .await;
        });
    });
    is_ready.blocking_recv().expect("server ready");
    (url, stop)
}

/// Runs a server with the default settings (see [`start_server_with`]).
pub fn start_server(dir: &Path) -> (String, tokio::sync::oneshot::Sender<()>) {
    start_server_with(dir, |c| c)
}

/// Runs `blowing-off --db DB ARGS…` as a fresh process, without retries.
pub fn run(db: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blowing-off"))
        .arg("--db")
        .arg(db)
        .args(args)
        .env_remove("BLOWING_OFF_DB")
        .env("BLOWING_OFF_RETRIES", "0")
        .output()
        .expect("run blowing-off")
}
