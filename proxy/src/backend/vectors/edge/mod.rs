//! [`VectorStore`] on Qdrant Edge: the Qdrant engine in this process, for `--embedded` and tests.
//!
//! Edge's calls are synchronous, so each runs on tokio's blocking pool. Filters are built from
//! the same JSON the Qdrant REST API takes, which Edge's `Filter` deserializes.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use async_trait::async_trait;
use qdrant_edge::{
    CreateIndex, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder,
    FieldIndexOperations, Filter, JsonPath, NamedQuery, Payload, PayloadFieldSchema, PayloadOps,
    PayloadSchemaType, PointId, PointInsertOperations, PointOperations, PointStructPersisted,
    QueryEnum, ScrollRequest, SearchParams, SearchRequest, SetPayloadOp, UpdateOperation, Vectors,
    WithPayloadInterface, DEFAULT_VECTOR_NAME,
};
use serde_json::{json, Value};
use uuid::Uuid;

use super::{
    CollectionSpec, Condition, IndexKind, IndexedField, MemoryPoint, PayloadFilter, ScoredMemory,
    VectorError, VectorQuery, VectorStore,
};
use crate::config::DistanceMetric;
use crate::memory::StoredMemory;

pub struct EdgeStore {
    path: PathBuf,
    /// Keeps a temporary directory alive (and deletes it on drop) when no path was configured.
    _temp_dir: Option<tempfile::TempDir>,
    shard: OnceLock<Arc<EdgeShard>>,
    /// Points written (or changed) since the last [`VectorStore::optimize`]: Edge leaves
    /// indexing to its user, and until the optimizer runs, those points are searched without
    /// an HNSW index.
    unoptimized_writes: AtomicU64,
}

impl std::fmt::Debug for EdgeStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeStore")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

fn edge_error(error: impl std::fmt::Display) -> VectorError {
    VectorError::Edge(error.to_string())
}

