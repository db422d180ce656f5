//! The `MemoryStore` custom resource (`memgate.dev/v1alpha1`): what a user declares, and the
//! status the operator reports.
//!
//! The CRD's schema is generated from these types (`memgate-operator crd`), so doc comments
//! become the descriptions `kubectl explain memorystore.spec…` shows, and every rule the schema
//! can carry lives here: ranges, patterns, "exactly one of managed or external" and immutable
//! fields as CEL rules. What the schema cannot check is checked in [`crate::validate`] and
//! reported in status.

// `printcolumn(type_ = "string", …)` repeats across columns by nature.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::api::core::v1::ResourceRequirements;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The CRD as committed in `crds/memorystore.yaml`.
pub fn crd_yaml() -> Result<String, serde_saphyr::ser::Error> {
    use kube::CustomResourceExt;
    let yaml = serde_saphyr::to_string(&MemoryStore::crd())?;
    Ok(format!(
        "# Generated from operator/src/crd.rs by `cargo run -p memgate-operator -- crd`; do not edit.\n{yaml}"
    ))
}

/// A duration such as `90s`, `5m`, `1h30m` or `7d`.
pub const DURATION_PATTERN: &str = r"^([0-9]+(ms|s|m|h|d))+$";
/// A storage size such as `1Gi`, `500Mi` or `10G`.
pub const QUANTITY_PATTERN: &str = r"^[0-9]+(\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$";

/// A memory service made fast: Redis, Qdrant and workers for it, and the sidecar's config.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    derive = "Default",
    doc = "A memory service made fast by memgate: the Redis, Qdrant and workers it needs, and the sidecar's config.",
    group = "memgate.dev",
    version = "v1alpha1",
    kind = "MemoryStore",
    plural = "memorystores",
    shortname = "mstore",
    namespaced,
    cel,
    status = "MemoryStoreStatus",
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Rollout",
        type_ = "integer",
        json_path = ".spec.rollout.percent"
    ),
    printcolumn(name = "Redis", type_ = "string", json_path = ".status.redis.ready"),
    printcolumn(name = "Qdrant", type_ = "string", json_path = ".status.qdrant.ready"),
    printcolumn(
        name = "Step",
        type_ = "integer",
        json_path = ".status.rollout.percent"
    ),
    printcolumn(
        name = "Mismatch",
        type_ = "string",
        json_path = ".status.rollout.measured.mismatchRatio"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStoreSpec {
    /// While true the operator changes none of the store's objects; it still reports status.
    #[serde(default)]
    pub paused: bool,
    /// The memgate image for the workers and the sidecar (default: the operator's own version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// The cache and write queue.
    pub redis: RedisSpec,
    /// The vector store.
    pub qdrant: QdrantSpec,
    /// The OpenAI-compatible endpoint for embeddings and enrichment.
    #[serde(default)]
    pub openai: OpenAiSpec,
    /// How memories are embedded.
    #[serde(default)]
    pub embeddings: EmbeddingsSpec,
    /// How new memories get their summary, emotional valence and keywords.
    #[serde(default)]
    pub enrichment: EnrichmentSpec,
    /// How long the sidecar keeps what it caches.
    #[serde(default)]
    pub cache: CacheSpec,
    /// Which share of requests takes the fast path.
    #[serde(default)]
    pub rollout: RolloutSpec,
    /// The workers that enrich and store writes.
    #[serde(default)]
    pub workers: WorkersSpec,
    /// The sidecar injected into app pods.
    pub proxy: ProxySpec,
    /// The legacy service's settings that shape what it stores and finds (cldmemory's
    /// `SIMILARITY_THRESHOLD`, `MEMORY_METADATA` and project), so memgate stores and finds the
    /// same.
    #[serde(default)]
    pub layout: LayoutSpec,
}

/// The legacy memory service's deployment settings memgate must honour.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LayoutSpec {
    /// Searches naming no threshold leave out results scoring below this (cldmemory's
    /// `SIMILARITY_THRESHOLD`).
    #[serde(default = "default_similarity_threshold")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub similarity_threshold: f32,
    /// Metadata stamped on every memory and added to query texts (cldmemory's
    /// `MEMORY_METADATA`: `key:value,key2:value2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_metadata: Option<String>,
    /// The `hostname:cwd` string the legacy process stamps on new memories (in a container,
    /// `<container id>:/app`). Without it, memgate stamps its own.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub project: Option<String>,
}

