//! [`VectorStore`] on a Qdrant server over gRPC with `qdrant-client`; points and payload fields
//! are written over REST ([`RestWrites`]), which keeps a payload's key order.

use async_trait::async_trait;
use qdrant_client::qdrant::{
    read_consistency, vectors_config::Config as VectorsConfigKind, CreateCollectionBuilder,
    CreateFieldIndexCollectionBuilder, DatetimeRange, DeletePointsBuilder, Distance, FieldType,
    Filter, GetPointsBuilder, KeywordIndexParamsBuilder, PointId, PointsIdsList, Range,
    ReadConsistencyType, ScrollPointsBuilder, SearchParamsBuilder, SearchPointsBuilder, Timestamp,
    VectorParamsBuilder, WriteOrdering, WriteOrderingType,
};
use qdrant_client::Qdrant;
use uuid::Uuid;

use super::qdrant_rest::RestWrites;
use super::{
    CollectionSpec, Condition, IndexKind, IndexedField, MemoryPoint, PayloadFilter, ScoredMemory,
    VectorError, VectorQuery, VectorStore,
};
use crate::config::{
    DistanceMetric, QdrantClusterConfig, ReadConsistency, WriteOrdering as ConfigWriteOrdering,
};
use crate::memory::StoredMemory;

pub struct QdrantStore {
    client: Qdrant,
    writes: RestWrites,
    collection: String,
    /// In a Qdrant cluster: how many copies of a shard a read asks (Qdrant's default: none set).
    read_consistency: Option<read_consistency::Value>,
    /// In a Qdrant cluster: the ordering of writes (Qdrant's default: none set).
    ordering: Option<WriteOrdering>,
}

impl std::fmt::Debug for QdrantStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantStore")
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

impl QdrantStore {
    /// `url` is the gRPC endpoint, `rest_url` the REST one (writes); `cluster` how reads and
    /// writes agree among a shard's copies in a Qdrant cluster.
    pub fn connect(
        url: &str,
        rest_url: &str,
        api_key: Option<&str>,
        collection: &str,
        timeout: std::time::Duration,
        cluster: Option<&QdrantClusterConfig>,
    ) -> Result<Self, VectorError> {
        let client = Qdrant::from_url(url)
            .api_key(api_key.map(str::to_string))
            .timeout(timeout)
            .connect_timeout(timeout)
            .skip_compatibility_check()
            .build()?;
        let ordering = cluster.map(|cluster| ordering_name(cluster.write_ordering));
        Ok(Self {
            client,
            writes: RestWrites::new(rest_url, api_key, collection, timeout, ordering)?,
            collection: collection.to_string(),
            read_consistency: cluster.map(|cluster| consistency(cluster.read_consistency)),
            ordering: cluster.map(|cluster| WriteOrdering {
                r#type: ordering_type(cluster.write_ordering) as i32,
            }),
        })
    }
}

fn consistency(consistency: ReadConsistency) -> read_consistency::Value {
    let kind = match consistency {
        ReadConsistency::One => return read_consistency::Value::Factor(1),
        ReadConsistency::Majority => ReadConsistencyType::Majority,
        ReadConsistency::Quorum => ReadConsistencyType::Quorum,
        ReadConsistency::All => ReadConsistencyType::All,
    };
    read_consistency::Value::Type(kind as i32)
}

fn ordering_type(ordering: ConfigWriteOrdering) -> WriteOrderingType {
    match ordering {
        ConfigWriteOrdering::Weak => WriteOrderingType::Weak,
        ConfigWriteOrdering::Medium => WriteOrderingType::Medium,
        ConfigWriteOrdering::Strong => WriteOrderingType::Strong,
    }
}

/// The ordering as Qdrant's REST API names it (`?ordering=`).
fn ordering_name(ordering: ConfigWriteOrdering) -> &'static str {
    match ordering {
        ConfigWriteOrdering::Weak => "weak",
        ConfigWriteOrdering::Medium => "medium",
        ConfigWriteOrdering::Strong => "strong",
    }
}