impl EdgeStore {
    /// A store under `path`, or in a temporary directory deleted at exit when `None`.
    pub fn open(path: Option<&Path>) -> Result<Self, VectorError> {
        let (path, temp_dir) = match path {
            Some(path) => {
                std::fs::create_dir_all(path).map_err(edge_error)?;
                (path.to_path_buf(), None)
            }
            None => {
                let dir = tempfile::Builder::new()
                    .prefix("memgate-edge-")
                    .tempdir()
                    .map_err(edge_error)?;
                (dir.path().to_path_buf(), Some(dir))
            }
        };
        Ok(Self {
            path,
            _temp_dir: temp_dir,
            shard: OnceLock::new(),
            unoptimized_writes: AtomicU64::new(0),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `(points, points with an HNSW index)`, once the collection is open.
    pub fn index_status(&self) -> Option<(usize, usize)> {
        let info = self.shard.get()?.info();
        Some((info.points_count, info.indexed_vectors_count))
    }

    fn shard(&self) -> Result<Arc<EdgeShard>, VectorError> {
        self.shard.get().cloned().ok_or_else(|| {
            VectorError::Edge("the collection is not open yet (ensure_collection)".into())
        })
    }

    fn count_writes(&self, points: usize) {
        self.unoptimized_writes
            .fetch_add(points as u64, Ordering::Relaxed);
    }

    async fn blocking<T: Send + 'static>(
        &self,
        work: impl FnOnce(&EdgeShard) -> Result<T, VectorError> + Send + 'static,
    ) -> Result<T, VectorError> {
        let shard = self.shard()?;
        tokio::task::spawn_blocking(move || work(&shard))
            .await
            .map_err(edge_error)?
    }
}

impl EdgeStore {
    /// The payloads of up to `limit` points matching `filter`, in point-id order.
    async fn scroll_payloads(
        &self,
        filter: Option<Filter>,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError> {
        let request = ScrollRequest {
            offset: None,
            limit: Some(usize::try_from(limit).unwrap_or(usize::MAX).max(1)),
            filter,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: qdrant_edge::WithVector::Bool(false),
            order_by: None,
        };
        self.blocking(move |shard| {
            let (records, _) = shard.scroll(request).map_err(edge_error)?;
            Ok(records
                .into_iter()
                .map(|record| payload_map(record.payload))
                .collect())
        })
        .await
    }
}

impl Drop for EdgeStore {
    /// Flushes the shard (Edge does so when it is dropped) while its directory still exists:
    /// before a temporary directory is removed. If the directory was removed under us, the
    /// shard is not flushed at all, rather than panicking in Edge's own drop.
    fn drop(&mut self) {
        if let Some(shard) = self.shard.take() {
            if self.path.exists() {
                drop(shard);
            } else {
                tracing::warn!(path = %self.path.display(), "Qdrant Edge directory vanished; not flushing");
                std::mem::forget(shard);
            }
        }
    }
}

fn distance(metric: DistanceMetric) -> Distance {
    match metric {
        DistanceMetric::Cosine => Distance::Cosine,
        DistanceMetric::Dot => Distance::Dot,
        DistanceMetric::Euclid => Distance::Euclid,
    }
}

fn open_or_create(path: &Path, spec: &CollectionSpec) -> Result<EdgeShard, VectorError> {
    let config_file = path.join("edge_config.json");
    if config_file.exists() {
        let shard = EdgeShard::load(path, None).map_err(edge_error)?;
        let found = shard
            .config()
            .vectors
            .get(DEFAULT_VECTOR_NAME)
            .map(|params| params.size as u64);
        return match found {
            Some(size) if size == spec.dimensions => Ok(shard),
            Some(size) => Err(VectorError::DimensionMismatch {
                collection: path.display().to_string(),
                expected: spec.dimensions,
                found: size,
            }),
            None => Err(VectorError::Edge(format!(
                "the shard at {} has no unnamed vector",
                path.display()
            ))),
        };
    }
    let dimensions = usize::try_from(spec.dimensions).map_err(edge_error)?;
    let config = EdgeConfigBuilder::new()
        .vector(
            DEFAULT_VECTOR_NAME,
            EdgeVectorParamsBuilder::new(dimensions, distance(spec.distance)).build(),
        )
        .build();
    let shard = EdgeShard::new(path, config).map_err(edge_error)?;
    let tenant_field = spec.scope_field.iter().map(|field| IndexedField {
        field: field.clone(),
        kind: IndexKind::Keyword,
    });
    for IndexedField { field, kind } in spec.indexes.iter().cloned().chain(tenant_field) {
        let schema = match kind {
            IndexKind::Keyword => PayloadSchemaType::Keyword,
            IndexKind::Float => PayloadSchemaType::Float,
            IndexKind::Datetime => PayloadSchemaType::Datetime,
            IndexKind::Text => PayloadSchemaType::Text,
        };
        shard
            .update(UpdateOperation::FieldIndexOperation(
                FieldIndexOperations::CreateIndex(CreateIndex {
                    field_name: field.parse::<JsonPath>().map_err(|_| {
                        VectorError::Edge(format!("{field:?} is not a payload field name"))
                    })?,
                    field_schema: Some(PayloadFieldSchema::FieldType(schema)),
                }),
            ))
            .map_err(edge_error)?;
    }
    tracing::info!(path = %path.display(), dimensions, "created Qdrant Edge shard");
    Ok(shard)
}

/// The filter in the Qdrant REST API's JSON form; `None` when it has no condition.
fn filter_json(filter: &PayloadFilter) -> Option<Value> {
    let must: Vec<Value> = filter.must.iter().filter_map(condition_json).collect();
    let should: Vec<Value> = filter.should.iter().filter_map(condition_json).collect();
    let mut json = serde_json::Map::new();
    if !must.is_empty() {
        json.insert("must".into(), Value::Array(must));
    }
    if !should.is_empty() {
        json.insert("should".into(), Value::Array(should));
    }
    (!json.is_empty()).then_some(Value::Object(json))
}

/// One condition in the REST API's JSON form; `None` for a date range without bounds.
fn condition_json(condition: &Condition) -> Option<Value> {
    let bounds = |gte: Option<Value>, lte: Option<Value>| {
        let mut bounds = serde_json::Map::new();
        if let Some(gte) = gte {
            bounds.insert("gte".into(), gte);
        }
        if let Some(lte) = lte {
            bounds.insert("lte".into(), lte);
        }
        bounds
    };
    Some(match condition {
        Condition::Equals { field, value } => json!({ "key": field, "match": { "value": value } }),
        Condition::AnyOf { field, values } => json!({ "key": field, "match": { "any": values } }),
        Condition::HasWord { field, word } => json!({ "key": field, "match": { "text": word } }),
        Condition::Range { field, gte, lte } => {
            json!({ "key": field, "range": bounds(gte.map(|v| json!(v)), lte.map(|v| json!(v))) })
        }
        Condition::DateRange { field, gte, lte } => {
            let date =
                |at: &Option<chrono::DateTime<chrono::Utc>>| at.map(|at| json!(at.to_rfc3339()));
            let bounds = bounds(date(gte), date(lte));
            if bounds.is_empty() {
                return None;
            }
            json!({ "key": field, "range": bounds })
        }
    })
}

fn to_filter(filter: &PayloadFilter) -> Result<Option<Filter>, VectorError> {
    filter_json(filter)
        .map(|value| serde_json::from_value::<Filter>(value).map_err(edge_error))
        .transpose()
}

fn payload_map(payload: Option<Payload>) -> StoredMemory {
    payload
        .map(|payload| payload.0.into_iter().collect())
        .unwrap_or_default()
}

#[async_trait]
impl VectorStore for EdgeStore {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        if self.shard.get().is_some() {
            return Ok(());
        }
        let path = self.path.clone();
        let spec = spec.clone();
        let shard = tokio::task::spawn_blocking(move || open_or_create(&path, &spec))
            .await
            .map_err(edge_error)??;
        // A concurrent call may have won; either shard is the same directory, keep the first.
        let _ = self.shard.set(Arc::new(shard));
        Ok(())
    }

    async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError> {
        self.count_writes(points.len());
        let points = points
            .into_iter()
            .map(|point| {
                let payload = Payload(point.memory.into_iter().collect());
                PointStructPersisted {
                    id: PointId::Uuid(point.id),
                    vector: Vectors::from(point.vector).0.into(),
                    payload: Some(payload),
                }
            })
            .collect();
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(edge_error)
        })
        .await
    }

