//! cldmemory's layout, checked against what cldmemory writes.

use super::*;
use crate::memory::StoreContext;
use serde_json::json;

fn layout(metadata: Option<&str>) -> CldMemoryLayout {
    CldMemoryLayout::new(CldMemorySettings {
        similarity_threshold: 0.7,
        memory_metadata: metadata.map(str::to_string),
        project: "box:/app".into(),
    })
}

fn object(value: Value) -> StoredMemory {
    match value {
        Value::Object(map) => map,
        _ => unreachable!("test values are objects"),
    }
}

fn store(content: &str, memory_type: MemoryType) -> StoreRequest {
    StoreRequest {
        content: content.into(),
        memory_type,
        summary: None,
        context: None,
        importance: None,
    }
}

#[test]
fn a_new_memory_is_what_cldmemory_stores_without_its_model() {
    let layout = layout(Some("team:core,user:svc"));
    let now = "2026-03-01T10:00:00.5Z".parse().expect("time");
    let id = Uuid::from_u128(7);
    let mut request = store(&"x".repeat(201), MemoryType::Episodic);
    request.context = Some(StoreContext {
        location: Some("Paris".into()),
        source: Some("chat".into()),
        ..Default::default()
    });
    let memory = layout.new_memory(id, &request, Some("alice"), now);
    // What `generateSummary` falls back to when the model cannot be asked.
    let summary = format!("{}...", "x".repeat(147));
    assert_eq!(
        Value::Object(memory.clone()),
        json!({
            "id": id.to_string(), "summary": summary, "content": "x".repeat(201),
            "type": "episodic", "timestamp": "2026-03-01T10:00:00.500Z",
            "importance": 0.7999999999999999, "emotionalValence": 0, "associations": [],
            "context": {"tags": [], "location": "Paris", "source": "chat"},
            "metadata": {"team": "core", "user": "alice"},
            "lastAccessed": "2026-03-01T10:00:00.500Z", "accessCount": 0, "decay": 0,
            "project": "box:/app",
        })
    );
    let keys: Vec<&str> = memory.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "id",
            "summary",
            "content",
            "type",
            "timestamp",
            "importance",
            "emotionalValence",
            "associations",
            "context",
            "metadata",
            "lastAccessed",
            "accessCount",
            "decay",
            "project"
        ]
    );
}

#[test]
fn importance_follows_the_rule() {
    let layout = layout(None);
    let importance = |content: &str, memory_type| {
        layout.new_memory(Uuid::nil(), &store(content, memory_type), None, Utc::now())["importance"]
            .clone()
    };
    assert_eq!(importance("short", MemoryType::Semantic), json!(0.5));
    assert_eq!(importance("short", MemoryType::Episodic), json!(0.7));
    assert_eq!(importance("short", MemoryType::Emotional), json!(0.65));
    assert_eq!(
        importance(&"😀".repeat(101), MemoryType::Semantic),
        json!(0.6),
        "length counts UTF-16 units"
    );
}

#[test]
fn the_summary_fallbacks_are_cldmemorys() {
    let long = "a".repeat(160);
    let failed = || Err(EnrichmentError::Provider("down".into()));
    let empty = || {
        Err(EnrichmentError::InvalidAnswer {
            expected: "a non-empty summary",
            answer: String::new(),
        })
    };
    assert_eq!(summary_of(failed(), "short"), "short");
    assert_eq!(
        summary_of(failed(), &long),
        format!("{}...", "a".repeat(147))
    );
    assert_eq!(summary_of(empty(), "short"), "short...", "always `...`");
    assert_eq!(summary_of(Ok("  ".into()), "short"), "short...");
    assert_eq!(
        summary_of(empty(), &long),
        format!("{}...", "a".repeat(150))
    );
    assert_eq!(summary_of(Ok(" Fine. ".into()), &long), "Fine.");
    let acknowledged = layout(None).new_memory(
        Uuid::nil(),
        &store(&long, MemoryType::Semantic),
        None,
        Utc::now(),
    );
    assert_eq!(
        acknowledged["summary"],
        json!(format!("{}...", "a".repeat(147))),
        "what cldmemory stores when its model cannot be asked"
    );
}

