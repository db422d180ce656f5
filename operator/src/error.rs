//! What can stop a reconcile, and how the controller treats each: a spec it cannot honour
//! waits for the next change of the MemoryStore; anything else is retried with backoff.

use crate::build::config::ConfigError;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The schema let the spec through, but it cannot be turned into objects.
    #[error("invalid spec: {0}")]
    InvalidSpec(#[from] ConfigError),
    /// A Secret the spec names does not exist or lacks the key.
    #[error("Secret {name:?} has no key {key:?} (create it, or fix the reference)")]
    MissingSecret { name: String, key: String },
    #[error("the MemoryStore has no namespace")]
    NoNamespace,
    /// Only a store read from the API server has one; orphans are matched by it.
    #[error("the MemoryStore has no uid")]
    NoUid,
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
}

impl Error {
    /// The `kind` label of the error metric and the reason of the `Degraded` condition.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::MissingSecret { .. } => "SecretNotFound",
            Self::NoNamespace => "NoNamespace",
            Self::NoUid => "NoUid",
            Self::Kube(_) => "ApiError",
        }
    }

    /// Whether only a change of the MemoryStore can fix it (no point retrying on a timer).
    pub fn needs_spec_change(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::NoNamespace | Self::NoUid)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
