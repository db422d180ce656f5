//! The layout concern: how the legacy memory service keeps a memory, so that memories written
//! through memgate and through the legacy service are indistinguishable to both.
//!
//! A [`Layout`] knows the payload a memory is stored as, the text that is embedded for a memory
//! and for a query, the values a new memory starts with and how enrichment (or its failure)
//! fills them, how an update changes a memory, what searches filter on, how search results
//! are cut and shown, and how reads are counted. The fast path and the workers ask the layout and never look at field
//! names themselves.
//!
//! One implementation today: [`CldMemoryLayout`], the layout of cldmemory (the TypeScript MCP
//! memory server memgate serves first).

pub mod cldmemory;
mod metadata;

pub use cldmemory::{CldMemoryLayout, CldMemorySettings};
pub use metadata::{merge_metadata, parse_metadata};

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use crate::config::{LayoutConfig, LayoutKind};

use crate::backend::enrichment::{ChatRecipe, EnrichmentError};
use crate::backend::vectors::{Condition, IndexedField};
use crate::memory::{NormalizedSearch, StoreRequest, StoredMemory, UpdateRequest};

/// The layout the config names, with its deployment's settings.
pub fn from_config(config: &LayoutConfig) -> Arc<dyn Layout> {
    match config.kind {
        LayoutKind::Cldmemory => Arc::new(CldMemoryLayout::new(CldMemorySettings {
            similarity_threshold: config.similarity_threshold,
            memory_metadata: config.memory_metadata.clone(),
            project: config
                .project
                .clone()
                .unwrap_or_else(CldMemoryLayout::local_project),
        })),
    }
}

/// What enrichment found for a new memory; each part may have failed, and the layout decides
/// what a failure stores.
#[derive(Debug)]
pub struct Enrichment {
    /// `None` when the client gave a summary (nothing was asked).
    pub summary: Option<Result<String, EnrichmentError>>,
    /// `Ok(None)`: the answer was not a number.
    pub valence: Result<Option<f64>, EnrichmentError>,
    /// `None` when the client's tags replace the keywords (nothing was asked).
    pub keywords: Option<Result<Vec<String>, EnrichmentError>>,
}

/// What a new memory needs from enrichment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnrichmentNeeds {
    pub summary: bool,
    pub keywords: bool,
}

/// How a new memory is linked to its neighbours.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AssociationRule {
    /// Nearest memories asked for (as a search with this limit).
    pub candidates: u32,
    /// Of those, without the memory itself, the first this many become its associations.
    pub keep: usize,
    /// A neighbour's list longer than this drops the new link.
    pub neighbour_cap: usize,
}