#[test]
fn enrichment_and_its_fallbacks() {
    let layout = layout(None);
    let failed = || EnrichmentError::Provider("down".into());
    let mut memory = layout.new_memory(
        Uuid::nil(),
        &store("We drank coffee", MemoryType::Episodic),
        None,
        Utc::now(),
    );
    layout.apply_enrichment(
        &mut memory,
        Enrichment {
            summary: Some(Ok("  Coffee.  ".into())),
            valence: Ok(Some(3.0)),
            keywords: Some(Ok(vec!["coffee".into(), "".into()])),
        },
    );
    assert_eq!(memory["summary"], "Coffee.");
    assert_eq!(memory["emotionalValence"], json!(1));
    assert_eq!(memory["context"]["tags"], json!(["coffee", ""]));
    layout.apply_enrichment(
        &mut memory,
        Enrichment {
            summary: Some(Err(failed())),
            valence: Ok(None),
            keywords: Some(Err(failed())),
        },
    );
    assert_eq!(memory["summary"], "We drank coffee");
    assert_eq!(memory["emotionalValence"], Value::Null);
    assert_eq!(memory["context"]["tags"], json!([]));
    layout.apply_enrichment(
        &mut memory,
        Enrichment {
            summary: None,
            valence: Err(failed()),
            keywords: None,
        },
    );
    assert_eq!(memory["emotionalValence"], json!(0));
}

#[test]
fn given_tags_replace_the_keywords_and_a_given_summary_stays() {
    let layout = layout(None);
    let mut request = store("text", MemoryType::Semantic);
    request.summary = Some("Mine".into());
    request.context = Some(StoreContext {
        tags: Some(vec!["given".into()]),
        ..Default::default()
    });
    assert_eq!(
        layout.enrichment_needs(&request),
        EnrichmentNeeds {
            summary: false,
            keywords: false
        }
    );
    let memory = layout.new_memory(Uuid::nil(), &request, None, Utc::now());
    assert_eq!(memory["summary"], "Mine");
    assert_eq!(memory["context"], json!({"tags": ["given"]}));
    request.summary = Some(String::new());
    assert!(layout.enrichment_needs(&request).summary);
}

/// The embedded texts, case by case, as cldmemory builds them.
#[test]
fn embedded_texts() {
    let plain = layout(None);
    let cases = [
        (
            json!({"content": "Coffee in Paris", "type": "episodic", "context": {"tags": []},
                   "metadata": {}, "project": "box:/app"}),
            "Coffee in Paris\n\nType: episodic\nContext: tags: \nProject: box:/app",
        ),
        (
            json!({"content": "c", "type": "semantic",
                   "context": {"tags": ["a", "b"], "location": "Paris", "people": ["Ann", "Bo"],
                               "mood": "", "activity": null, "source": "chat"},
                   "metadata": {"team": "core", "user": "alice"}, "project": "h:/w"}),
            "c\n\nType: semantic\nContext: tags: a, b; location: Paris; people: Ann, Bo; \
             source: chat\nMetadata: team: core; user: alice\nProject: h:/w",
        ),
        (
            json!({"content": "part", "type": "procedural",
                   "context": {"tags": ["x"], "chunkIndex": 0, "chunkOf": "p", "totalChunks": 3,
                               "isParentChunk": false, "semanticDensity": 0.85},
                   "metadata": {"reconstructed": true}, "project": "h:/w"}),
            "part\n\nType: procedural\nContext: tags: x; chunkOf: p; totalChunks: 3; \
             semanticDensity: 0.85\nMetadata: reconstructed: true\nProject: h:/w",
        ),
        (
            json!({"content": "old", "type": "working", "context": {}}),
            "old\n\nType: working\nContext: ",
        ),
    ];
    for (memory, expected) in cases {
        assert_eq!(plain.embedded_text(&object(memory)), expected);
    }
    assert_eq!(plain.query_text("coffee"), "coffee\nProject: box:/app");
    assert_eq!(
        layout(Some("team:core")).query_text(""),
        "\nMetadata: team: core\nProject: box:/app"
    );
}

