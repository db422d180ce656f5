//! Workers that scale with the write queue (`spec.workers.autoscale`).
//!
//! With KEDA's CRDs installed, a KEDA ScaledObject drives the worker Deployment with KEDA's
//! own Redis Streams scaler on the store's consumer group: `lag / lagPerReplica` workers
//! (the entries not yet delivered to a worker), between `min` and `max`. The scaler variant
//! follows the store's Redis: `redis-streams` (one node, or an external `redis://`),
//! `redis-sentinel-streams` (the managed Redis with replicas, or `redis+sentinel://`),
//! `redis-cluster-streams` (`redis+cluster://`). Redis's password reaches KEDA through a
//! TriggerAuthentication naming the same Secret the workers read.
//!
//! Without KEDA, a HorizontalPodAutoscaler on the workers' CPU (a worker busy with a backlog
//! is busy), at least one worker.

use std::collections::BTreeMap;

use k8s_openapi::api::autoscaling::v2::{
    CrossVersionObjectReference, HorizontalPodAutoscaler, HorizontalPodAutoscalerSpec, MetricSpec,
    MetricTarget, ResourceMetricSource,
};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{json, Value};

use super::config::{self, ConfigError};
use super::labels::{metadata, Component};
use super::{secret_refs, sentinel, worker};
use crate::crd::{MemoryStore, WorkerAutoscale};
use memgate_config::{CLUSTER_SCHEME, CONSUMER_GROUP, SENTINEL_SCHEME, WRITES_STREAM};

/// KEDA's API group and version.
pub const KEDA_GROUP: &str = "keda.sh";
pub const KEDA_VERSION: &str = "v1alpha1";
/// The CPU a worker is kept at, on average, without KEDA.
const CPU_UTILIZATION: i32 = 70;

/// What scales a store's workers.
#[derive(Debug, Clone)]
pub enum WorkerScaler {
    /// A KEDA ScaledObject, and the TriggerAuthentication giving it Redis's password (none
    /// when Redis has none).
    Keda {
        scaled_object: Box<DynamicObject>,
        authentication: Option<Box<DynamicObject>>,
    },
    /// Without KEDA: CPU.
    Cpu(Box<HorizontalPodAutoscaler>),
}

/// Equal when they would be applied alike (a `DynamicObject` has no `PartialEq`).
impl PartialEq for WorkerScaler {
    fn eq(&self, other: &Self) -> bool {
        match (self, other) {
            (Self::Cpu(a), Self::Cpu(b)) => a == b,
            (
                Self::Keda {
                    scaled_object: a,
                    authentication: a_auth,
                },
                Self::Keda {
                    scaled_object: b,
                    authentication: b_auth,
                },
            ) => {
                let json = |object: Option<&Box<DynamicObject>>| {
                    object.and_then(|object| serde_json::to_value(object).ok())
                };
                json(Some(a)) == json(Some(b)) && json(a_auth.as_ref()) == json(b_auth.as_ref())
            }
            _ => false,
        }
    }
}

impl WorkerScaler {
    /// What the status says scales the workers.
    pub fn describe(&self) -> &'static str {
        match self {
            Self::Keda { .. } => "KEDA ScaledObject (queue lag)",
            Self::Cpu(_) => "HorizontalPodAutoscaler (CPU; KEDA is not installed)",
        }
    }
}

pub fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        KEDA_GROUP,
        KEDA_VERSION,
        "ScaledObject",
    ))
}

pub fn trigger_authentication_resource() -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk(
        KEDA_GROUP,
        KEDA_VERSION,
        "TriggerAuthentication",
    ))
}

