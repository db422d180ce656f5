//! MCP on this process's stdin and stdout (newline-delimited JSON-RPC), for clients that
//! launch their memory server as a process: one session, answered by the front.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use super::front::McpFront;
use super::jsonrpc::Message;
use super::session::Transport;
use crate::keys::Scope;

/// Serves one session on `input` and `output` until `input` ends.
pub async fn serve<R, W>(
    front: Arc<McpFront>,
    input: R,
    mut output: W,
    metadata: Option<String>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let session = front
        .open_session(
            Transport::Stdio,
            &http::HeaderMap::new(),
            metadata,
            Scope::UNSCOPED,
        )
        .map_err(|error| anyhow::anyhow!("{error}"))?;
    let (answers, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(message) = outgoing.recv().await {
            let mut line = message.to_string();
            line.push('\n');
            if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        // As cldmemory's SDK does on stdio: a line that is not a JSON-RPC message is reported
        // (here on stderr) and gets no answer.
        let message = match serde_json::from_str::<Value>(&line) {
            Ok(value) => Message::parse(value),
            Err(error) => {
                tracing::warn!(%error, "a line on stdin is not JSON; ignored");
                continue;
            }
        };
        match message {
            Ok(message) => {
                let (front, session, answers) = (front.clone(), session.clone(), answers.clone());
                tokio::spawn(async move {
                    if let Some(answer) = front.handle(&session, message).await {
                        let _ = answers.send(answer);
                    }
                });
            }
            Err(_) => tracing::warn!("a line on stdin is not a JSON-RPC message; ignored"),
        }
    }
    front.sessions.close(&session.id);
    drop(answers);
    let _ = writer.await;
    Ok(())
}
