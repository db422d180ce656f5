//! The desired objects of a store, from its spec alone (and a digest of the Secrets it
//! references): no API calls, so every builder is tested with a YAML fixture in and objects
//! out.

pub mod autoscale;
pub mod config;
pub mod labels;
pub mod network;
pub mod placement;
pub mod qdrant;
pub mod quantity;
pub mod redis;
pub mod security;
pub mod sentinel;
pub mod worker;

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, EnvVar, Service};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::ResourceExt;
use sha2::{Digest, Sha256};

use self::config::ConfigError;
use self::labels::{metadata, Component};
use crate::crd::{ManagedRedis, MemoryStore, SecretKeyRef};

/// CPU and memory requests and a memory limit (no CPU limit: throttling a cache or a proxy
/// hurts more than it protects).
pub fn resources(
    cpu: &str,
    memory: &str,
    memory_limit: &str,
) -> k8s_openapi::api::core::v1::ResourceRequirements {
    use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
    k8s_openapi::api::core::v1::ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_string(), Quantity(cpu.into())),
            ("memory".to_string(), Quantity(memory.into())),
        ])),
        limits: Some(BTreeMap::from([(
            "memory".to_string(),
            Quantity(memory_limit.into()),
        )])),
        ..Default::default()
    }
}

/// A managed part's workload and Service.
#[derive(Debug, Clone, PartialEq)]
pub struct ManagedPart {
    pub stateful_set: StatefulSet,
    pub service: Service,
    /// Who may reach it (see [`network`]).
    pub network_policy: NetworkPolicy,
    /// The stable names of its pods, when it has peers (see [`placement`]).
    pub headless_service: Option<Service>,
    /// One pod down at a time, when it has several.
    pub disruption_budget: Option<PodDisruptionBudget>,
}

impl ManagedPart {
    /// With the headless Service and disruption budget of a part with peers, when it has them.
    fn with_extras(mut self, extras: Option<(Service, PodDisruptionBudget)>) -> Self {
        if let Some((headless, budget)) = extras {
            self.headless_service = Some(headless);
            self.disruption_budget = Some(budget);
        }
        self
    }
}

/// A credential the operator generates (when the spec names none), and the part it is for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedSecret {
    pub component: Component,
    pub secret: SecretKeyRef,
}

/// Everything the operator keeps in place for one store.
#[derive(Debug, Clone, PartialEq)]
pub struct Desired {
    /// `{name}-proxy-config`: the sidecar's and workers' config.
    pub config_map: ConfigMap,
    /// Secrets holding generated credentials: created once when missing, never changed.
    pub generated_secrets: Vec<GeneratedSecret>,
    /// `None` when Redis is external.
    pub redis: Option<ManagedPart>,
    /// The Sentinels of a managed Redis with replicas.
    pub redis_sentinel: Option<ManagedPart>,
    /// `None` when Qdrant is external.
    pub qdrant: Option<ManagedPart>,
    pub worker: Deployment,
    /// Only with two or more workers.
    pub worker_disruption_budget: Option<PodDisruptionBudget>,
    /// With `workers.autoscale`: what scales the workers.
    pub worker_scaler: Option<autoscale::WorkerScaler>,
}

/// What the cluster offers that the objects depend on (found by the reconciler).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClusterFeatures {
    /// KEDA's CRDs are installed.
    pub keda: bool,
}

pub fn config_map_name(store: &MemoryStore) -> String {
    format!("{}-proxy-config", store.name_any())
}

/// The Secrets a store's pods read, as `(environment variable, reference)`: the Redis
/// password, the Qdrant API key and the OpenAI key, where there is one. The sidecar and the
/// workers get the same.
pub fn secret_refs(store: &MemoryStore) -> Vec<(&'static str, SecretKeyRef)> {
    let spec = &store.spec;
    let redis = match (&spec.redis.managed, &spec.redis.external) {
        (Some(managed), _) => Some(redis::password_ref(store, managed)),
        (None, Some(external)) => external.password_secret_ref.clone(),
        (None, None) => None,
    };
    let qdrant = match (&spec.qdrant.managed, &spec.qdrant.external) {
        (Some(managed), _) => Some(qdrant::api_key_ref(store, managed)),
        (None, Some(external)) => external.api_key_secret_ref.clone(),
        (None, None) => None,
    };
    [
        ("MEMGATE_REDIS__PASSWORD", redis),
        ("MEMGATE_VECTORS__API_KEY", qdrant),
        (
            "MEMGATE_OPENAI__API_KEY",
            spec.openai.api_key_secret_ref.clone(),
        ),
    ]
    .into_iter()
    .filter_map(|(env, reference)| reference.map(|reference| (env, reference)))
    .collect()
}

/// The environment of a worker: the secrets as references (a rotated one rolls the workers,
/// see [`SecretDigests`]), JSON logs.
pub fn memgate_env(store: &MemoryStore) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = secret_refs(store)
        .iter()
        .map(|(name, reference)| security::secret_env(name, reference))
        .collect();
    env.push(log_format_env());
    env
}

/// memgate logs JSON in a cluster.
pub fn log_format_env() -> EnvVar {
    EnvVar {
        name: "MEMGATE_LOG_FORMAT".into(),
        value: Some("json".into()),
        ..Default::default()
    }
}

/// Digests of the values of the Secrets a store's pods read, by reference: what rolls each pod
/// that reads one when it changes (the workers on any of them, Redis on its password, Qdrant
/// on its API key). Read by the reconciler; empty when rendering without a cluster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SecretDigests(BTreeMap<String, String>);

