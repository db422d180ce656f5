//! The labels and owner reference every object of a store carries.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::{Resource, ResourceExt};

use crate::crd::MemoryStore;

pub const NAME: &str = "app.kubernetes.io/name";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const MANAGER: &str = "memgate-operator";

/// The part of a store an object belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Redis,
    /// The Redis Sentinels of a replicated Redis.
    Sentinel,
    Qdrant,
    Worker,
    Config,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Redis => "redis",
            Self::Sentinel => "redis-sentinel",
            Self::Qdrant => "qdrant",
            Self::Worker => "worker",
            Self::Config => "config",
        }
    }
}

/// Enough to select one component's pods; never changes for a running workload.
pub fn selector(store: &MemoryStore, component: Component) -> BTreeMap<String, String> {
    BTreeMap::from([
        (NAME.to_string(), "memgate".to_string()),
        (INSTANCE.to_string(), store.name_any()),
        (COMPONENT.to_string(), component.as_str().to_string()),
    ])
}

/// Every label an object of this store carries.
pub fn labels(store: &MemoryStore, component: Component) -> BTreeMap<String, String> {
    let mut labels = selector(store, component);
    labels.insert(MANAGED_BY.to_string(), MANAGER.to_string());
    labels
}

/// The label selector (`k=v,…`) matching every object the operator made for this store.
pub fn all_objects_selector(store: &MemoryStore) -> String {
    format!(
        "{NAME}=memgate,{INSTANCE}={},{MANAGED_BY}={MANAGER}",
        store.name_any()
    )
}

fn owner(store: &MemoryStore) -> Option<OwnerReference> {
    store.controller_owner_ref(&())
}

/// Metadata for an object `name` of `component`: namespace, labels, owner reference.
pub fn metadata(store: &MemoryStore, name: String, component: Component) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: store.namespace(),
        labels: Some(labels(store, component)),
        owner_references: owner(store).map(|owner| vec![owner]),
        ..ObjectMeta::default()
    }
}
