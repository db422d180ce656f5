//! Layered loading: defaults → embedded profile → cldmemory's environment → YAML file →
//! `MEMGATE_*` environment → flags.

use std::path::PathBuf;

use figment::providers::{Format, Serialized, Yaml};
use figment::value::Value;
use figment::Figment;

use super::Config;

/// `MEMGATE_X_FILE` names a file holding the value of `MEMGATE_X`.
const FILE_SUFFIX: &str = "_FILE";

/// A config value read from a file (see [`ConfigSources::credential_files`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CredentialFile {
    /// `MEMGATE_REDIS__PASSWORD_FILE`.
    pub variable: String,
    /// `redis.password`.
    pub path: String,
    pub file: PathBuf,
}

impl CredentialFile {
    /// The file's content without its trailing line break (`echo secret > file` writes one).
    pub fn read(&self) -> anyhow::Result<String> {
        let text = std::fs::read_to_string(&self.file).map_err(|error| {
            anyhow::anyhow!(
                "{}: cannot read {}: {error}",
                self.variable,
                self.file.display()
            )
        })?;
        Ok(text.trim_end_matches(['\n', '\r']).to_string())
    }
}

/// Environment variables that belong to the command line itself, not to the config file.
const CLI_ONLY_ENV: &[&str] = &[
    "MEMGATE_CONFIG",
    "MEMGATE_LOG",
    "MEMGATE_LOG_FORMAT",
    "MEMGATE_IDLE_EXIT",
    LOCAL_SERVER_ENV,
];

/// Set in the environment of the local server a `memgate mcp stdio` launch starts in the
/// background (`app::stdio_launch`); not a config field.
pub const LOCAL_SERVER_ENV: &str = "MEMGATE_LOCAL_SERVER";

/// Where a configuration comes from.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    /// The YAML file; it must exist when named.
    pub file: Option<PathBuf>,
    /// Apply the embedded profile (in-process cache, Qdrant Edge, hashing embedder, no legacy).
    pub embedded: bool,
    /// The embedded profile's `dataDir` (the platform's data directory); the file, the
    /// environment and the flags may name another.
    pub embedded_data_dir: Option<PathBuf>,
    /// Keep nothing on disk: no `dataDir`, whatever else says so (`--ephemeral`).
    pub ephemeral: bool,
    /// Environment variables, as `(name, value)`; only `MEMGATE_*` ones are read.
    pub env: Vec<(String, String)>,
    /// Flag overrides as `(dotted.camelCase.path, value)`.
    pub overrides: Vec<(String, Value)>,
}

impl ConfigSources {
    /// Sources with this process's environment.
    pub fn from_process_env(file: Option<PathBuf>, embedded: bool) -> Self {
        Self {
            file,
            embedded,
            env: std::env::vars().collect(),
            ..Self::default()
        }
    }

    /// The credentials read from files: `MEMGATE_REDIS__PASSWORD_FILE=/path` sets
    /// `redis.password` to the file's content (a mounted Secret, which the kubelet keeps
    /// current). As `(environment variable, config path, file)`.
    pub fn credential_files(&self) -> Vec<CredentialFile> {
        self.env
            .iter()
            .filter_map(|(name, file)| {
                let variable = name.strip_suffix(FILE_SUFFIX)?;
                Some(CredentialFile {
                    variable: name.clone(),
                    path: env_var_to_path(variable)?,
                    file: PathBuf::from(file),
                })
            })
            .collect()
    }

    pub fn with_override(mut self, path: &str, value: impl Into<Value>) -> Self {
        self.overrides.push((path.to_string(), value.into()));
        self
    }
}

