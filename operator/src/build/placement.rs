//! Where the pods of a replicated part go, and how many may be down at once: spread over
//! nodes (preferred pod anti-affinity on the hostname: a small cluster still schedules them),
//! one voluntary disruption at a time (a PodDisruptionBudget), and a headless Service that
//! gives each pod a stable name for its peers (`{pod}.{service}.{namespace}.svc`).

use k8s_openapi::api::core::v1::{
    Affinity, PodAffinityTerm, PodAntiAffinity, Service, ServicePort, ServiceSpec,
    WeightedPodAffinityTerm,
};
use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{metadata, selector, Component};
use crate::crd::MemoryStore;

/// The hostname label: one pod of a part per node, where the scheduler can.
pub const HOSTNAME_TOPOLOGY: &str = "kubernetes.io/hostname";

/// Prefer nodes without another pod of `component`.
pub fn spread(store: &MemoryStore, component: Component) -> Affinity {
    Affinity {
        pod_anti_affinity: Some(PodAntiAffinity {
            preferred_during_scheduling_ignored_during_execution: Some(vec![
                WeightedPodAffinityTerm {
                    weight: 100,
                    pod_affinity_term: PodAffinityTerm {
                        label_selector: Some(LabelSelector {
                            match_labels: Some(selector(store, component)),
                            ..Default::default()
                        }),
                        topology_key: HOSTNAME_TOPOLOGY.into(),
                        ..Default::default()
                    },
                },
            ]),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// At most one pod of `component` voluntarily down at a time; named `name`.
pub fn disruption_budget(
    store: &MemoryStore,
    component: Component,
    name: String,
) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: metadata(store, name, component),
        spec: Some(PodDisruptionBudgetSpec {
            max_unavailable: Some(IntOrString::Int(1)),
            selector: Some(LabelSelector {
                match_labels: Some(selector(store, component)),
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The Service `name` in front of `component`'s pods on `ports` (`(name, number)`).
pub fn service(
    store: &MemoryStore,
    component: Component,
    name: String,
    ports: &[(&str, i32)],
) -> Service {
    Service {
        metadata: metadata(store, name, component),
        spec: Some(ServiceSpec {
            selector: Some(selector(store, component)),
            ports: Some(
                ports
                    .iter()
                    .map(|(name, port)| ServicePort {
                        name: Some((*name).into()),
                        port: *port,
                        target_port: Some(IntOrString::String((*name).into())),
                        ..Default::default()
                    })
                    .collect(),
            ),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// The headless Service of `component`'s pods (`name`), ready or not (peers find each other
/// while they start).
pub fn headless_service(
    store: &MemoryStore,
    component: Component,
    name: String,
    ports: &[(&str, i32)],
) -> Service {
    let mut service = service(store, component, name, ports);
    if let Some(spec) = service.spec.as_mut() {
        spec.cluster_ip = Some("None".into());
        spec.publish_not_ready_addresses = Some(true);
    }
    service
}

/// The DNS name of pod `ordinal` of StatefulSet `set` behind the headless Service `service`.
pub fn pod_host(store: &MemoryStore, set: &str, ordinal: u32, service: &str) -> String {
    format!(
        "{set}-{ordinal}.{service}.{}.svc",
        store.namespace().unwrap_or_else(|| "default".into())
    )
}
