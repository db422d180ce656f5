//! Re-reads the config file while running so `rollout.percent` changes without a restart.
//!
//! The file is polled rather than watched with inotify: Kubernetes updates a mounted ConfigMap
//! by swapping a symlink, which file watchers miss often enough to matter. Reading a small file
//! every few seconds is cheap and always right.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use super::{load, ConfigSources};

/// The live rollout percentage, shared by the router and the watcher.
#[derive(Debug, Clone)]
pub struct RolloutHandle(Arc<AtomicU8>);

impl RolloutHandle {
    pub fn new(percent: u8) -> Self {
        Self(Arc::new(AtomicU8::new(percent.min(100))))
    }

    pub fn percent(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    pub fn set(&self, percent: u8) {
        self.0.store(percent.min(100), Ordering::Relaxed);
    }
}

/// Polls `sources.file` every `interval` and applies a changed, valid `rollout.percent`.
/// An invalid file is logged and ignored: the running config stays in force.
/// The task stops when the returned guard is dropped.
pub fn watch_rollout(
    sources: ConfigSources,
    interval: std::time::Duration,
    rollout: RolloutHandle,
    on_change: impl Fn(u8) + Send + 'static,
) -> WatchGuard {
    // The baseline is read before returning, so a change made right after is never missed.
    let mut last = sources
        .file
        .as_ref()
        .and_then(|path| std::fs::read(path).ok());
    let task = tokio::spawn(async move {
        let Some(path) = sources.file.clone() else {
            return;
        };
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let current = tokio::fs::read(&path).await.ok();
            if current == last {
                continue;
            }
            last = current;
            match load(&sources) {
                Ok(config) => {
                    let old = rollout.percent();
                    if config.rollout.percent != old {
                        rollout.set(config.rollout.percent);
                        tracing::info!(
                            old,
                            new = config.rollout.percent,
                            "rollout percentage changed"
                        );
                        on_change(config.rollout.percent);
                    }
                }
                Err(error) => {
                    tracing::error!(%error, file = %path.display(), "ignoring changed config file");
                }
            }
        }
    });
    WatchGuard(task)
}

/// Stops the watcher when dropped.
#[derive(Debug)]
pub struct WatchGuard(tokio::task::JoinHandle<()>);

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_changed_file_changes_the_percentage() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("config.yaml");
        let write = |percent: &str| {
            std::fs::write(
                &path,
                format!("upstream: {{url: 'http://127.0.0.1:1'}}\nrollout: {{percent: {percent}}}\ncache: {{backend: memory}}\nvectors: {{backend: edge}}\n"),
            )
            .expect("write")
        };
        write("10");
        let sources = ConfigSources {
            file: Some(path.clone()),
            ..Default::default()
        };
        let rollout = RolloutHandle::new(10);
        let _guard = watch_rollout(sources, Duration::from_millis(20), rollout.clone(), |_| {});

        write("55");
        wait_for(|| rollout.percent() == 55).await;

        write("not: [valid");
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(rollout.percent(), 55, "an invalid file keeps the old value");

        write("0");
        wait_for(|| rollout.percent() == 0).await;
    }

    async fn wait_for(condition: impl Fn() -> bool) {
        for _ in 0..200 {
            if condition() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("condition not reached in 2 s");
    }
}
