//! One reconcile of one MemoryStore, as a pipeline:
//!
//! 1. **validate** (pure): build the objects once with no Secrets read; a spec that cannot be
//!    honoured stops here, changing nothing, and is reported as `Degraded`;
//! 2. **dereference**: create generated credentials once, then digest the referenced Secrets;
//! 3. **build** (pure): the desired objects;
//! 4. **apply**: server-side apply in a fixed order, orphans deleted;
//! 5. **status**: computed from what the API server answered.
//!
//! With `spec.paused` only step 5 runs, on the objects as they are. Before step 1, a measured
//! rollout (`spec.rollout.analysis`) decides the percent the build renders ([`crate::ramp`]).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DeserializeGuard;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::{Client, Resource, ResourceExt};

use crate::apply::{apply_all, Applied};
use crate::build::{self, labels::MANAGER};
use crate::crd::{MemoryStore, MemoryStoreStatus};
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::ramp::prometheus::PrometheusClient;
use crate::ramp::{Measure, RampOutcome};
use crate::status::{self, Problem};
use crate::{build::qdrant, build::redis, build::sentinel, build::worker, secrets};

/// How often a healthy store is looked at again even when nothing changes.
const RESYNC: Duration = Duration::from_secs(300);
/// How soon a store that is still rolling out is looked at again.
const ROLLING: Duration = Duration::from_secs(15);

/// What every reconcile shares.
pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    /// Consecutive failed reconciles per store (`namespace/name`), for the retry backoff.
    pub failures: Mutex<HashMap<String, u32>>,
    /// What measures a rollout step (Prometheus).
    pub measure: Arc<dyn Measure>,
}

impl Context {
    pub fn new(client: Client, recorder: Recorder, metrics: Metrics) -> Self {
        Self {
            client,
            recorder,
            metrics,
            failures: Mutex::new(HashMap::new()),
            measure: Arc::new(PrometheusClient::default()),
        }
    }

    fn failures(&self) -> std::sync::MutexGuard<'_, HashMap<String, u32>> {
        self.failures
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn key(store: &MemoryStore) -> String {
    format!(
        "{}/{}",
        store.namespace().unwrap_or_default(),
        store.name_any()
    )
}

/// The wait before retry `n` (1-based): 5 s doubling up to 5 minutes.
pub fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    (Duration::from_secs(5) * 2u32.pow(exponent)).min(Duration::from_secs(300))
}

impl std::fmt::Debug for Context {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").finish_non_exhaustive()
    }
}

/// The controller's entry point: a MemoryStore that does not even deserialize is reported
/// (an Event) and left until it changes; it never stalls the others.
pub async fn reconcile(
    guard: Arc<DeserializeGuard<MemoryStore>>,
    context: Arc<Context>,
) -> Result<Action> {
    match &guard.0 {
        Ok(store) => reconcile_store(store, &context).await,
        Err(invalid) => {
            context
                .metrics
                .reconciles
                .with_label_values(&["invalid_object"])
                .inc();
            tracing::warn!(name = ?invalid.metadata.name, error = %invalid.error, "MemoryStore does not parse");
            let reference = guard.object_ref(&());
            let event = Event {
                type_: EventType::Warning,
                reason: "InvalidObject".into(),
                note: Some(invalid.error.chars().take(1000).collect()),
                action: "Reconcile".into(),
                secondary: None,
            };
            if let Err(error) = context.recorder.publish(&event, &reference).await {
                tracing::warn!(%error, "could not publish an event");
            }
            Ok(Action::await_change())
        }
    }
}

