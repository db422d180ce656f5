//! memgate: a sidecar that makes an AI memory service fast without rewriting it.
//!
//! A request enters at [`server`], is classified and routed in [`service`] (fast or legacy,
//! by [`routing`]), answered by the [`core`](crate::core) from the caches ([`cache`], [`embeddings`]) and the
//! vector store ([`vectors`]), or forwarded by [`legacy`]. What is stored, embedded and answered
//! follows the legacy service's [`layout`]. [`app`] wires the parts from the
//! [`config`]; [`admin`] serves metrics and health.

pub mod access;
pub mod admin;
pub mod app;
pub mod breaker;
pub mod cache;
pub mod cli;
pub mod config;
pub mod core;
pub mod dependency;
pub mod embeddings;
pub mod endpoint;
pub mod enrichment;
pub mod error;
pub mod http;
pub mod js;
pub mod keys;
pub mod layout;
pub mod legacy;
pub mod mcp;
pub mod memory;
pub mod metrics;
pub mod openapi;
pub mod queue;
pub mod routing;
pub mod security;
pub mod server;
pub mod service;
pub mod vectors;
pub mod worker;
