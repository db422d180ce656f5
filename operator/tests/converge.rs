//! Reconciles against a stateful in-memory API server (`kube-fake-client`, modelled on
//! controller-runtime's fake client): objects appear, a second reconcile of an unchanged store
//! changes nothing, switching a part to external deletes its objects, pausing stops changes,
//! and a spec that cannot be honoured changes nothing and says why in status.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::ByteString;
use kube::api::{Api, ListParams};
use kube::runtime::events::{Recorder, Reporter};
use kube::{Client, ResourceExt};
use kube_fake_client::ClientBuilder;
use memgate_operator::crd::MemoryStore;
use memgate_operator::error::Error;
use memgate_operator::metrics::Metrics;
use memgate_operator::reconcile::{reconcile_store, Context};

fn fixture(name: &str) -> MemoryStore {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
}

fn secret(namespace: &str, name: &str, key: &str, value: &str) -> Secret {
    Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(name.into()),
            namespace: Some(namespace.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            key.to_string(),
            ByteString(value.as_bytes().to_vec()),
        )])),
        ..Default::default()
    }
}

async fn client_with(store: &MemoryStore, secrets: Vec<Secret>) -> Client {
    let mut builder = ClientBuilder::new()
        .with_resource::<MemoryStore>()
        .with_status_subresource::<MemoryStore>()
        .with_object(store.clone());
    for secret in secrets {
        builder = builder.with_object(secret);
    }
    builder.build().await.expect("fake client")
}

fn context(client: &Client) -> Context {
    let reporter = Reporter {
        controller: "memgate-operator".into(),
        instance: None,
    };
    Context::new(
        client.clone(),
        Recorder::new(client.clone(), reporter),
        Metrics::new(),
    )
}

async fn current(client: &Client, store: &MemoryStore) -> MemoryStore {
    let api: Api<MemoryStore> = Api::namespaced(client.clone(), &store.namespace().expect("ns"));
    api.get(&store.name_any()).await.expect("store")
}

/// `kind/name@content` of every object in the namespace; the content leaves out what a server
/// changes on every write (`resourceVersion`, `managedFields`, `generation`): the fake API
/// server bumps `resourceVersion` even on a server-side apply that changes nothing, which a
/// real one does not.
async fn snapshot(client: &Client, namespace: &str) -> Vec<String> {
    async fn versions<K>(client: &Client, namespace: &str) -> Vec<String>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + serde::de::DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(client.clone(), namespace);
        api.list(&ListParams::default())
            .await
            .expect("list")
            .items
            .iter()
            .map(|o| {
                let mut value = serde_json::to_value(o).expect("json");
                if let Some(meta) = value["metadata"].as_object_mut() {
                    for volatile in ["resourceVersion", "managedFields", "generation"] {
                        meta.remove(volatile);
                    }
                }
                format!("{}/{}@{value}", K::kind(&()), o.name_any())
            })
            .collect()
    }
    let mut all = Vec::new();
    all.extend(versions::<ConfigMap>(client, namespace).await);
    all.extend(versions::<Secret>(client, namespace).await);
    all.extend(versions::<Service>(client, namespace).await);
    all.extend(versions::<StatefulSet>(client, namespace).await);
    all.extend(versions::<Deployment>(client, namespace).await);
    all.extend(versions::<PodDisruptionBudget>(client, namespace).await);
    all.sort();
    all
}

fn names(snapshot: &[String]) -> Vec<String> {
    snapshot
        .iter()
        .map(|s| s.split('@').next().unwrap_or_default().to_string())
        .collect()
}

fn condition(store: &MemoryStore, type_: &str) -> (String, String) {
    store
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
        .map(|c| (c.status.clone(), c.reason.clone()))
        .unwrap_or_default()
}

