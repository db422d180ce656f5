//! cldmemory's own settings (its environment, its `.env`) as a layer of memgate's
//! configuration, so a cldmemory user switches without writing memgate's: below memgate's file,
//! `MEMGATE_*` and flags, which win.
//!
//! | cldmemory variable | memgate field |
//! |---|---|
//! | `QDRANT_URL` (REST, port 6333) | `vectors.backend: qdrant`, `vectors.restUrl` as given, `vectors.url` the same host on the gRPC port 6334 |
//! | `QDRANT_API_KEY` | `vectors.apiKey` |
//! | `QDRANT_COLLECTION_NAME` | `vectors.collection` |
//! | `OPENAI_API_KEY` | `openai.apiKey` |
//! | `OPENAI_BASE_URL` | `openai.baseUrl` |
//! | `OPENAI_MODEL` | `embeddings.model` |
//! | `SIMILARITY_THRESHOLD` | `layout.similarityThreshold` |
//! | `MEMORY_METADATA` | `layout.memoryMetadata` |
//!
//! With `--embedded` only the layout's settings are taken (the collection, the threshold, the
//! metadata): the embedded profile keeps its in-process dependencies.

use serde_json::{json, Map, Value};

/// The port Qdrant serves REST on by default, and the one it serves gRPC on.
const QDRANT_REST_PORT: u16 = 6333;
const QDRANT_GRPC_PORT: u16 = 6334;

/// What the layer found, and what it says about it at start.
#[derive(Debug, Default, PartialEq)]
pub struct CldMemoryLayer {
    /// The config values, as a partial config (camelCase paths).
    pub values: Value,
    /// The variables read, for the log.
    pub read: Vec<&'static str>,
    /// `QDRANT_URL` and the gRPC address memgate uses for it, when it was translated.
    pub grpc: Option<(String, String)>,
}

fn get<'a>(env: &'a [(String, String)], name: &str) -> Option<&'a str> {
    env.iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.trim())
        .filter(|value| !value.is_empty())
}

fn insert(root: &mut Map<String, Value>, section: &str, field: &str, value: Value) {
    let section = root
        .entry(section)
        .or_insert_with(|| Value::Object(Map::new()));
    if let Value::Object(section) = section {
        section.insert(field.into(), value);
    }
}

/// The gRPC address of the Qdrant whose REST API is at `rest`: the same scheme and host, the
/// gRPC port when `rest` names the REST port or none (a port of its own is kept: a proxy in
/// front of Qdrant is the user's to know).
pub fn grpc_url_of(rest: &str) -> anyhow::Result<String> {
    let uri: http::Uri = rest
        .parse()
        .map_err(|error| anyhow::anyhow!("QDRANT_URL {rest:?} is not a URL: {error}"))?;
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("QDRANT_URL {rest:?} names no host"))?;
    let port = match uri.port_u16() {
        None | Some(QDRANT_REST_PORT) => QDRANT_GRPC_PORT,
        Some(port) => port,
    };
    Ok(format!("{scheme}://{host}:{port}"))
}

