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
use kube::runtime::{watcher, Controller};
use kube::{Api, Client};

use crate::crd::MemoryStore;
use crate::metrics::Metrics;
use crate::reconcile::{error_policy, reconcile, Context};

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
    Controller::new(stores, watcher::Config::default())
        .owns(Api::<ConfigMap>::all(client.clone()), owned.clone())
        .owns(Api::<Secret>::all(client.clone()), owned.clone())
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
