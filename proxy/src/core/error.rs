//! What can go wrong in a core operation, in the core's own terms. Each front says it in its
//! protocol in one place: REST in `crate::front::error` (`impl From<CoreError> for ApiError`), MCP as
//! cldmemory's `Error: …` texts.

use std::time::Duration;

use uuid::Uuid;

use crate::backend::BackendError;
use crate::memory::InvalidRequest;

/// How often an update is made again because another write to the memory came first.
pub const MAX_WRITE_CONFLICTS: usize = 32;

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CoreError {
    /// The request breaks a rule of the Memory API (memgate's or the layout's).
    #[error(transparent)]
    Invalid(#[from] InvalidRequest),
    /// This tenant has no such memory.
    #[error("memory {0} does not exist")]
    NotFound(Uuid),
    /// A dependency failed (or its breaker is open) before anything was stored.
    #[error("{what} is unavailable: {reason}")]
    Unavailable {
        what: &'static str,
        reason: String,
        /// When its breaker lets calls through again.
        retry_after: Option<Duration>,
    },
    /// Not in the vector store, and the cache that holds acknowledged writes not yet applied
    /// could not be read: the memory may exist.
    #[error(
        "memory {0} is not in the vector store, and the cache that holds writes not yet \
         applied cannot be read: it may exist"
    )]
    MaybeExists(Uuid),
    /// Redis refused a write: full (`maxmemory`, with nothing it may evict). Nothing was
    /// stored.
    #[error(
        "Redis is full (maxmemory reached with nothing it may evict): the write was not stored. \
         Retry later; pending writes free room as workers apply them, or give Redis more memory"
    )]
    CacheFull,
    /// The write queue did not confirm a write: it may or may not be stored.
    #[error(
        "the write queue did not confirm the write ({0}); it may or may not be stored: \
         retry with the same Idempotency-Key"
    )]
    Unconfirmed(String),
    /// Other writes to the memory kept coming first.
    #[error(
        "memory {0} kept changing while this update was made ({MAX_WRITE_CONFLICTS} tries); retry"
    )]
    Conflict(Uuid),
    /// What cannot fail in practice (serializing memgate's own JSON).
    #[error("{0}")]
    Internal(String),
}

/// What a failed operation was: a read changes nothing, so another service may always answer
/// it instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationKind {
    Read,
    Write,
}

impl CoreError {
    /// Whether the request itself was refused (the client must change it), as opposed to
    /// memgate being unable to carry it out now.
    pub fn is_refusal(&self) -> bool {
        matches!(self, Self::Invalid(_) | Self::Conflict(_))
    }

    /// Whether memgate could not carry the operation out now (a dependency, or memgate).
    pub fn is_unavailable(&self) -> bool {
        !matches!(
            self,
            Self::Invalid(_) | Self::NotFound(_) | Self::Conflict(_)
        )
    }

    /// The one rule for what may go to the legacy service after the core failed: a read the
    /// core could not serve; a write only when writes may go there and nothing was stored
    /// (a dependency was unreachable, not merely slow to confirm).
    pub fn legacy_may_answer(&self, kind: OperationKind, writes_to_legacy: bool) -> bool {
        match kind {
            OperationKind::Read => self.is_unavailable(),
            OperationKind::Write => {
                writes_to_legacy && matches!(self, Self::Unavailable { .. } | Self::MaybeExists(_))
            }
        }
    }

    /// When to try again, when a breaker says.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Unavailable { retry_after, .. } => *retry_after,
            Self::CacheFull => Some(Duration::from_secs(1)),
            _ => None,
        }
    }
}

/// A dependency that failed, as a [`CoreError`] (logged: a breaker that is open only at debug).
pub(crate) fn unavailable(what: &'static str, error: impl BackendError) -> CoreError {
    if error.breaker_open() {
        tracing::debug!(%error, "{what} skipped");
    } else {
        tracing::warn!(%error, "{what} failed");
    }
    CoreError::Unavailable {
        what,
        retry_after: error.retry_after(),
        reason: error.to_string(),
    }
}

/// A write Redis refused because it is full.
pub(crate) fn cache_full(error: impl std::fmt::Display) -> CoreError {
    tracing::warn!(%error, "Redis is full; a write was refused");
    CoreError::CacheFull
}

/// A write whose outcome is unknown.
pub(crate) fn unconfirmed(error: impl std::fmt::Display) -> CoreError {
    tracing::warn!(%error, "write queue did not confirm a write");
    CoreError::Unconfirmed(error.to_string())
}

/// Serializing memgate's own JSON failed.
pub(crate) fn internal(error: serde_json::Error) -> CoreError {
    tracing::error!(%error, "could not serialize an answer");
    CoreError::Internal(error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> CoreError {
        CoreError::Unavailable {
            what: "the vector store",
            reason: "timed out".into(),
            retry_after: None,
        }
    }

    #[test]
    fn reads_go_to_the_legacy_service_whenever_the_core_cannot_serve_them() {
        for error in [
            down(),
            CoreError::MaybeExists(Uuid::nil()),
            CoreError::CacheFull,
        ] {
            assert!(error.legacy_may_answer(OperationKind::Read, false));
        }
        let not_found = CoreError::NotFound(Uuid::nil());
        assert!(!not_found.legacy_may_answer(OperationKind::Read, true));
    }

    #[test]
    fn writes_go_there_only_when_allowed_and_surely_not_stored() {
        assert!(down().legacy_may_answer(OperationKind::Write, true));
        assert!(!down().legacy_may_answer(OperationKind::Write, false));
        // Maybe stored, or refused by a Redis that answered: not sent twice.
        assert!(
            !CoreError::Unconfirmed("lost".into()).legacy_may_answer(OperationKind::Write, true)
        );
        assert!(!CoreError::CacheFull.legacy_may_answer(OperationKind::Write, true));
    }

    #[test]
    fn messages_say_what_failed() {
        assert_eq!(
            down().to_string(),
            "the vector store is unavailable: timed out"
        );
        let invalid = CoreError::from(InvalidRequest::new("invalid_limit", "too many"));
        assert_eq!(invalid.to_string(), "too many");
        assert!(invalid.is_refusal() && !invalid.is_unavailable());
    }
}