#[tokio::test]
async fn a_managed_store_converges_and_a_second_reconcile_changes_nothing() {
    let store = fixture("managed.yaml");
    let client = client_with(&store, vec![secret("team-a", "openai", "api-key", "sk-1")]).await;
    let context = context(&client);

    reconcile_store(&current(&client, &store).await, &context)
        .await
        .expect("first reconcile");
    let first = snapshot(&client, "team-a").await;
    assert_eq!(
        names(&first),
        vec![
            "ConfigMap/notes-proxy-config",
            "Deployment/notes-worker",
            "PodDisruptionBudget/notes-worker",
            "Secret/notes-qdrant-auth",
            "Secret/notes-redis-auth",
            "Secret/openai",
            "Service/notes-qdrant",
            "Service/notes-redis",
            "StatefulSet/notes-qdrant",
            "StatefulSet/notes-redis",
        ]
    );
    let reconciled = current(&client, &store).await;
    let status = reconciled.status.as_ref().expect("status");
    assert_eq!(status.observed_generation, Some(3));
    assert_eq!(condition(&reconciled, "Degraded").0, "False");
    assert_eq!(
        condition(&reconciled, "Available"),
        ("False".into(), "PartsNotReady".into()),
        "no pods run in a fake API server"
    );
    let endpoints = status.endpoints.as_ref().expect("endpoints");
    assert_eq!(endpoints.redis_url, "redis://notes-redis.team-a.svc:6379");
    assert!(endpoints
        .secrets
        .contains(&"notes-redis-auth/password".to_string()));

    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "team-a");
    let reasons: Vec<String> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .filter_map(|e| e.reason.clone())
        .collect();
    // Events with the same reason for one object are aggregated into one series by kube's
    // Recorder, as kubectl shows them.
    assert!(
        reasons.contains(&"Created".to_string()),
        "generated Secrets are announced: {reasons:?}"
    );
    assert!(reasons.contains(&"Applied".to_string()), "{reasons:?}");

    reconcile_store(&reconciled, &context)
        .await
        .expect("second reconcile");
    let second = snapshot(&client, "team-a").await;
    assert_eq!(first, second, "an unchanged store changes nothing");
    let again = current(&client, &store).await;
    let transition = |s: &MemoryStore| {
        s.status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Available"))
            .map(|c| c.last_transition_time.clone())
    };
    assert_eq!(
        transition(&reconciled),
        transition(&again),
        "lastTransitionTime moves only when the status flips"
    );
}

#[tokio::test]
async fn switching_redis_to_external_deletes_its_objects() {
    let store = fixture("managed.yaml");
    let client = client_with(
        &store,
        vec![
            secret("team-a", "openai", "api-key", "sk-1"),
            secret("team-a", "redis-creds", "password", "pw"),
        ],
    )
    .await;
    let context = context(&client);
    reconcile_store(&current(&client, &store).await, &context)
        .await
        .expect("reconcile");
    let mut switched = current(&client, &store).await;
    switched.spec.redis = fixture("external.yaml").spec.redis;
    reconcile_store(&switched, &context)
        .await
        .expect("reconcile");
    let left = names(&snapshot(&client, "team-a").await);
    assert!(
        !left.contains(&"StatefulSet/notes-redis".to_string()),
        "{left:?}"
    );
    assert!(
        !left.contains(&"Service/notes-redis".to_string()),
        "{left:?}"
    );
    assert!(left.contains(&"StatefulSet/notes-qdrant".to_string()));
    let config: ConfigMap = Api::namespaced(client.clone(), "team-a")
        .get("notes-proxy-config")
        .await
        .expect("config");
    assert!(
        config.data.expect("data")["config.yaml"].contains("rediss://redis.example.internal:6380")
    );
}

#[tokio::test]
async fn a_paused_store_is_left_alone_but_reported() {
    let store = fixture("managed.yaml");
    let client = client_with(&store, vec![secret("team-a", "openai", "api-key", "sk-1")]).await;
    let context = context(&client);
    reconcile_store(&current(&client, &store).await, &context)
        .await
        .expect("reconcile");
    let before = snapshot(&client, "team-a").await;
    let mut paused = current(&client, &store).await;
    paused.spec.paused = true;
    paused.spec.rollout.percent = 90;
    reconcile_store(&paused, &context).await.expect("reconcile");
    assert_eq!(before, snapshot(&client, "team-a").await, "nothing changed");
    let reported = current(&client, &store).await;
    assert_eq!(
        condition(&reported, "Progressing"),
        ("False".into(), "Paused".into())
    );
}