/// Reconciles a parsed store and records the outcome.
pub async fn reconcile_store(store: &MemoryStore, context: &Context) -> Result<Action> {
    let started = Instant::now();
    let ramp = crate::ramp::advance(store, context.measure.as_ref(), Timestamp::now()).await;
    let outcome = pipeline(&ramp.applied_to(store), context).await;
    let result = if outcome.is_ok() { "ok" } else { "error" };
    context
        .metrics
        .reconciles
        .with_label_values(&[result])
        .inc();
    context
        .metrics
        .duration
        .with_label_values(&[result])
        .observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok(applied) => {
            context.failures().remove(&key(store));
            let problem = (!applied.storage_problems.is_empty()).then(|| Problem {
                reason: "StorageShrinkRefused".into(),
                message: applied.storage_problems.join("; "),
            });
            let mut status = status::compute(store, &applied, problem, Timestamp::now());
            with_ramp(store, &mut status, &ramp);
            let rolling = status
                .conditions
                .iter()
                .any(|c| c.type_ == status::PROGRESSING && c.status == "True");
            publish_changes(store, context, &applied).await;
            if let Some(event) = &ramp.event {
                publish_event(
                    context,
                    store,
                    Event {
                        type_: event.type_,
                        reason: event.reason.into(),
                        note: Some(event.note.clone()),
                        action: event.action.clone(),
                        secondary: None,
                    },
                )
                .await;
            }
            patch_status(&context.client, store, &status).await?;
            let wait = if rolling { ROLLING } else { RESYNC };
            Ok(Action::requeue(
                ramp.requeue.map_or(wait, |ramp| ramp.min(wait)),
            ))
        }
        Err(error) => {
            context
                .metrics
                .errors
                .with_label_values(&[error.reason()])
                .inc();
            tracing::warn!(store = %store.name_any(), %error, "reconcile failed");
            let problem = Problem {
                reason: error.reason().into(),
                message: error.to_string(),
            };
            let applied = observe(&context.client, store).await.unwrap_or_default();
            let status = status::failed(store, &applied, problem, Timestamp::now());
            publish(
                context,
                store,
                EventType::Warning,
                error.reason(),
                error.to_string(),
            )
            .await;
            if let Err(status_error) = patch_status(&context.client, store, &status).await {
                tracing::warn!(%status_error, "could not report the failure in status");
            }
            Err(error)
        }
    }
}

/// The ramp's state and its `Rollout` condition in the status (none without analysis).
fn with_ramp(store: &MemoryStore, status: &mut MemoryStoreStatus, ramp: &RampOutcome) {
    status.rollout = ramp.status.clone();
    status.conditions.retain(|c| c.type_ != status::ROLLOUT);
    if let Some(condition) = &ramp.condition {
        let old = store
            .status
            .as_ref()
            .map(|s| s.conditions.as_slice())
            .unwrap_or_default();
        status.conditions.push(status::condition(
            old,
            status::ROLLOUT,
            condition.healthy,
            condition.reason,
            condition.message.clone(),
            store.metadata.generation,
            Timestamp::now(),
        ));
    }
}

async fn pipeline(store: &MemoryStore, context: &Context) -> Result<Applied> {
    let client = &context.client;
    if store.spec.paused {
        return observe(client, store).await;
    }
    // validate: a spec that cannot be built stops before any write.
    let planned = build::build(store, &build::SecretDigests::default())?;
    for generated in &planned.generated_secrets {
        let secret = &generated.secret;
        if secrets::ensure_generated(client, store, generated).await? {
            publish(
                context,
                store,
                EventType::Normal,
                "Created",
                format!("generated Secret {} (key {})", secret.name, secret.key),
            )
            .await;
        }
    }
    let digests = secrets::digests(client, store).await?;
    let features = cluster_features(client).await;
    let desired = build::build_for(store, &digests, features)?;
    apply_all(client, store, &desired, features).await
}

/// What the cluster offers: whether KEDA's API is served (discovery, which every
/// authenticated client may read).
async fn cluster_features(client: &Client) -> build::ClusterFeatures {
    let keda = format!(
        "{}/{}",
        build::autoscale::KEDA_GROUP,
        build::autoscale::KEDA_VERSION
    );
    let keda = match client.list_api_group_resources(&keda).await {
        Ok(resources) => resources
            .resources
            .iter()
            .any(|resource| resource.name == "scaledobjects"),
        Err(error) => {
            tracing::debug!(%error, "KEDA's API is not served");
            false
        }
    };
    build::ClusterFeatures { keda }
}

/// The workloads as they are, without changing anything.
pub async fn observe(client: &Client, store: &MemoryStore) -> Result<Applied> {
    let namespace = store.namespace().ok_or(Error::NoNamespace)?;
    let sets: Api<StatefulSet> = Api::namespaced(client.clone(), &namespace);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &namespace);
    Ok(Applied {
        redis: sets.get_opt(&redis::name(store)).await?,
        redis_sentinel: sets.get_opt(&sentinel::name(store)).await?,
        qdrant: sets.get_opt(&qdrant::name(store)).await?,
        worker: deployments.get_opt(&worker::name(store)).await?,
        ..Applied::default()
    })
}

