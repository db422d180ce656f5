//! The reference legacy service: the memory service the seed plan describes, built the way it
//! was, synchronously, so the benchmark compares memgate against the design it replaces rather
//! than against an echo.
//!
//! - `GET /memories/{id}` reads the vector store, then records the access (one payload update)
//!   before answering.
//! - `POST /memories/search` embeds the query through the OpenAI-compatible endpoint, searches
//!   the vector store, then updates every result's access metadata one memory at a time.
//! - `POST /memories` asks for the summary, the emotional valence and the keywords, then the
//!   embedding, each call waiting for the previous one; stores the memory; answers `201`.
//!
//! It runs on memgate's own parts (the vector store, the OpenAI embedder and enricher through
//! `async-openai`, the HTTP server), so both sides of the comparison share everything but the
//! design.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use hyper::body::Incoming;
use hyper::{Method, Request, StatusCode};
use memgate::embeddings::Embedder;
use memgate::enrichment::Enricher;
use memgate::error::ApiError;
use memgate::http::{json_response, parse_json, read_body, Response};
use memgate::memory::{
    merge_tags, parse_memory_id, CreateMemoryRequest, MemoryStatus, SearchRequest, StoredMemory,
};
use memgate::server::{serve, ConnectionSettings};
use memgate::vectors::{MemoryFilter, MemoryPoint, VectorQuery, VectorStore};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use uuid::Uuid;

/// The largest request body the service reads.
const MAX_BODY_BYTES: usize = 1 << 20;

/// What the legacy service talks to.
#[derive(Clone)]
pub struct LegacyParts {
    pub vectors: Arc<dyn VectorStore>,
    pub embedder: Arc<dyn Embedder>,
    pub enricher: Arc<dyn Enricher>,
    /// `hnsw_ef` of its searches (the same as the fast path's, for a fair comparison).
    pub search_ef: u64,
}

/// A running reference legacy service; stops when dropped.
pub struct RunningLegacyService {
    pub addr: SocketAddr,
    shutdown: watch::Sender<bool>,
    task: Option<JoinHandle<()>>,
}

