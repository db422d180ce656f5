//! The data directory of this process's own parts (`dataDir`): Qdrant Edge's files, the
//! queue's journal, and the socket other stdio launches attach to. One process owns it at a
//! time: an advisory lock on `lock`, which holds the owner's pid for the others' messages.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The platform's data directory for memgate: `$XDG_DATA_HOME/memgate` (else
/// `~/.local/share/memgate`) on Linux, `~/Library/Application Support/memgate` on macOS.
pub fn default_data_dir() -> Option<PathBuf> {
    dirs::data_dir().map(|dir| dir.join("memgate"))
}

/// Qdrant Edge's directory under a data directory.
pub fn vectors_dir(data_dir: &Path) -> PathBuf {
    data_dir.join("vectors")
}

/// The in-process queue's journal under a data directory.
pub fn journal_file(data_dir: &Path) -> PathBuf {
    data_dir.join("queue.redb")
}

/// The Unix socket on which the owner of a data directory speaks MCP to other launches.
pub fn socket_file(data_dir: &Path) -> PathBuf {
    data_dir.join("mcp.sock")
}

/// Where a local server started for stdio clients writes its log.
pub fn log_file(data_dir: &Path) -> PathBuf {
    data_dir.join("memgate.log")
}

fn lock_file(data_dir: &Path) -> PathBuf {
    data_dir.join("lock")
}

/// A data directory this process owns until it is dropped.
#[derive(Debug)]
pub struct DataDir {
    path: PathBuf,
    _lock: File,
}

/// The outcome of [`DataDir::claim`].
#[derive(Debug)]
pub enum Claim {
    Owned(DataDir),
    /// Another process owns it (its pid, when it wrote one).
    Held {
        pid: Option<u32>,
    },
}

impl DataDir {
    /// Creates the directory (private to this user) and takes its lock, unless another
    /// process holds it.
    pub fn claim(path: &Path) -> anyhow::Result<Claim> {
        create_private_dir(path)?;
        let lock_path = lock_file(path);
        let mut lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .with_context(|| format!("opening {}", lock_path.display()))?;
        match lock.try_lock() {
            Ok(()) => {
                lock.set_len(0)?;
                lock.rewind()?;
                write!(lock, "{}", std::process::id())?;
                Ok(Claim::Owned(Self {
                    path: path.to_path_buf(),
                    _lock: lock,
                }))
            }
            Err(std::fs::TryLockError::WouldBlock) => {
                let mut pid = String::new();
                let _ = lock.read_to_string(&mut pid);
                Ok(Claim::Held {
                    pid: pid.trim().parse().ok(),
                })
            }
            Err(std::fs::TryLockError::Error(error)) => {
                Err(error).with_context(|| format!("locking {}", lock_path.display()))
            }
        }
    }

    /// Takes the directory, or says who has it.
    pub fn claim_or_explain(path: &Path) -> anyhow::Result<Self> {
        match Self::claim(path)? {
            Claim::Owned(dir) => Ok(dir),
            Claim::Held { pid } => anyhow::bail!(
                "dataDir {} is in use by another memgate{}: stop it, or give this one its own --data-dir (or --ephemeral)",
                path.display(),
                pid.map(|pid| format!(" (pid {pid})")).unwrap_or_default()
            ),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Creates `path` if needed; a new directory is readable by this user only (memories are
/// private).
pub fn create_private_dir(path: &Path) -> anyhow::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder
        .create(path)
        .with_context(|| format!("creating the data directory {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_owner_at_a_time_and_the_others_learn_its_pid() {
        let dir = tempfile::tempdir().expect("dir");
        let data = dir.path().join("nested").join("memgate");
        let owner = DataDir::claim_or_explain(&data).expect("first claim");
        match DataDir::claim(&data).expect("second claim") {
            Claim::Held { pid } => assert_eq!(pid, Some(std::process::id())),
            Claim::Owned(_) => panic!("two owners"),
        }
        let refused = DataDir::claim_or_explain(&data).expect_err("in use");
        assert!(refused
            .to_string()
            .contains("in use by another memgate (pid"));
        drop(owner);
        assert!(matches!(
            DataDir::claim(&data).expect("after release"),
            Claim::Owned(_)
        ));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&data).expect("meta").permissions().mode();
            assert_eq!(mode & 0o777, 0o700);
        }
    }
}