impl Default for LayoutSpec {
    fn default() -> Self {
        Self {
            similarity_threshold: default_similarity_threshold(),
            memory_metadata: None,
            project: None,
        }
    }
}

/// A key in a Secret of the store's namespace.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key in the Secret's data.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// Redis: run by the operator (`managed`) or an existing one (`external`). Exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("set exactly one of redis.managed or redis.external"))]
pub struct RedisSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedRedis>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalRedis>,
    /// When a write is acknowledged: `replicated` (also on a replica, Redis's `WAIT`; the
    /// default with replicas or a Sentinel URL) or `local` (once the primary has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub durability: Option<RedisDurability>,
}

/// A Redis StatefulSet with append-only persistence, run by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedRedis {
    /// The volume's size. It may grow (the volume is expanded when its class allows), never
    /// shrink.
    #[serde(default = "default_redis_storage")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub storage: String,
    /// The volume's storage class (the cluster's default when absent). Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClassName is immutable"))]
    pub storage_class_name: Option<String>,
    /// Redis's CPU and memory. `maxmemory` is set to about 80% of the memory limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The password; when absent one is generated once and kept in `{name}-redis-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
    /// The Redis image.
    #[serde(default = "default_redis_image")]
    pub image: String,
    /// Redis nodes: 1, or 3 and up for a primary and replicas watched by three Redis
    /// Sentinels, which promote a replica when the primary is lost (memgate follows it, and
    /// acknowledges a write only once a replica has it too: `durability`).
    #[serde(default = "default_redis_replicas")]
    #[x_kube(validation = Rule::new("self == 1 || (self >= 3 && self <= 9)").message("replicas is 1 (one node) or 3 to 9 (a primary and replicas under Sentinel)"))]
    pub replicas: i32,
}

/// When a write is acknowledged (memgate's `redis.durability`).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum RedisDurability {
    Local,
    Replicated,
}

impl ManagedRedis {
    /// Whether this Redis is a primary with replicas under Sentinel.
    pub fn replicated(&self) -> bool {
        self.replicas >= 3
    }
}

/// An existing Redis.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalRedis {
    /// `redis://host:port` or `rediss://host:port` (TLS); a user name may go in it
    /// (`redis://user@host:port`), the password may not (`passwordSecretRef`). Through Redis
    /// Sentinel: `redis+sentinel://sentinel:26379,sentinel-b:26379/master-name`; a Redis
    /// Cluster: `redis+cluster://node:6379,node-b:6379`.
    #[schemars(regex(pattern = r"^(rediss?|redis\+sentinel|redis\+cluster)://[^\s]+$"))]
    #[x_kube(validation = Rule::new("!self.matches('^[a-z]+://[^/@]*:[^/@]*@')").message("the URL must not carry a password: put it in a Secret and name it in passwordSecretRef"))]
    pub url: String,
    /// Its password, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub password_secret_ref: Option<SecretKeyRef>,
}

/// Qdrant: run by the operator (`managed`) or an existing one (`external`). Exactly one.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.managed) != has(self.external)").message("set exactly one of qdrant.managed or qdrant.external"))]
pub struct QdrantSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub managed: Option<ManagedQdrant>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalQdrant>,
    /// The collection holding the memories (the legacy service's). Cannot change.
    #[serde(default = "default_collection")]
    #[schemars(length(min = 1, max = 255))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("collection is immutable"))]
    pub collection: String,
    /// `hnsw_ef` of fast-path searches: lower is faster, higher is more exact. Unset: the
    /// collection's default, as the legacy service searches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 4096))]
    pub search_ef: Option<u64>,
    /// A distributed Qdrant's sharding and consistency. Unset with managed peers: one shard per
    /// peer, two copies of each, reads from a majority of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cluster: Option<QdrantCluster>,
}

