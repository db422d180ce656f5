//! memgate's configuration: one YAML file (the format the operator renders into the
//! `{name}-proxy-config` ConfigMap), its types and [`Config::validate`], which checks what types
//! cannot (ranges, required combinations) with the field names of the file (`rollout.percent`).
//!
//! A crate of its own so the operator, which renders it, builds without the proxy; the proxy
//! (`memgate::config`) loads it in layers and watches it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::header::HeaderName;
use serde::{Deserialize, Serialize};

/// Everything the `serve` and `worker` roles read at start.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct Config {
    /// Which MemoryStore this proxy serves; the cache key prefix is `memgate:{namespace}/{name}:`.
    pub store: StoreIdentity,
    /// Address of the Memory API (the app calls this).
    pub listen: SocketAddr,
    /// Address of the admin server (`/metrics`, `/healthz`, `/readyz`).
    pub admin_listen: SocketAddr,
    /// Where this process's own parts keep their data: Qdrant Edge under `vectors/` (unless
    /// `vectors.path` says otherwise), the journal of the in-process write queue
    /// (`queue.redb`), the lock that gives one process the directory, and the socket other
    /// `memgate mcp stdio` launches attach to (`mcp.sock`). `--embedded` sets it to the
    /// platform's data directory (`$XDG_DATA_HOME/memgate`); without it, in-process parts keep
    /// nothing across a restart.
    pub data_dir: Option<PathBuf>,
    pub upstream: UpstreamConfig,
    /// The MCP front (`/sse`, `/messages`, `/mcp`).
    pub mcp: McpConfig,
    /// How the legacy service keeps a memory (its payload, embedded texts, search rules).
    pub layout: LayoutConfig,
    pub rollout: RolloutConfig,
    /// Fast-path reads also asked of the legacy service and compared, off the answer's path.
    pub shadow: ShadowConfig,
    /// Tenant scoping; off when absent.
    pub scope: Option<ScopeConfig>,
    pub limits: LimitsConfig,
    pub cache: CacheConfig,
    pub redis: RedisConfig,
    pub vectors: VectorsConfig,
    pub embeddings: EmbeddingsConfig,
    pub enrichment: EnrichmentConfig,
    pub openai: OpenAiConfig,
    pub worker: WorkerConfig,
    pub access: AccessConfig,
    pub reload: ReloadConfig,
    /// The breakers in front of Redis, the vector store, OpenAI and the upstream.
    pub circuit_breaker: CircuitBreakerConfig,
    /// What answers when the fast path cannot.
    pub fallback: FallbackConfig,
    /// Who may reach the API port: browser origins, host names, bearer tokens.
    pub security: SecurityConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            store: StoreIdentity::default(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9090)),
            data_dir: None,
            upstream: UpstreamConfig::default(),
            mcp: McpConfig::default(),
            layout: LayoutConfig::default(),
            rollout: RolloutConfig::default(),
            shadow: ShadowConfig::default(),
            scope: None,
            limits: LimitsConfig::default(),
            cache: CacheConfig::default(),
            redis: RedisConfig::default(),
            vectors: VectorsConfig::default(),
            embeddings: EmbeddingsConfig::default(),
            enrichment: EnrichmentConfig::default(),
            openai: OpenAiConfig::default(),
            worker: WorkerConfig::default(),
            access: AccessConfig::default(),
            reload: ReloadConfig::default(),
            circuit_breaker: CircuitBreakerConfig::default(),
            fallback: FallbackConfig::default(),
            security: SecurityConfig::default(),
        }
    }
}

/// Shadow comparison: a sample of the fast path's `search_memories` and `get_memory` answers is
/// compared with the legacy service's answer to the same call, to see whether the fast path
/// answers as the legacy service would on this store's data.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ShadowConfig {
    /// The share of fast-path reads (0–1) also sent to the legacy service; 0 turns it off.
    pub sample: f64,
    /// Shadow calls in flight at most; a sampled read beyond is skipped (and counted).
    pub max_in_flight: usize,
    /// The last mismatches kept for `/shadow/mismatches` on the admin port.
    pub keep_mismatches: usize,
    /// Show the memories' texts in kept mismatches (redacted to their length otherwise).
    pub show_content: bool,
}

impl Default for ShadowConfig {
    fn default() -> Self {
        Self {
            sample: 0.0,
            max_in_flight: 4,
            keep_mismatches: 20,
            show_content: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct StoreIdentity {
    pub namespace: String,
    pub name: String,
}

impl Default for StoreIdentity {
    fn default() -> Self {
        Self {
            namespace: "default".into(),
            name: "memgate".into(),
        }
    }
}

/// The legacy memory service that requests not taking the fast path are forwarded to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpstreamConfig {
    /// Base URL, e.g. `http://127.0.0.1:3000`. Without it, requests that need legacy get 502.
    pub url: Option<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time allowed for the upstream's response headers.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    #[serde(with = "humantime_serde")]
    pub pool_idle_timeout: Duration,
    pub pool_max_idle_per_host: usize,
    /// How memgate reaches the legacy service's MCP server.
    pub mcp: UpstreamMcpConfig,
    /// memgate's own credential for the legacy service, sent as its `Authorization` header on
    /// everything memgate forwards and on its MCP session (e.g. `Bearer …`; usually from
    /// `MEMGATE_UPSTREAM__AUTHORIZATION_FILE`). A client's token never reaches the legacy
    /// service when memgate's own tokens are on.
    pub authorization: Option<String>,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            url: None,
            connect_timeout: Duration::from_secs(1),
            timeout: Duration::from_secs(30),
            pool_idle_timeout: Duration::from_secs(90),
            pool_max_idle_per_host: 64,
            mcp: UpstreamMcpConfig::default(),
            authorization: None,
        }
    }
}

