//! The memgate operator: reconciles a `MemoryStore` into Redis, Qdrant, the worker Deployment
//! and the sidecar's config, and injects the sidecar into app pods.
//!
//! Not built yet: this crate holds the operator's place in the workspace. The proxy's config
//! type (`memgate::config::Config`) is the contract the operator will render into the
//! `{name}-proxy-config` ConfigMap.
