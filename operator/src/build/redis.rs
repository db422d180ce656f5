//! A managed Redis: a StatefulSet with a volume per pod and append-only persistence, and its
//! Service.
//!
//! `appendonly yes` + `appendfsync everysec`: an acknowledged write survives a Redis restart.
//! A crash (the process SIGKILLed or OOM-killed, or its node lost) can lose what Redis
//! acknowledged in its last second or two: `everysec` trades that window for write latency.
//! memgate's own history test runs Redis with `appendfsync always`, which closes it.
//! `maxmemory` is about 80% of the memory limit with `volatile-lru`: under memory pressure
//! only keys with a TTL (the caches) are evicted, never the write queue's streams.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ExecAction, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort, ServiceSpec,
    TCPSocketAction, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{labels, metadata, selector, Component};
use super::quantity;
use super::security::{container_security, pod_security, secret_env};
use crate::crd::{ManagedRedis, MemoryStore, SecretKeyRef};

pub const PORT: i32 = 6379;
const UID: i64 = 999;
const GID: i64 = 1000;

pub fn name(store: &MemoryStore) -> String {
    format!("{}-redis", store.name_any())
}

/// The generated password's Secret, when the spec names none.
pub fn generated_secret(store: &MemoryStore) -> SecretKeyRef {
    SecretKeyRef {
        name: format!("{}-redis-auth", store.name_any()),
        key: "password".into(),
    }
}

/// The password the pods use: the spec's Secret, or the generated one.
pub fn password_ref(store: &MemoryStore, managed: &ManagedRedis) -> SecretKeyRef {
    managed
        .password_secret_ref
        .clone()
        .unwrap_or_else(|| generated_secret(store))
}

fn default_resources() -> ResourceRequirements {
    crate::build::resources("100m", "256Mi", "512Mi")
}

/// `maxmemory` in bytes: 80% of the memory limit (else of the request).
pub fn max_memory(resources: &ResourceRequirements) -> Option<u64> {
    let memory = |map: &Option<BTreeMap<String, Quantity>>| {
        map.as_ref()
            .and_then(|map| map.get("memory"))
            .and_then(|q| quantity::bytes(&q.0))
    };
    memory(&resources.limits)
        .or_else(|| memory(&resources.requests))
        .map(|bytes| bytes / 5 * 4)
}

fn args(resources: &ResourceRequirements) -> Vec<String> {
    let mut args: Vec<String> = [
        "--port",
        "6379",
        "--dir",
        "/data",
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
        "--requirepass",
        "$(REDIS_PASSWORD)",
        "--maxmemory-policy",
        "volatile-lru",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    if let Some(bytes) = max_memory(resources) {
        args.extend(["--maxmemory".to_string(), bytes.to_string()]);
    }
    args
}

fn container(store: &MemoryStore, managed: &ManagedRedis) -> Container {
    let resources = managed.resources.clone().unwrap_or_else(default_resources);
    let ping = "redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep -q PONG";
    Container {
        name: "redis".into(),
        image: Some(managed.image.clone()),
        command: Some(vec!["redis-server".into()]),
        args: Some(args(&resources)),
        env: Some(vec![secret_env(
            "REDIS_PASSWORD",
            &password_ref(store, managed),
        )]),
        ports: Some(vec![ContainerPort {
            name: Some("redis".into()),
            container_port: PORT,
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), ping.into()]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            ..Default::default()
        }),
        liveness_probe: Some(Probe {
            tcp_socket: Some(TCPSocketAction {
                port: IntOrString::Int(PORT),
                ..Default::default()
            }),
            initial_delay_seconds: Some(15),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..Default::default()
        }),
        resources: Some(resources),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "data".into(),
            mount_path: "/data".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// The volume claim template: `data`, ReadWriteOnce, `storage` in size.
pub fn volume_claim(storage: &str, storage_class_name: Option<String>) -> PersistentVolumeClaim {
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some("data".into()),
            ..Default::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name,
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".to_string(),
                    Quantity(storage.to_string()),
                )])),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// `secret_hash`: the digest of the Secret value it reads, so a rotation rolls it.
pub fn stateful_set(
    store: &MemoryStore,
    managed: &ManagedRedis,
    secret_hash: Option<&str>,
) -> StatefulSet {
    StatefulSet {
        metadata: metadata(store, name(store), Component::Redis),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name(store)),
            selector: LabelSelector {
                match_labels: Some(selector(store, Component::Redis)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(store, Component::Redis)),
                    annotations: secret_hash.map(|hash| {
                        BTreeMap::from([(super::SECRET_HASH.to_string(), hash.to_string())])
                    }),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(store, managed)],
                    security_context: Some(pod_security(UID, GID)),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            volume_claim_templates: Some(vec![volume_claim(
                &managed.storage,
                managed.storage_class_name.clone(),
            )]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

pub fn service(store: &MemoryStore) -> Service {
    Service {
        metadata: metadata(store, name(store), Component::Redis),
        spec: Some(ServiceSpec {
            selector: Some(selector(store, Component::Redis)),
            ports: Some(vec![ServicePort {
                name: Some("redis".into()),
                port: PORT,
                target_port: Some(IntOrString::String("redis".into())),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    }
}