/// Loads and validates a configuration; the error names the offending field.
pub fn load(sources: &ConfigSources) -> anyhow::Result<Config> {
    let layers = layers(sources)?;
    let figment = Figment::from(Serialized::defaults(Config::default())).merge(layers.clone());
    let mut config: Config = figment
        .extract()
        .map_err(|e| anyhow::anyhow!("invalid configuration: {e}"))?;
    if sources.ephemeral {
        config.data_dir = None;
    }
    // Without a Redis to use, the cache and the queue are this process's own, unless the
    // backend was chosen explicitly (then validation says what is missing).
    if config.redis.url.is_none() && layers.find_value("cache.backend").is_err() {
        config.cache.backend = super::CacheBackend::Memory;
    }
    config.validate()?;
    for field in unknown_fields(&figment) {
        tracing::warn!(
            %field,
            "configuration field unknown to this memgate version (written by a newer operator, or misspelt); ignored"
        );
    }
    Ok(config)
}

/// Every layer above the defaults, in order.
fn layers(sources: &ConfigSources) -> anyhow::Result<Figment> {
    let mut figment = Figment::new();
    if sources.embedded {
        figment = figment.merge(Serialized::defaults(embedded_profile()));
        if let Some(dir) = &sources.embedded_data_dir {
            figment = figment.merge(Serialized::default("dataDir", dir.display().to_string()));
        }
    }
    let cldmemory = super::cldmemory_env::layer(&sources.env, sources.embedded)?;
    if !cldmemory.read.is_empty() {
        tracing::info!(
            variables = ?cldmemory.read,
            "cldmemory's settings read from the environment (memgate's own settings win)"
        );
        if let Some((rest, grpc)) = &cldmemory.grpc {
            tracing::info!(
                %rest, %grpc,
                "QDRANT_URL is Qdrant's REST API: memgate reads over gRPC on the same host and writes payloads over REST (set vectors.url to change)"
            );
        }
        figment = figment.merge(Serialized::defaults(cldmemory.values));
    }
    if let Some(path) = &sources.file {
        if !path.is_file() {
            anyhow::bail!(
                "config file {} does not exist or is not a file",
                path.display()
            );
        }
        figment = figment.merge(Yaml::file_exact(path));
    }
    for (name, value) in &sources.env {
        if name.ends_with(FILE_SUFFIX) {
            continue;
        }
        if let Some(path) = env_var_to_path(name) {
            figment = figment.merge(Serialized::default(&path, value.parse::<Value>()?));
        }
    }
    // A value from a file is a string as written (a password of digits stays a string), and
    // wins over the same variable set directly.
    for credential in sources.credential_files() {
        figment = figment.merge(Serialized::default(
            &credential.path,
            Value::from(credential.read()?),
        ));
    }
    for (path, value) in &sources.overrides {
        figment = figment.merge(Serialized::default(path, value));
    }
    Ok(figment)
}

/// The fields of the merged configuration that [`Config`] does not have, as dotted paths. A
/// config rendered by a newer operator may carry fields this version does not know: it says
/// which and runs on, rather than refusing to start.
pub fn unknown_fields(figment: &Figment) -> Vec<String> {
    let Ok(merged) = figment.extract::<serde_json::Value>() else {
        return Vec::new();
    };
    let mut unknown = Vec::new();
    let _: Result<Config, _> =
        serde_ignored::deserialize(merged, |path| unknown.push(path.to_string()));
    unknown
}

/// The embedded profile: every dependency in-process, every request on the fast path.
fn embedded_profile() -> serde_json::Value {
    serde_json::json!({
        "cache": { "backend": "memory" },
        "vectors": { "backend": "edge" },
        "embeddings": { "provider": "hashing", "model": "memgate-hashing-v1", "dimensions": 384 },
        "enrichment": { "provider": "local" },
        "rollout": { "percent": 100 },
        // The hashing embedder scores related texts lower than a model does: cldmemory's own
        // example configuration's threshold.
        "layout": { "similarityThreshold": 0.3 },
    })
}