/// A Qdrant StatefulSet run by the operator.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ManagedQdrant {
    /// The volume's size. It may grow, never shrink.
    #[serde(default = "default_qdrant_storage")]
    #[schemars(regex(pattern = QUANTITY_PATTERN))]
    pub storage: String,
    /// The volume's storage class (the cluster's default when absent). Cannot change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self == oldSelf").message("storageClassName is immutable"))]
    pub storage_class_name: Option<String>,
    /// Qdrant's CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// The API key; when absent one is generated once and kept in `{name}-qdrant-auth`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// The Qdrant image (an unprivileged one: it runs as a non-root user).
    #[serde(default = "default_qdrant_image")]
    pub image: String,
    /// Qdrant peers: 1, or 3 and up for Qdrant's distributed mode (pod 0 starts the cluster,
    /// the others join it through its stable name). Scaling up adds empty peers: Qdrant's own
    /// API moves shards to them; the operator does not.
    #[serde(default = "default_qdrant_replicas")]
    #[x_kube(validation = Rule::new("self == 1 || (self >= 3 && self <= 15)").message("replicas is 1 (one node) or 3 to 15 (Qdrant's distributed mode)"))]
    pub replicas: i32,
}

impl ManagedQdrant {
    /// Whether this Qdrant runs in its distributed mode.
    pub fn distributed(&self) -> bool {
        self.replicas >= 3
    }
}

/// How memgate's collection is spread over a distributed Qdrant, and how reads and writes
/// agree among a shard's copies (memgate's `vectors.cluster`).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.writeConsistencyFactor <= self.replicationFactor").message("writeConsistencyFactor cannot be more than replicationFactor"))]
pub struct QdrantCluster {
    /// Shards of the collection when memgate creates it (an existing one keeps its own).
    #[schemars(range(min = 1, max = 1024))]
    pub shard_number: u32,
    /// Copies of each shard, on different peers.
    #[serde(default = "default_replication_factor")]
    #[schemars(range(min = 1, max = 15))]
    pub replication_factor: u32,
    /// Copies that take a write before it is answered.
    #[serde(default = "default_write_consistency_factor")]
    #[schemars(range(min = 1, max = 15))]
    pub write_consistency_factor: u32,
    /// Copies a read asks: `one`, `majority`, `quorum` or `all`.
    #[serde(default = "default_read_consistency")]
    #[schemars(regex(pattern = r"^(one|majority|quorum|all)$"))]
    pub read_consistency: String,
    /// Qdrant's write ordering: `weak`, `medium` or `strong`.
    #[serde(default = "default_write_ordering")]
    #[schemars(regex(pattern = r"^(weak|medium|strong)$"))]
    pub write_ordering: String,
}

/// An existing Qdrant.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ExternalQdrant {
    /// Its gRPC endpoint, `http(s)://host:6334`, without credentials (`apiKeySecretRef`).
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    #[x_kube(validation = Rule::new("!self.matches('^[a-z]+://[^/@]*:[^/@]*@')").message("the URL must not carry a password: put the API key in a Secret and name it in apiKeySecretRef"))]
    pub url: String,
    /// Its API key, when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OpenAiSpec {
    /// Any OpenAI-compatible API.
    #[serde(default = "default_openai_url")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub base_url: String,
    /// The API key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Time allowed for one call.
    #[serde(default = "default_openai_timeout")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
}

impl Default for OpenAiSpec {
    fn default() -> Self {
        Self {
            base_url: default_openai_url(),
            api_key_secret_ref: None,
            timeout: default_openai_timeout(),
        }
    }
}

/// `openai` or the built-in `hashing` embedder (no network, for trials).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EmbeddingProvider {
    #[default]
    Openai,
    Hashing,
}

#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct EmbeddingsSpec {
    #[serde(default)]
    pub provider: EmbeddingProvider,
    /// The embedding model, e.g. `text-embedding-3-small`.
    #[serde(default = "default_embedding_model")]
    #[schemars(length(min = 1))]
    pub model: String,
    /// The vector size, also the collection's. Cannot change.
    #[serde(default = "default_dimensions")]
    #[schemars(range(min = 1, max = 65536))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("dimensions is immutable"))]
    pub dimensions: u64,
}

impl Default for EmbeddingsSpec {
    fn default() -> Self {
        Self {
            provider: EmbeddingProvider::default(),
            model: default_embedding_model(),
            dimensions: default_dimensions(),
        }
    }
}