/// The legacy service's MCP server: HTTP+SSE (cldmemory) or Streamable HTTP under
/// `upstream.url`, or a child process over stdio.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct UpstreamMcpConfig {
    pub transport: UpstreamMcpTransport,
    /// The path under `upstream.url`: the event stream (`sse`, default `/sse`) or the
    /// endpoint (`streamableHttp`, default `/mcp`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// With `stdio`: the command line that starts the legacy service.
    pub command: Vec<String>,
    /// How often memgate pings its session with the legacy service (and tries to open one
    /// while it cannot).
    #[serde(with = "humantime_serde")]
    pub ping_interval: Duration,
    /// How long a ping may go unanswered before the session is taken for lost and opened
    /// again; a forwarded call unanswered this long makes memgate ping at once.
    #[serde(with = "humantime_serde")]
    pub ping_timeout: Duration,
}

impl Default for UpstreamMcpConfig {
    fn default() -> Self {
        Self {
            transport: UpstreamMcpTransport::Sse,
            path: None,
            command: Vec::new(),
            ping_interval: Duration::from_secs(10),
            ping_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UpstreamMcpTransport {
    Sse,
    StreamableHttp,
    Stdio,
}

impl UpstreamMcpConfig {
    /// The path under `upstream.url` for this transport.
    pub fn path(&self) -> &str {
        match (&self.path, self.transport) {
            (Some(path), _) => path,
            (None, UpstreamMcpTransport::StreamableHttp) => "/mcp",
            (None, _) => "/sse",
        }
    }
}

/// memgate's MCP front.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct McpConfig {
    /// How long a forwarded call naming a memory memgate acknowledged waits for it to be
    /// stored first.
    #[serde(with = "humantime_serde")]
    pub wait_for_stored: Duration,
    /// Streamable HTTP sessions unused this long are closed.
    #[serde(with = "humantime_serde")]
    pub session_idle_timeout: Duration,
    /// The most client sessions open at once.
    pub max_sessions: usize,
    /// The largest MCP message (cldmemory takes 10 MB, as Express's JSON parser is set).
    pub max_body_bytes: usize,
    /// How Streamable HTTP answers a POST with requests: `json` (one JSON body) or `sse` (an
    /// event stream carrying the answers).
    pub streamable_response: StreamableResponse,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum StreamableResponse {
    Json,
    Sse,
}

impl Default for McpConfig {
    fn default() -> Self {
        Self {
            wait_for_stored: Duration::from_secs(10),
            session_idle_timeout: Duration::from_secs(3600),
            max_sessions: 10_000,
            max_body_bytes: 10 * 1024 * 1024,
            streamable_response: StreamableResponse::Json,
        }
    }
}

/// The legacy services whose layout memgate speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LayoutKind {
    /// cldmemory, the TypeScript MCP memory server.
    Cldmemory,
}

/// The legacy service's layout and the settings its deployment has.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LayoutConfig {
    pub kind: LayoutKind,
    /// Searches naming no threshold leave out results scoring below this (cldmemory's
    /// `SIMILARITY_THRESHOLD`).
    pub similarity_threshold: f32,
    /// Metadata stamped on every memory and added to every query's embedded text
    /// (cldmemory's `MEMORY_METADATA`: `key:value,key2:value2`).
    pub memory_metadata: Option<String>,
    /// The `hostname:cwd` string the legacy process stamps on new memories (it cannot be
    /// computed from here). Without it, memgate stamps its own `hostname:cwd`.
    pub project: Option<String>,
}

impl Default for LayoutConfig {
    fn default() -> Self {
        Self {
            kind: LayoutKind::Cldmemory,
            similarity_threshold: 0.7,
            memory_metadata: None,
            project: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RolloutConfig {
    /// Share of requests (0–100) that take the fast path. Re-read while running. Every request
    /// unless set: run by hand in front of a legacy service, memgate gives the speed-up at once
    /// (the operator renders each MemoryStore's percent explicitly).
    pub percent: u8,
    /// Header whose value picks the bucket (e.g. `x-user-id`); else the client address.
    pub sticky_header: Option<String>,
}

impl Default for RolloutConfig {
    fn default() -> Self {
        Self {
            percent: 100,
            sticky_header: None,
        }
    }
}

/// Tenant scoping: the header naming the tenant and the payload field it is stored in.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScopeConfig {
    pub header: String,
    pub field: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct LimitsConfig {
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Requests answered at once; past it a request gets `503` immediately instead of waiting.
    pub max_in_flight: usize,
    /// A client must send its request headers within this time.
    #[serde(with = "humantime_serde")]
    pub header_read_timeout: Duration,
    /// On shutdown, in-flight requests get this long to finish.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// Writes one tenant may make per second (REST creates, updates and deletes; MCP tool
    /// calls that change memories), with a burst of as many; past it `429`. Off when absent.
    pub writes_per_second_per_tenant: Option<u32>,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 1024 * 1024,
            max_in_flight: 1024,
            header_read_timeout: Duration::from_secs(10),
            drain_timeout: Duration::from_secs(20),
            writes_per_second_per_tenant: None,
        }
    }
}

/// Who may reach the API port (REST, `/sse`, `/messages`, `/mcp`). The admin port is not
/// covered: keep it on loopback or a private network.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct SecurityConfig {
    /// The origins whose web pages may call memgate (`scheme://host[:port]`; without a port,
    /// any port): a request whose `Origin` is another is refused `403`. `*` allows every
    /// origin. Requests without `Origin` (CLIs, SDKs) are not concerned.
    pub allowed_origins: Vec<String>,
    /// Host names served besides the loopback ones (`localhost`, `*.localhost`, `127.0.0.0/8`,
    /// `[::1]`) while listening on a loopback address: any other `Host` is refused `403`
    /// (DNS rebinding).
    pub allowed_hosts: Vec<String>,
    /// Bearer tokens; every request on the API port must carry one. Off when absent.
    pub tokens: Option<TokensConfig>,
    /// OAuth 2.1 resource-server mode: JWTs of this authorization server are accepted as
    /// bearer tokens (beside `tokens`, when both are set). Off when absent.
    pub oauth: Option<OAuthConfig>,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        Self {
            allowed_origins: ["http", "https"]
                .iter()
                .flat_map(|scheme| {
                    ["localhost", "127.0.0.1", "[::1]"]
                        .iter()
                        .map(move |host| format!("{scheme}://{host}"))
                })
                .collect(),
            allowed_hosts: Vec::new(),
            tokens: None,
            oauth: None,
        }
    }
}

