//! A managed Redis: a StatefulSet with a volume per pod and append-only persistence, and its
//! Service. With `replicas` 3 and up, a primary and replicas: pod 0 starts as the primary,
//! every other pod as its replica, and the Sentinels ([`super::sentinel`]) watch them and
//! promote a replica when the primary is lost. A pod (re)starting asks the Sentinels which
//! node is the primary now and replicates it (or is it); each pod announces its stable name
//! (`{pod}.{name}-headless.{namespace}.svc`), so a restarted pod with a new IP is still
//! known. memgate reaches the primary through the Sentinels.
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
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Service, TCPSocketAction, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{labels, metadata, selector, Component};
use super::placement::{self, pod_host};
use super::quantity;
use super::security::{container_security, pod_security, secret_env};
use super::sentinel;
use crate::crd::{ManagedRedis, MemoryStore, SecretKeyRef};

pub const PORT: i32 = 6379;
const UID: i64 = 999;
const GID: i64 = 1000;

pub fn name(store: &MemoryStore) -> String {
    format!("{}-redis", store.name_any())
}

/// The headless Service giving each Redis pod of a replicated Redis its stable name.
pub fn headless_name(store: &MemoryStore) -> String {
    format!("{}-redis-headless", store.name_any())
}

/// The stable name of Redis pod `ordinal`.
pub fn pod_name(store: &MemoryStore, ordinal: u32) -> String {
    pod_host(store, &name(store), ordinal, &headless_name(store))
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

/// The start script of a node of a replicated Redis: the primary the Sentinels name (none yet:
/// pod 0), replicated unless it is this pod. `$REDIS_PASSWORD` also authenticates to the
/// primary (`masterauth`).
fn replicated_start_script(store: &MemoryStore, resources: &ResourceRequirements) -> String {
    let args = args(resources)
        .iter()
        .map(|arg| match arg.as_str() {
            "$(REDIS_PASSWORD)" => "\"$REDIS_PASSWORD\"".to_string(),
            "" => "''".to_string(),
            other => other.to_string(),
        })
        .collect::<Vec<_>>()
        .join(" ");
    format!(
        r#"set -eu
me="$(hostname).{headless}.{namespace}.svc"
primary="$(redis-cli -h {sentinels} -p {sentinel_port} sentinel get-master-addr-by-name {master} 2>/dev/null | head -n 1 || true)"
if [ -z "$primary" ]; then primary="{first}"; fi
set -- redis-server {args} --masterauth "$REDIS_PASSWORD" --replica-announce-ip "$me"
if [ "$primary" != "$me" ]; then set -- "$@" --replicaof "$primary" {port}; fi
exec "$@"
"#,
        headless = headless_name(store),
        namespace = store.namespace().unwrap_or_else(|| "default".into()),
        sentinels = sentinel::service_name(store),
        sentinel_port = sentinel::PORT,
        master = sentinel::MASTER_NAME,
        first = pod_name(store, 0),
        port = PORT,
    )
}

fn container(store: &MemoryStore, managed: &ManagedRedis) -> Container {
    let resources = managed.resources.clone().unwrap_or_else(default_resources);
    let ping = "redis-cli -a \"$REDIS_PASSWORD\" --no-auth-warning ping | grep -q PONG";
    let (command, args) = if managed.replicated() {
        (
            vec!["sh".into(), "-c".into()],
            vec![replicated_start_script(store, &resources)],
        )
    } else {
        (vec!["redis-server".into()], args(&resources))
    };
    Container {
        name: "redis".into(),
        image: Some(managed.image.clone()),
        command: Some(command),
        args: Some(args),
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
            replicas: Some(managed.replicas),
            service_name: Some(if managed.replicated() {
                headless_name(store)
            } else {
                name(store)
            }),
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
                    affinity: managed
                        .replicated()
                        .then(|| placement::spread(store, Component::Redis)),
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
    placement::service(store, Component::Redis, name(store), &[("redis", PORT)])
}

/// The headless Service and the disruption budget of a replicated Redis.
pub fn replicated_extras(store: &MemoryStore) -> (Service, PodDisruptionBudget) {
    (
        placement::headless_service(
            store,
            Component::Redis,
            headless_name(store),
            &[("redis", PORT)],
        ),
        placement::disruption_budget(store, Component::Redis, name(store)),
    )
}
