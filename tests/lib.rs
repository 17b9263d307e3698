//! Helpers for the workspace-level end-to-end tests (`e2e_*.rs`): the real server on
//! `127.0.0.1:0`, real clients over real HTTP, and convergence checks.

use std::sync::Arc;

use anyhow::Context;
use funkygibbon_mock::{serve_with_handle, AppHandle, ServerConfig};
use goodies_client::{BlowingOffClient, ClientConfig, RetryPolicy, Transport};
use tokio::sync::oneshot;

/// The admin password of every test server.
pub const PASSWORD: &str = "e2e-password";

/// A server running on an ephemeral loopback port, with its own database file.
#[derive(Debug)]
pub struct TestServer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    /// The server's handle (its store, token signer).
    pub handle: AppHandle,
    /// Where the server's and the clients' files live.
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    task: Option<std::thread::JoinHandle<Result<(), funkygibbon_mock::ServerError>>>,
}

impl TestServer {
    /// Starts a server with the default settings.
    pub async fn start() -> anyhow::Result<Self> {
        Self::start_with(|c| c).await
    }

    /// Starts a server with adjusted settings.
    pub async fn start_with(
        adjust: impl FnOnce(ServerConfig) -> ServerConfig,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let db = format!("sqlite://{}", dir.path().join("server.db").display());
        let config = adjust(
            ServerConfig::new(db)
                .with_admin_password(PASSWORD)
                .with_jwt_secret("e2e-secret"),
        );
        // The server runs on its own thread and runtime, as it would in its own process.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        std_listener.set_nonblocking(true)?;
        let url = format!("http://{}", std_listener.local_addr()?);
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, handle) = oneshot::channel();
        let task = std::thread::Builder::new()
            .name("funkygibbon".into())
            .spawn(move || -> Result<(), funkygibbon_mock::ServerError> {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                rt.block_on(async move {
                    let listener = tokio::net::TcpListener::from_std(std_listener)?;
                    serve_with_handle(
                        listener,
                        config,
                        async move {
                            let _ = stopped.await;
                        },
                        ready,
                    )
                    .await
                })
            })?;
        let handle = handle.await.context("the server did not start")?;
        Ok(TestServer {
            url,
            handle,
            dir,
            stop: Some(stop),
            task: Some(task),
        })
    }

    /// The server store's digest.
    pub async fn digest(&self) -> anyhow::Result<String> {
        Ok(self.handle.store().state_digest().await?)
    }

    /// Stops the server and waits for it.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.task.take() {
            tokio::task::spawn_blocking(move || t.join())
                .await?
                .map_err(|_| anyhow::anyhow!("the server thread panicked"))??;
        }
        Ok(())
    }

    /// Opens a client named `name` (its own database file), logged in to this server.
    pub async fn client(&self, name: &str) -> anyhow::Result<BlowingOffClient> {
        let c = self.offline_client(name).await?;
        c.login(&self.url, PASSWORD).await?;
        Ok(c)
    }

    /// Opens a client that has never talked to any server.
    pub async fn offline_client(&self, name: &str) -> anyhow::Result<BlowingOffClient> {
        Ok(
            BlowingOffClient::builder(self.dir.path().join(format!("{name}.db")))
                .config(test_config())
                .open()
                .await?,
        )
    }

    /// Opens a logged-in client that talks through `transport`.
    pub async fn client_with_transport(
        &self,
        name: &str,
        transport: Arc<dyn Transport>,
    ) -> anyhow::Result<BlowingOffClient> {
        let c = BlowingOffClient::builder(self.dir.path().join(format!("{name}.db")))
            .config(test_config())
            .transport(transport)
            .open()
            .await?;
        c.login(&self.url, PASSWORD).await?;
        Ok(c)
    }
}

/// The client settings tests use: retries without waiting.
pub fn test_config() -> ClientConfig {
    ClientConfig::default().with_retry(RetryPolicy::immediate(3))
}

/// Syncs a client and checks the sync was clean and its digest matched the server's.
pub async fn quiet_sync(c: &BlowingOffClient) -> anyhow::Result<goodies_client::SyncResult> {
    let r = c.sync().await?;
    anyhow::ensure!(r.errors.is_empty(), "sync errors: {:?}", r.errors);
    anyhow::ensure!(r.pending == 0, "{} changes still pending", r.pending);
    let d = r
        .digest
        .as_ref()
        .context("no digest check after a quiet sync")?;
    anyhow::ensure!(d.matches(), "digest mismatch after a quiet sync: {d:?}");
    Ok(r)
}

/// Checks that every client's local digest equals the server's.
pub async fn assert_converged(
    server: &TestServer,
    clients: &[&BlowingOffClient],
) -> anyhow::Result<()> {
    let want = server.digest().await?;
    for (n, c) in clients.iter().enumerate() {
        let got = c.state_digest().await?;
        anyhow::ensure!(got == want, "client {n} digest {got} != server {want}");
    }
    Ok(())
}
