//! The vector store behind its guard.

use async_trait::async_trait;
use uuid::Uuid;

use super::Guarded;
use crate::backend::vectors::{
    CollectionSpec, MemoryPoint, PayloadFilter, ScoredMemory, VectorError, VectorQuery, VectorStore,
};
use crate::memory::StoredMemory;

#[async_trait]
impl VectorStore for Guarded<dyn VectorStore> {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        self.guard("ensure_collection", self.inner.ensure_collection(spec))
            .await
    }

    async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError> {
        self.guard("upsert", self.inner.upsert(points)).await
    }

    async fn retrieve(&self, id: Uuid) -> Result<Option<StoredMemory>, VectorError> {
        self.guard("retrieve", self.inner.retrieve(id)).await
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<ScoredMemory>, VectorError> {
        self.guard("search", self.inner.search(query)).await
    }

    async fn scroll(
        &self,
        filter: &PayloadFilter,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError> {
        self.guard("scroll", self.inner.scroll(filter, limit)).await
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), VectorError> {
        self.guard("delete", self.inner.delete(ids)).await
    }

    async fn vector_of(&self, id: Uuid) -> Result<Option<Vec<f32>>, VectorError> {
        self.guard("vector_of", self.inner.vector_of(id)).await
    }

    async fn set_fields(&self, id: Uuid, fields: StoredMemory) -> Result<(), VectorError> {
        self.guard("set_fields", self.inner.set_fields(id, fields))
            .await
    }

    /// A health probe: straight to the store.
    async fn health(&self) -> Result<(), VectorError> {
        self.inner.health().await
    }

    async fn optimize(&self) -> Result<bool, VectorError> {
        self.guard("optimize", self.inner.optimize()).await
    }

    fn backend_name(&self) -> &'static str {
        self.inner.backend_name()
    }
}