/// `openai` (chat completions) or `local` (built in: extractive summary, VADER, RAKE).
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub enum EnrichmentProvider {
    #[default]
    Openai,
    Local,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EnrichmentSpec {
    #[serde(default)]
    pub provider: EnrichmentProvider,
    /// The chat model (cldmemory uses `gpt-4o`).
    #[serde(default = "default_chat_model")]
    #[schemars(length(min = 1))]
    pub model: String,
}

impl Default for EnrichmentSpec {
    fn default() -> Self {
        Self {
            provider: EnrichmentProvider::default(),
            model: default_chat_model(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CacheSpec {
    /// How long a fetched memory stays cached, e.g. `1h`.
    #[serde(default = "default_memory_ttl")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub memory_ttl: String,
    /// How long a search answer stays cached.
    #[serde(default = "default_search_ttl")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub search_ttl: String,
    /// How long a query's embedding stays cached.
    #[serde(default = "default_embedding_ttl")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub embedding_ttl: String,
}

impl Default for CacheSpec {
    fn default() -> Self {
        Self {
            memory_ttl: default_memory_ttl(),
            search_ttl: default_search_ttl(),
            embedding_ttl: default_embedding_ttl(),
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutSpec {
    /// Share of requests (0–100) on the fast path; the rest go to the legacy service.
    #[serde(default)]
    #[schemars(range(min = 0, max = 100))]
    pub percent: u8,
    /// A header whose value keeps one user on one path (e.g. `x-user-id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub sticky_header: Option<String>,
    /// Compare a sample of the fast path's answers with the legacy service's, to see whether
    /// it answers as the legacy service would on this store's data (the sidecar's
    /// `memgate_shadow_comparisons_total` and `/shadow/mismatches`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shadow: Option<ShadowSpec>,
    /// Raise the percent step by step on measured evidence instead of taking `percent` as
    /// written: one step per `interval` while every bound holds, back to the last good step
    /// (or 0) when one is broken.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub analysis: Option<AnalysisSpec>,
    /// Hold the ramp at its current step.
    #[serde(default)]
    pub paused: bool,
}

/// The bounds a rollout step must hold over an interval to go on, measured by Prometheus
/// from the sidecars' metrics (series labelled with the store's `namespace` and `store`, as
/// the chart's PodMonitor labels them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "self.steps.all(s, s >= 1 && s <= 100)", "message": "every step is a percent from 1 to 100"},
    {"rule": "self.steps.isSorted() && self.steps.all(x, self.steps.exists_one(y, y == x))", "message": "steps must rise"}
]))]
pub struct AnalysisSpec {
    /// The percents to go through, rising (e.g. 1, 5, 25, 50, 100).
    #[schemars(length(min = 1, max = 20))]
    pub steps: Vec<u8>,
    /// How long each step is measured before the next (e.g. `10m`).
    #[serde(default = "default_analysis_interval")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub interval: String,
    /// Shadow comparisons needed in an interval before it counts.
    #[serde(default = "default_min_samples")]
    #[schemars(range(min = 1))]
    pub min_samples: u64,
    /// The most mismatching shadow comparisons, as a share (0–1).
    #[serde(default = "default_max_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_mismatch_ratio: f64,
    /// The most fast-path answers that are errors, as a share (0–1).
    #[serde(default = "default_max_ratio")]
    #[schemars(range(min = 0.0, max = 1.0))]
    pub max_error_ratio: f64,
    /// The slowest p99 of fast-path MCP tool calls (e.g. `50ms`); none: not bounded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^[0-9]+(ms|s|m|h)$"))]
    pub max_latency_p99: Option<String>,
    /// The Prometheus that scrapes the sidecars (its HTTP API), e.g.
    /// `http://prometheus-operated.monitoring:9090`.
    #[schemars(regex(pattern = r"^https?://"))]
    pub prometheus: String,
}

/// The sidecar's shadow comparison.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ShadowSpec {
    /// The share (0–1) of fast-path `search_memories` and `get_memory` calls also sent to the
    /// legacy service and compared.
    #[schemars(range(min = 0.0, max = 1.0))]
    pub sample: f64,
    /// Show memories' texts in the kept mismatches (redacted to their length otherwise).
    #[serde(default)]
    pub show_content: bool,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkersSpec {
    /// Worker pods.
    #[serde(default = "default_worker_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: i32,
    /// Jobs each worker runs at once.
    #[serde(default = "default_worker_concurrency")]
    #[schemars(range(min = 1, max = 1024))]
    pub concurrency: usize,
    /// A worker pod's CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Workers that scale with the write queue: with KEDA's CRDs installed, a KEDA
    /// ScaledObject on the queue's lag (KEDA's Redis Streams scaler); without them, a
    /// HorizontalPodAutoscaler on CPU. `replicas` is then ignored; the status says which.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub autoscale: Option<WorkerAutoscale>,
}

/// `workers.autoscale`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.max >= self.min").message("autoscale.max must be at least autoscale.min"))]
pub struct WorkerAutoscale {
    /// The fewest workers (KEDA may go to 0 while the queue is empty; a HorizontalPodAutoscaler
    /// keeps at least 1).
    #[serde(default = "default_autoscale_min")]
    #[schemars(range(min = 0, max = 100))]
    pub min: i32,
    #[schemars(range(min = 1, max = 100))]
    pub max: i32,
    /// Queue entries not yet delivered to a worker that one worker is expected to absorb: KEDA
    /// runs `lag / lagPerReplica` workers.
    #[serde(default = "default_lag_per_replica")]
    #[schemars(range(min = 1, max = 1000000))]
    pub lag_per_replica: u32,
}

impl Default for WorkersSpec {
    fn default() -> Self {
        Self {
            replicas: default_worker_replicas(),
            concurrency: default_worker_concurrency(),
            resources: None,
            autoscale: None,
        }
    }
}

/// Tenant scoping: the header naming the tenant and the payload field it is stored in.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScopeSpec {
    #[schemars(regex(pattern = r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub header: String,
    #[schemars(length(min = 1))]
    pub field: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    /// The legacy memory service as the app reaches it, e.g. `http://127.0.0.1:3000`: a
    /// cldmemory of the pod's own (a container beside the app). cldmemory's SSE endpoint
    /// answers only the stream opened last, so it must not be shared by several sidecars or
    /// other clients.
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub upstream: String,
    /// Tenant scoping, when the legacy service scopes memories by user or customer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<ScopeSpec>,
    /// The sidecar's CPU and memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Bearer tokens the sidecar requires of every request (static tokens from a Secret, or
    /// JWTs of an OAuth authorization server, or both). The sidecar listens on the pod's
    /// loopback; set this when anything else in the pod may not be trusted, or a port-forward
    /// or `hostNetwork` exposes it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<ProxyAuthSpec>,
}

/// How the sidecar authenticates requests.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tokensSecretRef) || has(self.oauth)").message("set tokensSecretRef, oauth, or both"))]
pub struct ProxyAuthSpec {
    /// A Secret key holding the tokens file: `tokens: [{token: "…" | sha256: "<hex>", tenant:
    /// "…"}]`. A rotated Secret takes effect within seconds, without a restart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tokens_secret_ref: Option<SecretKeyRef>,
    /// JWTs of an OAuth 2.1 authorization server (the MCP authorization specification's
    /// resource-server mode).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oauth: Option<OAuthSpec>,
}

/// The authorization server whose JWTs the sidecar accepts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OAuthSpec {
    /// Every token's `iss`; its metadata names its keys (JWKS).
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub issuer: String,
    /// Where its keys are, when its metadata does not say.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub jwks_url: Option<String>,
    /// The sidecar's resource URI: the audience (`aud`) every token must name.
    #[schemars(regex(pattern = r"^https?://[^\s]+$"))]
    pub resource: String,
    /// The claim naming the tenant (default `tenant`; required when `proxy.scope` is set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1))]
    pub tenant_claim: Option<String>,
}

/// What the operator saw at its last reconcile.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemoryStoreStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Available`, `Progressing` and `Degraded`.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redis: Option<PartStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub qdrant: Option<PartStatus>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<PartStatus>,
    /// The endpoints and Secrets the sidecar and workers use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoints: Option<Endpoints>,
    /// What scales the workers with `spec.workers.autoscale`: `KEDA ScaledObject (queue lag)`
    /// or `HorizontalPodAutoscaler (CPU; KEDA is not installed)`; `null` without autoscale.
    #[serde(default)]
    pub worker_scaler: Option<String>,
    /// Where a measured rollout (`spec.rollout.analysis`) stands; `null` without one (so the
    /// status patch removes what a removed analysis left).
    #[serde(default)]
    pub rollout: Option<RolloutStatus>,
}

/// A measured rollout's state: the step it is at, what was measured, when it last moved.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutStatus {
    /// The percent the sidecars are given now.
    pub percent: u8,
    /// Its place in `spec.rollout.analysis.steps` (0-based); none below the first step (after
    /// a rollback from it). Written as `null` then, so the status patch removes the old one.
    #[serde(default)]
    pub step: Option<u32>,
    /// When the percent last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_moved: Option<String>,
    /// The last interval's measurements.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<RolloutMeasurements>,
    /// The generation whose ramp was rolled back: it stays where it is until the spec changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_generation: Option<i64>,
    /// Why it was rolled back: the metric, its value and its bound.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rolled_back_because: Option<String>,
}