impl SecretDigests {
    fn key(reference: &SecretKeyRef) -> String {
        format!("{}/{}", reference.name, reference.key)
    }

    pub fn insert(&mut self, reference: &SecretKeyRef, digest: impl Into<String>) {
        self.0.insert(Self::key(reference), digest.into());
    }

    /// The digest of one referenced value, when it was read.
    pub fn of(&self, reference: &SecretKeyRef) -> Option<&str> {
        self.0.get(&Self::key(reference)).map(String::as_str)
    }

    /// One digest of them all.
    pub fn combined(&self) -> String {
        let mut hasher = Sha256::new();
        for (reference, digest) in &self.0 {
            hasher.update(reference.as_bytes());
            hasher.update(b"=");
            hasher.update(digest.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }
}

/// The pod-template annotation whose change rolls a managed part when the Secret it reads
/// changes.
pub const SECRET_HASH: &str = "memgate.dev/secret-hash";

/// The hash that rolls the workers when the config or a referenced Secret changes.
fn config_hash(config_yaml: &str, secrets_digest: &str) -> String {
    let mut hasher = Sha256::new();
    hasher.update(config_yaml.as_bytes());
    hasher.update(b"\n");
    hasher.update(secrets_digest.as_bytes());
    hex::encode(hasher.finalize())
}

/// The desired objects on a cluster without optional features (see [`build_for`]).
pub fn build(store: &MemoryStore, secrets: &SecretDigests) -> Result<Desired, ConfigError> {
    build_for(store, secrets, ClusterFeatures::default())
}

/// The desired objects. `secrets` are digests of the referenced Secrets' values (see
/// [`secret_refs`]), read by the caller; `features`, what the cluster offers.
pub fn build_for(
    store: &MemoryStore,
    secrets: &SecretDigests,
    features: ClusterFeatures,
) -> Result<Desired, ConfigError> {
    let proxy_config = config::proxy_config(store)?;
    let config_yaml = config::render(&proxy_config)?;
    let config_map = ConfigMap {
        metadata: metadata(store, config_map_name(store), Component::Config),
        data: Some(BTreeMap::from([(
            config::CONFIG_KEY.to_string(),
            config_yaml.clone(),
        )])),
        ..Default::default()
    };
    let mut generated_secrets = Vec::new();
    let redis = store.spec.redis.managed.as_ref().map(|managed| {
        if managed.password_secret_ref.is_none() {
            generated_secrets.push(GeneratedSecret {
                component: Component::Redis,
                secret: redis::generated_secret(store),
            });
        }
        redis_part(store, managed, secrets)
    });
    let redis_sentinel = store
        .spec
        .redis
        .managed
        .as_ref()
        .filter(|managed| managed.replicated())
        .map(|managed| sentinel_part(store, managed, secrets));
    let qdrant = store.spec.qdrant.managed.as_ref().map(|managed| {
        if managed.api_key_secret_ref.is_none() {
            generated_secrets.push(GeneratedSecret {
                component: Component::Qdrant,
                secret: qdrant::generated_secret(store),
            });
        }
        ManagedPart {
            stateful_set: qdrant::stateful_set(
                store,
                managed,
                secrets.of(&qdrant::api_key_ref(store, managed)),
            ),
            service: qdrant::service(store),
            network_policy: network::policy(
                store,
                Component::Qdrant,
                &[qdrant::HTTP_PORT, qdrant::GRPC_PORT],
                &[],
            ),
            headless_service: None,
            disruption_budget: None,
        }
        .with_extras(
            managed
                .distributed()
                .then(|| qdrant::distributed_extras(store)),
        )
    });
    let hash = config_hash(&config_yaml, &secrets.combined());
    Ok(Desired {
        worker: worker::deployment(store, &config_map_name(store), memgate_env(store), &hash),
        worker_disruption_budget: worker::disruption_budget(store),
        worker_scaler: autoscale::scaler(store, features.keda)?,
        config_map,
        generated_secrets,
        redis,
        redis_sentinel,
        qdrant,
    })
}

/// A managed Redis: one node, or a primary and replicas (reached by the Sentinels too).
fn redis_part(store: &MemoryStore, managed: &ManagedRedis, secrets: &SecretDigests) -> ManagedPart {
    let secret_hash = secrets.of(&redis::password_ref(store, managed));
    let (headless_service, disruption_budget, peers) = if managed.replicated() {
        let (headless, budget) = redis::replicated_extras(store);
        (Some(headless), Some(budget), vec![Component::Sentinel])
    } else {
        (None, None, Vec::new())
    };
    ManagedPart {
        stateful_set: redis::stateful_set(store, managed, secret_hash),
        service: redis::service(store),
        network_policy: network::policy(store, Component::Redis, &[redis::PORT], &peers),
        headless_service,
        disruption_budget,
    }
}

/// The Sentinels of a managed Redis with replicas (asked by the Redis pods too).
fn sentinel_part(
    store: &MemoryStore,
    managed: &ManagedRedis,
    secrets: &SecretDigests,
) -> ManagedPart {
    let (headless, budget) = sentinel::extras(store);
    ManagedPart {
        stateful_set: sentinel::stateful_set(
            store,
            managed,
            secrets.of(&redis::password_ref(store, managed)),
        ),
        service: sentinel::service(store),
        network_policy: network::policy(
            store,
            Component::Sentinel,
            &[sentinel::PORT],
            &[Component::Redis],
        ),
        headless_service: Some(headless),
        disruption_budget: Some(budget),
    }
}
