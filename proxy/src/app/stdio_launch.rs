//! `memgate mcp stdio`: MCP on this process's stdin and stdout, for clients that launch their
//! memory server as a process (Claude Code, Claude Desktop, Cursor).
//!
//! With a data directory (`--embedded` keeps one by default), every launch shares one local
//! server, so two clients see the same memories: the first launch starts it in the background
//! (this same command line, marked by [`LOCAL_SERVER_ENV`], its log in
//! `{dataDir}/memgate.log`), each launch relays its stdin and stdout to it over
//! `{dataDir}/mcp.sock`, and the server exits once no launch has been attached for
//! `--idle-exit`. A `memgate serve` owning the directory serves the socket too. Without a
//! data directory (`--ephemeral`, or Redis and a Qdrant server), the launch serves alone.

use std::future::Future;
use std::time::Duration;

use crate::config::Config;
use crate::front::mcp::stdio;

pub use crate::config::LOCAL_SERVER_ENV;

/// How long a launch waits for the local server it started to listen.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs one launch until its client or `shutdown` ends it.
pub async fn run(
    config: Config,
    memory_metadata: Option<String>,
    idle_exit: Duration,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    match config.data_dir.clone() {
        #[cfg(unix)]
        Some(dir) if std::env::var_os(LOCAL_SERVER_ENV).is_some() => {
            shared::run_local_server(config, &dir, idle_exit, shutdown).await
        }
        #[cfg(unix)]
        Some(dir) => shared::attach_or_start(&dir, memory_metadata).await,
        _ => serve_alone(config, memory_metadata, shutdown).await,
    }
}

/// The whole server in this process, for this one client.
async fn serve_alone(
    config: Config,
    memory_metadata: Option<String>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let proxy = super::start(config, None).await?;
    let front = proxy.state.mcp.front.clone();
    let served = tokio::select! {
        served = stdio::serve(front, tokio::io::stdin(), tokio::io::stdout(), memory_metadata) => served,
        _ = shutdown => Ok(()),
    };
    proxy.shutdown().await;
    served
}

#[cfg(unix)]
mod shared {
    use std::future::Future;
    use std::path::Path;
    use std::process::{Child, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use tokio::net::UnixStream;

    use super::{LOCAL_SERVER_ENV, SERVER_START_TIMEOUT};
    use crate::app::data_dir::{create_private_dir, log_file, socket_file, Claim, DataDir};
    use crate::config::Config;
    use crate::front::mcp::local_socket::{self, Hello};

    /// The local server: owns the data directory, serves its socket, and exits once no
    /// client has been attached for `idle_exit`. Another server owning it already is not an
    /// error (two launches started one each at the same moment).
    pub async fn run_local_server(
        config: Config,
        dir: &Path,
        idle_exit: Duration,
        shutdown: impl Future<Output = ()>,
    ) -> anyhow::Result<()> {
        let owned = match DataDir::claim(dir)? {
            Claim::Owned(owned) => owned,
            Claim::Held { pid } => {
                tracing::info!(?pid, "another memgate serves this data directory already");
                return Ok(());
            }
        };
        let proxy = crate::app::start_in(config, None, Some(owned)).await?;
        let clients = proxy
            .local_clients()
            .context("the local server has no socket")?;
        tokio::select! {
            _ = idle(clients, idle_exit) => {
                tracing::info!(?idle_exit, "no client attached for a while: exiting");
            }
            _ = shutdown => {}
        }
        proxy.shutdown().await;
        Ok(())
    }

    /// Returns once no client has been attached for `idle_exit`.
    async fn idle(mut clients: tokio::sync::watch::Receiver<usize>, idle_exit: Duration) {
        loop {
            if *clients.borrow_and_update() == 0 {
                tokio::select! {
                    changed = clients.changed() => if changed.is_err() { return },
                    _ = tokio::time::sleep(idle_exit) => return,
                }
            } else if clients.changed().await.is_err() {
                return;
            }
        }
    }

    /// Attaches this launch to the data directory's local server, starting one if none
    /// listens; relays stdin and stdout until the server closes the connection, then exits
    /// the process (a read of stdin may still be pending, and nothing else is left to do).
    pub async fn attach_or_start(
        dir: &Path,
        memory_metadata: Option<String>,
    ) -> anyhow::Result<()> {
        let socket = socket_file(dir);
        let stream = match local_socket::connect(&socket).await {
            Some(stream) => stream,
            None => {
                let server = start_local_server(dir)?;
                wait_for_server(dir, &socket, server).await?
            }
        };
        tracing::info!(
            data_dir = %dir.display(),
            log = %log_file(dir).display(),
            "attached to the local memgate server of this data directory"
        );
        let hello = Hello { memory_metadata };
        let relayed =
            local_socket::attach(stream, &hello, tokio::io::stdin(), tokio::io::stdout()).await;
        if let Err(error) = relayed {
            tracing::error!(
                error = format!("{error:#}"),
                "the local server's connection failed"
            );
            std::process::exit(1);
        }
        std::process::exit(0);
    }

    /// Starts this command line again in the background as the data directory's local server,
    /// in a process group of its own (the client's signals are for its launch, not for the
    /// server other launches share).
    fn start_local_server(dir: &Path) -> anyhow::Result<Child> {
        use std::os::unix::process::CommandExt;
        let log_path = log_file(dir);
        create_private_dir(dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .with_context(|| format!("opening {}", log_path.display()))?;
        let exe = std::env::current_exe().context("finding memgate's own executable")?;
        tracing::info!(data_dir = %dir.display(), "starting the local memgate server for this data directory");
        std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env(LOCAL_SERVER_ENV, "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .process_group(0)
            .spawn()
            .context("starting the local memgate server")
    }

    /// Connects once the server listens. A server that exits with an error is reported with
    /// its log; one that exits cleanly lost the race to another, which is waited for.
    async fn wait_for_server(
        dir: &Path,
        socket: &Path,
        mut server: Child,
    ) -> anyhow::Result<UnixStream> {
        let deadline = Instant::now() + SERVER_START_TIMEOUT;
        loop {
            if let Some(stream) = local_socket::connect(socket).await {
                return Ok(stream);
            }
            if let Some(status) = server.try_wait().context("watching the local server")? {
                if !status.success() {
                    anyhow::bail!(
                        "the local memgate server exited ({status}); its log: {}",
                        log_file(dir).display()
                    );
                }
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "no memgate answered on {} within {SERVER_START_TIMEOUT:?}; its log: {}",
                    socket.display(),
                    log_file(dir).display()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