/// The scaler for `store`, when it autoscales; `keda` says whether KEDA's CRDs are installed.
pub fn scaler(store: &MemoryStore, keda: bool) -> Result<Option<WorkerScaler>, ConfigError> {
    let Some(autoscale) = &store.spec.workers.autoscale else {
        return Ok(None);
    };
    if !keda {
        return Ok(Some(WorkerScaler::Cpu(Box::new(cpu_autoscaler(
            store, autoscale,
        )))));
    }
    let trigger = redis_trigger(store, autoscale)?;
    let authentication = redis_password(store).map(|(secret, key)| {
        Box::new(dynamic(
            store,
            &trigger_authentication_resource(),
            json!({"secretTargetRef": [{"parameter": "password", "name": secret, "key": key}]}),
        ))
    });
    let mut trigger_value = json!({
        "type": trigger.kind,
        "metadata": trigger.metadata,
    });
    if authentication.is_some() {
        trigger_value["authenticationRef"] = json!({"name": worker::name(store)});
    }
    let scaled_object = dynamic(
        store,
        &scaled_object_resource(),
        json!({
            "scaleTargetRef": {"name": worker::name(store)},
            "minReplicaCount": autoscale.min,
            "maxReplicaCount": autoscale.max,
            "triggers": [trigger_value],
        }),
    );
    Ok(Some(WorkerScaler::Keda {
        scaled_object: Box::new(scaled_object),
        authentication,
    }))
}

/// A KEDA object named after the worker Deployment, with `spec`.
fn dynamic(store: &MemoryStore, resource: &ApiResource, spec: Value) -> DynamicObject {
    let mut object = DynamicObject::new(&worker::name(store), resource);
    object.metadata = metadata(store, worker::name(store), Component::Worker);
    object.data = json!({ "spec": spec });
    object
}

/// A Redis Streams trigger: the scaler's type and metadata.
struct Trigger {
    kind: &'static str,
    metadata: BTreeMap<&'static str, String>,
}

fn redis_trigger(store: &MemoryStore, autoscale: &WorkerAutoscale) -> Result<Trigger, ConfigError> {
    let rendered = config::proxy_config(store)?;
    let mut metadata = BTreeMap::from([
        (
            "stream",
            format!("{}{WRITES_STREAM}", rendered.key_prefix()),
        ),
        ("consumerGroup", CONSUMER_GROUP.to_string()),
        ("lagCount", autoscale.lag_per_replica.to_string()),
    ]);
    let url = config::redis_url(store);
    let kind = if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        let (hosts, master) = rest
            .split_once('/')
            .unwrap_or((rest, sentinel::MASTER_NAME));
        metadata.insert("addresses", without_user(hosts));
        metadata.insert(
            "sentinelMaster",
            master.split('/').next().unwrap_or(master).into(),
        );
        "redis-sentinel-streams"
    } else if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        metadata.insert("addresses", without_user(rest.trim_end_matches('/')));
        "redis-cluster-streams"
    } else {
        let tls = url.starts_with("rediss://");
        let rest = url.split_once("://").map_or(url.as_str(), |(_, rest)| rest);
        let (address, database) = rest.split_once('/').unwrap_or((rest, ""));
        metadata.insert("address", without_user(address));
        if !database.is_empty() {
            metadata.insert("databaseIndex", database.to_string());
        }
        if tls {
            metadata.insert("enableTLS", "true".into());
        }
        "redis-streams"
    };
    Ok(Trigger { kind, metadata })
}

/// `host:port[,…]` without a `user@` (the password is never in the URL).
fn without_user(hosts: &str) -> String {
    hosts
        .rsplit_once('@')
        .map_or(hosts, |(_, hosts)| hosts)
        .to_string()
}

/// The Secret and key holding Redis's password, when it has one.
fn redis_password(store: &MemoryStore) -> Option<(String, String)> {
    secret_refs(store)
        .into_iter()
        .find(|(env, _)| *env == "MEMGATE_REDIS__PASSWORD")
        .map(|(_, reference)| (reference.name, reference.key))
}

fn cpu_autoscaler(store: &MemoryStore, autoscale: &WorkerAutoscale) -> HorizontalPodAutoscaler {
    HorizontalPodAutoscaler {
        metadata: metadata(store, worker::name(store), Component::Worker),
        spec: Some(HorizontalPodAutoscalerSpec {
            scale_target_ref: CrossVersionObjectReference {
                api_version: Some("apps/v1".into()),
                kind: "Deployment".into(),
                name: worker::name(store),
            },
            min_replicas: Some(autoscale.min.max(1)),
            max_replicas: autoscale.max.max(1),
            metrics: Some(vec![MetricSpec {
                type_: "Resource".into(),
                resource: Some(ResourceMetricSource {
                    name: "cpu".into(),
                    target: MetricTarget {
                        type_: "Utilization".into(),
                        average_utilization: Some(CPU_UTILIZATION),
                        ..Default::default()
                    },
                }),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