/// Reads cldmemory's variables out of `env`.
pub fn layer(env: &[(String, String)], embedded: bool) -> anyhow::Result<CldMemoryLayer> {
    let mut root = Map::new();
    let mut read = Vec::new();
    let mut grpc = None;
    let mut take = |name: &'static str| {
        let value = get(env, name);
        if value.is_some() {
            read.push(name);
        }
        value
    };
    if let Some(collection) = take("QDRANT_COLLECTION_NAME") {
        insert(&mut root, "vectors", "collection", json!(collection));
    }
    if let Some(threshold) = take("SIMILARITY_THRESHOLD") {
        let threshold: f64 = threshold
            .parse()
            .map_err(|_| anyhow::anyhow!("SIMILARITY_THRESHOLD {threshold:?} is not a number"))?;
        insert(&mut root, "layout", "similarityThreshold", json!(threshold));
    }
    if let Some(metadata) = take("MEMORY_METADATA") {
        insert(&mut root, "layout", "memoryMetadata", json!(metadata));
    }
    if !embedded {
        if let Some(rest) = take("QDRANT_URL") {
            let url = grpc_url_of(rest)?;
            insert(&mut root, "vectors", "backend", json!("qdrant"));
            insert(&mut root, "vectors", "restUrl", json!(rest));
            insert(&mut root, "vectors", "url", json!(url));
            grpc = Some((rest.to_string(), url));
        }
        if let Some(key) = take("QDRANT_API_KEY") {
            insert(&mut root, "vectors", "apiKey", json!(key));
        }
        if let Some(key) = take("OPENAI_API_KEY") {
            insert(&mut root, "openai", "apiKey", json!(key));
        }
        if let Some(url) = take("OPENAI_BASE_URL") {
            insert(&mut root, "openai", "baseUrl", json!(url));
        }
        if let Some(model) = take("OPENAI_MODEL") {
            insert(&mut root, "embeddings", "model", json!(model));
        }
    }
    Ok(CldMemoryLayer {
        values: Value::Object(root),
        read,
        grpc,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_rest_url_is_translated_to_the_grpc_port_of_the_same_host() {
        assert_eq!(
            grpc_url_of("http://qdrant:6333").expect("url"),
            "http://qdrant:6334"
        );
        assert_eq!(
            grpc_url_of("https://q.example.com").expect("url"),
            "https://q.example.com:6334"
        );
        assert_eq!(
            grpc_url_of("http://localhost:7000").expect("url"),
            "http://localhost:7000",
            "a port of its own is kept"
        );
        assert!(grpc_url_of("not a url").is_err());
    }

    #[test]
    fn cldmemorys_variables_fill_memgates_fields() {
        let layer = layer(
            &env(&[
                ("QDRANT_URL", "http://localhost:6333"),
                ("QDRANT_API_KEY", "qk"),
                ("QDRANT_COLLECTION_NAME", "team_memories"),
                ("OPENAI_API_KEY", "sk-1"),
                ("OPENAI_BASE_URL", "http://127.0.0.1:8000/v1"),
                ("OPENAI_MODEL", "text-embedding-3-large"),
                ("SIMILARITY_THRESHOLD", "0.3"),
                ("MEMORY_METADATA", "team:core"),
                ("HOME", "/root"),
            ]),
            false,
        )
        .expect("a layer");
        assert_eq!(
            layer.values,
            json!({
                "vectors": {"collection": "team_memories", "backend": "qdrant",
                            "restUrl": "http://localhost:6333", "url": "http://localhost:6334",
                            "apiKey": "qk"},
                "layout": {"similarityThreshold": 0.3, "memoryMetadata": "team:core"},
                "openai": {"apiKey": "sk-1", "baseUrl": "http://127.0.0.1:8000/v1"},
                "embeddings": {"model": "text-embedding-3-large"},
            })
        );
        assert_eq!(layer.read.len(), 8);
        assert_eq!(
            layer.grpc,
            Some((
                "http://localhost:6333".into(),
                "http://localhost:6334".into()
            ))
        );
    }

    #[test]
    fn embedded_takes_only_the_layouts_settings_and_bad_numbers_are_named() {
        let layer = layer(
            &env(&[
                ("QDRANT_URL", "http://localhost:6333"),
                ("OPENAI_API_KEY", "sk-1"),
                ("SIMILARITY_THRESHOLD", "0.5"),
            ]),
            true,
        )
        .expect("a layer");
        assert_eq!(
            layer.values,
            json!({"layout": {"similarityThreshold": 0.5}})
        );
        let error =
            super::layer(&env(&[("SIMILARITY_THRESHOLD", "high")]), false).expect_err("refused");
        assert!(
            error.to_string().contains("SIMILARITY_THRESHOLD"),
            "{error}"
        );
    }
}
