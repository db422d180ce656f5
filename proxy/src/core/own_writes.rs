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