async fn patch_status(
    client: &Client,
    store: &MemoryStore,
    status: &MemoryStoreStatus,
) -> Result<()> {
    let namespace = store.namespace().ok_or(Error::NoNamespace)?;
    let api: Api<MemoryStore> = Api::namespaced(client.clone(), &namespace);
    let patch = serde_json::json!({ "status": status });
    api.patch_status(
        &store.name_any(),
        &PatchParams::apply(MANAGER),
        &Patch::Merge(&patch),
    )
    .await?;
    Ok(())
}

async fn publish(
    context: &Context,
    store: &MemoryStore,
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Reconcile".into(),
        secondary: None,
    };
    publish_event(context, store, event).await;
}

async fn publish_event(context: &Context, store: &MemoryStore, event: Event) {
    if let Err(error) = context
        .recorder
        .publish(&event, &store.object_ref(&()))
        .await
    {
        tracing::warn!(%error, "could not publish an event");
    }
}

/// Events for what changed: a new generation applied, orphans deleted, a refused shrink.
async fn publish_changes(store: &MemoryStore, context: &Context, applied: &Applied) {
    let observed = store.status.as_ref().and_then(|s| s.observed_generation);
    if !store.spec.paused && observed != store.metadata.generation {
        let note = format!(
            "applied generation {} (Redis, Qdrant, workers, config)",
            store.metadata.generation.unwrap_or_default()
        );
        publish(context, store, EventType::Normal, "Applied", note).await;
    }
    for deleted in &applied.deleted {
        publish(
            context,
            store,
            EventType::Normal,
            "Deleted",
            format!("deleted {deleted}: no longer declared"),
        )
        .await;
    }
    for problem in &applied.storage_problems {
        publish(
            context,
            store,
            EventType::Warning,
            "StorageShrinkRefused",
            problem.clone(),
        )
        .await;
    }
}

/// Invalid specs wait for the next change; everything else is retried with exponential
/// backoff per store.
pub fn error_policy(
    guard: Arc<DeserializeGuard<MemoryStore>>,
    error: &Error,
    context: Arc<Context>,
) -> Action {
    if error.needs_spec_change() {
        return Action::await_change();
    }
    let key = match &guard.0 {
        Ok(store) => key(store),
        Err(invalid) => format!(
            "{:?}/{:?}",
            invalid.metadata.namespace, invalid.metadata.name
        ),
    };
    let mut failures = context.failures();
    let count = failures.entry(key).or_insert(0);
    *count = count.saturating_add(1);
    Action::requeue(backoff(*count))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn errors_back_off_per_store_and_invalid_specs_wait_for_a_change() {
        let (service, _handle) = tower_test::mock::pair::<
            http::Request<kube::client::Body>,
            http::Response<kube::client::Body>,
        >();
        let client = Client::new(service, "default");
        let reporter = kube::runtime::events::Reporter {
            controller: "test".into(),
            instance: None,
        };
        let context = Arc::new(Context::new(
            client.clone(),
            Recorder::new(client, reporter),
            Metrics::new(),
        ));
        let mut store = MemoryStore::new("notes", Default::default());
        store.metadata.namespace = Some("team-a".into());
        let guard = Arc::new(DeserializeGuard(Ok(store)));
        let missing = Error::MissingSecret {
            name: "openai".into(),
            key: "api-key".into(),
        };
        let first = error_policy(guard.clone(), &missing, context.clone());
        let second = error_policy(guard.clone(), &missing, context.clone());
        assert_eq!(first, Action::requeue(Duration::from_secs(5)));
        assert_eq!(second, Action::requeue(Duration::from_secs(10)));
        assert_eq!(
            error_policy(guard, &Error::NoNamespace, context),
            Action::await_change()
        );
    }

    #[test]
    fn retries_back_off_up_to_five_minutes() {
        let waits: Vec<u64> = (1..=9).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, vec![5, 10, 20, 40, 80, 160, 300, 300, 300]);
    }
}