/// JWTs from an authorization server, as the MCP authorization specification has resource
/// servers accept them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OAuthConfig {
    /// The authorization server: every token's `iss`, and where its keys are found.
    pub issuer: String,
    /// Its JWKS; when absent, the `jwks_uri` of its metadata
    /// (`{issuer}/.well-known/oauth-authorization-server`, else `openid-configuration`).
    pub jwks_url: Option<String>,
    /// memgate's resource URI (e.g. `https://memgate.example/mcp`): the audience every token
    /// must name, and the `resource` of `/.well-known/oauth-protected-resource`.
    pub resource: String,
    /// The claim naming the tenant (required when `scope` is on).
    pub tenant_claim: String,
    /// Clock skew allowed on `exp` and `nbf`.
    #[serde(with = "humantime_serde")]
    pub leeway: Duration,
    /// How often the keys are fetched again (a token naming an unknown key fetches them at
    /// once, at most once a second).
    #[serde(with = "humantime_serde")]
    pub jwks_refresh: Duration,
}

impl Default for OAuthConfig {
    fn default() -> Self {
        Self {
            issuer: String::new(),
            jwks_url: None,
            resource: String::new(),
            tenant_claim: "tenant".into(),
            leeway: Duration::from_secs(60),
            jwks_refresh: Duration::from_secs(600),
        }
    }
}

/// Static bearer tokens, each for a tenant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokensConfig {
    /// A YAML file (a mounted Secret): `tokens: [{token: "…" | sha256: "<hex>", tenant: "…"}]`.
    /// (`path`, not `file`: a `MEMGATE_…_FILE` variable names a file holding a value.)
    pub path: PathBuf,
}

/// When a dependency's breaker opens and for how long (the same for every dependency).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CircuitBreakerConfig {
    /// Consecutive failures that open the breaker.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before one probe may go (the first time: short,
    /// so a blip costs little).
    #[serde(with = "humantime_serde")]
    pub cool_down: Duration,
    /// Each failed probe doubles the cool-down, up to this: the longest a dependency that
    /// answers again is still refused.
    #[serde(with = "humantime_serde")]
    pub max_cool_down: Duration,
}

impl Default for CircuitBreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_millis(250),
            max_cool_down: Duration::from_secs(1),
        }
    }
}

/// The degradation ladder: fast path → legacy → keyword → popular.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct FallbackConfig {
    /// When the write queue (Redis) is unreachable, forward creates, updates and deletes to
    /// the legacy service and wait for it (when `upstream.url` is set); else refuse with `503`.
    pub writes_to_legacy: bool,
    /// How long a search waits for its query's embedding before the next rung answers.
    #[serde(with = "humantime_serde")]
    pub embedding_timeout: Duration,
    /// How many keyword matches the keyword fallback ranks.
    pub keyword_candidates: u64,
}

