//! MCP for the other launches on this machine: the process that owns a data directory listens
//! on `{dataDir}/mcp.sock`, and a `memgate mcp stdio` launched while it runs attaches to it
//! instead of opening the same files. Each connection is one client, spoken to as over stdio
//! (one JSON-RPC message per line) after a first line that says who it is ([`Hello`]).
//!
//! The socket is a file in a directory only its user can enter, and no browser can reach a
//! Unix socket: nothing but this user's processes can speak to it.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::watch;

use super::front::McpFront;

/// The first line an attaching launch sends.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Hello {
    /// The launch's `--memory-metadata` (cldmemory's `Memory-Metadata`).
    pub memory_metadata: Option<String>,
}

/// The longest [`Hello`] line, and how long a connection may take to send it.
const HELLO_MAX_BYTES: usize = 64 * 1024;
const HELLO_TIMEOUT: Duration = Duration::from_secs(5);

/// Binds the socket (a stale one from a process that died is replaced: the caller owns the
/// data directory, so no live process serves it) readable by this user only.
pub fn bind(path: &Path) -> anyhow::Result<UnixListener> {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => {
            return Err(error).with_context(|| format!("removing the old {}", path.display()))
        }
    }
    let listener =
        UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
            .with_context(|| format!("restricting {}", path.display()))?;
    }
    Ok(listener)
}

/// Serves each connection as one MCP client until `shutdown`; `clients` counts the
/// connections open.
pub async fn serve(
    listener: UnixListener,
    front: Arc<McpFront>,
    clients: watch::Sender<usize>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    tracing::warn!(%error, "accepting on the local MCP socket failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        clients.send_modify(|open| *open += 1);
        let (front, clients) = (front.clone(), clients.clone());
        tokio::spawn(async move {
            if let Err(error) = serve_client(stream, front).await {
                tracing::warn!(error = format!("{error:#}"), "a local MCP client failed");
            }
            clients.send_modify(|open| *open -= 1);
        });
    }
}

async fn serve_client(stream: UnixStream, front: Arc<McpFront>) -> anyhow::Result<()> {
    let (read, write) = stream.into_split();
    let mut read = BufReader::new(read);
    let hello = read_hello(&mut read).await?;
    tracing::info!("a local MCP client attached");
    super::stdio::serve(front, read, write, hello.memory_metadata).await
}

async fn read_hello<R: AsyncRead + Unpin>(read: &mut BufReader<R>) -> anyhow::Result<Hello> {
    let mut line = Vec::new();
    let mut limited = (&mut *read).take(HELLO_MAX_BYTES as u64);
    tokio::time::timeout(HELLO_TIMEOUT, limited.read_until(b'\n', &mut line))
        .await
        .context("no hello line in time")?
        .context("reading the hello line")?;
    serde_json::from_slice(&line).context("the hello line is not a memgate hello")
}

/// Connects to the local server of a data directory, if one listens.
pub async fn connect(path: &Path) -> Option<UnixStream> {
    UnixStream::connect(path).await.ok()
}

/// Relays this process's `input` and `output` to the local server on `stream` until the
/// server closes it; `input` ending is passed on.
pub async fn attach<I, O>(
    stream: UnixStream,
    hello: &Hello,
    mut input: I,
    mut output: O,
) -> anyhow::Result<()>
where
    I: AsyncRead + Unpin + Send + 'static,
    O: AsyncWrite + Unpin,
{
    let (mut from_server, mut to_server) = stream.into_split();
    let mut line = serde_json::to_vec(hello).context("encoding the hello")?;
    line.push(b'\n');
    to_server
        .write_all(&line)
        .await
        .context("sending the hello")?;
    let upward = tokio::spawn(async move {
        let copied = tokio::io::copy(&mut input, &mut to_server).await;
        // The client closed its end: the server ends the session and then the connection.
        let _ = to_server.shutdown().await;
        copied
    });
    let copied = tokio::io::copy(&mut from_server, &mut output).await;
    let _ = output.flush().await;
    upward.abort();
    copied.context("relaying the server's answers")?;
    Ok(())
}