/// How the legacy service keeps a memory.
pub trait Layout: Send + Sync + std::fmt::Debug + 'static {
    /// A new memory as it is stored before enrichment: the values the legacy service stores
    /// when its LLM is unavailable. `client_metadata` is the caller's metadata string.
    fn new_memory(
        &self,
        id: Uuid,
        request: &StoreRequest,
        client_metadata: Option<&str>,
        now: DateTime<Utc>,
    ) -> StoredMemory;

    /// What enrichment a new memory needs.
    fn enrichment_needs(&self, request: &StoreRequest) -> EnrichmentNeeds;

    /// Fills what enrichment found, or the fallbacks for what failed.
    fn apply_enrichment(&self, memory: &mut StoredMemory, enrichment: Enrichment);

    /// Applies an update to a memory (what the update answers with).
    fn apply_update(&self, memory: &mut StoredMemory, update: &UpdateRequest);

    /// What else storing an applied update at `now` changes in the payload (cldmemory counts
    /// an update that keeps the content as one more access).
    fn stored_update(&self, memory: &mut StoredMemory, update: &UpdateRequest, now: DateTime<Utc>);

    /// The vector-store payload of a memory (without memgate's own bookkeeping).
    fn payload(&self, memory: &StoredMemory) -> StoredMemory;

    /// The text embedded for a stored memory.
    fn embedded_text(&self, memory: &StoredMemory) -> String;

    /// The text embedded for a search query.
    fn query_text(&self, query: &str) -> String;

    /// The similarity threshold of a search that names none.
    fn default_similarity_threshold(&self) -> f32;

    /// How many nearest points a search for `limit` results asks the vector store for.
    fn search_fetch_limit(&self, limit: u32) -> u64;

    /// The short form of a memory in search results.
    fn compact(&self, memory: &StoredMemory) -> StoredMemory;

    /// The payload fields to set after `count` more reads, the last at `last`: added to what
    /// is stored, never overwriting it.
    /// The payload fields [`Layout::accessed`] writes: kept by the vector store, not by the
    /// write path.
    fn access_fields(&self) -> &'static [&'static str];
    fn accessed(&self, payload: &StoredMemory, count: u64, last: DateTime<Utc>) -> StoredMemory;

    /// The association rule for new memories.
    fn association_rule(&self) -> AssociationRule;

    /// The associations of a memory, as ids.
    fn associations(&self, memory: &StoredMemory) -> Vec<String>;

    /// The payload fields written when the associations of `memory` (its payload as read)
    /// become `associations` at `now` (cldmemory counts it as one more access).
    fn linked_fields(
        &self,
        memory: &StoredMemory,
        associations: Vec<String>,
        now: DateTime<Utc>,
    ) -> StoredMemory;

    /// Whether a memory is the parent of chunks, one chunk, or neither.
    fn chunk_role(&self, memory: &StoredMemory) -> ChunkRole;

    /// How a chat model is asked for this layout's enrichment, and how its answers are read.
    fn chat_recipe(&self) -> Arc<dyn ChatRecipe>;

    /// What the keyword rung of the search ladder reads of a memory.
    fn keyword_view(&self, memory: &StoredMemory) -> KeywordView;

    /// A parent memory with its chunks' content joined, as a search with chunks reconstructed
    /// answers it.
    fn reconstruct(&self, parent: &StoredMemory, chunks: Vec<StoredMemory>) -> StoredMemory;

    /// The payload fields searches filter on, each with the index it needs (created with the
    /// collection).
    fn indexed_fields(&self) -> Vec<IndexedField>;

    /// A search's filters (type, importance, valence, dates) as payload conditions, all of
    /// which must hold.
    fn search_conditions(&self, search: &NormalizedSearch) -> Vec<Condition>;

    /// What the keyword rung asks of a memory: one of these conditions (the words in its text,
    /// or among its tags).
    fn keyword_conditions(&self, terms: &[String]) -> Vec<Condition>;

    /// The condition the chunks of the parent memory `parent_id` meet.
    fn chunks_of(&self, parent_id: &str) -> Condition;
}

/// A memory as a keyword search sees it: the text its words are looked for in, its tags
/// (matched whole), and its importance (the tie-break).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct KeywordView {
    pub text: String,
    pub tags: Vec<String>,
    pub importance: f64,
}

/// Where a memory stands in chunking (a long text stored as a parent and its parts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChunkRole {
    /// The parent of chunks, found by their `chunkOf` (its id).
    Parent,
    /// A chunk of another memory.
    Chunk,
    /// A memory of its own.
    Whole,
}

#[cfg(test)]
mod tests {
    /// Texts are byte-for-byte cldmemory's only while JSON objects keep their keys in the order
    /// they were built or read: `serde_json`'s `preserve_order`, declared in the workspace's
    /// `Cargo.toml`. Without it, maps sort their keys and this fails.
    #[test]
    fn json_objects_keep_their_key_order() {
        let text = r#"{"id":"x","summary":"s","content":"c","type":"semantic","accessCount":0}"#;
        let value: serde_json::Value = serde_json::from_str(text).expect("JSON");
        assert_eq!(value.to_string(), text);
        let mut built = serde_json::Map::new();
        built.insert("zeta".into(), 1.into());
        built.insert("alpha".into(), 2.into());
        assert_eq!(
            serde_json::Value::Object(built).to_string(),
            r#"{"zeta":1,"alpha":2}"#
        );
    }
}
