//! An OpenAI-compatible server for tests: `POST /v1/embeddings` answers with the hashing
//! embedder's vectors (so similar texts really are similar), counting calls and texts. It can
//! be told to add latency or to fail with 500s.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memgate::embeddings::HashingEmbedder;
use serde::Deserialize;
use serde_json::json;

use crate::http_server::{json, TestServer};

#[derive(Default)]
struct Behaviour {
    calls: AtomicU64,
    texts: AtomicU64,
    delay_ms: AtomicU64,
    failing: AtomicBool,
}

pub struct FakeOpenAi {
    server: TestServer,
    behaviour: Arc<Behaviour>,
}

#[derive(Deserialize)]
struct EmbeddingRequest {
    model: String,
    input: Input,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Input {
    One(String),
    Many(Vec<String>),
}

impl FakeOpenAi {
    pub async fn start(dimensions: usize) -> anyhow::Result<Self> {
        let behaviour = Arc::new(Behaviour::default());
        let state = behaviour.clone();
        let embedder = HashingEmbedder::new("fake", dimensions);
        let server = TestServer::start(move |request, _remote| {
            let state = state.clone();
            let embedder = embedder.clone();
            async move {
                let delay = state.delay_ms.load(Ordering::Relaxed);
                if delay > 0 {
                    tokio::time::sleep(Duration::from_millis(delay)).await;
                }
                if state.failing.load(Ordering::Relaxed) {
                    return json(500, json!({"error": {"message": "injected failure", "type": "server_error"}}));
                }
                if request.uri().path() != "/v1/embeddings" {
                    return json(404, json!({"error": {"message": "not found", "type": "invalid_request_error"}}));
                }
                let Ok(parsed) = serde_json::from_slice::<EmbeddingRequest>(request.body()) else {
                    return json(400, json!({"error": {"message": "bad request", "type": "invalid_request_error"}}));
                };
                let texts = match parsed.input {
                    Input::One(text) => vec![text],
                    Input::Many(texts) => texts,
                };
                state.calls.fetch_add(1, Ordering::Relaxed);
                state.texts.fetch_add(texts.len() as u64, Ordering::Relaxed);
                let data: Vec<_> = texts
                    .iter()
                    .enumerate()
                    .map(|(index, text)| json!({"object": "embedding", "index": index, "embedding": embedder.embed_one(text)}))
                    .collect();
                json(200, json!({
                    "object": "list",
                    "model": parsed.model,
                    "data": data,
                    "usage": {"prompt_tokens": 1, "total_tokens": 1},
                }))
            }
        })
        .await?;
        Ok(Self { server, behaviour })
    }

    /// The base URL to configure as `openai.baseUrl`.
    pub fn base_url(&self) -> String {
        format!("{}/v1", self.server.url())
    }

    pub fn embedding_calls(&self) -> u64 {
        self.behaviour.calls.load(Ordering::Relaxed)
    }

    pub fn embedded_texts(&self) -> u64 {
        self.behaviour.texts.load(Ordering::Relaxed)
    }

    pub fn set_delay(&self, delay: Duration) {
        self.behaviour
            .delay_ms
            .store(delay.as_millis() as u64, Ordering::Relaxed);
    }

    pub fn set_failing(&self, failing: bool) {
        self.behaviour.failing.store(failing, Ordering::Relaxed);
    }
}
