//! memgate: a sidecar that makes an AI memory service fast without rewriting it.
//!
//! # Layout
//!
//! The tree is the design, read from the top down (no module imports one above it; a test,
//! `tests/module_cycles.rs`, fails on an import cycle):
//!
//! - [`front`]: the protocols. [`front::server`] accepts connections, [`front::security`]
//!   admits requests, [`front::rest`] serves the Memory API over REST and forwards the rest
//!   to the legacy service, [`front::mcp`] serves MCP (and keeps memgate's session with the
//!   legacy MCP server), [`front::admin`] serves metrics and health.
//! - [`core`](crate::core): the Memory API's operations, protocol-free: the caches, read
//!   counts, writes acknowledged at once, the degradation ladder.
//! - [`layout`]: what the legacy service (cldmemory) stores, embeds and answers, and how.
//! - [`backend`]: Redis or in-process cache and write queue, the vector store (Qdrant, or
//!   Qdrant's own code embedded), the embedding and enrichment providers.
//! - [`guard`]: the timeout, circuit breaker and metrics every call to a dependency passes.
//! - [`worker`]: applies acknowledged writes in the background (enrichment, embedding, the
//!   vector store), in order, never losing one.
//! - [`app`] wires the parts from the [`config`]; [`cli`] is the command line.
//!
//! Shared vocabulary: [`memory`] (the Memory API's data), [`keys`] (what memgate keeps in
//! Redis, by name), [`metrics`].

pub mod app;
pub mod backend;
pub mod cli;
pub mod config;
pub mod core;
pub mod front;
pub mod guard;
pub mod js;
pub mod keys;
pub mod layout;
pub mod memory;
pub mod metrics;
pub mod worker;
