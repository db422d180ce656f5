//! The controller: watches MemoryStores (through `DeserializeGuard`, so one malformed object
//! cannot stall the others) and every kind of object it makes, and reconciles a store when
//! either changes.

use std::future::Future;
use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::core::DeserializeGuard;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{watcher, Controller};
use kube::{Api, Client, ResourceExt};

use crate::build::secret_refs;
use crate::crd::MemoryStore;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile, Context};

/// The stores in the Secret's namespace that read it.
pub fn stores_referencing<'a>(
    secret: &Secret,
    stores: impl IntoIterator<Item = &'a MemoryStore>,
) -> Vec<ObjectRef<DeserializeGuard<MemoryStore>>> {
    let namespace = secret.namespace();
    let name = secret.name_any();
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

/// Runs until `shutdown` completes.
pub async fn run(
    client: Client,
    metrics: Metrics,
    reporter: Reporter,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let context = Arc::new(Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        metrics,
    ));
    let stores: Api<DeserializeGuard<MemoryStore>> = Api::all(client.clone());
    // Only the objects this operator made.
    let owned = watcher::Config::default().labels(&format!(
        "{}={}",
        crate::build::labels::MANAGED_BY,
        crate::build::labels::MANAGER
    ));
    let controller = Controller::new(stores, watcher::Config::default());
    let known = controller.store();
    controller
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        // Any Secret a store references (a user's or a generated one): a new value rolls the
        // pods at once instead of at the next resync.
        .watches(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default(),
            move |secret: Secret| {
                let stores: Vec<Arc<DeserializeGuard<MemoryStore>>> = known.state();
                let parsed = stores.iter().filter_map(|guard| guard.0.as_ref().ok());
                stores_referencing(&secret, parsed)
            },
        )
        .owns(Api::<Service>::all(client.clone()), owned.clone())
        .owns(Api::<StatefulSet>::all(client.clone()), owned.clone())
        .owns(Api::<Deployment>::all(client.clone()), owned.clone())
        .owns(Api::<PodDisruptionBudget>::all(client), owned)
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
}
