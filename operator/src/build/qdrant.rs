//! A managed Qdrant: a StatefulSet with a volume, ready when `/readyz` answers (no liveness
//! probe: restarting Qdrant while it loads a large collection only makes it slower), and a
//! Service with the HTTP (6333) and gRPC (6334) ports.
//!
//! With `replicas` 3 and up, Qdrant's distributed mode: each peer talks to the others on the
//! peer-to-peer port (6335) under its stable name (`{pod}.{name}-headless.{namespace}.svc`);
//! pod 0 starts the cluster (`--uri`), every other pod joins it through pod 0 (`--bootstrap`).
//! A restarted peer finds its cluster in its own volume. Any peer answers any request (Qdrant
//! routes it to the shards' peers), so memgate keeps using the one Service.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, Service, ServicePort, ServiceSpec, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{labels, metadata, selector, Component};
use super::placement::{self, pod_host};
use super::redis::volume_claim;
use super::security::{container_security, pod_security, secret_env};
use crate::crd::{ManagedQdrant, MemoryStore, SecretKeyRef};

pub const HTTP_PORT: i32 = 6333;
pub const GRPC_PORT: i32 = 6334;
/// The peers' port, in the distributed mode.
pub const P2P_PORT: i32 = 6335;
const UID: i64 = 1000;

pub fn name(store: &MemoryStore) -> String {
    format!("{}-qdrant", store.name_any())
}

/// The headless Service giving each peer its stable name.
pub fn headless_name(store: &MemoryStore) -> String {
    format!("{}-qdrant-headless", store.name_any())
}

/// Pod 0 starts the cluster; the others join it. Each announces its stable name.
fn distributed_start_script(store: &MemoryStore) -> String {
    let first = pod_host(store, &name(store), 0, &headless_name(store));
    format!(
        r#"set -eu
me="http://$(hostname).{headless}.{namespace}.svc:{p2p}"
if [ "$(hostname)" = "{name}-0" ]; then exec /qdrant/qdrant --uri "$me"; fi
exec /qdrant/qdrant --bootstrap "http://{first}:{p2p}" --uri "$me"
"#,
        headless = headless_name(store),
        namespace = store.namespace().unwrap_or_else(|| "default".into()),
        p2p = P2P_PORT,
        name = name(store),
    )
}

pub fn generated_secret(store: &MemoryStore) -> SecretKeyRef {
    SecretKeyRef {
        name: format!("{}-qdrant-auth", store.name_any()),
        key: "api-key".into(),
    }
}

pub fn api_key_ref(store: &MemoryStore, managed: &ManagedQdrant) -> SecretKeyRef {
    managed
        .api_key_secret_ref
        .clone()
        .unwrap_or_else(|| generated_secret(store))
}

fn default_resources() -> ResourceRequirements {
    crate::build::resources("250m", "1Gi", "2Gi")
}

fn env(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.into(),
        value: Some(value.into()),
        ..Default::default()
    }
}

fn mount(name: &str, path: &str) -> VolumeMount {
    VolumeMount {
        name: name.into(),
        mount_path: path.into(),
        ..Default::default()
    }
}

fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.into(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Default::default()
    }
}

fn port(name: &str, number: i32) -> ContainerPort {
    ContainerPort {
        name: Some(name.into()),
        container_port: number,
        ..Default::default()
    }
}

fn container(store: &MemoryStore, managed: &ManagedQdrant) -> Container {
    let mut environment = vec![
        secret_env("QDRANT__SERVICE__API_KEY", &api_key_ref(store, managed)),
        env("QDRANT__STORAGE__STORAGE_PATH", "/qdrant/storage"),
        env("QDRANT__STORAGE__SNAPSHOTS_PATH", "/qdrant/snapshots"),
        env("QDRANT__TELEMETRY_DISABLED", "true"),
        // The root filesystem is read-only: the marker file goes to the volume.
        env(
            "QDRANT_INIT_FILE_PATH",
            "/qdrant/storage/.qdrant-initialized",
        ),
    ];
    let mut ports = vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)];
    let (command, args) = if managed.distributed() {
        environment.push(env("QDRANT__CLUSTER__ENABLED", "true"));
        environment.push(env("QDRANT__CLUSTER__P2P__PORT", &P2P_PORT.to_string()));
        ports.push(port("p2p", P2P_PORT));
        (
            Some(vec!["sh".into(), "-c".into()]),
            Some(vec![distributed_start_script(store)]),
        )
    } else {
        (None, None)
    };
    Container {
        name: "qdrant".into(),
        image: Some(managed.image.clone()),
        command,
        args,
        env: Some(environment),
        ports: Some(ports),
        readiness_probe: Some(Probe {
            http_get: Some(HTTPGetAction {
                path: Some("/readyz".into()),
                port: IntOrString::String("http".into()),
                ..Default::default()
            }),
            period_seconds: Some(5),
            ..Default::default()
        }),
        resources: Some(managed.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount("data", "/qdrant/storage"),
            mount("snapshots", "/qdrant/snapshots"),
            mount("tmp", "/tmp"),
        ]),
        ..Default::default()
    }
}

/// `secret_hash`: the digest of the Secret value it reads, so a rotation rolls it.
pub fn stateful_set(
    store: &MemoryStore,
    managed: &ManagedQdrant,
    secret_hash: Option<&str>,
) -> StatefulSet {
    StatefulSet {
        metadata: metadata(store, name(store), Component::Qdrant),
        spec: Some(StatefulSetSpec {
            replicas: Some(managed.replicas),
            service_name: Some(if managed.distributed() {
                headless_name(store)
            } else {
                name(store)
            }),
            selector: LabelSelector {
                match_labels: Some(selector(store, Component::Qdrant)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(store, Component::Qdrant)),
                    annotations: secret_hash.map(|hash| {
                        BTreeMap::from([(super::SECRET_HASH.to_string(), hash.to_string())])
                    }),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(store, managed)],
                    volumes: Some(vec![empty_dir("snapshots"), empty_dir("tmp")]),
                    affinity: managed
                        .distributed()
                        .then(|| placement::spread(store, Component::Qdrant)),
                    security_context: Some(pod_security(UID, UID)),
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
    let port = |name: &str, number: i32| ServicePort {
        name: Some(name.into()),
        port: number,
        target_port: Some(IntOrString::String(name.into())),
        ..Default::default()
    };
    Service {
        metadata: metadata(store, name(store), Component::Qdrant),
        spec: Some(ServiceSpec {
            selector: Some(selector(store, Component::Qdrant)),
            ports: Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The headless Service (each peer's stable name, the peer-to-peer port) and the disruption
/// budget of a distributed Qdrant.
pub fn distributed_extras(
    store: &MemoryStore,
) -> (Service, k8s_openapi::api::policy::v1::PodDisruptionBudget) {
    (
        placement::headless_service(
            store,
            Component::Qdrant,
            headless_name(store),
            &[("http", HTTP_PORT), ("grpc", GRPC_PORT), ("p2p", P2P_PORT)],
        ),
        placement::disruption_budget(store, Component::Qdrant, name(store)),
    )
}
