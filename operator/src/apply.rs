//! Puts the desired objects in place with server-side apply (one field manager, forced), in a
//! fixed order — the ConfigMap before the workloads that mount it — then deletes what carries
//! the store's labels but was not applied this pass (a part switched from managed to external,
//! a disruption budget no longer needed).
//!
//! Volumes: a StatefulSet's volume claim template cannot change, so a larger `storage` is
//! applied to the existing claim (the volume grows when its class allows expansion); a smaller
//! one is refused and reported in status, never looped on.

use std::fmt::Debug;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::autoscaling::v2::HorizontalPodAutoscaler;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::NamespaceResourceScope;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::core::TypeMeta;
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::build::autoscale::{self, WorkerScaler};
use crate::build::labels::{all_objects_selector, MANAGER};
use crate::build::{quantity, ClusterFeatures, Desired, ManagedPart};
use crate::crd::MemoryStore;
use crate::error::{Error, Result};

/// What the API server answered for the workloads, with their current status.
#[derive(Debug, Clone, Default)]
pub struct Applied {
    pub redis: Option<StatefulSet>,
    /// The Sentinels of a Redis with replicas.
    pub redis_sentinel: Option<StatefulSet>,
    pub qdrant: Option<StatefulSet>,
    pub worker: Option<Deployment>,
    /// Volumes that could not take the declared size (a shrink), as messages.
    pub storage_problems: Vec<String>,
    /// Names of objects deleted as orphans.
    pub deleted: Vec<String>,
    /// What scales the workers (`workers.autoscale`), as the status says it.
    pub worker_scaler: Option<&'static str>,
}

async fn apply<K>(client: &Client, namespace: &str, object: &K) -> Result<K>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + Serialize
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let name = object.name_any();
    let params = PatchParams::apply(MANAGER).force();
    Ok(api.patch(&name, &params, &Patch::Apply(object)).await?)
}

/// Whether the store with `uid` owns `object`. Labels alone can be copied (or left behind by
/// an earlier store of the same name); the owner reference's UID cannot.
fn owned_by<K: Resource>(object: &K, uid: &str) -> bool {
    object
        .meta()
        .owner_references
        .iter()
        .flatten()
        .any(|owner| owner.uid == uid)
}

