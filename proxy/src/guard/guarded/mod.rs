//! The backends as the request path sees them: each call through its dependency's breaker,
//! timeout and metrics ([`Dependency`]), under the backend's own trait. Built once in
//! `crate::app`; the core never places a guard itself.
//!
//! A call the guard refused or cut short fails with the backend's own error type
//! ([`crate::backend::Unanswered`] inside it). Health probes (`ping`, `health`, the queue's
//! `consumers` and `stats`) pass straight through: `/readyz` asks the dependency itself, not its
//! breaker. Each call is labelled with the trait method's name in
//! `memgate_dependency_duration_seconds{op}`.

mod cache;
mod embeddings;
mod queue;
mod vectors;

use std::future::Future;
use std::sync::Arc;

use crate::backend::BackendError;
use crate::guard::dependency::Dependency;

/// A backend `B` whose calls pass through `dependency`.
pub struct Guarded<B: ?Sized> {
    inner: Arc<B>,
    dependency: Dependency,
}

impl<B: ?Sized> Guarded<B> {
    pub fn new(inner: Arc<B>, dependency: Dependency) -> Self {
        Self { inner, dependency }
    }

    /// The breaker, timeout and metrics its calls pass.
    pub fn dependency(&self) -> &Dependency {
        &self.dependency
    }

    async fn guard<T, E: BackendError>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        self.dependency.guard(op, call).await
    }
}

impl<B: ?Sized> std::fmt::Debug for Guarded<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guarded")
            .field("dependency", &self.dependency.name())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
