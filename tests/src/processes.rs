//! `memgate` and the reference cldmemory as processes of the test's own, on free loopback
//! ports, configured through their environment as a user would; killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;

use crate::{eventually, free_port, log_tail, memgate_binary};

/// A running `memgate` process.
pub struct MemgateProcess {
    /// `None` once handed over ([`Self::into_child`]).
    child: Option<Child>,
    /// `http://127.0.0.1:{port}`: the REST API and MCP.
    pub base: String,
    /// The admin port (`/metrics`, `/readyz`).
    pub admin: SocketAddr,
    log: PathBuf,
}

impl MemgateProcess {
    /// Runs `memgate {args} --listen … --admin-listen …` with `env` added to the test's
    /// environment, its output in `log`; returns once it answers `/openapi.json`.
    pub async fn spawn(args: &[&str], env: &[(&str, String)], log: &Path) -> anyhow::Result<Self> {
        let (port, admin) = (free_port()?, free_port()?);
        let admin: SocketAddr = format!("127.0.0.1:{admin}").parse()?;
        let file = std::fs::File::create(log)?;
        let child = Command::new(memgate_binary())
            .args(args)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--admin-listen", &admin.to_string()])
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("memgate starts")?;
        let process = Self {
            child: Some(child),
            base: format!("http://127.0.0.1:{port}"),
            admin,
            log: log.to_path_buf(),
        };
        let http = reqwest::Client::new();
        let up = eventually(Duration::from_secs(60), || async {
            http.get(format!("{}/openapi.json", process.base))
                .send()
                .await
                .is_ok()
        })
        .await;
        anyhow::ensure!(
            up,
            "memgate {args:?} did not listen within 60 s:\n{}",
            log_tail(&process.log, 30)
        );
        Ok(process)
    }

    /// Stops it as a user would (SIGTERM) and waits: what it keeps on disk is written.
    pub fn terminate(self) -> anyhow::Result<()> {
        let mut child = self.into_child();
        let signalled = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        if !signalled.as_ref().is_ok_and(|status| status.success()) {
            let _ = child.kill();
        }
        child.wait()?;
        anyhow::ensure!(signalled?.success(), "kill -TERM failed");
        Ok(())
    }

    /// The process, for a test that signals it or waits for it itself (no longer killed on
    /// drop).
    pub fn into_child(mut self) -> Child {
        self.child.take().expect("the process is still held")
    }

    pub fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for MemgateProcess {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The reference cldmemory (`cldmemory-reference`) serving MCP over HTTP+SSE.
pub struct ReferenceProcess {
    child: Child,
    /// `http://127.0.0.1:{port}` (its SSE endpoint is `/sse`).
    pub url: String,
}

impl ReferenceProcess {
    /// Runs it with cldmemory's environment `env` (`EDGE_PATH` for its vector store) on a free
    /// port; returns once it accepts connections.
    pub async fn spawn(env: &[(&str, String)], log: &Path) -> anyhow::Result<Self> {
        let binary = memgate_binary().with_file_name("cldmemory-reference");
        anyhow::ensure!(
            binary.exists(),
            "{} is missing: build it with `cargo build -p cldmemory-reference` (scripts/test.sh does)",
            binary.display()
        );
        let port = free_port()?;
        let file = std::fs::File::create(log)?;
        let child = Command::new(binary)
            .env("MCP_TRANSPORT_MODE", "sse")
            .env("MCP_PORT", port.to_string())
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cldmemory-reference starts")?;
        let url = format!("http://127.0.0.1:{port}");
        let up = eventually(Duration::from_secs(60), || async {
            tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
        })
        .await;
        anyhow::ensure!(
            up,
            "cldmemory-reference did not listen:\n{}",
            log_tail(log, 30)
        );
        Ok(Self { child, url })
    }
}

impl Drop for ReferenceProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
