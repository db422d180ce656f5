//! The memgate operator: reconciles a `MemoryStore` into Redis, Qdrant, the worker Deployment
//! and the sidecar's config.
//!
//! A reconcile is a pipeline, one module per step: read the referenced Secrets, [`validate`]
//! the spec (pure), [`build`] the desired objects (pure: spec in, objects out), apply them
//! (server-side apply, a fixed order), then report status.

pub mod admin;
pub mod admission;
pub mod apply;
pub mod build;
pub mod certs;
pub mod controller;
pub mod crd;
pub mod error;
pub mod http;
pub mod inject;
pub mod leader;
pub mod metrics;
pub mod ramp;
pub mod reconcile;
pub mod secrets;
pub mod status;
pub mod webhook;
pub mod webhook_certs;
