//! A vector store that reads back payloads as Qdrant's gRPC API does: as maps without order.
//! Each read gives every object's keys (the payload's and the nested ones) in another order;
//! writes go through unchanged to the store underneath, which keeps them in order as Qdrant's
//! REST API does (the reference cldmemory reads that store directly, as cldmemory reads over
//! REST).

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use memgate::backend::vectors::{
    CollectionSpec, MemoryPoint, PayloadFilter, ScoredMemory, VectorError, VectorQuery, VectorStore,
};
use memgate::memory::StoredMemory;
use serde_json::{Map, Value};
use uuid::Uuid;

pub struct ScrambledReads {
    inner: Arc<dyn VectorStore>,
    reads: AtomicU64,
}

impl ScrambledReads {
    pub fn new(inner: Arc<dyn VectorStore>) -> Self {
        Self {
            inner,
            reads: AtomicU64::new(0),
        }
    }

    /// `memory` with every object's keys in an order of this read's own.
    fn scramble(&self, memory: StoredMemory) -> StoredMemory {
        let read = self.reads.fetch_add(1, Ordering::Relaxed);
        scrambled_object(memory, read)
    }
}

fn scrambled_object(object: Map<String, Value>, read: u64) -> Map<String, Value> {
    let mut entries: Vec<(String, Value)> = object.into_iter().collect();
    entries.sort_by_key(|(key, _)| {
        let mut hasher = DefaultHasher::new();
        (read, key).hash(&mut hasher);
        hasher.finish()
    });
    entries
        .into_iter()
        .map(|(key, value)| (key, scrambled_value(value, read)))
        .collect()
}

fn scrambled_value(value: Value, read: u64) -> Value {
    match value {
        Value::Object(object) => Value::Object(scrambled_object(object, read)),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|item| scrambled_value(item, read))
                .collect(),
        ),
        other => other,
    }
}

#[async_trait]
impl VectorStore for ScrambledReads {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        self.inner.ensure_collection(spec).await
    }

    async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError> {
        self.inner.upsert(points).await
    }

    async fn retrieve(&self, id: Uuid) -> Result<Option<StoredMemory>, VectorError> {
        Ok(self
            .inner
            .retrieve(id)
            .await?
            .map(|memory| self.scramble(memory)))
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<ScoredMemory>, VectorError> {
        Ok(self
            .inner
            .search(query)
            .await?
            .into_iter()
            .map(|found| ScoredMemory {
                memory: self.scramble(found.memory),
                score: found.score,
            })
            .collect())
    }

    async fn scroll(
        &self,
        filter: &PayloadFilter,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError> {
        Ok(self
            .inner
            .scroll(filter, limit)
            .await?
            .into_iter()
            .map(|memory| self.scramble(memory))
            .collect())
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), VectorError> {
        self.inner.delete(ids).await
    }

    async fn vector_of(&self, id: Uuid) -> Result<Option<Vec<f32>>, VectorError> {
        self.inner.vector_of(id).await
    }

    async fn set_fields(&self, id: Uuid, fields: StoredMemory) -> Result<(), VectorError> {
        self.inner.set_fields(id, fields).await
    }

    async fn health(&self) -> Result<(), VectorError> {
        self.inner.health().await
    }

    async fn optimize(&self) -> Result<bool, VectorError> {
        self.inner.optimize().await
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn every_read_has_an_order_of_its_own_and_the_same_content() {
        let Value::Object(memory) = json!({"a": 1, "b": {"x": 1, "y": 2, "z": 3}, "c": [{"p": 1, "q": 2}],
            "d": 4, "e": 5, "f": 6})
        else {
            unreachable!()
        };
        let orders: std::collections::HashSet<String> = (0..8)
            .map(|read| {
                serde_json::to_string(&scrambled_object(memory.clone(), read)).expect("JSON")
            })
            .collect();
        assert!(orders.len() > 1, "{orders:?}");
        for read in 0..8 {
            assert_eq!(
                Value::Object(scrambled_object(memory.clone(), read)),
                Value::Object(memory.clone()),
                "the same content (serde_json compares maps by content)"
            );
        }
    }
}
