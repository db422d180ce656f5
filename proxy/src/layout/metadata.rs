//! cldmemory's metadata strings (`MEMORY_METADATA`, the `Memory-Metadata` header): pairs
//! split on `,`, each split at its first `:` with both sides trimmed; a pair without `:` is
//! `user:<value>`; pairs with an empty key or value are dropped.

use serde_json::{Map, Value};

use crate::js;

/// The metadata a string names, in the order given (a repeated key keeps its first place and
/// its last value, as assigning to a JavaScript object does).
pub fn parse_metadata(text: &str) -> Map<String, Value> {
    let mut metadata = Map::new();
    for pair in text.split(',') {
        let (key, value) = match pair.split_once(':') {
            Some((key, value)) => (js::trim(key), js::trim(value)),
            None => ("user", js::trim(pair)),
        };
        if !key.is_empty() && !value.is_empty() {
            metadata.insert(key.to_string(), Value::String(value.to_string()));
        }
    }
    metadata
}

/// `{...base, ...over}`: `over` wins, keys keep their first place.
pub fn merge_metadata(base: &Map<String, Value>, over: &Map<String, Value>) -> Map<String, Value> {
    let mut merged = base.clone();
    for (key, value) in over {
        merged.insert(key.clone(), value.clone());
    }
    merged
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pairs_split_at_the_first_colon() {
        assert_eq!(
            Value::Object(parse_metadata(
                " team : core , url:http://x:1,alice, :x, y: "
            )),
            json!({"team": "core", "url": "http://x:1", "user": "alice"})
        );
        assert!(parse_metadata("").is_empty());
    }

    #[test]
    fn the_client_wins_and_keys_keep_their_place() {
        let env = parse_metadata("team:core,user:svc");
        let client = parse_metadata("alice,host:laptop");
        assert_eq!(
            serde_json::to_string(&merge_metadata(&env, &client)).expect("json"),
            r#"{"team":"core","user":"alice","host":"laptop"}"#
        );
    }
}