/// Deletes the objects of kind `K` with the store's labels, owned by it (`owner_uid`), whose
/// names are not in `keep`.
async fn delete_orphans<K>(
    client: &Client,
    namespace: &str,
    selector: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<Vec<String>>
where
    K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
        + DeserializeOwned
        + Clone
        + Debug,
{
    let api: Api<K> = Api::namespaced(client.clone(), namespace);
    let mut deleted = Vec::new();
    for object in api.list(&ListParams::default().labels(selector)).await? {
        let name = object.name_any();
        if !keep.contains(&name) && owned_by(&object, owner_uid) {
            api.delete(&name, &DeleteParams::background()).await?;
            tracing::info!(kind = K::kind(&()).as_ref(), %name, "deleted an object no longer declared");
            deleted.push(format!("{}/{name}", K::kind(&())));
        }
    }
    Ok(deleted)
}

/// Grows the volumes of a managed part's pods to `storage`; refuses to shrink them.
async fn resize_volumes(
    client: &Client,
    namespace: &str,
    set: &StatefulSet,
    storage: &str,
) -> Result<Vec<String>> {
    if storage.is_empty() {
        return Ok(Vec::new()); // no volumes
    }
    let pods = set
        .spec
        .as_ref()
        .and_then(|spec| spec.replicas)
        .unwrap_or(1);
    let mut problems = Vec::new();
    for ordinal in 0..pods.max(0) {
        let claim = format!("data-{}-{ordinal}", set.name_any());
        problems.extend(resize_volume(client, namespace, &claim, storage).await?);
    }
    Ok(problems)
}

/// Grows the volume `claim` to `storage`; refuses to shrink it.
async fn resize_volume(
    client: &Client,
    namespace: &str,
    claim: &str,
    storage: &str,
) -> Result<Option<String>> {
    let api: Api<PersistentVolumeClaim> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api.get_opt(claim).await? else {
        return Ok(None); // not created yet: the template has the declared size
    };
    let current = existing
        .spec
        .as_ref()
        .and_then(|spec| spec.resources.as_ref())
        .and_then(|resources| resources.requests.as_ref())
        .and_then(|requests| requests.get("storage"))
        .map(|quantity| quantity.0.clone())
        .unwrap_or_default();
    let (Some(have), Some(want)) = (quantity::bytes(&current), quantity::bytes(storage)) else {
        return Ok(None);
    };
    if want < have {
        return Ok(Some(format!(
            "volume {claim} is {current}; it cannot shrink to {storage} (set storage back to at least {current})"
        )));
    }
    if want > have {
        let patch =
            serde_json::json!({ "spec": { "resources": { "requests": { "storage": storage } } } });
        api.patch(claim, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tracing::info!(%claim, from = %current, to = %storage, "growing a volume");
    }
    Ok(None)
}

/// The StatefulSet to apply: as built, but with the volume claim templates the existing one
/// has. The API server refuses any change to them (422), so a new `storage` must reach the
/// claims through [`resize_volume`] only.
async fn keeping_claim_templates(
    client: &Client,
    namespace: &str,
    desired: &StatefulSet,
) -> Result<StatefulSet> {
    let api: Api<StatefulSet> = Api::namespaced(client.clone(), namespace);
    let Some(existing) = api.get_opt(&desired.name_any()).await? else {
        return Ok(desired.clone());
    };
    let mut set = desired.clone();
    if let (Some(spec), Some(existing)) = (set.spec.as_mut(), existing.spec) {
        spec.volume_claim_templates = existing.volume_claim_templates;
    }
    Ok(set)
}

async fn apply_part(
    client: &Client,
    namespace: &str,
    part: &ManagedPart,
    storage: &str,
    applied: &mut Applied,
) -> Result<StatefulSet> {
    apply(client, namespace, &part.service).await?;
    if let Some(headless) = &part.headless_service {
        apply(client, namespace, headless).await?;
    }
    apply(client, namespace, &part.network_policy).await?;
    if let Some(budget) = &part.disruption_budget {
        apply(client, namespace, budget).await?;
    }
    let desired = keeping_claim_templates(client, namespace, &part.stateful_set).await?;
    let set = apply(client, namespace, &desired).await?;
    applied
        .storage_problems
        .extend(resize_volumes(client, namespace, &set, storage).await?);
    Ok(set)
}

fn names<'a>(objects: impl IntoIterator<Item = Option<&'a String>>) -> Vec<String> {
    objects.into_iter().flatten().cloned().collect()
}

/// Applies everything in order, then deletes the orphans. `features`: what the cluster offers
/// (KEDA's objects are looked for only where its CRDs are installed).
pub async fn apply_all(
    client: &Client,
    store: &MemoryStore,
    desired: &Desired,
    features: ClusterFeatures,
) -> Result<Applied> {
    let namespace = store.namespace().ok_or(Error::NoNamespace)?;
    let Desired {
        config_map,
        generated_secrets: _, // created before the build (see `secrets::ensure_generated`)
        redis,
        redis_sentinel,
        qdrant,
        worker,
        worker_disruption_budget,
        worker_scaler,
    } = desired;
    let mut applied = Applied::default();
    apply(client, &namespace, config_map).await?;
    if let (Some(part), Some(managed)) = (redis, &store.spec.redis.managed) {
        applied.redis =
            Some(apply_part(client, &namespace, part, &managed.storage, &mut applied).await?);
    }
    if let Some(part) = redis_sentinel {
        // No volume: its config is written at start.
        applied.redis_sentinel =
            Some(apply_part(client, &namespace, part, "", &mut applied).await?);
    }
    if let (Some(part), Some(managed)) = (qdrant, &store.spec.qdrant.managed) {
        applied.qdrant =
            Some(apply_part(client, &namespace, part, &managed.storage, &mut applied).await?);
    }
    applied.worker = Some(apply(client, &namespace, worker).await?);
    if let Some(budget) = worker_disruption_budget {
        apply(client, &namespace, budget).await?;
    }
    if let Some(scaler) = worker_scaler {
        apply_scaler(client, &namespace, scaler).await?;
        applied.worker_scaler = Some(scaler.describe());
    }

    let selector = all_objects_selector(store);
    let uid = store.uid().ok_or(Error::NoUid)?;
    let parts = [redis, redis_sentinel, qdrant];
    let mut services = names(
        parts
            .iter()
            .map(|p| p.as_ref().and_then(|p| p.service.metadata.name.as_ref())),
    );
    services.extend(names(parts.iter().map(|p| {
        p.as_ref()
            .and_then(|p| p.headless_service.as_ref())
            .and_then(|s| s.metadata.name.as_ref())
    })));
    let sets = names(parts.iter().map(|p| {
        p.as_ref()
            .and_then(|p| p.stateful_set.metadata.name.as_ref())
    }));
    let policies = names(parts.iter().map(|p| {
        p.as_ref()
            .and_then(|p| p.network_policy.metadata.name.as_ref())
    }));
    let mut budgets = names([worker_disruption_budget
        .as_ref()
        .and_then(|b| b.metadata.name.as_ref())]);
    budgets.extend(names(parts.iter().map(|p| {
        p.as_ref()
            .and_then(|p| p.disruption_budget.as_ref())
            .and_then(|b| b.metadata.name.as_ref())
    })));
    let maps = names([config_map.metadata.name.as_ref()]);
    let deployments = names([worker.metadata.name.as_ref()]);
    let mut deleted = Vec::new();
    deleted
        .extend(delete_orphans::<StatefulSet>(client, &namespace, &selector, &uid, &sets).await?);
    deleted
        .extend(delete_orphans::<Service>(client, &namespace, &selector, &uid, &services).await?);
    deleted.extend(
        delete_orphans::<NetworkPolicy>(client, &namespace, &selector, &uid, &policies).await?,
    );
    deleted.extend(
        delete_orphans::<PodDisruptionBudget>(client, &namespace, &selector, &uid, &budgets)
            .await?,
    );
    deleted.extend(
        delete_orphans::<Deployment>(client, &namespace, &selector, &uid, &deployments).await?,
    );
    deleted.extend(delete_orphans::<ConfigMap>(client, &namespace, &selector, &uid, &maps).await?);
    let (autoscalers, keda) = match worker_scaler {
        Some(WorkerScaler::Cpu(hpa)) => (names([hpa.metadata.name.as_ref()]), Vec::new()),
        Some(WorkerScaler::Keda { scaled_object, .. }) => {
            (Vec::new(), names([scaled_object.metadata.name.as_ref()]))
        }
        None => (Vec::new(), Vec::new()),
    };
    deleted.extend(
        delete_orphans::<HorizontalPodAutoscaler>(
            client,
            &namespace,
            &selector,
            &uid,
            &autoscalers,
        )
        .await?,
    );
    if features.keda {
        for resource in [
            autoscale::scaled_object_resource(),
            autoscale::trigger_authentication_resource(),
        ] {
            deleted.extend(
                delete_dynamic_orphans(client, &namespace, &resource, &selector, &uid, &keda)
                    .await?,
            );
        }
    }
    applied.deleted = deleted;
    Ok(applied)
}

/// Applies what scales the workers: an HPA, or KEDA's ScaledObject and its authentication.
async fn apply_scaler(client: &Client, namespace: &str, scaler: &WorkerScaler) -> Result<()> {
    match scaler {
        WorkerScaler::Cpu(hpa) => {
            apply(client, namespace, hpa.as_ref()).await?;
        }
        WorkerScaler::Keda {
            scaled_object,
            authentication,
        } => {
            if let Some(authentication) = authentication {
                apply_dynamic(
                    client,
                    namespace,
                    &autoscale::trigger_authentication_resource(),
                    authentication,
                )
                .await?;
            }
            apply_dynamic(
                client,
                namespace,
                &autoscale::scaled_object_resource(),
                scaled_object,
            )
            .await?;
        }
    }
    Ok(())
}

async fn apply_dynamic(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    object: &DynamicObject,
) -> Result<()> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let mut object = object.clone();
    object.types = Some(TypeMeta {
        api_version: resource.api_version.clone(),
        kind: resource.kind.clone(),
    });
    let params = PatchParams::apply(MANAGER).force();
    api.patch(&object.name_any(), &params, &Patch::Apply(&object))
        .await?;
    Ok(())
}

/// [`delete_orphans`] for a kind known only at run time (KEDA's).
async fn delete_dynamic_orphans(
    client: &Client,
    namespace: &str,
    resource: &ApiResource,
    selector: &str,
    owner_uid: &str,
    keep: &[String],
) -> Result<Vec<String>> {
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), namespace, resource);
    let mut deleted = Vec::new();
    for object in api.list(&ListParams::default().labels(selector)).await? {
        let name = object.name_any();
        if !keep.contains(&name) && owned_by(&object, owner_uid) {
            api.delete(&name, &DeleteParams::background()).await?;
            tracing::info!(kind = %resource.kind, %name, "deleted an object no longer declared");
            deleted.push(format!("{}/{name}", resource.kind));
        }
    }
    Ok(deleted)
}
