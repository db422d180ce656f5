//! The backends the core and the workers stand on, each behind a trait with an in-process
//! implementation (`serve --embedded`, unit tests) and a networked one:
//!
//! - [`cache`]: memory records, cached searches, read counts (Redis, or in-process);
//! - [`queue`]: the write queue and everything written with it atomically (Redis streams and
//!   scripts, or in-process);
//! - [`vectors`]: the vector store (Qdrant over gRPC or REST, or Qdrant's code embedded);
//! - [`embeddings`]: the embedding provider and its cache;
//! - [`enrichment`]: the model that writes summaries, keywords and valence;
//! - [`redis_link`]: the connection to the Redis primary (one address, or Sentinel's).
//!
//! The request path sees them through guards (`crate::guard::guarded`), which answer
//! [`Unanswered`] in each backend's own error type when a dependency is down or slow.

pub mod cache;
pub mod embeddings;
pub mod enrichment;
pub mod queue;
pub mod redis_link;
mod unanswered;
pub mod vectors;

pub use unanswered::{BackendError, Unanswered};