impl QdrantStore {
    /// A get with this store's read consistency.
    fn consistent_get(&self, request: GetPointsBuilder) -> GetPointsBuilder {
        match self.read_consistency {
            Some(consistency) => request.read_consistency(consistency),
            None => request,
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

fn timestamp(value: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp {
        seconds: value.timestamp(),
        nanos: i32::try_from(value.timestamp_subsec_nanos()).unwrap_or(0),
    }
}

/// The filter in the gRPC API's form; `None` when it has no condition.
fn to_filter(filter: &PayloadFilter) -> Option<Filter> {
    if filter.is_empty() {
        return None;
    }
    Some(Filter {
        must: filter.must.iter().map(to_condition).collect(),
        should: filter.should.iter().map(to_condition).collect(),
        ..Default::default()
    })
}

fn to_condition(condition: &Condition) -> qdrant_client::qdrant::Condition {
    use qdrant_client::qdrant::Condition as Grpc;
    match condition {
        Condition::Equals { field, value } => Grpc::matches(field.clone(), value.clone()),
        Condition::AnyOf { field, values } => Grpc::matches(field.clone(), values.clone()),
        Condition::HasWord { field, word } => Grpc::matches_text(field.clone(), word.clone()),
        Condition::Range { field, gte, lte } => Grpc::range(
            field.clone(),
            Range {
                gte: *gte,
                lte: *lte,
                ..Default::default()
            },
        ),
        Condition::DateRange { field, gte, lte } => Grpc::datetime_range(
            field.clone(),
            DatetimeRange {
                gte: gte.map(timestamp),
                lte: lte.map(timestamp),
                ..Default::default()
            },
        ),
    }
}

fn json_payload(
    payload: std::collections::HashMap<String, qdrant_client::qdrant::Value>,
) -> StoredMemory {
    payload
        .into_iter()
        .map(|(key, value)| (key, value.into_json()))
        .collect()
}

#[async_trait]
impl VectorStore for QdrantStore {
    async fn ensure_collection(&self, spec: &CollectionSpec) -> Result<(), VectorError> {
        if self.client.collection_exists(&spec.name).await? {
            let info = self.client.collection_info(&spec.name).await?;
            let found = info
                .result
                .and_then(|info| info.config)
                .and_then(|config| config.params)
                .and_then(|params| params.vectors_config)
                .and_then(|vectors| vectors.config)
                .and_then(|kind| match kind {
                    VectorsConfigKind::Params(params) => Some(params.size),
                    VectorsConfigKind::ParamsMap(_) => None,
                });
            return match found {
                Some(size) if size == spec.dimensions => Ok(()),
                Some(size) => Err(VectorError::DimensionMismatch {
                    collection: spec.name.clone(),
                    expected: spec.dimensions,
                    found: size,
                }),
                None => Err(VectorError::InvalidPayload {
                    id: spec.name.clone(),
                    reason: "the collection uses named vectors; memgate needs one unnamed vector"
                        .into(),
                }),
            };
        }
        let mut create = CreateCollectionBuilder::new(&spec.name).vectors_config(
            VectorParamsBuilder::new(spec.dimensions, distance(spec.distance)),
        );
        if let Some(shards) = &spec.shards {
            create = create
                .shard_number(shards.shard_number)
                .replication_factor(shards.replication_factor)
                .write_consistency_factor(shards.write_consistency_factor);
        }
        self.client.create_collection(create).await?;
        for IndexedField { field, kind } in &spec.indexes {
            let field_type = match kind {
                IndexKind::Keyword => FieldType::Keyword,
                IndexKind::Float => FieldType::Float,
                IndexKind::Datetime => FieldType::Datetime,
                IndexKind::Text => FieldType::Text,
            };
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(&spec.name, field.as_str(), field_type)
                        .wait(true),
                )
                .await?;
        }
        if let Some(field) = &spec.scope_field {
            self.client
                .create_field_index(
                    CreateFieldIndexCollectionBuilder::new(
                        &spec.name,
                        field.as_str(),
                        FieldType::Keyword,
                    )
                    .field_index_params(KeywordIndexParamsBuilder::default().is_tenant(true))
                    .wait(true),
                )
                .await?;
        }
        tracing::info!(collection = %spec.name, dimensions = spec.dimensions, "created collection");
        Ok(())
    }

    /// Over REST: the payloads keep the layout's key order.
    async fn upsert(&self, points: Vec<MemoryPoint>) -> Result<(), VectorError> {
        self.writes.upsert(points).await
    }

    async fn retrieve(&self, id: Uuid) -> Result<Option<StoredMemory>, VectorError> {
        let response = self
            .client
            .get_points(
                self.consistent_get(GetPointsBuilder::new(
                    &self.collection,
                    vec![PointId::from(id.to_string())],
                ))
                .with_payload(true),
            )
            .await?;
        Ok(response
            .result
            .into_iter()
            .next()
            .map(|point| json_payload(point.payload)))
    }

    async fn search(&self, query: VectorQuery) -> Result<Vec<ScoredMemory>, VectorError> {
        let mut params = SearchParamsBuilder::default().exact(query.exact);
        if let Some(ef) = query.ef {
            params = params.hnsw_ef(ef);
        }
        let mut request = SearchPointsBuilder::new(&self.collection, query.vector, query.limit)
            .with_payload(true)
            .params(params);
        if let Some(consistency) = self.read_consistency {
            request = request.read_consistency(consistency);
        }
        if let Some(filter) = to_filter(&query.filter) {
            request = request.filter(filter);
        }
        if let Some(threshold) = query.score_threshold {
            request = request.score_threshold(threshold);
        }
        let response = self.client.search_points(request).await?;
        Ok(response
            .result
            .into_iter()
            .map(|point| ScoredMemory {
                memory: json_payload(point.payload),
                score: point.score,
            })
            .collect())
    }

    async fn scroll(
        &self,
        filter: &PayloadFilter,
        limit: u64,
    ) -> Result<Vec<StoredMemory>, VectorError> {
        let mut request = ScrollPointsBuilder::new(&self.collection)
            .limit(u32::try_from(limit).unwrap_or(u32::MAX).max(1))
            .with_payload(true);
        if let Some(consistency) = self.read_consistency {
            request = request.read_consistency(consistency);
        }
        if let Some(filter) = to_filter(filter) {
            request = request.filter(filter);
        }
        let response = self.client.scroll(request).await?;
        Ok(response
            .result
            .into_iter()
            .map(|point| json_payload(point.payload))
            .collect())
    }

    async fn delete(&self, ids: &[Uuid]) -> Result<(), VectorError> {
        let ids = ids.iter().map(|id| PointId::from(id.to_string())).collect();
        let mut request = DeletePointsBuilder::new(&self.collection)
            .points(PointsIdsList { ids })
            .wait(true);
        if let Some(ordering) = &self.ordering {
            request = request.ordering(*ordering);
        }
        self.client.delete_points(request).await?;
        Ok(())
    }

    async fn vector_of(&self, id: Uuid) -> Result<Option<Vec<f32>>, VectorError> {
        use qdrant_client::qdrant::vector_output::Vector as OutputVector;
        use qdrant_client::qdrant::vectors_output::VectorsOptions;
        let response = self
            .client
            .get_points(
                self.consistent_get(GetPointsBuilder::new(
                    &self.collection,
                    vec![PointId::from(id.to_string())],
                ))
                .with_payload(false)
                .with_vectors(true),
            )
            .await?;
        let output = response
            .result
            .into_iter()
            .next()
            .and_then(|point| point.vectors)
            .and_then(|vectors| vectors.vectors_options);
        Ok(match output {
            Some(VectorsOptions::Vector(output)) => match output.vector {
                Some(OutputVector::Dense(dense)) => Some(dense.data),
                #[allow(deprecated)]
                _ if !output.data.is_empty() => Some(output.data),
                _ => None,
            },
            _ => None,
        })
    }

    /// Over REST: the fields keep their key order.
    async fn set_fields(&self, id: Uuid, fields: StoredMemory) -> Result<(), VectorError> {
        self.writes.set_payload(id, fields).await
    }

    async fn health(&self) -> Result<(), VectorError> {
        self.client.health_check().await?;
        Ok(())
    }

    /// The server runs its own optimizers in the background.
    async fn optimize(&self) -> Result<bool, VectorError> {
        Ok(false)
    }

    fn backend_name(&self) -> &'static str {
        "qdrant"
    }
}
