//! The reference legacy service does what the seed plan's service does, in sequence: these
//! tests hold it to that, against the OpenAI-compatible stand-in and a real Qdrant Edge shard.

use std::sync::Arc;
use std::time::{Duration, Instant};

use memgate::config::DistanceMetric;
use memgate::embeddings::OpenAiEmbedder;
use memgate::enrichment::OpenAiEnricher;
use memgate::vectors::{CollectionSpec, EdgeStore, VectorStore};
use memgate_bench::legacy_service::{self, LegacyParts};
use memgate_testkit::FakeOpenAi;
use serde_json::{json, Value};
use uuid::Uuid;

const DELAY: Duration = Duration::from_millis(50);

struct Service {
    _dir: tempfile::TempDir,
    openai: FakeOpenAi,
    vectors: Arc<EdgeStore>,
    service: legacy_service::RunningLegacyService,
    http: reqwest::Client,
}

async fn start() -> Service {
    let dir = tempfile::tempdir().expect("dir");
    let openai = FakeOpenAi::start(16).await.expect("openai stand-in");
    openai.set_delay(DELAY);
    let vectors = Arc::new(EdgeStore::open(Some(dir.path())).expect("edge"));
    vectors
        .ensure_collection(&CollectionSpec {
            name: "memories".into(),
            dimensions: 16,
            distance: DistanceMetric::Cosine,
            scope_field: None,
        })
        .await
        .expect("collection");
    let timeout = Duration::from_secs(5);
    let parts = LegacyParts {
        vectors: vectors.clone(),
        embedder: Arc::new(OpenAiEmbedder::new(
            &openai.base_url(),
            Some("sk-test"),
            "embed",
            16,
            timeout,
        )),
        enricher: Arc::new(OpenAiEnricher::new(
            &openai.base_url(),
            Some("sk-test"),
            "chat",
            timeout,
        )),
        search_ef: 32,
    };
    let service = legacy_service::start(parts, "127.0.0.1:0".parse().expect("addr"))
        .await
        .expect("legacy service");
    Service {
        _dir: dir,
        openai,
        vectors,
        service,
        http: reqwest::Client::new(),
    }
}

impl Service {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&str>,
    ) -> (u16, Value, Duration) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.service.url()));
        if let Some(body) = body {
            request = request
                .header("content-type", "application/json")
                .body(body.to_string());
        }
        let started = Instant::now();
        let response = request.send().await.expect("answered");
        let status = response.status().as_u16();
        let value = response.json().await.unwrap_or(Value::Null);
        (status, value, started.elapsed())
    }
}

#[tokio::test]
async fn create_waits_for_summary_emotion_keywords_and_embedding_in_turn() {
    let service = start().await;
    let body = json!({"content": "A happy afternoon at the beach with my sister"}).to_string();
    let (status, memory, took) = service
        .call(reqwest::Method::POST, "/memories", Some(&body))
        .await;
    assert_eq!(status, 201, "{memory}");
    assert!(
        took >= DELAY * 4,
        "four calls one after another take at least 4 × {DELAY:?}, took {took:?}"
    );
    assert_eq!(service.openai.chat_calls(), 3, "summary, emotion, keywords");
    assert_eq!(service.openai.embedding_calls(), 1);
    assert_eq!(memory["status"], "ready");
    assert!(
        memory["summary"]
            .as_str()
            .is_some_and(|s| s.starts_with("Summary:")),
        "{memory}"
    );
    assert_eq!(memory["emotionalValence"], 0.8);
    assert!(!memory["tags"].as_array().expect("tags").is_empty());
    let id = Uuid::parse_str(memory["id"].as_str().expect("id")).expect("uuid");
    assert!(
        service
            .vectors
            .retrieve(id)
            .await
            .expect("retrieve")
            .is_some(),
        "stored before the answer"
    );
}

#[tokio::test]
async fn reads_record_every_access_before_answering() {
    let service = start().await;
    let body = json!({"content": "coffee in paris with the team"}).to_string();
    let (_, memory, _) = service
        .call(reqwest::Method::POST, "/memories", Some(&body))
        .await;
    let id = memory["id"].as_str().expect("id").to_string();

    let (status, fetched, _) = service
        .call(reqwest::Method::GET, &format!("/memories/{id}"), None)
        .await;
    assert_eq!(status, 200);
    assert_eq!(fetched["accessCount"], 1);
    let (_, fetched, _) = service
        .call(reqwest::Method::GET, &format!("/memories/{id}"), None)
        .await;
    assert_eq!(fetched["accessCount"], 2);

    let embeddings_before = service.openai.embedding_calls();
    let search = json!({"query": "coffee in paris", "limit": 5}).to_string();
    let (status, found, took) = service
        .call(reqwest::Method::POST, "/memories/search", Some(&search))
        .await;
    assert_eq!(status, 200, "{found}");
    assert!(
        took >= DELAY,
        "the query is embedded on every search, took {took:?}"
    );
    assert_eq!(service.openai.embedding_calls(), embeddings_before + 1);
    let first = &found["memories"][0];
    assert_eq!(first["id"], id.as_str());
    assert_eq!(first["accessCount"], 3);
    assert!(first["score"].as_f64().is_some_and(|score| score > 0.5));
    let stored = service
        .vectors
        .retrieve(Uuid::parse_str(&id).expect("uuid"))
        .await
        .expect("retrieve")
        .expect("stored");
    assert_eq!(
        stored["accessCount"], 3,
        "the search's access update reached the store"
    );
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let service = start().await;
    let (status, error, _) = service
        .call(reqwest::Method::POST, "/memories/search", Some("{"))
        .await;
    assert_eq!(status, 400, "{error}");
    let (status, _, _) = service
        .call(reqwest::Method::GET, "/memories/not-a-uuid", None)
        .await;
    assert_eq!(status, 400);
    let (status, _, _) = service
        .call(
            reqwest::Method::GET,
            &format!("/memories/{}", Uuid::now_v7()),
            None,
        )
        .await;
    assert_eq!(status, 404);
    let (status, _, _) = service
        .call(
            reqwest::Method::POST,
            "/memories",
            Some(r#"{"content": ""}"#),
        )
        .await;
    assert_eq!(status, 400);
    assert_eq!(
        service.openai.chat_calls(),
        0,
        "nothing invalid reached the model"
    );
}
