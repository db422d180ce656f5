//! Read-your-writes for clients without a session (MCP 2026-07-28): the memories a client
//! stored that may not be searchable yet, kept in the cache store (shared by every replica)
//! under the client's key, so its next search waits for them wherever it lands.

use std::time::Duration;

use uuid::Uuid;

use super::Core;
use crate::backend::BackendError;
use crate::keys::Scope;

/// How long a client's note of its pending writes is kept: far longer than any search waits
/// for one (`mcp.waitForStored`), so a note outlives nothing it matters for.
const NOTE_TTL: Duration = Duration::from_secs(60);

/// The most pending writes one search waits for.
const MAX_WAITED: usize = 100;

impl Core {
    /// Notes that `client` stored `id`.
    pub async fn note_own_write(&self, scope: &Scope, client: &str, id: Uuid) {
        let key = self.keys.own_writes(scope, client);
        if let Err(error) = self.cache.note_write(&key, id, NOTE_TTL).await {
            if !error.breaker_open() {
                tracing::warn!(%error, "could not note a client's write; its next search may miss it");
            }
        }
    }

    /// The memories `client` stored since its last search (now forgotten).
    pub async fn take_own_writes(&self, scope: &Scope, client: &str) -> Vec<Uuid> {
        let key = self.keys.own_writes(scope, client);
        match self.cache.take_writes(&key, MAX_WAITED).await {
            Ok(ids) => ids,
            Err(error) => {
                if !error.breaker_open() {
                    tracing::warn!(%error, "could not read a client's writes");
                }
                Vec::new()
            }
        }
    }
}

/// How long a cancellation is remembered: as long as a task is answered for.
pub const CANCELLED_TTL: Duration = Duration::from_secs(24 * 3600);

impl Core {
    /// Cancels the create of `id` before it is applied: a delete queued behind it (the memory
    /// ends up stored nowhere) and a mark that says it was cancelled, not deleted.
    pub async fn cancel_store(&self, scope: &Scope, id: Uuid) -> Result<(), super::CoreError> {
        self.delete(scope, id).await?;
        let mark = self.keys.cancelled(scope, id);
        if let Err(error) = self
            .cache
            .set(&mark, bytes::Bytes::from_static(b"1"), CANCELLED_TTL)
            .await
        {
            tracing::warn!(%error, %id, "cancelled, but the mark was not kept: reads as deleted");
        }
        Ok(())
    }

    /// Whether the create of `id` was cancelled ([`Core::cancel_store`]).
    pub async fn was_cancelled(&self, scope: &Scope, id: Uuid) -> bool {
        let mark = self.keys.cancelled(scope, id);
        matches!(self.cache.get(&mark).await, Ok(Some(_)))
    }
}
