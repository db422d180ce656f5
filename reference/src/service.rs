//! cldmemory's `MemoryService`: every tool's work, in the order cldmemory does it (one call at
//! a time: summary, valence, keywords, embedding, upsert, associations), with its access
//! counting and its quirks.

use chrono::{DateTime, Utc};
use memgate::backend::vectors::{Condition, PayloadFilter};
use serde_json::{json, Map, Value};

use crate::javascript;
use crate::model::{self, NewMemory};
use crate::openai::{OpenAi, OpenAiError};
use crate::qdrant::{Object, QdrantError, QdrantService};

/// What a deployment of cldmemory is configured with.
#[derive(Debug, Clone)]
pub struct ServiceSettings {
    /// `SIMILARITY_THRESHOLD`.
    pub similarity_threshold: f32,
    /// `MEMORY_METADATA`.
    pub memory_metadata: Option<String>,
    /// The `hostname:cwd` of the process.
    pub project: String,
}

/// A failure: the tool answers `Error: <message>`.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Invalid(String),
    #[error("{0}")]
    Qdrant(#[from] QdrantError),
    #[error("{0}")]
    OpenAi(#[from] OpenAiError),
}

/// `search_memories` after its arguments were parsed.
#[derive(Debug, Clone, Default)]
pub struct SearchParams {
    pub query: String,
    pub memory_type: Option<String>,
    pub min_importance: Option<f64>,
    pub emotional_range: Option<(f64, f64)>,
    pub date_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub limit: f64,
    pub include_associations: bool,
    pub compact: bool,
    pub similarity_threshold: Option<f64>,
    pub reconstruct_chunks: bool,
}

/// `update_memory`'s changes; `None` is `undefined`.
#[derive(Debug, Clone, Default)]
pub struct Updates {
    pub content: Option<String>,
    pub importance: Option<f64>,
    pub context: Option<Object>,
    pub metadata: Option<Object>,
}

pub struct MemoryService {
    qdrant: QdrantService,
    openai: OpenAi,
    settings: ServiceSettings,
    env_metadata: Object,
}

/// A stored memory as cldmemory hands it out: `timestamp` and `lastAccessed` through `Date`.
fn revive(mut memory: Object) -> Object {
    for field in ["timestamp", "lastAccessed"] {
        if let Some(value) = memory.get(field) {
            let date = value
                .as_str()
                .and_then(javascript::parse_date)
                .map(|at| Value::String(javascript::iso(at)))
                .unwrap_or(Value::Null);
            memory.insert(field.into(), date);
        }
    }
    memory
}

fn id_of(memory: &Object) -> Result<String, ServiceError> {
    memory
        .get("id")
        .and_then(Value::as_str)
        .map(str::to_string)
        .ok_or(ServiceError::Qdrant(QdrantError::BadId))
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

impl MemoryService {
    pub fn new(qdrant: QdrantService, openai: OpenAi, settings: ServiceSettings) -> Self {
        let env_metadata = settings
            .memory_metadata
            .as_deref()
            .map(model::parse_metadata)
            .unwrap_or_default();
        Self {
            qdrant,
            openai,
            settings,
            env_metadata,
        }
    }

    pub fn settings(&self) -> &ServiceSettings {
        &self.settings
    }

    /// `createMemory`: the memory as it was before its associations were linked.
    pub async fn create_memory(
        &self,
        content: &str,
        memory_type: &str,
        context: Option<Object>,
        importance: Option<f64>,
        summary: Option<String>,
        client_metadata: Option<&str>,
    ) -> Result<Object, ServiceError> {
        if content.trim().is_empty() {
            return Err(ServiceError::Invalid(
                "Memory content cannot be empty".into(),
            ));
        }
        if importance.is_some_and(|i| !(0.0..=1.0).contains(&i)) {
            return Err(ServiceError::Invalid(
                "Importance must be between 0 and 1".into(),
            ));
        }
        let summary = match summary.filter(|s| !s.is_empty()) {
            Some(given) => given,
            None => self.openai.generate_summary(content).await,
        };
        let valence = self.openai.analyze_emotion(content).await;
        let keywords = self.openai.extract_keywords(content).await;
        let mut full_context = Map::new();
        full_context.insert("tags".into(), json!(keywords));
        full_context.extend(context.unwrap_or_default());
        let mut metadata = self.env_metadata.clone();
        metadata.extend(
            client_metadata
                .map(model::parse_metadata)
                .unwrap_or_default(),
        );
        let now = javascript::iso(Utc::now());
        let memory = NewMemory {
            id: uuid::Uuid::new_v4().to_string(),
            summary,
            content: content.to_string(),
            memory_type: memory_type.to_string(),
            timestamp: now.clone(),
            importance: importance.unwrap_or_else(|| model::importance_for(content, memory_type)),
            emotional_valence: valence,
            associations: Vec::new(),
            context: full_context,
            metadata,
            last_accessed: now,
            access_count: 0,
            decay: 0,
            project: self.settings.project.clone(),
        }
        .to_object();
        let vector = self
            .openai
            .create_embedding(&model::memory_embedding_text(&memory))
            .await?;
        self.qdrant.upsert(&memory, vector.clone()).await?;
        self.update_associations(&memory, vector).await?;
        Ok(memory)
    }

    /// The 5 nearest above the default threshold, without itself, first 3 linked both ways
    /// (a neighbour's list is cut at 5).
    async fn update_associations(
        &self,
        memory: &Object,
        vector: Vec<f32>,
    ) -> Result<(), ServiceError> {
        let own = id_of(memory)?;
        let similar = self
            .qdrant
            .search_similar(
                vector,
                5,
                PayloadFilter::default(),
                self.settings.similarity_threshold,
            )
            .await?;
        let associations: Vec<String> = similar
            .iter()
            .filter_map(|m| m.get("id").and_then(Value::as_str))
            .filter(|id| *id != own)
            .take(3)
            .map(str::to_string)
            .collect();
        if associations.is_empty() {
            return Ok(());
        }
        let mut update = Map::new();
        update.insert("associations".into(), json!(associations));
        self.qdrant.update_payload(&own, update).await?;
        for other in &associations {
            if let Some(theirs) = self.qdrant.get(other).await? {
                let mut list = strings(theirs.get("associations"));
                if !list.contains(&own) {
                    list.push(own.clone());
                    list.truncate(5);
                    let mut update = Map::new();
                    update.insert("associations".into(), json!(list));
                    self.qdrant.update_payload(other, update).await?;
                }
            }
        }
        Ok(())
    }

    /// One more access: `accessCount + 1`, `lastAccessed = now`, the payload written back.
    async fn touch(&self, memory: &Object) -> Result<(), ServiceError> {
        let id = id_of(memory)?;
        let count = memory
            .get("accessCount")
            .and_then(Value::as_f64)
            .unwrap_or(f64::NAN);
        let mut update = Map::new();
        update.insert("lastAccessed".into(), json!(javascript::iso(Utc::now())));
        update.insert("accessCount".into(), javascript::json_number(count + 1.0));
        self.qdrant.update_payload(&id, update).await?;
        Ok(())
    }

    /// The `must` conditions cldmemory's `searchMemories` puts in its Qdrant filter.
    fn filter(params: &SearchParams) -> PayloadFilter {
        let mut must = Vec::new();
        if let Some(memory_type) = &params.memory_type {
            must.push(Condition::Equals {
                field: "type".into(),
                value: memory_type.clone(),
            });
        }
        if let Some(min) = params.min_importance {
            must.push(Condition::Range {
                field: "importance".into(),
                gte: Some(min),
                lte: None,
            });
        }
        if let Some((min, max)) = params.emotional_range {
            must.push(Condition::Range {
                field: "emotionalValence".into(),
                gte: Some(min),
                lte: Some(max),
            });
        }
        if let Some((start, end)) = params.date_range {
            must.push(Condition::DateRange {
                field: "timestamp".into(),
                gte: Some(start),
                lte: Some(end),
            });
        }
        PayloadFilter::all(must)
    }

    /// `searchMemories` then `searchChunkedMemories`.
    pub async fn search(&self, params: &SearchParams) -> Result<Vec<Value>, ServiceError> {
        let filter = Self::filter(params);
        let has_filter = params.memory_type.is_some()
            || params.min_importance.is_some()
            || params.emotional_range.is_some()
            || params.date_range.is_some();
        if params.limit.fract() != 0.0 {
            // Qdrant refuses a fractional limit.
            return Err(ServiceError::Qdrant(QdrantError::BadId));
        }
        let limit = params.limit as u64;
        let memories = if params.query.trim().is_empty() {
            if has_filter {
                self.qdrant.scroll(filter, limit).await?
            } else {
                Vec::new()
            }
        } else {
            let text = model::query_embedding_text(
                &params.query,
                &self.env_metadata,
                &self.settings.project,
            );
            let vector = self.openai.create_embedding(&text).await?;
            let threshold = params
                .similarity_threshold
                .map(|t| t as f32)
                .unwrap_or(self.settings.similarity_threshold);
            self.qdrant
                .search_similar(vector, limit, filter, threshold)
                .await?
        };
        for memory in &memories {
            self.touch(memory).await?;
        }
        let memories: Vec<Object> = memories.into_iter().map(revive).collect();
        let mut results = if params.include_associations {
            let mut all = memories.clone();
            let mut seen: Vec<String> = memories.iter().filter_map(|m| id_of(m).ok()).collect();
            for memory in &memories {
                for other in strings(memory.get("associations")) {
                    if seen.contains(&other) {
                        continue;
                    }
                    if let Some(found) = self.qdrant.get(&other).await? {
                        all.push(revive(found));
                        seen.push(other);
                    }
                }
            }
            all
        } else if params.compact {
            return Ok(memories.iter().map(model::compact).collect());
        } else {
            memories
        };
        if params.reconstruct_chunks && !params.compact {
            results = self.reconstruct(results).await?;
        }
        Ok(results.into_iter().map(Value::Object).collect())
    }

    async fn reconstruct(&self, memories: Vec<Object>) -> Result<Vec<Object>, ServiceError> {
        let mut out = Vec::new();
        let mut done = Vec::new();
        for memory in memories {
            let context = memory
                .get("context")
                .and_then(Value::as_object)
                .cloned()
                .unwrap_or_default();
            let id = id_of(&memory)?;
            if javascript::truthy(context.get("isParentChunk")) && !done.contains(&id) {
                let filter = PayloadFilter::all(vec![Condition::Equals {
                    field: "context.chunkOf".into(),
                    value: id.clone(),
                }]);
                let mut chunks = self.qdrant.scroll(filter, 100).await?;
                if chunks.is_empty() {
                    out.push(memory);
                    continue;
                }
                let index = |m: &Object| {
                    m.get("context")
                        .and_then(|c| c.get("chunkIndex"))
                        .and_then(Value::as_f64)
                        .unwrap_or(0.0)
                };
                chunks.sort_by(|a, b| {
                    index(a)
                        .partial_cmp(&index(b))
                        .unwrap_or(std::cmp::Ordering::Equal)
                });
                let joined = chunks
                    .iter()
                    .map(|c| {
                        c.get("content")
                            .map(javascript::template)
                            .unwrap_or_default()
                    })
                    .collect::<Vec<_>>()
                    .join("\n\n");
                let mut whole = memory.clone();
                whole.insert("content".into(), Value::String(joined));
                let mut metadata = memory
                    .get("metadata")
                    .and_then(Value::as_object)
                    .cloned()
                    .unwrap_or_default();
                metadata.insert("reconstructed".into(), json!(true));
                metadata.insert("chunkCount".into(), json!(chunks.len()));
                whole.insert("metadata".into(), Value::Object(metadata));
                out.push(whole);
                done.push(id);
            } else if !javascript::truthy(context.get("chunkOf")) {
                out.push(memory);
            }
        }
        Ok(out)
    }

    /// `getMemory`: the memory as it was, then one more access recorded.
    pub async fn get_memory(&self, id: &str) -> Result<Option<Object>, ServiceError> {
        let Some(memory) = self.qdrant.get(id).await? else {
            return Ok(None);
        };
        self.touch(&memory).await?;
        Ok(Some(revive(memory)))
    }

    /// `updateMemory`: `{...memory, ...updates}`; re-embedded (and the whole payload
    /// replaced) when content is given, else only the given fields set.
    pub async fn update_memory(
        &self,
        id: &str,
        updates: Updates,
    ) -> Result<Option<Object>, ServiceError> {
        let Some(memory) = self.qdrant.get(id).await? else {
            return Ok(None);
        };
        if updates
            .content
            .as_deref()
            .is_some_and(|c| c.trim().is_empty())
        {
            return Err(ServiceError::Invalid(
                "Memory content cannot be empty".into(),
            ));
        }
        if updates
            .importance
            .is_some_and(|i| !(0.0..=1.0).contains(&i))
        {
            return Err(ServiceError::Invalid(
                "Importance must be between 0 and 1".into(),
            ));
        }
        let mut updated = revive(memory);
        let mut given = Map::new();
        let fields = [
            ("content", updates.content.clone().map(Value::String)),
            (
                "importance",
                updates.importance.map(javascript::json_number),
            ),
            ("context", updates.context.clone().map(Value::Object)),
            (
                "metadata",
                updates
                    .metadata
                    .clone()
                    .map(|m| javascript::js_numbers(Value::Object(m))),
            ),
        ];
        for (field, value) in fields {
            match value {
                Some(value) => {
                    updated.insert(field.into(), value.clone());
                    given.insert(field.into(), value);
                }
                // `undefined` spread over the memory: JSON leaves the key out.
                None => {
                    updated.shift_remove(field);
                }
            }
        }
        if updates.content.as_deref().is_some_and(|c| !c.is_empty()) {
            if updates.context.is_none() {
                return Err(ServiceError::Invalid(
                    "Cannot convert undefined or null to object".into(),
                ));
            }
            let vector = self
                .openai
                .create_embedding(&model::memory_embedding_text(&updated))
                .await?;
            self.qdrant.upsert(&updated, vector).await?;
        } else {
            self.qdrant.update_payload(id, given).await?;
        }
        Ok(Some(updated))
    }

    pub async fn delete_memory(&self, id: &str) -> Result<(), ServiceError> {
        Ok(self.qdrant.delete(&[id.to_string()]).await?)
    }

    /// `connectMemories`: up to 10 associations each.
    pub async fn connect(
        &self,
        source: &str,
        target: &str,
        both: bool,
    ) -> Result<(), ServiceError> {
        let from = self.get_memory(source).await?;
        let to = self.get_memory(target).await?;
        let (Some(from), Some(to)) = (from, to) else {
            return Err(ServiceError::Invalid(
                "One or both memories not found".into(),
            ));
        };
        for (memory, id, other, wanted) in
            [(&from, source, target, true), (&to, target, source, both)]
        {
            let mut list = strings(memory.get("associations"));
            if wanted && !list.iter().any(|a| a == other) {
                list.push(other.to_string());
                list.truncate(10);
                let mut update = Map::new();
                update.insert("associations".into(), json!(list));
                self.qdrant.update_payload(id, update).await?;
            }
        }
        Ok(())
    }

    /// `removeAssociation`.
    pub async fn remove_association(
        &self,
        source: &str,
        target: &str,
        both: bool,
    ) -> Result<(), ServiceError> {
        let pairs = if both {
            vec![(source, target), (target, source)]
        } else {
            vec![(source, target)]
        };
        for (id, other) in pairs {
            if let Some(memory) = self.get_memory(id).await? {
                let list = strings(memory.get("associations"));
                if list.iter().any(|a| a == other) {
                    let kept: Vec<String> = list.into_iter().filter(|a| a != other).collect();
                    let mut update = Map::new();
                    update.insert("associations".into(), json!(kept));
                    self.qdrant.update_payload(id, update).await?;
                }
            }
        }
        Ok(())
    }

    /// `deleteMemories`: links to them removed first.
    pub async fn delete_many(&self, ids: &[String]) -> Result<(usize, Vec<String>), ServiceError> {
        for id in ids {
            if let Some(memory) = self.get_memory(id).await? {
                for other in strings(memory.get("associations")) {
                    self.remove_association(&other, id, false).await?;
                }
            }
        }
        match self.qdrant.delete(ids).await {
            Ok(()) => Ok((ids.len(), Vec::new())),
            Err(_) => {
                let mut deleted = 0;
                let mut failed = Vec::new();
                for id in ids {
                    match self.qdrant.delete(std::slice::from_ref(id)).await {
                        Ok(()) => deleted += 1,
                        Err(_) => failed.push(id.clone()),
                    }
                }
                Ok((deleted, failed))
            }
        }
    }

    /// Every point deleted.
    pub async fn delete_all(&self) -> Result<(), ServiceError> {
        loop {
            let batch = self.qdrant.scroll(PayloadFilter::default(), 1000).await?;
            if batch.is_empty() {
                return Ok(());
            }
            let ids: Vec<String> = batch.iter().filter_map(|m| id_of(m).ok()).collect();
            if ids.is_empty() {
                return Ok(());
            }
            self.qdrant.delete(&ids).await?;
        }
    }
}
