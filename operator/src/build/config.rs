//! The sidecar's and workers' config, rendered from the spec with the proxy crate's own
//! [`Config`] type, so the operator and the proxy can never disagree on its shape. Secrets are
//! never in it: they reach the pods as `MEMGATE_*` environment variables from Secret
//! references.

use std::time::Duration;

use kube::ResourceExt;
use memgate_config::{
    CacheBackend, Config, EmbeddingProvider, EnrichmentProvider, OAuthConfig, QdrantClusterConfig,
    ReadConsistency, ScopeConfig, TokensConfig, VectorBackend, WriteOrdering,
};

use crate::crd::{self, MemoryStore};

/// Where the sidecar listens for the app (loopback only: the app is in the same pod).
pub const API_LISTEN: &str = "127.0.0.1:8080";
/// The admin port (metrics, probes), reachable by the kubelet and Prometheus.
pub const ADMIN_PORT: u16 = 9090;
/// The file name of the config in the ConfigMap and the directory it is mounted at.
pub const CONFIG_KEY: &str = "config.yaml";
pub const CONFIG_DIR: &str = "/etc/memgate";
/// Where the sidecar finds `spec.proxy.auth.tokensSecretRef` (a volume of its own, so the
/// kubelet keeps the file current when the Secret is rotated).
pub const AUTH_DIR: &str = "/var/run/memgate/auth";
pub const AUTH_TOKENS_KEY: &str = "tokens.yaml";

/// A field of the spec that cannot be turned into config.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("spec.{field}: {problem}")]
pub struct ConfigError {
    pub field: String,
    pub problem: String,
}

fn duration(field: &str, value: &str) -> Result<Duration, ConfigError> {
    humantime::parse_duration(value).map_err(|error| ConfigError {
        field: field.to_string(),
        problem: format!("{value:?} is not a duration: {error}"),
    })
}

/// The in-cluster address of a managed part's Service.
pub fn service_host(store: &MemoryStore, part: &str) -> String {
    format!(
        "{}-{part}.{}.svc",
        store.name_any(),
        store.namespace().unwrap_or_else(|| "default".into())
    )
}

/// `url` without the password of its user info (`scheme://user:password@host` →
/// `scheme://user@host`). The CRD refuses such URLs; one stored before that rule must still
/// never reach a ConfigMap or the status, where anyone who may read them would see it.
pub fn without_password(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    match authority.rsplit_once('@') {
        Some((user_info, host)) => {
            let user = user_info.split(':').next().unwrap_or_default();
            let user = if user.is_empty() {
                String::new()
            } else {
                format!("{user}@")
            };
            format!("{scheme}://{user}{host}{path}")
        }
        None => url.to_string(),
    }
}

/// `vectors.cluster`: the spec's `qdrant.cluster`, else for managed peers one shard per peer,
/// two copies of each, reads from a majority; none for one Qdrant node.
fn qdrant_cluster(store: &MemoryStore) -> Result<Option<QdrantClusterConfig>, ConfigError> {
    let invalid = |field: &str, value: &str| ConfigError {
        field: format!("qdrant.cluster.{field}"),
        problem: format!("{value:?} is not one of the values it takes"),
    };
    let spec = &store.spec.qdrant;
    let cluster = match (&spec.cluster, &spec.managed) {
        (Some(cluster), _) => cluster.clone(),
        (None, Some(managed)) if managed.distributed() => crd::QdrantCluster {
            shard_number: u32::try_from(managed.replicas).unwrap_or(1),
            replication_factor: 2,
            write_consistency_factor: 1,
            read_consistency: "majority".into(),
            write_ordering: "weak".into(),
        },
        (None, _) => return Ok(None),
    };
    let read_consistency = match cluster.read_consistency.as_str() {
        "one" => ReadConsistency::One,
        "majority" => ReadConsistency::Majority,
        "quorum" => ReadConsistency::Quorum,
        "all" => ReadConsistency::All,
        other => return Err(invalid("readConsistency", other)),
    };
    let write_ordering = match cluster.write_ordering.as_str() {
        "weak" => WriteOrdering::Weak,
        "medium" => WriteOrdering::Medium,
        "strong" => WriteOrdering::Strong,
        other => return Err(invalid("writeOrdering", other)),
    };
    Ok(Some(QdrantClusterConfig {
        shard_number: cluster.shard_number,
        replication_factor: cluster.replication_factor,
        write_consistency_factor: cluster.write_consistency_factor,
        read_consistency,
        write_ordering,
    }))
}

/// The managed Redis's Service, its Sentinels with replicas, or the external URL.
pub fn redis_url(store: &MemoryStore) -> String {
    match (&store.spec.redis.external, &store.spec.redis.managed) {
        (Some(external), _) => without_password(&external.url),
        (None, Some(managed)) if managed.replicated() => super::sentinel::url(store),
        (None, _) => format!("redis://{}:6379", service_host(store, "redis")),
    }
}

/// The gRPC endpoint of Qdrant.
pub fn qdrant_url(store: &MemoryStore) -> String {
    match &store.spec.qdrant.external {
        Some(external) => without_password(&external.url),
        None => format!("http://{}:6334", service_host(store, "qdrant")),
    }
}

