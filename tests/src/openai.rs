//! An OpenAI-compatible server for tests: `POST /v1/embeddings` answers with the hashing
//! embedder's vectors (so similar texts really are similar), as float arrays or, when asked
//! with `encoding_format: "base64"` (the official Node client's default), as base64 of
//! little-endian f32; `POST /v1/chat/completions` answers cldmemory's three enrichment prompts
//! (summary, valence, keywords) in plain text the way a model following them would. It counts
//! calls and can be told to add latency or fail.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use memgate::backend::embeddings::HashingEmbedder;
use serde::Deserialize;
use serde_json::json;

use crate::http_server::{json, TestServer};

#[derive(Default)]
struct Behaviour {
    calls: AtomicU64,
    texts: AtomicU64,
    chat_calls: AtomicU64,
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
    #[serde(default)]
    encoding_format: Option<String>,
}

/// An embedding as the request asked for it: floats, or base64 of little-endian f32.
fn encode_embedding(vector: Vec<f32>, format: Option<&str>) -> serde_json::Value {
    use base64::Engine;
    match format {
        Some("base64") => {
            let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
            serde_json::Value::String(base64::engine::general_purpose::STANDARD.encode(bytes))
        }
        _ => json!(vector),
    }
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
                if request.uri().path() == "/v1/chat/completions" {
                    state.chat_calls.fetch_add(1, Ordering::Relaxed);
                    return chat_answer(request.body());
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
                    .map(|(index, text)| {
                        let embedding = encode_embedding(
                            embedder.embed_one(text),
                            parsed.encoding_format.as_deref(),
                        );
                        json!({"object": "embedding", "index": index, "embedding": embedding})
                    })
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

    pub fn chat_calls(&self) -> u64 {
        self.behaviour.chat_calls.load(Ordering::Relaxed)
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

#[derive(Deserialize)]
struct ChatRequest {
    model: String,
    messages: Vec<ChatMessage>,
}

#[derive(Deserialize)]
struct ChatMessage {
    content: String,
}

/// What a model following cldmemory's instructions answers for `content`, told apart by the
/// system message: a summary, a valence number, or comma-separated keywords.
pub fn chat_answer_text(instructions: &str, content: &str) -> String {
    let lower = content.to_lowercase();
    if instructions.contains("summary") {
        format!("Summary: {}", content.chars().take(60).collect::<String>())
    } else if instructions.contains("emotional valence") {
        let valence = if lower.contains("happy") {
            "0.8"
        } else if lower.contains("sad") {
            "-0.7"
        } else {
            "0.1"
        };
        valence.to_string()
    } else if instructions.contains("key words") {
        content
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.len() > 3)
            .take(3)
            .collect::<Vec<_>>()
            .join(", ")
    } else {
        String::new()
    }
}

/// Answers one of the enrichment prompts.
fn chat_answer(body: &[u8]) -> hyper::Response<http_body_util::Full<bytes::Bytes>> {
    let Ok(request) = serde_json::from_slice::<ChatRequest>(body) else {
        return json(
            400,
            json!({"error": {"message": "bad request", "type": "invalid_request_error"}}),
        );
    };
    let instructions = request
        .messages
        .first()
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let content = request
        .messages
        .last()
        .map(|m| m.content.as_str())
        .unwrap_or_default();
    let answer = chat_answer_text(instructions, content);
    json(
        200,
        json!({
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": 0,
            "model": request.model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": answer}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
        }),
    )
}
