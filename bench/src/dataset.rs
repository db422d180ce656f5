//! The benchmark's memories: generated sentences, stored straight into the vector store in
//! cldmemory's layout (as a worker or cldmemory would have stored them, enriched and embedded
//! with the layout's text) so seeding 100,000 takes seconds, not the hours the enrichment calls
//! would; then Qdrant Edge's optimizer builds the index.

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use memgate::backend::embeddings::HashingEmbedder;
use memgate::backend::vectors::{MemoryPoint, VectorStore};
use memgate::layout::{Enrichment, Layout};
use memgate::memory::{MemoryType, StoreContext, StoreRequest};
use uuid::Uuid;

use crate::progress;

const WORDS: &[&str] = &[
    "coffee", "paris", "meeting", "project", "deadline", "birthday", "garden", "music", "travel",
    "recipe", "budget", "doctor", "running", "book", "movie", "family", "weekend", "code",
    "review", "holiday", "sister", "concert", "train", "office", "beach", "dinner", "teacher",
    "market", "river", "winter", "summer", "letter",
];

/// The `i`-th generated sentence: eight topic words and a unique tail, so every text differs
/// and texts sharing words are similar to the embedder.
pub fn sentence(i: usize) -> String {
    let words: Vec<&str> = (0..8)
        .map(|k| WORDS[(i * 7 + k * 13 + k * k + i / WORDS.len()) % WORDS.len()])
        .collect();
    format!("{} note {i}", words.join(" "))
}

/// A query text that was never stored: searches for it find similar memories.
pub fn query(i: usize) -> String {
    let words: Vec<&str> = (0..4)
        .map(|k| WORDS[(i * 5 + k * 11 + i / 7) % WORDS.len()])
        .collect();
    format!("{} question {i}", words.join(" "))
}

/// The ids of the seeded memories, in order.
pub struct Dataset {
    pub ids: Vec<Uuid>,
    pub seconds_to_store: f64,
    pub seconds_to_index: f64,
}

/// Stores `size` memories in batches, then runs the vector store's optimizer.
pub async fn seed(
    vectors: &Arc<dyn VectorStore>,
    layout: &dyn Layout,
    embedder: &HashingEmbedder,
    size: usize,
    show_progress: bool,
) -> anyhow::Result<Dataset> {
    const BATCH: usize = 500;
    let started = Instant::now();
    let bar = progress::bar(size as u64, "seeding memories", show_progress);
    let now = Utc::now();
    let mut ids = Vec::with_capacity(size);
    for start in (0..size).step_by(BATCH) {
        let points: Vec<MemoryPoint> = (start..(start + BATCH).min(size))
            .map(|i| point(i, layout, embedder, now))
            .collect();
        ids.extend(points.iter().map(|point| point.id));
        let stored = points.len() as u64;
        vectors.upsert(points).await?;
        bar.inc(stored);
    }
    bar.finish_and_clear();
    let seconds_to_store = started.elapsed().as_secs_f64();
    let indexing = Instant::now();
    let spinner = progress::spinner("building the HNSW index", show_progress);
    vectors.optimize().await?;
    spinner.finish_and_clear();
    Ok(Dataset {
        ids,
        seconds_to_store,
        seconds_to_index: indexing.elapsed().as_secs_f64(),
    })
}

fn point(
    i: usize,
    layout: &dyn Layout,
    embedder: &HashingEmbedder,
    now: chrono::DateTime<Utc>,
) -> MemoryPoint {
    let content = sentence(i);
    let id = Uuid::new_v4();
    let created = now - chrono::Duration::minutes(i as i64);
    let request = StoreRequest {
        content: content.clone(),
        summary: Some(format!(
            "A note about {}",
            &content[..content.len().min(40)]
        )),
        memory_type: match i % 3 {
            0 => MemoryType::Episodic,
            1 => MemoryType::Semantic,
            _ => MemoryType::Procedural,
        },
        importance: Some((i % 10) as f64 / 10.0),
        context: Some(StoreContext {
            tags: Some(content.split(' ').take(2).map(str::to_string).collect()),
            ..Default::default()
        }),
    };
    let mut memory = layout.new_memory(id, &request, None, created);
    layout.apply_enrichment(
        &mut memory,
        Enrichment {
            summary: None,
            valence: Ok(Some(((i % 21) as f64 - 10.0) / 10.0)),
            keywords: None,
        },
    );
    MemoryPoint {
        id,
        vector: embedder.embed_one(&layout.embedded_text(&memory)),
        memory: layout.payload(&memory),
    }
}
