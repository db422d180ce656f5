//! The worker Deployment (the memgate image in the `worker` role) and, with more than one
//! replica, its PodDisruptionBudget.
//!
//! Its pod template carries `memgate.dev/config-hash`: a hash of the rendered config and of the
//! referenced Secrets' data, so a change to either rolls the workers.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    PodSpec, PodTemplateSpec, Probe, ResourceRequirements, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::config::{ADMIN_PORT, CONFIG_DIR, CONFIG_KEY};
use super::labels::{labels, metadata, selector, Component};
use super::security::{container_security, pod_security};
use crate::crd::MemoryStore;

/// The pod-template annotation whose change rolls the workers.
pub const CONFIG_HASH: &str = "memgate.dev/config-hash";
/// The image when the spec names none: this operator's own version.
pub const DEFAULT_IMAGE: &str = concat!("ghcr.io/memgate/memgate:", env!("CARGO_PKG_VERSION"));
/// Seconds a worker gets to finish its jobs after SIGTERM (`worker.drainTimeout` is 30 s).
const TERMINATION_GRACE_SECONDS: i64 = 40;
const UID: i64 = 65532;

pub fn name(store: &MemoryStore) -> String {
    format!("{}-worker", store.name_any())
}

/// The image of stores that name none, as the operator was started with (`--default-image`,
/// which the Helm chart sets to its own image); [`DEFAULT_IMAGE`] when unset.
static CONFIGURED_DEFAULT_IMAGE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Sets the default image once, at start.
pub fn set_default_image(image: String) {
    let _ = CONFIGURED_DEFAULT_IMAGE.set(image);
}

pub fn image(store: &MemoryStore) -> String {
    store.spec.image.clone().unwrap_or_else(|| {
        CONFIGURED_DEFAULT_IMAGE
            .get()
            .cloned()
            .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
    })
}

fn default_resources() -> ResourceRequirements {
    crate::build::resources("100m", "128Mi", "512Mi")
}

fn probe(path: &str) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(10),
        ..Default::default()
    }
}

fn container(store: &MemoryStore, env: Vec<EnvVar>) -> Container {
    Container {
        name: "worker".into(),
        image: Some(image(store)),
        args: Some(vec![
            "worker".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env: Some(env),
        ports: Some(vec![ContainerPort {
            name: Some("admin".into()),
            container_port: i32::from(ADMIN_PORT),
            ..Default::default()
        }]),
        readiness_probe: Some(probe("/readyz")),
        liveness_probe: Some(probe("/healthz")),
        resources: Some(
            store
                .spec
                .workers
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            VolumeMount {
                name: "config".into(),
                mount_path: CONFIG_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            },
            VolumeMount {
                name: "tmp".into(),
                mount_path: "/tmp".into(),
                ..Default::default()
            },
        ]),
        ..Default::default()
    }
}

/// The Deployment; `env` holds the secrets as Secret references and the log format.
pub fn deployment(
    store: &MemoryStore,
    config_map: &str,
    env: Vec<EnvVar>,
    config_hash: &str,
) -> Deployment {
    Deployment {
        metadata: metadata(store, name(store), Component::Worker),
        spec: Some(DeploymentSpec {
            // An autoscaler sets the count; the operator leaves it alone then.
            replicas: store
                .spec
                .workers
                .autoscale
                .is_none()
                .then_some(store.spec.workers.replicas),
            selector: LabelSelector {
                match_labels: Some(selector(store, Component::Worker)),
                ..Default::default()
            },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(store, Component::Worker)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH.to_string(),
                        config_hash.to_string(),
                    )])),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    containers: vec![container(store, env)],
                    volumes: Some(vec![
                        Volume {
                            name: "config".into(),
                            config_map: Some(ConfigMapVolumeSource {
                                name: config_map.to_string(),
                                ..Default::default()
                            }),
                            ..Default::default()
                        },
                        Volume {
                            name: "tmp".into(),
                            empty_dir: Some(EmptyDirVolumeSource::default()),
                            ..Default::default()
                        },
                    ]),
                    security_context: Some(pod_security(UID, UID)),
                    termination_grace_period_seconds: Some(TERMINATION_GRACE_SECONDS),
                    automount_service_account_token: Some(false),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one worker down at a time for voluntary disruptions; only with two or more.
pub fn disruption_budget(store: &MemoryStore) -> Option<PodDisruptionBudget> {
    let several = match &store.spec.workers.autoscale {
        Some(autoscale) => autoscale.max > 1,
        None => store.spec.workers.replicas > 1,
    };
    several.then(|| PodDisruptionBudget {
        metadata: metadata(store, name(store), Component::Worker),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(store, Component::Worker)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    })
}