/// The config for this store, checked by the proxy's own validation.
pub fn proxy_config(store: &MemoryStore) -> Result<Config, ConfigError> {
    let spec = &store.spec;
    let mut config = Config::default();
    config.store.namespace = store.namespace().unwrap_or_else(|| "default".into());
    config.store.name = store.name_any();
    config.listen = API_LISTEN.parse().map_err(|_| ConfigError {
        field: "proxy".into(),
        problem: "internal: bad listen address".into(),
    })?;
    config.admin_listen = std::net::SocketAddr::from(([0, 0, 0, 0], ADMIN_PORT));
    // Worker pods are pods of their own: the same admin port as the sidecar's.
    config.worker.admin_listen = config.admin_listen;
    config.upstream.url = Some(spec.proxy.upstream.clone());
    config.rollout.percent = spec.rollout.percent;
    config.rollout.sticky_header = spec.rollout.sticky_header.clone();
    if let Some(shadow) = &spec.rollout.shadow {
        config.shadow.sample = shadow.sample;
        config.shadow.show_content = shadow.show_content;
    }
    config.scope = spec.proxy.scope.as_ref().map(|scope| ScopeConfig {
        header: scope.header.clone(),
        field: scope.field.clone(),
    });
    if let Some(auth) = &spec.proxy.auth {
        config.security.tokens = auth.tokens_secret_ref.as_ref().map(|_| TokensConfig {
            path: format!("{AUTH_DIR}/{AUTH_TOKENS_KEY}").into(),
        });
        config.security.oauth = auth.oauth.as_ref().map(|oauth| OAuthConfig {
            issuer: oauth.issuer.clone(),
            jwks_url: oauth.jwks_url.clone(),
            resource: oauth.resource.clone(),
            tenant_claim: oauth
                .tenant_claim
                .clone()
                .unwrap_or_else(|| OAuthConfig::default().tenant_claim),
            ..OAuthConfig::default()
        });
    }
    config.cache.backend = CacheBackend::Redis;
    config.cache.memory_ttl = duration("cache.memoryTtl", &spec.cache.memory_ttl)?;
    config.cache.search_ttl = duration("cache.searchTtl", &spec.cache.search_ttl)?;
    config.cache.embedding_ttl = duration("cache.embeddingTtl", &spec.cache.embedding_ttl)?;
    config.redis.url = Some(redis_url(store));
    config.redis.durability = store
        .spec
        .redis
        .durability
        .map(|durability| match durability {
            crd::RedisDurability::Local => memgate_config::Durability::Local,
            crd::RedisDurability::Replicated => memgate_config::Durability::Replicated,
        });
    config.vectors.backend = VectorBackend::Qdrant;
    config.vectors.url = Some(qdrant_url(store));
    config.vectors.collection = spec.qdrant.collection.clone();
    config.vectors.search_ef = spec.qdrant.search_ef;
    config.vectors.cluster = qdrant_cluster(store)?;
    config.embeddings.provider = match spec.embeddings.provider {
        crd::EmbeddingProvider::Openai => EmbeddingProvider::Openai,
        crd::EmbeddingProvider::Hashing => EmbeddingProvider::Hashing,
    };
    config.embeddings.model = spec.embeddings.model.clone();
    config.embeddings.dimensions = spec.embeddings.dimensions;
    config.enrichment.provider = match spec.enrichment.provider {
        crd::EnrichmentProvider::Openai => EnrichmentProvider::Openai,
        crd::EnrichmentProvider::Local => EnrichmentProvider::Local,
    };
    config.enrichment.model = spec.enrichment.model.clone();
    config.openai.base_url = spec.openai.base_url.clone();
    config.openai.timeout = duration("openai.timeout", &spec.openai.timeout)?;
    config.worker.concurrency = spec.workers.concurrency;
    // The store's worker pods apply its writes; without any, the sidecars do.
    config.worker.separate = spec.workers.replicas > 0;
    config.layout.similarity_threshold = spec.layout.similarity_threshold;
    config.layout.memory_metadata = spec.layout.memory_metadata.clone();
    config.layout.project = spec.layout.project.clone();
    config.validate().map_err(|invalid| ConfigError {
        field: invalid.field.to_string(),
        problem: invalid.problem,
    })?;
    Ok(config)
}

/// The config file's text, as it goes into the ConfigMap.
pub fn render(config: &Config) -> Result<String, ConfigError> {
    serde_yaml::to_string(config).map_err(|error| ConfigError {
        field: "proxy".into(),
        problem: format!("internal: the config does not serialize: {error}"),
    })
}

#[cfg(test)]
mod tests {
    use super::{proxy_config, without_password};
    use crate::crd::MemoryStore;

    #[test]
    fn the_rollouts_shadow_reaches_the_sidecars_config_and_is_off_without_it() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
        let mut store: MemoryStore =
            serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store");
        assert_eq!(proxy_config(&store).expect("config").shadow.sample, 0.0);
        store.spec.rollout.shadow = Some(crate::crd::ShadowSpec {
            sample: 0.1,
            show_content: true,
        });
        let config = proxy_config(&store).expect("config");
        assert_eq!(config.shadow.sample, 0.1);
        assert!(config.shadow.show_content);
    }

    #[test]
    fn a_password_in_a_url_is_dropped_and_the_rest_kept() {
        for (url, kept) in [
            (
                "redis://memgate:hunter2@redis.example:6379/0",
                "redis://memgate@redis.example:6379/0",
            ),
            (
                "rediss://:hunter2@redis.example:6380",
                "rediss://redis.example:6380",
            ),
            (
                "redis://user@redis.example:6379",
                "redis://user@redis.example:6379",
            ),
            ("http://qdrant.example:6334", "http://qdrant.example:6334"),
            (
                "https://k:p%40ss@q.example:6334/x@y",
                "https://k@q.example:6334/x@y",
            ),
        ] {
            assert_eq!(without_password(url), kept, "{url}");
        }
    }
}