/// One interval's measurements (ratios as decimal strings, to keep the schema integral).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RolloutMeasurements {
    pub samples: u64,
    pub mismatch_ratio: String,
    pub error_ratio: String,
    /// Seconds; none when there were no fast-path calls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_p99: Option<String>,
}

/// One part's replicas.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PartStatus {
    /// `ready/desired`, or `external`.
    pub ready: String,
    pub ready_replicas: i32,
    pub replicas: i32,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Endpoints {
    pub redis_url: String,
    pub qdrant_url: String,
    /// The ConfigMap holding the sidecar's and workers' config.
    pub config_map: String,
    /// The Secrets (name/key) holding the Redis password, the Qdrant API key and the OpenAI
    /// key, where there is one.
    #[serde(default)]
    pub secrets: Vec<String>,
}

fn default_analysis_interval() -> String {
    "5m".into()
}
fn default_min_samples() -> u64 {
    100
}
fn default_max_ratio() -> f64 {
    0.01
}
fn default_qdrant_replicas() -> i32 {
    1
}
fn default_replication_factor() -> u32 {
    2
}
fn default_write_consistency_factor() -> u32 {
    1
}
fn default_read_consistency() -> String {
    "majority".into()
}
fn default_write_ordering() -> String {
    "weak".into()
}
fn default_redis_replicas() -> i32 {
    1
}
fn default_redis_storage() -> String {
    "1Gi".into()
}
fn default_qdrant_storage() -> String {
    "10Gi".into()
}
fn default_redis_image() -> String {
    "redis:7.2-alpine".into()
}
fn default_qdrant_image() -> String {
    "qdrant/qdrant:v1.15.5-unprivileged".into()
}
// The defaults memgate's own config has are taken from it (`memgate_config`), so the CRD and a
// config file written by hand cannot drift apart.

