//! cldmemory's `QdrantService`: upsert, retrieve, search with its threshold and limit rule,
//! scroll by filter, delete, and the read-then-write-back payload update.

use std::sync::Arc;

use memgate::backend::vectors::{
    MemoryPoint, PayloadFilter, VectorError, VectorQuery, VectorStore,
};
use serde_json::{Map, Value};

use crate::javascript;
use uuid::Uuid;

pub type Object = Map<String, Value>;

#[derive(Clone)]
pub struct QdrantService {
    store: Arc<dyn VectorStore>,
}

#[derive(Debug, thiserror::Error)]
pub enum QdrantError {
    #[error("{0}")]
    Store(#[from] VectorError),
    /// What Qdrant answers for an id that is not a UUID or an integer.
    #[error("Bad Request")]
    BadId,
    #[error("Memory {0} not found")]
    NotFound(String),
}

fn point_id(id: &str) -> Result<Uuid, QdrantError> {
    Uuid::parse_str(id).map_err(|_| QdrantError::BadId)
}

impl QdrantService {
    pub fn new(store: Arc<dyn VectorStore>) -> Self {
        Self { store }
    }

    pub async fn upsert(&self, memory: &Object, vector: Vec<f32>) -> Result<(), QdrantError> {
        let id = memory.get("id").and_then(Value::as_str).unwrap_or_default();
        self.store
            .upsert(vec![MemoryPoint {
                id: point_id(id)?,
                vector,
                memory: memory.clone(),
            }])
            .await?;
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Object>, QdrantError> {
        Ok(self.store.retrieve(point_id(id)?).await?)
    }

    /// `searchSimilar`: asks for `min(limit*3, 100)` above the threshold, keeps `limit`.
    pub async fn search_similar(
        &self,
        vector: Vec<f32>,
        limit: u64,
        filter: PayloadFilter,
        threshold: f32,
    ) -> Result<Vec<Object>, QdrantError> {
        let found = self
            .store
            .search(VectorQuery {
                vector,
                filter,
                limit: (limit * 3).min(100),
                score_threshold: Some(threshold),
                ef: None,
                exact: false,
            })
            .await?;
        Ok(found
            .into_iter()
            .filter(|hit| hit.score >= threshold)
            .take(limit as usize)
            .map(|hit| hit.memory)
            .collect())
    }

    /// `searchByFilters` / `searchByMetadata`: a scroll.
    pub async fn scroll(
        &self,
        filter: PayloadFilter,
        limit: u64,
    ) -> Result<Vec<Object>, QdrantError> {
        Ok(self.store.scroll(&filter, limit).await?)
    }

    pub async fn delete(&self, ids: &[String]) -> Result<(), QdrantError> {
        let ids = ids
            .iter()
            .map(|id| point_id(id))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(self.store.delete(&ids).await?)
    }

    /// `updateMemoryMetadata`: reads the point, writes back `{...memory, ...updates,
    /// lastAccessed: new Date(), accessCount: memory.accessCount + 1}` whole: every payload
    /// update counts as an access (an association link, an update, a read).
    pub async fn update_payload(&self, id: &str, updates: Object) -> Result<(), QdrantError> {
        let mut memory = self
            .get(id)
            .await?
            .ok_or_else(|| QdrantError::NotFound(id.to_string()))?;
        let count = memory
            .get("accessCount")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN);
        for (key, value) in updates {
            memory.insert(key, value);
        }
        memory.insert(
            "lastAccessed".into(),
            Value::String(javascript::iso(chrono::Utc::now())),
        );
        memory.insert("accessCount".into(), javascript::json_number(count + 1.0));
        Ok(self.store.set_fields(point_id(id)?, memory).await?)
    }
}
