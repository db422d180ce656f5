//! A reference cldmemory: the legacy memory service memgate sits in front of, rebuilt in Rust
//! from `shared/reference/cldmemory.md` for memgate's tests and benchmark.
//!
//! It is written apart from memgate's layout code on purpose — its own memory shape
//! ([`model`]), its own embedded texts, its own JavaScript number and date handling
//! ([`javascript`]) and its own `JSON.stringify` ([`json_text`]) — so that a mistake in
//! memgate's layout shows up as a difference instead of hiding in shared code. What it shares
//! with memgate is the storage engine: it keeps its points in a [`memgate::backend::vectors::VectorStore`]
//! (Qdrant Edge in-process, or a Qdrant server), as cldmemory keeps them in Qdrant.
//!
//! The parts, as cldmemory has them: [`openai`] (embeddings and the three enrichment prompts),
//! [`qdrant`] (its Qdrant calls), [`service`] (create, search, get, update, delete,
//! associations), [`tools`] (the MCP tools: arguments, validation, result texts), [`mcp`]
//! (JSON-RPC) and [`transport`] (MCP over HTTP+SSE: `/sse`, `/messages`, `/health`, `/ping`).

pub mod javascript;
pub mod json_text;
pub mod mcp;
pub mod model;
pub mod openai;
pub mod qdrant;
pub mod service;
pub mod stdio;
pub mod tools;
pub mod transport;

pub use service::{MemoryService, ServiceSettings};
pub use transport::{serve, serve_with, RunningReference, SseRouting};