impl Default for FallbackConfig {
    fn default() -> Self {
        Self {
            writes_to_legacy: true,
            embedding_timeout: Duration::from_secs(2),
            keyword_candidates: 200,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum CacheBackend {
    /// Redis (`redis.url`): shared by every proxy and worker of the store.
    Redis,
    /// In-process, for `--embedded` and tests: not shared, not durable.
    Memory,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct CacheConfig {
    /// `redis`, or `memory` (this process's own, not shared). When not given: `redis` if
    /// `redis.url` is set, else `memory`.
    pub backend: CacheBackend,
    #[serde(with = "humantime_serde")]
    pub memory_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub search_ttl: Duration,
    #[serde(with = "humantime_serde")]
    pub embedding_ttl: Duration,
    /// In-process L1 in front of Redis for memories and embeddings.
    pub l1: L1Config,
}

impl Default for CacheConfig {
    fn default() -> Self {
        Self {
            backend: CacheBackend::Redis,
            memory_ttl: Duration::from_secs(3600),
            search_ttl: Duration::from_secs(300),
            embedding_ttl: Duration::from_secs(24 * 3600),
            l1: L1Config::default(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct L1Config {
    pub max_entries: u64,
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
}

impl Default for L1Config {
    fn default() -> Self {
        Self {
            max_entries: 10_000,
            ttl: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct RedisConfig {
    /// `redis://host:port/db`, or the primary Redis Sentinel names:
    /// `redis+sentinel://host:port,host:port/master-name[/db]`; required when `cache.backend`
    /// is `redis`.
    pub url: Option<String>,
    /// Password, usually from `MEMGATE_REDIS__PASSWORD`; overrides one in the URL.
    pub password: Option<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// When a write is acknowledged: `local` (the primary has it), or `replicated` (also
    /// `durability.replicas` replicas, Redis's `WAIT`). Not given: `replicated` with a Sentinel
    /// URL, else `local`.
    pub durability: Option<Durability>,
    /// How many replicas confirm a `replicated` write.
    pub replicas: u32,
    /// How long a `replicated` write waits for them before it is refused (not acknowledged).
    #[serde(with = "humantime_serde")]
    pub replication_timeout: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self {
            url: None,
            password: None,
            timeout: Duration::from_millis(500),
            durability: None,
            replicas: 1,
            replication_timeout: Duration::from_secs(1),
        }
    }
}

impl RedisConfig {
    /// Whether `url` names a primary through Redis Sentinel.
    pub fn is_sentinel(&self) -> bool {
        self.url
            .as_deref()
            .is_some_and(|url| url.starts_with(SENTINEL_SCHEME))
    }

    /// How long an acknowledging write may take: `timeout`, and with `replicated` durability
    /// the replicas' `replicationTimeout` on top.
    pub fn write_timeout(&self) -> Duration {
        match self.effective_durability() {
            Durability::Local => self.timeout,
            Durability::Replicated => self.timeout + self.replication_timeout,
        }
    }

    /// Whether `url` names the nodes of a Redis Cluster.
    pub fn is_cluster(&self) -> bool {
        self.url
            .as_deref()
            .is_some_and(|url| url.starts_with(CLUSTER_SCHEME))
    }

    /// `durability`, or what it is when not given.
    pub fn effective_durability(&self) -> Durability {
        self.durability.unwrap_or(if self.is_sentinel() {
            Durability::Replicated
        } else {
            Durability::Local
        })
    }
}

/// The write queue's stream (after the store's key prefix), its workers' consumer group, and
/// the associations' stream: the workers read them, and KEDA's scaler measures their lag.
pub const WRITES_STREAM: &str = "writes";
pub const ASSOC_STREAM: &str = "assoc";
pub const CONSUMER_GROUP: &str = "workers";

/// The scheme of a Redis URL naming its primary through Sentinel.
pub const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// The scheme of a Redis URL naming the nodes of a Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// When Redis has a write for good enough to acknowledge it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Durability {
    /// The primary has it (with `appendfsync everysec`, on disk within a second).
    Local,
    /// The primary and `redis.replicas` replicas have it: a failover to a replica keeps it.
    Replicated,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum VectorBackend {
    /// A Qdrant server over gRPC (`vectors.url`).
    Qdrant,
    /// Qdrant Edge in-process (`vectors.path`), for `--embedded`.
    Edge,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum DistanceMetric {
    Cosine,
    Dot,
    Euclid,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct VectorsConfig {
    pub backend: VectorBackend,
    /// Qdrant gRPC URL, e.g. `http://127.0.0.1:6334`.
    pub url: Option<String>,
    /// Qdrant REST URL, for payload writes (REST keeps a payload's key order, as cldmemory
    /// writes it; gRPC does not). Absent: `url` with port 6333.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rest_url: Option<String>,
    pub api_key: Option<String>,
    /// Directory of the Qdrant Edge shard; a temporary one (deleted at exit) when absent.
    pub path: Option<PathBuf>,
    pub collection: String,
    pub distance: DistanceMetric,
    /// `hnsw_ef` for fast-path searches: lower is faster, higher is more exact. Absent: the
    /// collection's own default, as the legacy service searches.
    pub search_ef: Option<u64>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Qdrant Edge only: how often the writer (the worker, or the embedded proxy) runs Edge's
    /// optimizers when points were written, so new points get an HNSW index. A Qdrant server
    /// optimizes on its own.
    #[serde(with = "humantime_serde")]
    pub optimize_interval: Duration,
    /// A Qdrant server in its distributed mode: how a new collection is spread over the peers,
    /// and how reads and writes agree among the replicas of a shard. Absent: Qdrant's defaults.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster: Option<QdrantClusterConfig>,
}

/// `vectors.cluster`: a collection over several Qdrant peers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct QdrantClusterConfig {
    /// Shards of a new collection (an existing one keeps its own).
    pub shard_number: u32,
    /// Copies of each shard on different peers.
    pub replication_factor: u32,
    /// Copies that must take a write before it is answered.
    pub write_consistency_factor: u32,
    /// How many copies of a shard a read asks: `one`, `majority`, `quorum` or `all`.
    pub read_consistency: ReadConsistency,
    /// Qdrant's write ordering: `weak` (fastest), `medium` or `strong` (through the shard's
    /// permanent leader).
    pub write_ordering: WriteOrdering,
}

impl Default for QdrantClusterConfig {
    fn default() -> Self {
        Self {
            shard_number: 1,
            replication_factor: 1,
            write_consistency_factor: 1,
            read_consistency: ReadConsistency::One,
            write_ordering: WriteOrdering::Weak,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ReadConsistency {
    One,
    Majority,
    Quorum,
    All,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum WriteOrdering {
    Weak,
    Medium,
    Strong,
}

impl VectorsConfig {
    /// Qdrant's REST URL: `restUrl`, else `url` with the REST port (6333) for its gRPC port.
    pub fn rest_url(&self) -> Option<String> {
        if let Some(url) = &self.rest_url {
            return Some(url.trim_end_matches('/').to_string());
        }
        let url = self.url.as_deref()?.trim_end_matches('/');
        let (scheme, rest) = url.split_once("://")?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let host = match authority.rsplit_once(':') {
            Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host,
            _ => authority,
        };
        Some(format!("{scheme}://{host}:6333"))
    }
}

impl Default for VectorsConfig {
    fn default() -> Self {
        Self {
            backend: VectorBackend::Qdrant,
            url: None,
            rest_url: None,
            api_key: None,
            path: None,
            collection: "human_memories".into(),
            distance: DistanceMetric::Cosine,
            search_ef: None,
            timeout: Duration::from_secs(2),
            optimize_interval: Duration::from_secs(30),
            cluster: None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EmbeddingProvider {
    /// Any OpenAI-compatible `/embeddings` endpoint (`openai.*`).
    Openai,
    /// Built-in deterministic feature-hashing embedder: no network, no key.
    Hashing,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EmbeddingsConfig {
    pub provider: EmbeddingProvider,
    pub model: String,
    /// Vector size; also the collection's vector size.
    pub dimensions: u64,
}

impl Default for EmbeddingsConfig {
    fn default() -> Self {
        Self {
            provider: EmbeddingProvider::Openai,
            model: "text-embedding-3-small".into(),
            dimensions: 1536,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum EnrichmentProvider {
    /// Chat completions from any OpenAI-compatible endpoint (`openai.*`).
    Openai,
    /// Built in: extractive summary, VADER valence, RAKE keywords. No network, no key.
    Local,
}

/// How a new memory gets its summary, emotional valence and keywords.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct EnrichmentConfig {
    pub provider: EnrichmentProvider,
    /// Chat model.
    pub model: String,
}

impl Default for EnrichmentConfig {
    fn default() -> Self {
        Self {
            provider: EnrichmentProvider::Openai,
            model: "gpt-4o".into(),
        }
    }
}

/// The write worker: drains the `writes` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct WorkerConfig {
    /// Jobs processed at once by one worker.
    pub concurrency: usize,
    /// Tries of one job before it goes to `writes:dead`.
    pub max_attempts: u32,
    /// Wait before the first retry; doubled each time (with jitter).
    #[serde(with = "humantime_serde")]
    pub retry_backoff: Duration,
    /// The longest wait between two tries.
    #[serde(with = "humantime_serde")]
    pub max_retry_backoff: Duration,
    /// A job whose worker has not said it is alive for this long is claimed by another;
    /// workers say so five times per `claimIdle`. Also the lease on a memory being written.
    #[serde(with = "humantime_serde")]
    pub claim_idle: Duration,
    /// How long a write waits for the earlier writes to its memory before it is applied
    /// anyway (logged as an error and counted in `memgate_ordered_waits_total`).
    #[serde(with = "humantime_serde")]
    pub order_wait: Duration,
    /// Most texts in one embeddings call.
    pub embedding_batch_size: usize,
    /// How long a job waits for others to share its embeddings call.
    #[serde(with = "humantime_serde")]
    pub embedding_batch_window: Duration,
    /// Time to finish in-flight jobs after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub drain_timeout: Duration,
    /// How long a retried create with the same `Idempotency-Key` returns the first answer.
    #[serde(with = "humantime_serde")]
    pub idempotency_ttl: Duration,
    /// How often read counts (`access:{id}`) are added to the vector store's payload.
    #[serde(with = "humantime_serde")]
    pub access_sync_interval: Duration,
    /// Writes are applied by separate `memgate worker` processes (the operator sets this when a
    /// store has worker pods). Otherwise `memgate serve` applies them itself, so an
    /// acknowledged write never waits for a worker nobody started.
    pub separate: bool,
    /// The admin address of `memgate worker` (`/metrics`, `/healthz`, `/readyz`): its own, so
    /// a worker started by hand with `serve`'s file does not clash with `adminListen`.
    pub admin_listen: SocketAddr,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            concurrency: 8,
            max_attempts: 5,
            retry_backoff: Duration::from_millis(500),
            max_retry_backoff: Duration::from_secs(30),
            claim_idle: Duration::from_secs(5),
            order_wait: Duration::from_secs(600),
            embedding_batch_size: 64,
            embedding_batch_window: Duration::from_millis(20),
            drain_timeout: Duration::from_secs(30),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            access_sync_interval: Duration::from_secs(300),
            separate: false,
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 9091)),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct OpenAiConfig {
    pub base_url: String,
    /// Usually from `MEMGATE_OPENAI__API_KEY`; may be empty for local servers.
    pub api_key: Option<String>,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
}

impl Default for OpenAiConfig {
    fn default() -> Self {
        Self {
            base_url: "https://api.openai.com/v1".into(),
            api_key: None,
            timeout: Duration::from_secs(10),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AccessConfig {
    /// How often recorded reads are flushed to the cache backend. Each process's own answers
    /// count its reads at once; other processes see them at the next flush. Every flush is a
    /// burst of work in this process and in Redis: at 100 ms those bursts were the whole
    /// cached-`get` tail above the HTTP floor on a 2-core machine (docs/performance.md).
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for AccessConfig {
    fn default() -> Self {
        Self {
            flush_interval: Duration::from_secs(1),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct ReloadConfig {
    /// How often the config file is checked for a new rollout percentage.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for ReloadConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(2),
        }
    }
}

/// A configuration value that cannot be honoured, named by its path in the file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid configuration: `{field}` {problem}")]
pub struct InvalidConfig {
    pub field: &'static str,
    pub problem: String,
}

fn invalid(field: &'static str, problem: impl Into<String>) -> InvalidConfig {
    InvalidConfig {
        field,
        problem: problem.into(),
    }
}

impl Config {
    /// Checks what the types cannot: ranges and required combinations.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        if self.rollout.percent > 100 {
            return Err(invalid("rollout.percent", "must be between 0 and 100"));
        }
        if !(0.0..=1.0).contains(&self.shadow.sample) {
            return Err(invalid("shadow.sample", "must be between 0 and 1"));
        }
        if self.shadow.max_in_flight == 0 {
            return Err(invalid("shadow.maxInFlight", "must be greater than 0"));
        }
        if let Some(header) = &self.rollout.sticky_header {
            check_header_name("rollout.stickyHeader", header)?;
        }
        let stdio_upstream = self.upstream.mcp.transport == UpstreamMcpTransport::Stdio;
        if stdio_upstream && self.upstream.mcp.command.is_empty() {
            return Err(invalid(
                "upstream.mcp.command",
                "is required with upstream.mcp.transport: stdio",
            ));
        }
        if !self.upstream.mcp.path().starts_with('/') {
            return Err(invalid("upstream.mcp.path", "must start with `/`"));
        }
        if self.mcp.max_body_bytes == 0 {
            return Err(invalid("mcp.maxBodyBytes", "must be greater than 0"));
        }
        if self.mcp.max_sessions == 0 {
            return Err(invalid("mcp.maxSessions", "must be greater than 0"));
        }
        check_positive("mcp.sessionIdleTimeout", self.mcp.session_idle_timeout)?;
        if let Some(url) = &self.upstream.url {
            check_http_url("upstream.url", url)?;
        } else if self.rollout.percent < 100 && !stdio_upstream {
            return Err(invalid(
                "upstream.url",
                "is required when rollout.percent is below 100 (some requests go to legacy)",
            ));
        }
        if let Some(scope) = &self.scope {
            check_header_name("scope.header", &scope.header)?;
            if scope.field.trim().is_empty() {
                return Err(invalid("scope.field", "must name a payload field"));
            }
        }
        if self.limits.max_body_bytes == 0 {
            return Err(invalid("limits.maxBodyBytes", "must be greater than 0"));
        }
        if !(1..=1_000_000).contains(&self.limits.max_in_flight) {
            return Err(invalid(
                "limits.maxInFlight",
                "must be between 1 and 1000000",
            ));
        }
        check_positive("limits.headerReadTimeout", self.limits.header_read_timeout)?;
        check_positive("limits.drainTimeout", self.limits.drain_timeout)?;
        if self.limits.writes_per_second_per_tenant == Some(0) {
            return Err(invalid(
                "limits.writesPerSecondPerTenant",
                "must be greater than 0 (leave it out for no limit)",
            ));
        }
        for origin in &self.security.allowed_origins {
            check_origin("security.allowedOrigins", origin)?;
        }
        for host in &self.security.allowed_hosts {
            let bracketed = host.starts_with('[') && host.ends_with(']');
            if host.is_empty() || (!bracketed && host.contains(['/', ':', ' ', '@'])) {
                return Err(invalid(
                    "security.allowedHosts",
                    format!("{host:?} must be a host name without scheme, port or path"),
                ));
            }
        }
        if let Some(oauth) = &self.security.oauth {
            check_http_url("security.oauth.issuer", &oauth.issuer)?;
            check_http_url("security.oauth.resource", &oauth.resource)?;
            if let Some(url) = &oauth.jwks_url {
                check_http_url("security.oauth.jwksUrl", url)?;
            }
            if oauth.tenant_claim.trim().is_empty() {
                return Err(invalid("security.oauth.tenantClaim", "must name a claim"));
            }
            if oauth.leeway > Duration::from_secs(300) {
                return Err(invalid("security.oauth.leeway", "must be at most 5m"));
            }
            check_positive("security.oauth.jwksRefresh", oauth.jwks_refresh)?;
        }
        if let Some(tokens) = &self.security.tokens {
            if tokens.path.as_os_str().is_empty() {
                return Err(invalid("security.tokens.path", "must name a file"));
            }
        }
        if !(1..=1000).contains(&self.circuit_breaker.failure_threshold) {
            return Err(invalid(
                "circuitBreaker.failureThreshold",
                "must be between 1 and 1000",
            ));
        }
        check_positive("circuitBreaker.coolDown", self.circuit_breaker.cool_down)?;
        if self.circuit_breaker.max_cool_down < self.circuit_breaker.cool_down {
            return Err(invalid(
                "circuitBreaker.maxCoolDown",
                "must not be shorter than circuitBreaker.coolDown",
            ));
        }
        check_positive("fallback.embeddingTimeout", self.fallback.embedding_timeout)?;
        if !(1..=10_000).contains(&self.fallback.keyword_candidates) {
            return Err(invalid(
                "fallback.keywordCandidates",
                "must be between 1 and 10000",
            ));
        }
        check_positive("upstream.connectTimeout", self.upstream.connect_timeout)?;
        check_positive("upstream.timeout", self.upstream.timeout)?;
        check_positive("upstream.mcp.pingInterval", self.upstream.mcp.ping_interval)?;
        check_positive("upstream.mcp.pingTimeout", self.upstream.mcp.ping_timeout)?;
        check_positive("cache.memoryTtl", self.cache.memory_ttl)?;
        check_positive("cache.searchTtl", self.cache.search_ttl)?;
        check_positive("cache.embeddingTtl", self.cache.embedding_ttl)?;
        check_positive("cache.l1.ttl", self.cache.l1.ttl)?;
        check_positive("redis.timeout", self.redis.timeout)?;
        if self.redis.is_cluster() && self.redis.durability == Some(Durability::Replicated) {
            return Err(invalid(
                "redis.durability",
                "replicated is not available with Redis Cluster (redis+cluster://): WAIT would not \
                 reach the node of the write; use Sentinel (redis+sentinel://), or local",
            ));
        }
        if self.redis.effective_durability() == Durability::Replicated {
            check_positive("redis.replicationTimeout", self.redis.replication_timeout)?;
            if self.redis.replicas == 0 {
                return Err(invalid(
                    "redis.replicas",
                    "must be at least 1 with durability replicated",
                ));
            }
        }
        check_positive("vectors.timeout", self.vectors.timeout)?;
        check_positive("vectors.optimizeInterval", self.vectors.optimize_interval)?;
        check_positive("openai.timeout", self.openai.timeout)?;
        check_positive("access.flushInterval", self.access.flush_interval)?;
        check_positive("reload.interval", self.reload.interval)?;
        if self.cache.backend == CacheBackend::Redis {
            match &self.redis.url {
                None => {
                    return Err(invalid(
                        "redis.url",
                        "is required when cache.backend is redis",
                    ))
                }
                Some(url)
                    if !url.starts_with("redis://")
                        && !url.starts_with("rediss://")
                        && !url.starts_with(SENTINEL_SCHEME)
                        && !url.starts_with(CLUSTER_SCHEME) =>
                {
                    return Err(invalid(
                        "redis.url",
                        "must start with redis://, rediss://, redis+sentinel:// or redis+cluster://",
                    ))
                }
                Some(_) => {}
            }
        }
        if let Some(cluster) = &self.vectors.cluster {
            for (field, value) in [
                ("vectors.cluster.shardNumber", cluster.shard_number),
                (
                    "vectors.cluster.replicationFactor",
                    cluster.replication_factor,
                ),
                (
                    "vectors.cluster.writeConsistencyFactor",
                    cluster.write_consistency_factor,
                ),
            ] {
                if value == 0 {
                    return Err(invalid(field, "must be at least 1"));
                }
            }
            if cluster.write_consistency_factor > cluster.replication_factor {
                return Err(invalid(
                    "vectors.cluster.writeConsistencyFactor",
                    "cannot be more than replicationFactor (the copies there are)",
                ));
            }
        }
        if self.vectors.backend == VectorBackend::Qdrant {
            match &self.vectors.url {
                None => {
                    return Err(invalid(
                        "vectors.url",
                        "is required when vectors.backend is qdrant",
                    ))
                }
                Some(url) => check_http_url("vectors.url", url)?,
            }
            if let Some(url) = &self.vectors.rest_url {
                check_http_url("vectors.restUrl", url)?;
            }
        }
        if self.vectors.collection.trim().is_empty() {
            return Err(invalid("vectors.collection", "must not be empty"));
        }
        if self.vectors.search_ef == Some(0) {
            return Err(invalid("vectors.searchEf", "must be at least 1"));
        }
        if !(0.0..=1.0).contains(&self.layout.similarity_threshold) {
            return Err(invalid(
                "layout.similarityThreshold",
                "must be between 0 and 1",
            ));
        }
        if self
            .layout
            .project
            .as_deref()
            .is_some_and(|p| p.trim().is_empty())
        {
            return Err(invalid("layout.project", "must not be empty when given"));
        }
        if !(1..=65_536).contains(&self.embeddings.dimensions) {
            return Err(invalid(
                "embeddings.dimensions",
                "must be between 1 and 65536",
            ));
        }
        if self.embeddings.model.trim().is_empty() {
            return Err(invalid("embeddings.model", "must not be empty"));
        }
        if self.embeddings.provider == EmbeddingProvider::Openai {
            check_http_url("openai.baseUrl", &self.openai.base_url)?;
        }
        if self.enrichment.provider == EnrichmentProvider::Openai {
            check_http_url("openai.baseUrl", &self.openai.base_url)?;
            if self.enrichment.model.trim().is_empty() {
                return Err(invalid("enrichment.model", "must not be empty"));
            }
        }
        if !(1..=1024).contains(&self.worker.concurrency) {
            return Err(invalid("worker.concurrency", "must be between 1 and 1024"));
        }
        if !(1..=100).contains(&self.worker.max_attempts) {
            return Err(invalid("worker.maxAttempts", "must be between 1 and 100"));
        }
        if !(1..=2048).contains(&self.worker.embedding_batch_size) {
            return Err(invalid(
                "worker.embeddingBatchSize",
                "must be between 1 and 2048",
            ));
        }
        check_positive("worker.retryBackoff", self.worker.retry_backoff)?;
        check_positive("worker.claimIdle", self.worker.claim_idle)?;
        check_positive("worker.orderWait", self.worker.order_wait)?;
        if self.worker.max_retry_backoff < self.worker.retry_backoff {
            return Err(invalid(
                "worker.maxRetryBackoff",
                "must not be less than worker.retryBackoff",
            ));
        }
        check_positive("worker.drainTimeout", self.worker.drain_timeout)?;
        check_positive("worker.idempotencyTtl", self.worker.idempotency_ttl)?;
        check_positive(
            "worker.accessSyncInterval",
            self.worker.access_sync_interval,
        )?;
        if self.store.namespace.is_empty() || self.store.name.is_empty() {
            return Err(invalid("store", "namespace and name must not be empty"));
        }
        Ok(())
    }

    /// The prefix of every cache and queue key of this store.
    /// The prefix of every Redis key of this store. With Redis Cluster the store's name is its
    /// hash tag (`memgate:{namespace/name}:`), so all its keys are in one slot.
    pub fn key_prefix(&self) -> String {
        if self.redis.is_cluster() {
            format!("memgate:{{{}/{}}}:", self.store.namespace, self.store.name)
        } else {
            format!("memgate:{}/{}:", self.store.namespace, self.store.name)
        }
    }
}

fn check_positive(field: &'static str, value: Duration) -> Result<(), InvalidConfig> {
    if value.is_zero() {
        return Err(invalid(field, "must be greater than zero"));
    }
    Ok(())
}

fn check_header_name(field: &'static str, value: &str) -> Result<(), InvalidConfig> {
    HeaderName::from_bytes(value.as_bytes())
        .map(|_| ())
        .map_err(|_| invalid(field, format!("{value:?} is not a valid HTTP header name")))
}

/// `*`, or an origin as browsers send it: `http(s)://host[:port]`, nothing after.
fn check_origin(field: &'static str, value: &str) -> Result<(), InvalidConfig> {
    if value == "*" {
        return Ok(());
    }
    let refused = || {
        invalid(
            field,
            format!("{value:?} must be `*` or an origin: `http(s)://host[:port]`, no path"),
        )
    };
    let uri: http::Uri = value.parse().map_err(|_| refused())?;
    let bare = uri.path_and_query().is_none_or(|p| p.as_str() == "/") && !value.ends_with('/');
    match (uri.scheme_str(), uri.authority()) {
        (Some("http") | Some("https"), Some(authority))
            if bare && !authority.as_str().contains('@') =>
        {
            Ok(())
        }
        _ => Err(refused()),
    }
}

fn check_http_url(field: &'static str, value: &str) -> Result<(), InvalidConfig> {
    let uri: http::Uri = value
        .parse()
        .map_err(|e| invalid(field, format!("{value:?} is not a URL: {e}")))?;
    match (uri.scheme_str(), uri.authority()) {
        (Some("http") | Some("https"), Some(_)) => Ok(()),
        _ => Err(invalid(
            field,
            format!("{value:?} must be an http:// or https:// URL with a host"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn valid() -> Config {
        Config {
            upstream: UpstreamConfig {
                url: Some("http://127.0.0.1:3000".into()),
                ..Default::default()
            },
            redis: RedisConfig {
                url: Some("redis://127.0.0.1:6379".into()),
                ..Default::default()
            },
            vectors: VectorsConfig {
                url: Some("http://127.0.0.1:6334".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn a_complete_config_is_valid() {
        assert_eq!(valid().validate(), Ok(()));
    }

    #[test]
    fn errors_name_the_field() {
        let mut config = valid();
        config.rollout.percent = 101;
        assert_eq!(config.validate().unwrap_err().field, "rollout.percent");

        let mut config = valid();
        config.redis.url = None;
        assert_eq!(config.validate().unwrap_err().field, "redis.url");

        let mut config = valid();
        config.upstream.url = Some("ftp://x".into());
        assert_eq!(config.validate().unwrap_err().field, "upstream.url");

        let mut config = valid();
        config.scope = Some(ScopeConfig {
            header: "bad header".into(),
            field: "userId".into(),
        });
        assert_eq!(config.validate().unwrap_err().field, "scope.header");

        let mut config = valid();
        config.cache.search_ttl = Duration::ZERO;
        assert_eq!(config.validate().unwrap_err().field, "cache.searchTtl");
    }

    #[test]
    fn security_settings_are_checked() {
        for origin in [
            "*",
            "http://localhost",
            "https://app.example.com:8443",
            "http://[::1]",
        ] {
            let mut config = valid();
            config.security.allowed_origins = vec![origin.into()];
            assert_eq!(config.validate(), Ok(()), "{origin}");
        }
        for origin in [
            "localhost",
            "ftp://x",
            "http://x/path",
            "http://x/",
            "null",
            "",
        ] {
            let mut config = valid();
            config.security.allowed_origins = vec![origin.into()];
            assert_eq!(
                config.validate().unwrap_err().field,
                "security.allowedOrigins",
                "{origin}"
            );
        }
        let mut config = valid();
        config.security.allowed_hosts = vec!["memgate.internal:8080".into()];
        assert_eq!(
            config.validate().unwrap_err().field,
            "security.allowedHosts"
        );
        let mut config = valid();
        config.limits.writes_per_second_per_tenant = Some(0);
        assert_eq!(
            config.validate().unwrap_err().field,
            "limits.writesPerSecondPerTenant"
        );
    }

    #[test]
    fn resilience_settings_are_checked() {
        let mut config = valid();
        config.limits.max_in_flight = 0;
        assert_eq!(config.validate().unwrap_err().field, "limits.maxInFlight");

        let mut config = valid();
        config.circuit_breaker.failure_threshold = 0;
        assert_eq!(
            config.validate().unwrap_err().field,
            "circuitBreaker.failureThreshold"
        );

        let mut config = valid();
        config.circuit_breaker.max_cool_down = Duration::from_millis(100);
        assert_eq!(
            config.validate().unwrap_err().field,
            "circuitBreaker.maxCoolDown"
        );

        let mut config = valid();
        config.fallback.embedding_timeout = Duration::ZERO;
        assert_eq!(
            config.validate().unwrap_err().field,
            "fallback.embeddingTimeout"
        );

        let yaml = "circuitBreaker: {failureThreshold: 2, coolDown: 5s}\nfallback: {writesToLegacy: false}\n";
        let parsed: Config = figment::Figment::new()
            .merge(figment::providers::Serialized::defaults(Config::default()))
            .merge(<figment::providers::Yaml as figment::providers::Format>::string(yaml))
            .extract()
            .expect("parses");
        assert_eq!(parsed.circuit_breaker.failure_threshold, 2);
        assert_eq!(parsed.circuit_breaker.cool_down, Duration::from_secs(5));
        assert!(!parsed.fallback.writes_to_legacy);
    }

    #[test]
    fn qdrants_rest_url_is_its_grpc_url_on_the_rest_port_unless_given() {
        let mut vectors = VectorsConfig {
            url: Some("http://notes-qdrant:6334".into()),
            ..Default::default()
        };
        assert_eq!(
            vectors.rest_url().as_deref(),
            Some("http://notes-qdrant:6333")
        );
        vectors.url = Some("https://x.cloud.qdrant.io".into());
        assert_eq!(
            vectors.rest_url().as_deref(),
            Some("https://x.cloud.qdrant.io:6333")
        );
        vectors.rest_url = Some("http://127.0.0.1:7000/".into());
        assert_eq!(vectors.rest_url().as_deref(), Some("http://127.0.0.1:7000"));
    }

    #[test]
    fn upstream_is_optional_only_at_full_rollout() {
        assert_eq!(
            Config::default().rollout.percent,
            100,
            "every request, unless set"
        );
        let mut config = valid();
        config.upstream.url = None;
        config.rollout.percent = 50;
        assert_eq!(config.validate().unwrap_err().field, "upstream.url");
        config.rollout.percent = 100;
        assert_eq!(config.validate(), Ok(()));
    }
}
