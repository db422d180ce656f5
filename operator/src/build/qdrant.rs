//! A managed Qdrant: a StatefulSet with a volume, ready when `/readyz` answers (no liveness
//! probe: restarting Qdrant while it loads a large collection only makes it slower), and a
//! Service with the HTTP (6333) and gRPC (6334) ports.

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
use super::redis::volume_claim;
use super::security::{container_security, pod_security, secret_env};
use crate::crd::{ManagedQdrant, MemoryStore, SecretKeyRef};

pub const HTTP_PORT: i32 = 6333;
pub const GRPC_PORT: i32 = 6334;
const UID: i64 = 1000;

pub fn name(store: &MemoryStore) -> String {
    format!("{}-qdrant", store.name_any())
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
    Container {
        name: "qdrant".into(),
        image: Some(managed.image.clone()),
        env: Some(vec![
            secret_env("QDRANT__SERVICE__API_KEY", &api_key_ref(store, managed)),
            env("QDRANT__STORAGE__STORAGE_PATH", "/qdrant/storage"),
            env("QDRANT__STORAGE__SNAPSHOTS_PATH", "/qdrant/snapshots"),
            env("QDRANT__TELEMETRY_DISABLED", "true"),
            // The root filesystem is read-only: the marker file goes to the volume.
            env(
                "QDRANT_INIT_FILE_PATH",
                "/qdrant/storage/.qdrant-initialized",
            ),
        ]),
        ports: Some(vec![port("http", HTTP_PORT), port("grpc", GRPC_PORT)]),
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
            replicas: Some(1),
            service_name: Some(name(store)),
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
