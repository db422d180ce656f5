//! A child process's stdio: one JSON-RPC message per line each way.

use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, BufReader};

use super::health::Loss;
use super::session::{Outgoing, Session};
use super::{Upstream, UpstreamError};

impl Upstream {
    pub(super) fn open_stdio(
        self: &Arc<Self>,
        command: &[String],
    ) -> Result<Arc<Session>, UpstreamError> {
        let (program, args) = command
            .split_first()
            .ok_or_else(|| UpstreamError::Connect("no command to run".into()))?;
        let mut child = tokio::process::Command::new(program)
            .args(args)
            // It speaks on its stdio, whatever its `.env` says (cldmemory's may say `sse`,
            // for the server it runs as elsewhere; a variable set here wins over the file).
            .env("MCP_TRANSPORT_MODE", "stdio")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| UpstreamError::Connect(format!("{program}: {e}")))?;
        let stdin = child
            .stdin
            .take()
            .ok_or_else(|| UpstreamError::Connect("no stdin".into()))?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| UpstreamError::Connect("no stdout".into()))?;
        let session = self.session_on(Outgoing::Stdio(tokio::sync::Mutex::new(stdin)), Some(child));
        let incoming = session.incoming.clone();
        let weak = Arc::downgrade(&session);
        session.add_task(tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if !line.trim().is_empty() && incoming.send(line).is_err() {
                    return;
                }
            }
            if let Some(session) = weak.upgrade() {
                session.end(Loss::Ended);
            }
        }));
        Ok(session)
    }
}
