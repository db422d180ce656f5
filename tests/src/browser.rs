//! Debian's headless Chromium (`/usr/bin/chromium`, installed by `scripts/test.sh`), for the
//! tests of what a web page can do to memgate: flags as this machine needs them (no sandbox
//! as root, no background networking, a fresh profile per run).

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context;
use tokio::process::{Child, Command};

/// The browser, or why it cannot run.
pub fn chromium() -> anyhow::Result<PathBuf> {
    let path = std::env::var_os("CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    anyhow::ensure!(
        path.exists(),
        "{} is missing: install Debian's chromium (scripts/test.sh does)",
        path.display()
    );
    Ok(path)
}

/// A headless Chromium with its own profile; killed on drop.
pub struct Browser {
    child: Child,
    _profile: tempfile::TempDir,
}

fn command(resolver_rules: Option<&str>, profile: &std::path::Path) -> anyhow::Result<Command> {
    let mut command = Command::new(chromium()?);
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    if let Some(rules) = resolver_rules {
        command.arg(format!("--host-resolver-rules={rules}"));
    }
    Ok(command)
}

impl Browser {
    /// Opens `url` and leaves the page running (its scripts report back to the test).
    pub fn open(url: &str, resolver_rules: Option<&str>) -> anyhow::Result<Self> {
        let profile = tempfile::tempdir()?;
        let child = command(resolver_rules, profile.path())?
            .arg(url)
            .spawn()
            .context("starting chromium")?;
        Ok(Self {
            child,
            _profile: profile,
        })
    }

    pub async fn close(mut self) {
        let _ = self.child.kill().await;
    }
}

/// The page at `url` as the browser shows it once loaded (`--dump-dom`).
pub async fn dump_dom(url: &str, resolver_rules: Option<&str>) -> anyhow::Result<String> {
    let profile = tempfile::tempdir()?;
    let child = command(resolver_rules, profile.path())?
        .arg("--dump-dom")
        .arg(url)
        .spawn()
        .context("starting chromium")?;
    let output = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output())
        .await
        .context("chromium --dump-dom did not finish")??;
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}
