//! The controller: watches MemoryStores (through `DeserializeGuard`, so one malformed object
//! cannot stall the others) and every kind of object it makes, and reconciles a store when
//! either changes.
//!
//! It watches the whole cluster, or only the namespaces it is given ([`Scope`]): then each
//! namespace has a controller of its own and the operator needs rights in those namespaces
//! alone (the chart's `watchNamespaces` grants them with a Role in each). Referenced Secrets
//! are watched by their metadata only: the operator never holds other Secrets' values.

use std::future::Future;
use std::sync::Arc;

use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::build::secret_refs;
use crate::crd::MemoryStore;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile, Context};

/// Where the operator looks for MemoryStores.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace (cluster-wide rights).
    Cluster,
    /// These namespaces only (rights in each of them).
    Namespaces(Vec<String>),
}

impl Scope {
    /// The cluster when `namespaces` is empty.
    pub fn from_namespaces(namespaces: Vec<String>) -> Self {
        let mut namespaces: Vec<String> = namespaces
            .into_iter()
            .map(|namespace| namespace.trim().to_string())
            .filter(|namespace| !namespace.is_empty())
            .collect();
        namespaces.sort();
        namespaces.dedup();
        if namespaces.is_empty() {
            Self::Cluster
        } else {
            Self::Namespaces(namespaces)
        }
    }

    /// One namespace (`Some`) or the cluster (`None`) per controller.
    fn watched(&self) -> Vec<Option<String>> {
        match self {
            Self::Cluster => vec![None],
            Self::Namespaces(namespaces) => namespaces.iter().cloned().map(Some).collect(),
        }
    }
}

/// The API of `K` in one namespace, or in all.
fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(namespace) => Api::namespaced(client.clone(), namespace),
        None => Api::all(client.clone()),
    }
}

/// The stores in the Secret's namespace that read it.
pub fn stores_referencing<'a>(
    secret: &impl Resource,
    stores: impl IntoIterator<Item = &'a MemoryStore>,
) -> Vec<ObjectRef<DeserializeGuard<MemoryStore>>> {
    let namespace = secret.meta().namespace.clone();
    let name = secret.meta().name.clone().unwrap_or_default();
    stores
        .into_iter()
        .filter(|store| store.namespace() == namespace)
        .filter(|store| {
            secret_refs(store)
                .iter()
                .any(|(_, reference)| reference.name == name)
        })
        .map(|store| {
            ObjectRef::new(&store.name_any()).within(&store.namespace().unwrap_or_default())
        })
        .collect()
}

/// Runs a controller per watched namespace (or one for the cluster) until `shutdown`
/// completes.
pub async fn run(
    client: Client,
    metrics: Metrics,
    reporter: Reporter,
    scope: Scope,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let context = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        metrics,
    ));
    let shutdown = shutdown.boxed().shared();
    let controllers = scope
        .watched()
        .into_iter()
        .map(|namespace| run_in(client.clone(), namespace, context.clone(), shutdown.clone()));
    futures::future::join_all(controllers).await;
}

/// Only the objects this operator made.
fn owned() -> watcher::Config {
    watcher::Config::default().labels(&format!(
        "{}={}",
        crate::build::labels::MANAGED_BY,
        crate::build::labels::MANAGER
    ))
}

fn owns<K>(
    controller: Controller<DeserializeGuard<MemoryStore>>,
    client: &Client,
    namespace: Option<&str>,
) -> Controller<DeserializeGuard<MemoryStore>>
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    controller.owns(api::<K>(client, namespace), owned())
}

async fn run_in(
    client: Client,
    namespace: Option<String>,
    context: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let namespace = namespace.as_deref();
    tracing::info!(
        namespace = namespace.unwrap_or("(all)"),
        "watching MemoryStores"
    );
    let stores: Api<DeserializeGuard<MemoryStore>> = api(&client, namespace);
    let controller = Controller::new(stores, watcher::Config::default());
    let known = controller.store();
    // Any Secret a store references (a user's or a generated one), by its metadata: a new
    // resourceVersion rolls the pods at once instead of at the next resync.
    // `PartialObjectMeta` makes the watch metadata-only: no Secret's value reaches the operator.
    let secrets = api::<PartialObjectMeta<Secret>>(&client, namespace);
    let controller = controller.watches(secrets, watcher::Config::default(), move |secret| {
        let stores: Vec<Arc<DeserializeGuard<MemoryStore>>> = known.state();
        let parsed = stores.iter().filter_map(|guard| guard.0.as_ref().ok());
        stores_referencing(&secret, parsed)
    });
    let controller = owns::<ConfigMap>(controller, &client, namespace);
    let controller = owns::<Service>(controller, &client, namespace);
    let controller = owns::<StatefulSet>(controller, &client, namespace);
    let controller = owns::<Deployment>(controller, &client, namespace);
    let controller = owns::<NetworkPolicy>(controller, &client, namespace);
    owns::<PodDisruptionBudget>(controller, &client, namespace)
        .graceful_shutdown_on(shutdown)
        .run(reconcile, error_policy, context)
        .for_each(|outcome| async move {
            match outcome {
                Ok((object, _)) => tracing::debug!(store = %object.name, "reconciled"),
                Err(error) => tracing::debug!(%error, "reconcile did not finish"),
            }
        })
        .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store(name: &str, namespace: &str, path: &str) -> MemoryStore {
        let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
        let mut store: MemoryStore =
            serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store");
        store.metadata.name = Some(name.into());
        store.metadata.namespace = Some(namespace.into());
        store
    }

    fn secret(name: &str, namespace: &str) -> Secret {
        let mut secret = Secret::default();
        secret.metadata.name = Some(name.into());
        secret.metadata.namespace = Some(namespace.into());
        secret
    }

    #[test]
    fn a_secret_maps_to_the_stores_that_read_it() {
        let stores = [
            store("notes", "team-a", "managed.yaml"),
            store("other", "team-a", "external.yaml"),
            store("notes", "team-b", "managed.yaml"),
        ];
        let names = |refs: Vec<ObjectRef<DeserializeGuard<MemoryStore>>>| {
            refs.iter()
                .map(|r| format!("{}/{}", r.namespace.clone().unwrap_or_default(), r.name))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            names(stores_referencing(&secret("openai", "team-a"), &stores)),
            vec!["team-a/notes"]
        );
        assert_eq!(
            names(stores_referencing(
                &secret("notes-redis-auth", "team-b"),
                &stores
            )),
            vec!["team-b/notes"],
            "generated Secrets too, in their own namespace"
        );
        assert_eq!(
            names(stores_referencing(
                &secret("redis-creds", "team-a"),
                &stores
            )),
            vec!["team-a/other"]
        );
        assert!(stores_referencing(&secret("unrelated", "team-a"), &stores).is_empty());
    }

    #[test]
    fn no_namespaces_is_the_cluster_and_listed_ones_are_cleaned_up() {
        assert_eq!(Scope::from_namespaces(vec![]), Scope::Cluster);
        assert_eq!(Scope::from_namespaces(vec![" ".into()]), Scope::Cluster);
        assert_eq!(
            Scope::from_namespaces(vec!["team-b".into(), " team-a".into(), "team-b".into()]),
            Scope::Namespaces(vec!["team-a".into(), "team-b".into()])
        );
        assert_eq!(Scope::Cluster.watched(), vec![None]);
    }
}