impl RunningLegacyService {
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for RunningLegacyService {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Starts the service on `listen` (port 0 for a free one). The vector store's collection must
/// exist.
pub async fn start(parts: LegacyParts, listen: SocketAddr) -> anyhow::Result<RunningLegacyService> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let (shutdown, shutdown_rx) = watch::channel(false);
    let parts = Arc::new(parts);
    let task = tokio::spawn(serve(
        "legacy",
        listener,
        move |request, _remote| handle(parts.clone(), request),
        shutdown_rx,
        ConnectionSettings::default(),
    ));
    Ok(RunningLegacyService {
        addr,
        shutdown,
        task: Some(task),
    })
}

async fn handle(parts: Arc<LegacyParts>, request: Request<Incoming>) -> Response {
    let method = request.method().clone();
    let path = request.uri().path().to_string();
    let (head, body) = request.into_parts();
    let body = match read_body(&head.headers, body, MAX_BODY_BYTES).await {
        Ok(body) => body,
        Err(error) => return error.into_response(),
    };
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (method, segments.as_slice()) {
        (Method::POST, ["memories"]) => create(&parts, &body).await,
        (Method::POST, ["memories", "search"]) => search(&parts, &body).await,
        (Method::GET, ["memories", id]) => get(&parts, id).await,
        _ => Err(ApiError::not_found(format!("no route for {path}"))),
    };
    match answer {
        Ok((status, value)) => json_response(status, Bytes::from(value.to_string())),
        Err(error) => error.into_response(),
    }
}

fn failed(what: &str, error: impl std::fmt::Display) -> ApiError {
    ApiError::bad_gateway("dependency_failed", format!("{what}: {error}"))
}

/// `GET /memories/{id}`: read, record the access, answer.
async fn get(parts: &LegacyParts, id: &str) -> Result<(StatusCode, Value), ApiError> {
    let id = parse_memory_id(id)?;
    let memory = parts
        .vectors
        .retrieve(id)
        .await
        .map_err(|e| failed("vector store", e))?
        .ok_or_else(|| ApiError::not_found(format!("memory {id} does not exist")))?;
    let memory = touch(parts, id, memory).await?;
    Ok((StatusCode::OK, Value::Object(memory)))
}

/// Updates `lastAccessed` and `accessCount` in the vector store, waiting for it.
async fn touch(
    parts: &LegacyParts,
    id: Uuid,
    mut memory: StoredMemory,
) -> Result<StoredMemory, ApiError> {
    let count = memory
        .get("accessCount")
        .and_then(Value::as_u64)
        .unwrap_or(0)
        + 1;
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let fields: StoredMemory = [
        ("lastAccessed".to_string(), Value::from(now)),
        ("accessCount".to_string(), Value::from(count)),
    ]
    .into_iter()
    .collect();
    parts
        .vectors
        .set_fields(id, fields.clone())
        .await
        .map_err(|e| failed("vector store", e))?;
    memory.extend(fields);
    Ok(memory)
}

/// `POST /memories/search`: embed, search, then record every result's access in turn.
async fn search(parts: &LegacyParts, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
    let search = parse_json::<SearchRequest>(body)?.normalize()?;
    let vector = parts
        .embedder
        .embed(std::slice::from_ref(&search.query))
        .await
        .map_err(|e| failed("embeddings", e))?
        .pop()
        .ok_or_else(|| failed("embeddings", "no vector returned"))?;
    let query = VectorQuery {
        vector,
        filter: MemoryFilter {
            scope: None,
            memory_type: search.memory_type,
            min_importance: search.min_importance,
            emotional_range: search.emotional_range,
            date_range: search.date_range,
        },
        limit: u64::from(search.limit),
        score_threshold: search.similarity_threshold,
        ef: parts.search_ef,
    };
    let found = parts
        .vectors
        .search(query)
        .await
        .map_err(|e| failed("vector store", e))?;
    let mut memories = Vec::with_capacity(found.len());
    for scored in found {
        let id = scored
            .memory
            .get("id")
            .and_then(Value::as_str)
            .and_then(|id| Uuid::parse_str(id).ok());
        let mut memory = match id {
            Some(id) => touch(parts, id, scored.memory).await?,
            None => scored.memory,
        };
        memory.insert("score".into(), Value::from(scored.score));
        memories.push(Value::Object(memory));
    }
    Ok((StatusCode::OK, serde_json::json!({ "memories": memories })))
}

/// `POST /memories`: summary, valence, keywords and embedding in sequence, then store.
async fn create(parts: &LegacyParts, body: &[u8]) -> Result<(StatusCode, Value), ApiError> {
    let request: CreateMemoryRequest = parse_json(body)?;
    request.validate()?;
    let content = request.content.clone();
    let summary = match &request.summary {
        Some(summary) => summary.clone(),
        None => parts
            .enricher
            .summarize(&content)
            .await
            .map_err(|e| failed("summary", e))?,
    };
    let valence = match request.emotional_valence {
        Some(valence) => valence,
        None => parts
            .enricher
            .emotional_valence(&content)
            .await
            .map_err(|e| failed("emotion", e))?,
    };
    let keywords = parts
        .enricher
        .keywords(&content)
        .await
        .map_err(|e| failed("keywords", e))?;
    let vector = parts
        .embedder
        .embed(std::slice::from_ref(&content))
        .await
        .map_err(|e| failed("embeddings", e))?
        .pop()
        .ok_or_else(|| failed("embeddings", "no vector returned"))?;

    let id = Uuid::now_v7();
    let mut memory = request.into_record(id, Utc::now(), MemoryStatus::Ready);
    memory.insert("summary".into(), Value::from(summary));
    memory.insert("emotionalValence".into(), Value::from(valence));
    let tags = merge_tags(memory.get("tags"), keywords);
    memory.insert("tags".into(), tags);
    parts
        .vectors
        .upsert(vec![MemoryPoint {
            id,
            vector,
            memory: memory.clone(),
        }])
        .await
        .map_err(|e| failed("vector store", e))?;
    Ok((StatusCode::CREATED, Value::Object(memory)))
}