#[test]
fn payloads_come_out_in_cldmemorys_key_order_whatever_order_they_were_read_in() {
    let layout = layout(Some("team:core,env:test"));
    let written = layout.new_memory(
        Uuid::from_u128(3),
        &StoreRequest {
            context: Some(StoreContext {
                location: Some("Paris".into()),
                mood: Some("calm".into()),
                source: Some("chat".into()),
                ..Default::default()
            }),
            ..store("We drank coffee", MemoryType::Episodic)
        },
        Some("user:carol,team:mcp"),
        Utc::now(),
    );
    let expected = serde_json::to_string(&layout.payload(&written)).expect("JSON");
    let reversed = |map: &Map<String, Value>| -> Map<String, Value> {
        map.iter()
            .rev()
            .map(|(key, value)| {
                let value = match value {
                    Value::Object(inner) => Value::Object(
                        inner
                            .iter()
                            .rev()
                            .map(|(k, v)| (k.clone(), v.clone()))
                            .collect(),
                    ),
                    other => other.clone(),
                };
                (key.clone(), value)
            })
            .collect()
    };
    let scrambled = reversed(&written);
    assert_ne!(
        serde_json::to_string(&scrambled).expect("JSON"),
        expected,
        "the test scrambles"
    );
    assert_eq!(
        serde_json::to_string(&layout.payload(&scrambled)).expect("JSON"),
        expected
    );
    let chunk = object(
        json!({"context": {"totalChunks": 2, "chunkOf": "p", "tags": [],
        "semanticDensity": 0.5, "chunkIndex": 1, "location": "x"}}),
    );
    assert_eq!(
        serde_json::to_string(&layout.payload(&chunk)).expect("JSON"),
        r#"{"context":{"tags":[],"location":"x","chunkIndex":1,"chunkOf":"p","totalChunks":2,"semanticDensity":0.5}}"#
    );
    let parent = object(json!({"context": {"totalChunks": 2, "isParentChunk": true, "tags": []}}));
    assert_eq!(
        serde_json::to_string(&layout.payload(&parent)).expect("JSON"),
        r#"{"context":{"tags":[],"isParentChunk":true,"totalChunks":2}}"#
    );
}

#[test]
fn payloads_carry_the_id_and_no_bookkeeping() {
    let layout = layout(None);
    let memory = object(json!({"id": "a", "content": "c", "status": "ready", "error": "x"}));
    assert_eq!(
        Value::Object(layout.payload(&memory)),
        json!({"id": "a", "content": "c"})
    );
}

#[test]
fn reads_are_added_to_what_is_stored() {
    let layout = layout(None);
    let payload = object(json!({"accessCount": 4, "lastAccessed": "2030-01-01T00:00:00.000Z"}));
    let fields = layout.accessed(&payload, 3, "2026-01-01T00:00:00Z".parse().expect("time"));
    assert_eq!(
        Value::Object(fields),
        json!({"accessCount": 7, "lastAccessed": "2030-01-01T00:00:00.000Z"})
    );
    let fresh = layout.accessed(
        &StoredMemory::new(),
        1,
        "2026-01-01T00:00:00Z".parse().expect("time"),
    );
    assert_eq!(fresh["accessCount"], json!(1));
}

#[test]
fn chunks_are_put_back_together_in_order() {
    let layout = layout(None);
    let parent = object(
        json!({"id": "p", "content": "[Chunked Memory - 2 parts] ...",
        "context": {"tags": [], "isParentChunk": true, "totalChunks": 2}, "metadata": {"a": "b"}}),
    );
    let chunk = |index: u32, content: &str| {
        object(json!({"id": format!("c{index}"), "content": content,
            "context": {"chunkOf": "p", "chunkIndex": index}}))
    };
    assert_eq!(layout.chunk_role(&parent), ChunkRole::Parent);
    assert_eq!(layout.chunk_role(&chunk(0, "x")), ChunkRole::Chunk);
    assert_eq!(
        layout.chunk_role(&object(json!({"context": {}}))),
        ChunkRole::Whole
    );
    let whole = layout.reconstruct(&parent, vec![chunk(1, "second"), chunk(0, "first")]);
    assert_eq!(whole["content"], "first\n\nsecond");
    assert_eq!(
        whole["metadata"],
        json!({"a": "b", "reconstructed": true, "chunkCount": 2})
    );
}

#[test]
fn compact_rows_omit_what_is_missing() {
    let layout = layout(None);
    let memory = object(json!({
        "id": "a", "summary": "s", "content": "c", "type": "semantic",
        "timestamp": "t", "importance": 0.5, "emotionalValence": null,
        "context": {"tags": ["x"], "location": "p"}, "metadata": {}, "project": "h:/w"
    }));
    let row = r#"{"id":"a","summary":"s","type":"semantic","timestamp":"t","importance":0.5,"emotionalValence":null,"tags":["x"],"project":"h:/w"}"#;
    assert_eq!(
        serde_json::to_string(&layout.compact(&memory)).expect("json"),
        row
    );
    let compact = layout.compact(&memory);
    let reversed: StoredMemory = compact.into_iter().rev().collect();
    assert_eq!(
        serde_json::to_string(&layout.payload(&reversed)).expect("json"),
        row,
        "a row shown keeps the row's order"
    );
    let bare = object(json!({"id": "b", "context": {}}));
    assert_eq!(
        serde_json::to_string(&layout.compact(&bare)).expect("json"),
        r#"{"id":"b"}"#
    );
}
