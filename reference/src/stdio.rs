//! MCP over stdio as cldmemory serves it by default: one JSON-RPC message per line on stdin,
//! answers one per line on stdout.

use std::sync::Arc;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

use crate::mcp::{self, ServerInfo};
use crate::service::MemoryService;

/// Serves until `input` ends.
pub async fn serve<R, W>(
    service: Arc<MemoryService>,
    info: ServerInfo,
    input: R,
    mut output: W,
) -> std::io::Result<()>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let (answers, mut outgoing) = mpsc::unbounded_channel::<Value>();
    let writer = tokio::spawn(async move {
        while let Some(answer) = outgoing.recv().await {
            let line = format!("{answer}\n");
            if output.write_all(line.as_bytes()).await.is_err() || output.flush().await.is_err() {
                break;
            }
        }
    });
    let info = Arc::new(info);
    let mut lines = BufReader::new(input).lines();
    while let Some(line) = lines.next_line().await? {
        let Ok(message) = serde_json::from_str::<Value>(&line) else {
            continue; // the SDK reports a parse error on its own side and reads on
        };
        let (service, info, answers) = (service.clone(), info.clone(), answers.clone());
        tokio::spawn(async move {
            if let Some(answer) = mcp::handle(&service, &info, message, None).await {
                let _ = answers.send(answer);
            }
        });
    }
    drop(answers);
    let _ = writer.await;
    Ok(())
}
