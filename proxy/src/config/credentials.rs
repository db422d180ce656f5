//! Credentials read from files (`MEMGATE_*_FILE`, a mounted Secret) change while the process
//! runs: the kubelet rewrites a mounted Secret's files when the Secret changes. The clients
//! that hold them (Redis, Qdrant, OpenAI) are built once, so `memgate serve` restarts to use a
//! new value: [`changed`] resolves when a file's content changes, the proxy drains and exits,
//! and its supervisor (the kubelet, for the injected sidecar) starts it again with the new
//! value. An env var set from a Secret never changes inside a running container; a file does.
//!
//! Files are polled, like the config file (see `watch.rs`): the kubelet swaps a symlink, which
//! file watchers miss.

use std::time::Duration;

use super::CredentialFile;

/// Resolves with the first of `files` whose content differs from what it was when this was
/// called; never, when there are none. A file that cannot be read is not a change (the value
/// in use stays), and is logged once.
pub fn changed(
    files: Vec<CredentialFile>,
    interval: Duration,
) -> impl std::future::Future<Output = CredentialFile> + Send + 'static {
    // The baseline is read now, so a change made right after is never missed.
    let baseline: Vec<Option<Vec<u8>>> =
        files.iter().map(|f| std::fs::read(&f.file).ok()).collect();
    async move {
        if files.is_empty() {
            return std::future::pending().await;
        }
        let mut unreadable = vec![false; files.len()];
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            for (index, file) in files.iter().enumerate() {
                match tokio::fs::read(&file.file).await {
                    Ok(content) => {
                        unreadable[index] = false;
                        if baseline[index].as_ref() != Some(&content) {
                            return file.clone();
                        }
                    }
                    Err(error) if !unreadable[index] => {
                        unreadable[index] = true;
                        tracing::warn!(
                            variable = %file.variable,
                            file = %file.file.display(),
                            %error,
                            "cannot read a credential file; keeping the value in use"
                        );
                    }
                    Err(_) => {}
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn credential(dir: &std::path::Path, name: &str) -> CredentialFile {
        CredentialFile {
            variable: format!("MEMGATE_{name}_FILE"),
            path: name.to_lowercase(),
            file: dir.join(name),
        }
    }

    #[tokio::test]
    async fn a_rewritten_file_is_a_change_and_a_missing_one_is_not() {
        let dir = tempfile::tempdir().expect("dir");
        let (a, b) = (credential(dir.path(), "A"), credential(dir.path(), "B"));
        std::fs::write(&a.file, "one").expect("write");
        std::fs::write(&b.file, "two").expect("write");
        let watched = tokio::spawn(changed(
            vec![a.clone(), b.clone()],
            Duration::from_millis(10),
        ));

        std::fs::write(&a.file, "one").expect("the same content again");
        std::fs::remove_file(&b.file).expect("remove");
        tokio::time::sleep(Duration::from_millis(80)).await;
        assert!(!watched.is_finished(), "no change yet");

        // As the kubelet does: the new content appears under the same name.
        std::fs::write(&b.file, "rotated").expect("write");
        let which = tokio::time::timeout(Duration::from_secs(2), watched)
            .await
            .expect("noticed within 2 s")
            .expect("task");
        assert_eq!(which, b);
    }

    #[tokio::test(start_paused = true)]
    async fn no_files_never_change() {
        let never = changed(Vec::new(), Duration::from_millis(10));
        assert!(tokio::time::timeout(Duration::from_secs(3600), never)
            .await
            .is_err());
    }
}
