//! Names of every cache key of one store (see ARCHITECTURE.md, "Caches and keys").
//!
//! All keys start with `memgate:{namespace}/{name}:`. With scoping on, the keys that hold
//! tenant data (memories, search results, popularity) also carry the percent-encoded tenant, so
//! one tenant's entries can never be read under another's name.

use percent_encoding::{utf8_percent_encode, AsciiSet, CONTROLS};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// Characters escaped in a tenant value so it cannot forge a key separator.
const SCOPE_ESCAPES: &AsciiSet = &CONTROLS.add(b':').add(b'%').add(b' ').add(b'{').add(b'}');

/// The tenant a request acts for; `None` when scoping is off.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope(Option<String>);

impl Scope {
    pub const UNSCOPED: Scope = Scope(None);

    pub fn tenant(value: impl Into<String>) -> Self {
        Self(Some(value.into()))
    }

    /// The scope a write job names (`None`: unscoped).
    pub fn of(tenant: Option<&str>) -> Self {
        Self(tenant.map(str::to_string))
    }

    pub fn value(&self) -> Option<&str> {
        self.0.as_deref()
    }

    /// `""` when unscoped, else `t={escaped}:`.
    fn key_part(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(value) => format!("t={}:", utf8_percent_encode(value, SCOPE_ESCAPES)),
        }
    }
}

/// A key that embeds a generation number: `{head}{generation}{tail}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GenerationalKey {
    pub head: String,
    pub tail: String,
}

impl GenerationalKey {
    pub fn with_generation(&self, generation: u64) -> String {
        format!("{}{generation}{}", self.head, self.tail)
    }
}

/// Builds the keys of one store.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: String,
}

impl KeySpace {
    pub fn new(prefix: impl Into<String>) -> Self {
        Self {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `mem:{id}`: one memory's JSON.
    pub fn memory(&self, scope: &Scope, id: Uuid) -> String {
        format!("{}{}mem:{id}", self.prefix, scope.key_part())
    }

    /// `rev:{id}`: hash of the memory's revisions, `rev` (acknowledged) and `synced` (applied
    /// to the vector store).
    pub fn revision(&self, scope: &Scope, id: Uuid) -> String {
        format!("{}{}rev:{id}", self.prefix, scope.key_part())
    }

    /// `lock:{id}`: the lease of the worker applying one of the memory's writes.
    pub fn lock(&self, id: Uuid) -> String {
        format!("{}lock:{id}", self.prefix)
    }

    /// `search:gen`: bumped when memories change that memgate cannot name (a write through
    /// the legacy service), so every tenant's older result keys are never read again.
    pub fn search_generation(&self) -> String {
        format!("{}search:gen", self.prefix)
    }

    /// `{scope}search:scopegen`: bumped on every write of this scope, so the scope's older
    /// result keys are never read again while other tenants' cached searches stay. A search
    /// is cached under the sum of the two generations (both only grow, so every bump gives a
    /// new sum). It expires 30 days after it was last read or bumped, longer than any search
    /// result lives, so a counter that starts over finds nothing cached under its old values.
    pub fn scope_search_generation(&self, scope: &Scope) -> String {
        format!("{}{}search:scopegen", self.prefix, scope.key_part())
    }

    /// `{scope}search:readsyncs`: moves on each time a worker adds a memory's reads of this
    /// scope to the vector store. A search answer is cached only if it did not move while
    /// the answer was read (its stored counts and the `synced` counts it is kept with are
    /// then from one moment); it does not retire cached answers. Expires as the generation.
    pub fn scope_read_syncs(&self, scope: &Scope) -> String {
        format!("{}{}search:readsyncs", self.prefix, scope.key_part())
    }

    /// The generation counters a search of `scope` is cached under: global, then scoped.
    pub fn search_generations(&self, scope: &Scope) -> [String; 2] {
        [
            self.search_generation(),
            self.scope_search_generation(scope),
        ]
    }

    /// `search:{gen}:{sha256(params)}`: one search's result list.
    pub fn search_results(
        &self,
        scope: &Scope,
        generation: u64,
        normalized_params: &[u8],
    ) -> String {
        self.search_results_key(scope, normalized_params)
            .with_generation(generation)
    }

    /// A search's result key with the generation still open.
    pub fn search_results_key(&self, scope: &Scope, normalized_params: &[u8]) -> GenerationalKey {
        GenerationalKey {
            head: format!("{}{}search:", self.prefix, scope.key_part()),
            tail: format!(":{}", sha256_hex(normalized_params)),
        }
    }

    /// `emb:{model}:{sha256(text)}`: an embedding as little-endian f32 bytes (not tenant data).
    pub fn embedding(&self, model: &str, text: &str) -> String {
        format!("{}emb:{model}:{}", self.prefix, sha256_hex(text.as_bytes()))
    }

    /// `idem:{sha256(key)}`: the id a create with this `Idempotency-Key` got, per tenant.
    pub fn idempotency(&self, scope: &Scope, key: &str) -> String {
        format!(
            "{}{}idem:{}",
            self.prefix,
            scope.key_part(),
            sha256_hex(key.as_bytes())
        )
    }

    /// `access:{id}`: hash of `count` and `last`.
    pub fn access(&self, id: Uuid) -> String {
        format!("{}access:{id}", self.prefix)
    }

    /// `access:dirty`: ids read since the workers last copied their counts to the vector store.
    pub fn access_dirty(&self) -> String {
        format!("{}access:dirty", self.prefix)
    }

    /// `popular`: sorted set of ids by access count, per tenant.
    pub fn popular(&self, scope: &Scope) -> String {
        format!("{}{}popular", self.prefix, scope.key_part())
    }

    /// `{scope}cancelled:{id}`: the write of `id` was cancelled by its client (an MCP task).
    pub fn cancelled(&self, scope: &Scope, id: Uuid) -> String {
        format!("{}{}cancelled:{id}", self.prefix, scope.key_part())
    }

    /// `{scope}own:{sha256(client)}`: the memories one stateless MCP client stored that may not
    /// be searchable yet (a set, expiring), so its next search, on any replica, waits for them.
    pub fn own_writes(&self, scope: &Scope, client: &str) -> String {
        format!(
            "{}{}own:{}",
            self.prefix,
            scope.key_part(),
            sha256_hex(client.as_bytes())
        )
    }
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_layout() {
        let keys = KeySpace::new("memgate:ns/notes:");
        let id = Uuid::nil();
        assert_eq!(
            keys.memory(&Scope::UNSCOPED, id),
            "memgate:ns/notes:mem:00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(keys.search_generation(), "memgate:ns/notes:search:gen");
        assert!(keys
            .search_results(&Scope::UNSCOPED, 7, b"{}")
            .starts_with("memgate:ns/notes:search:7:"));
        assert!(keys
            .embedding("m", "hi")
            .starts_with("memgate:ns/notes:emb:m:"));
    }

    #[test]
    fn tenants_cannot_collide_through_separators() {
        let keys = KeySpace::new("p:");
        let id = Uuid::nil();
        let a = keys.memory(&Scope::tenant("a:t=b"), id);
        let b = keys.memory(&Scope::tenant("a"), id);
        assert_ne!(a, b);
        assert!(a.contains("t=a%3At=b:"), "{a}");
        assert_ne!(
            keys.search_results(&Scope::tenant("x"), 1, b"q"),
            keys.search_results(&Scope::tenant("y"), 1, b"q")
        );
    }
}
