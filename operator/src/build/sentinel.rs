//! The Redis Sentinels of a replicated Redis: three pods that watch the primary and its
//! replicas, agree (a quorum of two) that the primary is down, and promote a replica. memgate
//! asks them which node is the primary (`redis+sentinel://` with each Sentinel's stable name)
//! and follows a failover.
//!
//! Sentinel rewrites its config file, so each pod writes a fresh one to an `emptyDir` at
//! start: the primary the other Sentinels name (none yet: Redis pod 0), the password, and the
//! pod's own stable name to announce (`sentinel announce-hostnames`: a restarted pod with a new
//! IP is still known).

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, ExecAction, PodSpec, PodTemplateSpec, Probe,
    Service, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::ResourceExt;

use super::labels::{labels, metadata, selector, Component};
use super::placement::{self, pod_host};
use super::redis;
use super::security::{container_security, pod_security, secret_env};
use crate::crd::{ManagedRedis, MemoryStore};

pub const PORT: i32 = 26379;
/// How many Sentinels watch a replicated Redis, and how many must agree it is down.
pub const SENTINELS: u32 = 3;
pub const QUORUM: u32 = 2;
/// The name the Sentinels know the primary by.
pub const MASTER_NAME: &str = "memgate";
const UID: i64 = 999;
const GID: i64 = 1000;

/// The StatefulSet and its headless Service.
pub fn name(store: &MemoryStore) -> String {
    format!("{}-redis-sentinel", store.name_any())
}

/// The Service any Sentinel answers on (for a Redis pod asking which node is the primary).
pub fn service_name(store: &MemoryStore) -> String {
    format!("{}-redis-sentinel-any", store.name_any())
}

/// `redis+sentinel://` with every Sentinel's stable name, for memgate's `redis.url`.
pub fn url(store: &MemoryStore) -> String {
    let hosts: Vec<String> = (0..SENTINELS)
        .map(|ordinal| {
            format!(
                "{}:{PORT}",
                pod_host(store, &name(store), ordinal, &name(store))
            )
        })
        .collect();
    format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
}

fn start_script(store: &MemoryStore) -> String {
    format!(
        r#"set -eu
me="$(hostname).{headless}.{namespace}.svc"
primary="$(redis-cli -h {any} -p {port} sentinel get-master-addr-by-name {master} 2>/dev/null | head -n 1 || true)"
if [ -z "$primary" ]; then primary="{first}"; fi
cat > /sentinel/sentinel.conf <<CONF
port {port}
dir /sentinel
sentinel resolve-hostnames yes
sentinel announce-hostnames yes
sentinel announce-ip $me
sentinel monitor {master} $primary {redis_port} {quorum}
sentinel auth-pass {master} $REDIS_PASSWORD
sentinel down-after-milliseconds {master} 5000
sentinel failover-timeout {master} 60000
sentinel parallel-syncs {master} 1
CONF
exec redis-server /sentinel/sentinel.conf --sentinel
"#,
        headless = name(store),
        namespace = store.namespace().unwrap_or_else(|| "default".into()),
        any = service_name(store),
        port = PORT,
        master = MASTER_NAME,
        first = redis::pod_name(store, 0),
        redis_port = redis::PORT,
        quorum = QUORUM,
    )
}

fn container(store: &MemoryStore, managed: &ManagedRedis) -> Container {
    let ping = format!("redis-cli -p {PORT} ping | grep -q PONG");
    Container {
        name: "sentinel".into(),
        image: Some(managed.image.clone()),
        command: Some(vec!["sh".into(), "-c".into()]),
        args: Some(vec![start_script(store)]),
        env: Some(vec![secret_env(
            "REDIS_PASSWORD",
            &redis::password_ref(store, managed),
        )]),
        ports: Some(vec![ContainerPort {
            name: Some("sentinel".into()),
            container_port: PORT,
            ..Default::default()
        }]),
        readiness_probe: Some(Probe {
            exec: Some(ExecAction {
                command: Some(vec!["sh".into(), "-c".into(), ping]),
            }),
            period_seconds: Some(5),
            timeout_seconds: Some(2),
            ..Default::default()
        }),
        resources: Some(crate::build::resources("50m", "64Mi", "128Mi")),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![VolumeMount {
            name: "sentinel".into(),
            mount_path: "/sentinel".into(),
            ..Default::default()
        }]),
        ..Default::default()
    }
}

/// `secret_hash`: the digest of the Redis password, so a rotation rolls the Sentinels too.
pub fn stateful_set(
    store: &MemoryStore,
    managed: &ManagedRedis,
    secret_hash: Option<&str>,
) -> StatefulSet {
    StatefulSet {
        metadata: metadata(store, name(store), Component::Sentinel),
        spec: Some(StatefulSetSpec {
            replicas: Some(SENTINELS as i32),
            service_name: Some(name(store)),
            // All at once: a Sentinel does not wait for the others to start.
            pod_management_policy: Some("Parallel".into()),
            selector: LabelSelector {
                match_labels: Some(selector(store, Component::Sentinel)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(store, Component::Sentinel)),
                    annotations: secret_hash.map(|hash| {
                        std::collections::BTreeMap::from([(
                            super::SECRET_HASH.to_string(),
                            hash.to_string(),
                        )])
                    }),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(store, managed)],
                    affinity: Some(placement::spread(store, Component::Sentinel)),
                    volumes: Some(vec![Volume {
                        name: "sentinel".into(),
                        empty_dir: Some(EmptyDirVolumeSource::default()),
                        ..Default::default()
                    }]),
                    security_context: Some(pod_security(UID, GID)),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service any ready Sentinel answers on.
pub fn service(store: &MemoryStore) -> Service {
    placement::service(
        store,
        Component::Sentinel,
        service_name(store),
        &[("sentinel", PORT)],
    )
}

/// The headless Service (each Sentinel's stable name) and the disruption budget.
pub fn extras(store: &MemoryStore) -> (Service, PodDisruptionBudget) {
    (
        placement::headless_service(
            store,
            Component::Sentinel,
            name(store),
            &[("sentinel", PORT)],
        ),
        placement::disruption_budget(store, Component::Sentinel, name(store)),
    )
}