/// `MEMGATE_CACHE__MEMORY_TTL` → `cache.memoryTtl`: `__` separates levels, `_` separates words.
fn env_var_to_path(name: &str) -> Option<String> {
    if CLI_ONLY_ENV.contains(&name) {
        return None;
    }
    let rest = name.strip_prefix("MEMGATE_")?;
    if rest.is_empty() {
        return None;
    }
    let segments: Vec<String> = rest.split("__").map(snake_to_camel).collect();
    if segments.iter().any(String::is_empty) {
        return None;
    }
    Some(segments.join("."))
}

fn snake_to_camel(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for (i, word) in segment.split('_').filter(|w| !w.is_empty()).enumerate() {
        let word = word.to_ascii_lowercase();
        if i == 0 {
            out.push_str(&word);
        } else {
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                out.push(first.to_ascii_uppercase());
                out.extend(chars);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::time::Duration;

    use super::*;
    use crate::config::{CacheBackend, VectorBackend};

    fn yaml_file(text: &str) -> tempfile::NamedTempFile {
        let mut file = tempfile::NamedTempFile::new().expect("temp file");
        file.write_all(text.as_bytes()).expect("write");
        file
    }

    fn sources(file: &tempfile::NamedTempFile) -> ConfigSources {
        ConfigSources {
            file: Some(file.path().to_path_buf()),
            ..Default::default()
        }
    }

    const BASE: &str = "
upstream: {url: 'http://127.0.0.1:3000'}
redis: {url: 'redis://127.0.0.1:6379'}
vectors: {url: 'http://127.0.0.1:6334', searchEf: 16}
rollout: {percent: 10, stickyHeader: x-user-id}
cache: {memoryTtl: 30m, searchTtl: 1m}
";

    #[test]
    fn env_names_map_to_camel_case_paths() {
        assert_eq!(
            env_var_to_path("MEMGATE_CACHE__MEMORY_TTL").as_deref(),
            Some("cache.memoryTtl")
        );
        assert_eq!(
            env_var_to_path("MEMGATE_ROLLOUT__PERCENT").as_deref(),
            Some("rollout.percent")
        );
        assert_eq!(
            env_var_to_path("MEMGATE_ADMIN_LISTEN").as_deref(),
            Some("adminListen")
        );
        assert_eq!(env_var_to_path("MEMGATE_CONFIG"), None);
        assert_eq!(env_var_to_path("HOME"), None);
    }

    #[test]
    fn file_then_env_then_flags() {
        let file = yaml_file(BASE);
        let config = load(&sources(&file)).expect("loads");
        assert_eq!(config.rollout.percent, 10);
        assert_eq!(config.cache.memory_ttl, Duration::from_secs(1800));
        assert_eq!(config.vectors.search_ef, Some(16));

        let mut with_env = sources(&file);
        with_env.env = vec![
            ("MEMGATE_ROLLOUT__PERCENT".into(), "40".into()),
            ("MEMGATE_CACHE__SEARCH_TTL".into(), "2m".into()),
        ];
        let config = load(&with_env).expect("loads");
        assert_eq!(config.rollout.percent, 40);
        assert_eq!(config.cache.search_ttl, Duration::from_secs(120));

        let config = load(&with_env.with_override("rollout.percent", 70)).expect("loads");
        assert_eq!(config.rollout.percent, 70);
    }

    #[test]
    fn cldmemorys_environment_is_a_layer_under_memgates_own_settings() {
        let file = yaml_file(
            "upstream: {url: 'http://127.0.0.1:3000'}\nredis: {url: 'redis://127.0.0.1:6379'}\nvectors: {collection: from_file}\n",
        );
        let mut with_env = sources(&file);
        with_env.env = vec![
            ("QDRANT_URL".into(), "http://qdrant:6333".into()),
            ("QDRANT_COLLECTION_NAME".into(), "from_cldmemory".into()),
            ("SIMILARITY_THRESHOLD".into(), "0.3".into()),
            ("MEMORY_METADATA".into(), "team:core".into()),
            (
                "MEMGATE_LAYOUT__MEMORY_METADATA".into(),
                "team:memgate".into(),
            ),
        ];
        let config = load(&with_env).expect("loads");
        assert_eq!(config.vectors.backend, VectorBackend::Qdrant);
        assert_eq!(config.vectors.url.as_deref(), Some("http://qdrant:6334"));
        assert_eq!(
            config.vectors.rest_url.as_deref(),
            Some("http://qdrant:6333")
        );
        assert_eq!(config.vectors.collection, "from_file", "the file wins");
        assert_eq!(config.layout.similarity_threshold, 0.3);
        assert_eq!(
            config.layout.memory_metadata.as_deref(),
            Some("team:memgate"),
            "MEMGATE_* wins"
        );
    }

    #[test]
    fn credentials_come_from_files_as_written() {
        let file = yaml_file(
            "upstream: {url: 'http://127.0.0.1:1'}\nredis: {url: 'redis://127.0.0.1:6379'}\nvectors: {url: 'http://127.0.0.1:6334'}\n",
        );
        let dir = tempfile::tempdir().expect("dir");
        let password = dir.path().join("redis-password");
        std::fs::write(&password, "0123456789\n").expect("write");
        let mut with_files = sources(&file);
        with_files.env = vec![
            ("MEMGATE_REDIS__PASSWORD".into(), "from-env".into()),
            (
                "MEMGATE_REDIS__PASSWORD_FILE".into(),
                password.display().to_string(),
            ),
        ];
        let config = load(&with_files).expect("loads");
        assert_eq!(
            config.redis.password.as_deref(),
            Some("0123456789"),
            "the file wins, digits stay a string, the line break is gone"
        );
        assert_eq!(
            with_files.credential_files(),
            vec![CredentialFile {
                variable: "MEMGATE_REDIS__PASSWORD_FILE".into(),
                path: "redis.password".into(),
                file: password.clone(),
            }]
        );

        std::fs::remove_file(&password).expect("remove");
        let error = load(&with_files).expect_err("a missing file");
        assert!(
            error.to_string().contains("MEMGATE_REDIS__PASSWORD_FILE"),
            "{error}"
        );
    }

    #[test]
    fn type_errors_name_the_field() {
        let file = yaml_file(&format!("{BASE}\nlimits: {{maxBodyBytes: lots}}\n"));
        let err = load(&sources(&file)).unwrap_err().to_string();
        assert!(err.contains("limits.maxBodyBytes"), "{err}");
    }

    #[test]
    fn unknown_fields_are_named_and_ignored() {
        let text = format!("{BASE}\ncache: {{memoryTTL: 1h}}\nfromNewerOperator: {{on: true}}\n");
        let file = yaml_file(&text);
        let config = load(&sources(&file)).expect("unknown fields do not stop it");
        assert_eq!(config.cache.memory_ttl, Config::default().cache.memory_ttl);
        let figment = Figment::from(Serialized::defaults(Config::default()))
            .merge(Yaml::file_exact(file.path()));
        let mut unknown = unknown_fields(&figment);
        unknown.sort();
        assert_eq!(unknown, ["cache.memoryTTL", "fromNewerOperator"]);
    }

    #[test]
    fn range_errors_name_the_field() {
        let file = yaml_file(&format!("{BASE}\nrollout: {{percent: 150}}\n"));
        let err = load(&sources(&file)).unwrap_err().to_string();
        assert!(err.contains("rollout.percent"), "{err}");
    }

    #[test]
    fn a_missing_file_is_an_error() {
        let sources = ConfigSources {
            file: Some("/nonexistent/memgate.yaml".into()),
            ..Default::default()
        };
        let err = load(&sources).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/memgate.yaml"), "{err}");
    }

    #[test]
    fn embedded_needs_nothing_else() {
        let config = load(&ConfigSources {
            embedded: true,
            ..Default::default()
        })
        .expect("embedded defaults are valid");
        assert_eq!(config.cache.backend, CacheBackend::Memory);
        assert_eq!(config.vectors.backend, VectorBackend::Edge);
        assert_eq!(config.rollout.percent, 100);
    }
}
