//! The NetworkPolicy in front of a managed part (Redis, Qdrant): only the store's own pods
//! reach it, on its ports: its workers, the pods its sidecar was injected into (labelled
//! [`STORE_LABEL`] by the webhook), and the part's own pods (replicas among themselves). Where
//! the cluster's network plugin enforces policies, nothing else in the cluster can read or
//! write the memories behind memgate's back.

use std::collections::BTreeMap;

use k8s_openapi::api::networking::v1::{
    NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
    NetworkPolicySpec,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::labels::{metadata, selector, Component};
use crate::crd::MemoryStore;

/// The label the webhook puts on every pod it injects the sidecar into: the store's name.
pub const STORE_LABEL: &str = "memgate.dev/store";

/// The policy's name for `component` (`{store}-{component}`).
pub fn name(store: &MemoryStore, component: Component) -> String {
    format!("{}-{}", store.name_any(), component.as_str())
}

fn peer(labels: BTreeMap<String, String>) -> NetworkPolicyPeer {
    NetworkPolicyPeer {
        pod_selector: Some(LabelSelector {
            match_labels: Some(labels),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Ingress to `component`'s pods: its clients (and the pods of `peers`, the store's other
/// parts that talk to it) on `ports`, its own pods on any port.
pub fn policy(
    store: &MemoryStore,
    component: Component,
    ports: &[i32],
    peers: &[Component],
) -> NetworkPolicy {
    let mut clients = vec![
        peer(selector(store, Component::Worker)),
        peer(BTreeMap::from([(
            STORE_LABEL.to_string(),
            store.name_any(),
        )])),
    ];
    clients.extend(peers.iter().map(|other| peer(selector(store, *other))));
    NetworkPolicy {
        metadata: metadata(store, name(store, component), component),
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(selector(store, component)),
                ..Default::default()
            }),
            policy_types: Some(vec!["Ingress".into()]),
            ingress: Some(vec![
                NetworkPolicyIngressRule {
                    from: Some(clients),
                    ports: Some(
                        ports
                            .iter()
                            .map(|port| NetworkPolicyPort {
                                port: Some(IntOrString::Int(*port)),
                                protocol: Some("TCP".into()),
                                ..Default::default()
                            })
                            .collect(),
                    ),
                },
                NetworkPolicyIngressRule {
                    from: Some(vec![peer(selector(store, component))]),
                    ports: None,
                },
            ]),
            ..Default::default()
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemoryStore {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
    }

    #[test]
    fn only_the_stores_workers_and_injected_pods_reach_redis() {
        let store = store();
        let policy = policy(&store, Component::Redis, &[6379], &[]);
        let spec = policy.spec.expect("spec");
        assert_eq!(
            spec.pod_selector.and_then(|s| s.match_labels),
            Some(selector(&store, Component::Redis))
        );
        assert_eq!(spec.policy_types, Some(vec!["Ingress".to_string()]));
        let rules = spec.ingress.expect("rules");
        let from: Vec<BTreeMap<String, String>> = rules[0]
            .from
            .as_ref()
            .expect("peers")
            .iter()
            .filter_map(|p| p.pod_selector.as_ref()?.match_labels.clone())
            .collect();
        assert_eq!(
            from,
            vec![
                selector(&store, Component::Worker),
                BTreeMap::from([(STORE_LABEL.to_string(), "notes".to_string())]),
            ]
        );
        assert!(
            rules[0]
                .from
                .as_ref()
                .expect("peers")
                .iter()
                .all(|p| p.namespace_selector.is_none()),
            "this namespace only"
        );
        let ports = rules[0].ports.as_ref().expect("ports");
        assert_eq!(ports.len(), 1);
        assert_eq!(ports[0].port, Some(IntOrString::Int(6379)));
    }
}
