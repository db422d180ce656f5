//! The guards around real backends (the in-process cache) and a provider that hangs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use super::Guarded;
use crate::backend::cache::{CacheError, CacheStore, InProcessCache};
use crate::backend::embeddings::{Embedder, EmbeddingError};
use crate::backend::{BackendError, Unanswered};
use crate::guard::breaker::{BreakerSettings, CircuitBreaker, CircuitState};
use crate::guard::dependency::Dependency;
use crate::metrics::Metrics;

fn dependency(name: &'static str, metrics: &Metrics) -> Dependency {
    let breaker = CircuitBreaker::new(
        name,
        BreakerSettings {
            failure_threshold: 2,
            cool_down: Duration::from_secs(5),
            max_cool_down: Duration::from_secs(5),
        },
        metrics.dependencies.breakers.clone(),
    );
    Dependency::new(breaker, Some(Duration::from_millis(100)), metrics.clone())
}

/// An embedding provider that hangs while `hanging` is set.
struct Provider {
    hanging: AtomicBool,
}

#[async_trait]
impl Embedder for Provider {
    fn model(&self) -> &str {
        "test"
    }

    fn dimensions(&self) -> usize {
        2
    }

    async fn embed(&self, texts: &[String]) -> Result<Vec<Vec<f32>>, EmbeddingError> {
        if self.hanging.load(Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        Ok(texts.iter().map(|_| vec![1.0, 0.0]).collect())
    }
}

#[tokio::test(start_paused = true)]
async fn a_provider_that_hangs_times_out_then_is_skipped_until_the_cool_down_ends() {
    let metrics = Metrics::new();
    let provider = Arc::new(Provider {
        hanging: AtomicBool::new(true),
    });
    let guarded = Guarded::new(
        provider.clone() as Arc<dyn Embedder>,
        dependency("openai", &metrics),
    );
    let texts = ["a".to_string()];
    for _ in 0..2 {
        let error = guarded.embed(&texts).await.expect_err("timed out");
        assert!(error.timed_out(), "{error}");
        assert_eq!(error.to_string(), "openai did not answer within 100ms");
    }
    assert_eq!(guarded.dependency().breaker().state(), CircuitState::Open);

    provider.hanging.store(false, Ordering::SeqCst);
    let skipped = guarded.embed(&texts).await.expect_err("skipped");
    assert!(skipped.breaker_open(), "{skipped}");
    assert_eq!(skipped.retry_after(), Some(Duration::from_secs(5)));

    tokio::time::advance(Duration::from_secs(5)).await;
    let vectors = guarded.embed(&texts).await.expect("the probe goes through");
    assert_eq!(vectors, vec![vec![1.0, 0.0]]);
    assert_eq!(guarded.dependency().breaker().state(), CircuitState::Closed);
    let exported = metrics.render();
    assert!(
        exported.contains(
            "memgate_dependency_duration_seconds_count{dependency=\"openai\",op=\"embed\"} 3"
        ),
        "{exported}"
    );
}

#[tokio::test]
async fn an_open_breaker_skips_calls_but_not_health_probes() {
    let metrics = Metrics::new();
    let store: Arc<dyn CacheStore> = Arc::new(InProcessCache::new(10));
    let guarded = Guarded::new(store, dependency("redis", &metrics));
    guarded
        .set("k", Bytes::from_static(b"v"), Duration::from_secs(60))
        .await
        .expect("set");
    for _ in 0..2 {
        let permit = guarded
            .dependency()
            .breaker()
            .try_acquire()
            .expect("closed");
        permit.failure();
    }

    let error = guarded.get("k").await.expect_err("skipped");
    assert!(
        matches!(
            error,
            CacheError::Unanswered(Unanswered::BreakerOpen {
                dependency: "redis",
                ..
            })
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        format!(
            "redis is failing; circuit open for another {:?}",
            error.retry_after().expect("a retry time")
        )
    );
    guarded.ping().await.expect("a probe asks the store itself");
    assert_eq!(guarded.backend_name(), "memory");
}