#[tokio::test]
async fn a_missing_secret_changes_nothing_and_is_reported() {
    let store = fixture("external.yaml");
    let client = client_with(&store, vec![]).await;
    let context = context(&client);
    let error = reconcile_store(&current(&client, &store).await, &context)
        .await
        .expect_err("the Redis password Secret is missing");
    assert!(matches!(error, Error::MissingSecret { .. }), "{error}");
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(client.clone(), "team-b");
    let warnings: Vec<(String, String)> = events
        .list(&ListParams::default())
        .await
        .expect("events")
        .items
        .iter()
        .map(|e| {
            (
                e.type_.clone().unwrap_or_default(),
                e.reason.clone().unwrap_or_default(),
            )
        })
        .collect();
    assert_eq!(warnings, vec![("Warning".into(), "SecretNotFound".into())]);
    assert!(names(&snapshot(&client, "team-b").await).is_empty());
    let reported = current(&client, &store).await;
    assert_eq!(
        condition(&reported, "Degraded"),
        ("True".into(), "SecretNotFound".into())
    );
}

#[tokio::test]
async fn a_spec_the_reconciler_cannot_honour_changes_nothing() {
    let mut store = fixture("managed.yaml");
    store.spec.cache.memory_ttl = "0s".into(); // the schema's pattern allows it; the proxy does not
    let client = client_with(&store, vec![secret("team-a", "openai", "api-key", "sk-1")]).await;
    let context = context(&client);
    let error = reconcile_store(&current(&client, &store).await, &context)
        .await
        .expect_err("invalid");
    assert!(error.needs_spec_change());
    let left = names(&snapshot(&client, "team-a").await);
    assert_eq!(left, vec!["Secret/openai"], "nothing created");
    let reported = current(&client, &store).await;
    let (status, reason) = condition(&reported, "Degraded");
    assert_eq!((status.as_str(), reason.as_str()), ("True", "InvalidSpec"));
}

fn claim(
    namespace: &str,
    name: &str,
    size: &str,
) -> k8s_openapi::api::core::v1::PersistentVolumeClaim {
    serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "PersistentVolumeClaim",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": size}}}
    }))
    .expect("claim")
}

async fn claim_size(client: &Client, namespace: &str, name: &str) -> String {
    let api: Api<k8s_openapi::api::core::v1::PersistentVolumeClaim> =
        Api::namespaced(client.clone(), namespace);
    let claim = api.get(name).await.expect("claim");
    claim
        .spec
        .expect("spec")
        .resources
        .expect("resources")
        .requests
        .expect("requests")["storage"]
        .0
        .clone()
}

#[tokio::test]
async fn volumes_grow_but_never_shrink() {
    let store = fixture("managed.yaml"); // redis storage 2Gi
    let client = ClientBuilder::new()
        .with_resource::<MemoryStore>()
        .with_status_subresource::<MemoryStore>()
        .with_object(store.clone())
        .with_object(secret("team-a", "openai", "api-key", "sk-1"))
        .with_object(claim("team-a", "data-notes-redis-0", "2Gi"))
        .build()
        .await
        .expect("fake client");
    let context = context(&client);

    let mut grown = current(&client, &store).await;
    if let Some(managed) = grown.spec.redis.managed.as_mut() {
        managed.storage = "4Gi".into();
    }
    reconcile_store(&grown, &context).await.expect("reconcile");
    assert_eq!(
        claim_size(&client, "team-a", "data-notes-redis-0").await,
        "4Gi"
    );
    let reported = current(&client, &store).await;
    assert_eq!(condition(&reported, "Degraded").0, "False");

    let mut shrunk = current(&client, &store).await;
    if let Some(managed) = shrunk.spec.redis.managed.as_mut() {
        managed.storage = "1Gi".into();
    }
    reconcile_store(&shrunk, &context).await.expect("reconcile");
    assert_eq!(
        claim_size(&client, "team-a", "data-notes-redis-0").await,
        "4Gi",
        "never shrunk"
    );
    let reported = current(&client, &store).await;
    assert_eq!(
        condition(&reported, "Degraded"),
        ("True".into(), "StorageShrinkRefused".into())
    );
    assert_eq!(
        context.metrics.reconciles.with_label_values(&["ok"]).get(),
        2,
        "a refused shrink is reported, not retried as an error"
    );
}