fn memgate_defaults() -> memgate_config::Config {
    memgate_config::Config::default()
}
fn default_collection() -> String {
    memgate_defaults().vectors.collection
}
fn default_similarity_threshold() -> f32 {
    memgate_defaults().layout.similarity_threshold
}
fn default_openai_url() -> String {
    memgate_defaults().openai.base_url
}
fn default_openai_timeout() -> String {
    duration_text(memgate_defaults().openai.timeout)
}
fn default_embedding_model() -> String {
    memgate_defaults().embeddings.model
}
fn default_dimensions() -> u64 {
    memgate_defaults().embeddings.dimensions
}
fn default_chat_model() -> String {
    memgate_defaults().enrichment.model
}
fn default_memory_ttl() -> String {
    duration_text(memgate_defaults().cache.memory_ttl)
}
fn default_search_ttl() -> String {
    duration_text(memgate_defaults().cache.search_ttl)
}
fn default_embedding_ttl() -> String {
    duration_text(memgate_defaults().cache.embedding_ttl)
}

/// A duration as a MemoryStore spells it: in the largest of hours, minutes and seconds that
/// divides it (`24h`, `5m`, `10s`).
fn duration_text(duration: std::time::Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0 => format!("{}ms", duration.as_millis()),
        s if s % 3600 == 0 => format!("{}h", s / 3600),
        s if s % 60 == 0 => format!("{}m", s / 60),
        s => format!("{s}s"),
    }
}
fn default_autoscale_min() -> i32 {
    1
}
fn default_lag_per_replica() -> u32 {
    100
}
fn default_worker_replicas() -> i32 {
    2
}
fn default_worker_concurrency() -> usize {
    memgate_defaults().worker.concurrency
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_charts_crd_is_the_committed_one() {
        let committed = include_str!("../../crds/memorystore.yaml");
        let chart = include_str!("../../charts/memgate/files/crds/memorystore.yaml");
        assert!(
            committed == chart,
            "charts/memgate/files/crds/memorystore.yaml differs from crds/memorystore.yaml: copy it over"
        );
    }

    #[test]
    fn the_committed_crd_is_the_generated_one() {
        let committed = include_str!("../../crds/memorystore.yaml");
        let generated = crd_yaml().expect("serializes");
        assert!(
            committed == generated,
            "crds/memorystore.yaml is stale: run `cargo run -p memgate-operator -- crd > crds/memorystore.yaml`"
        );
    }
}