    async fn retrieve(&self, id: Uuid) -> Result<Option<StoredMemory>, VectorError> {
        self.blocking(move |shard| {
            let records = shard
                .retrieve(
                    &[PointId::Uuid(id)],
                    Some(WithPayloadInterface::Bool(true)),
                    None,
                )
                .map_err(edge_error)?;
            Ok(records
                .into_iter()
                .next()
                .map(|record| payload_map(record.payload)))
        })
        .await
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<ScoredMemory>, VectorError> {
        let filter = to_filter(&query.filter)?;
        let request = SearchRequest {
            query: QueryEnum::Nearest(NamedQuery::default_dense(query.vector)),
            filter,
            params: Some(SearchParams {
                hnsw_ef: query.ef.map(|ef| usize::try_from(ef).unwrap_or(usize::MAX)),
                exact: query.exact,
                ..Default::default()
            }),
            limit: usize::try_from(query.limit).unwrap_or(usize::MAX),
            offset: 0,
            with_payload: Some(WithPayloadInterface::Bool(true)),
            with_vector: None,
            score_threshold: query.score_threshold,
        };
        self.blocking(move |shard| {
            let points = shard.search(request).map_err(edge_error)?;
            Ok(points
                .into_iter()
                .map(|point| ScoredMemory {
                    memory: payload_map(point.payload),
                    score: point.score,
                })
                .collect())
        })
        .await
    }

    async fn scroll(
        &self,
        filter: &PayloadFilter,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError> {
        self.scroll_payloads(to_filter(filter)?, limit).await
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), VectorError> {
        self.count_writes(ids.len());
        let ids = ids.iter().map(|id| PointId::Uuid(*id)).collect();
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints { ids },
                ))
                .map_err(edge_error)
        })
        .await
    }

    async fn vector_of(&self, id: Uuid) -> Result<Option<Vec<f32>>, VectorError> {
        self.blocking(move |shard| {
            let records = shard
                .retrieve(
                    &[PointId::Uuid(id)],
                    Some(WithPayloadInterface::Bool(false)),
                    Some(qdrant_edge::WithVector::Bool(true)),
                )
                .map_err(edge_error)?;
            Ok(records
                .into_iter()
                .next()
                .and_then(|record| match record.vector {
                    Some(qdrant_edge::VectorStructInternal::Single(vector)) => Some(vector),
                    Some(qdrant_edge::VectorStructInternal::Named(mut named)) => {
                        match named.remove(DEFAULT_VECTOR_NAME) {
                            Some(qdrant_edge::VectorInternal::Dense(vector)) => Some(vector),
                            _ => None,
                        }
                    }
                    _ => None,
                }))
        })
        .await
    }

    async fn set_fields(&self, id: Uuid, fields: StoredMemory) -> Result<(), VectorError> {
        // A payload change moves a point out of an indexed segment into the appendable one,
        // where it is searched without the index until the optimizer runs.
        self.count_writes(1);
        let payload = Payload(fields.into_iter().collect());
        self.blocking(move |shard| {
            let exists = !shard
                .retrieve(
                    &[PointId::Uuid(id)],
                    Some(WithPayloadInterface::Bool(false)),
                    None,
                )
                .map_err(edge_error)?
                .is_empty();
            if !exists {
                return Ok(());
            }
            shard
                .update(UpdateOperation::PayloadOperation(PayloadOps::SetPayload(
                    SetPayloadOp {
                        payload,
                        points: Some(vec![PointId::Uuid(id)]),
                        filter: None,
                        key: None,
                    },
                )))
                .map_err(edge_error)
        })
        .await
    }

    async fn health(&self) -> Result<(), VectorError> {
        self.shard().map(|_| ())
    }

    /// Runs Edge's optimizers (segment merging, HNSW indexing, vacuum) to completion on the
    /// blocking pool, when anything was written since the last run. Searches and writes go on
    /// meanwhile: Qdrant optimizes a copy of the segments and swaps it in.
    async fn optimize(&self) -> Result<bool, VectorError> {
        let writes = self.unoptimized_writes.swap(0, Ordering::Relaxed);
        if writes == 0 || self.shard.get().is_none() {
            self.count_writes(writes as usize);
            return Ok(false);
        }
        let started = Instant::now();
        let result = self
            .blocking(|shard| shard.optimize().map_err(edge_error))
            .await;
        match &result {
            Ok(changed) => tracing::info!(
                writes,
                changed,
                seconds = started.elapsed().as_secs_f64(),
                "optimized the Qdrant Edge shard"
            ),
            // Try again next time.
            Err(_) => self.count_writes(writes as usize),
        }
        result
    }

    fn backend_name(&self) -> &'static str {
        "edge"
    }
}

#[cfg(test)]
mod tests;
