//! What every call to a dependency passes: a timeout, a circuit breaker ([`breaker`]) and
//! metrics, put together in [`dependency`] and placed once per dependency:
//! - [`guarded`]: the backends (cache store, write queue, vector store, embedder) under their
//!   own traits, built in `crate::app`;
//! - [`layer`]: a tower layer for the HTTP client that forwards to the legacy service.

pub mod breaker;
pub mod dependency;
pub mod guarded;
pub mod layer;
