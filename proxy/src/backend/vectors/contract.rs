//! One behaviour, two backends: the same scenario runs against Qdrant Edge always and against a
//! Qdrant server when `QDRANT_URL` is set.

use chrono::{TimeZone, Utc};
use serde_json::json;
use uuid::Uuid;

use super::*;
use crate::config::DistanceMetric;
use crate::memory::StoredMemory;

fn spec(name: &str, dimensions: u64) -> CollectionSpec {
    CollectionSpec {
        name: name.into(),
        dimensions,
        distance: DistanceMetric::Cosine,
        scope_field: Some("userId".into()),
        indexes: [
            ("type", IndexKind::Keyword),
            ("context.tags", IndexKind::Keyword),
            ("context.chunkOf", IndexKind::Keyword),
            ("importance", IndexKind::Float),
            ("emotionalValence", IndexKind::Float),
            ("timestamp", IndexKind::Datetime),
            ("content", IndexKind::Text),
        ]
        .into_iter()
        .map(|(field, kind)| IndexedField {
            field: field.into(),
            kind,
        })
        .collect(),
        shards: None,
    }
}

fn equals(field: &str, value: &str) -> Condition {
    Condition::Equals {
        field: field.into(),
        value: value.into(),
    }
}

fn range(field: &str, gte: Option<f64>, lte: Option<f64>) -> Condition {
    Condition::Range {
        field: field.into(),
        gte,
        lte,
    }
}

fn point(
    n: u128,
    vector: [f32; 4],
    kind: &str,
    importance: f64,
    valence: f64,
    day: u32,
    user: &str,
) -> MemoryPoint {
    let id = Uuid::from_u128(n);
    let timestamp = Utc
        .with_ymd_and_hms(2025, 1, day, 12, 0, 0)
        .single()
        .expect("valid date")
        .to_rfc3339();
    let memory = json!({
        "id": id, "content": format!("memory {n}"), "summary": "s", "type": kind,
        "importance": importance, "emotionalValence": valence, "context": {"tags": ["t"]},
        "timestamp": timestamp, "userId": user,
    });
    let serde_json::Value::Object(memory) = memory else {
        unreachable!()
    };
    MemoryPoint {
        id,
        vector: vector.to_vec(),
        memory,
    }
}

fn query(filter: PayloadFilter) -> VectorQuery {
    VectorQuery {
        vector: vec![1.0, 0.0, 0.0, 0.0],
        filter,
        limit: 10,
        score_threshold: None,
        ef: Some(32),
        exact: false,
    }
}

fn ids(results: &[ScoredMemory]) -> Vec<u128> {
    results
        .iter()
        .map(|r| {
            let id = r.memory["id"].as_str().expect("id is a string");
            Uuid::parse_str(id).expect("uuid").as_u128()
        })
        .collect()
}

async fn scenario(store: &dyn VectorStore, collection: &str) {
    store
        .ensure_collection(&spec(collection, 4))
        .await
        .expect("create");
    store
        .ensure_collection(&spec(collection, 4))
        .await
        .expect("idempotent");
    store
        .upsert(vec![
            point(1, [1.0, 0.0, 0.0, 0.0], "episodic", 0.9, 0.5, 1, "alice"),
            point(2, [0.9, 0.1, 0.0, 0.0], "semantic", 0.2, -0.5, 10, "alice"),
            point(3, [0.0, 1.0, 0.0, 0.0], "episodic", 0.6, 0.0, 20, "alice"),
            point(4, [1.0, 0.0, 0.0, 0.0], "episodic", 0.9, 0.5, 1, "bob"),
        ])
        .await
        .expect("upsert");

    let one = store
        .retrieve(Uuid::from_u128(1))
        .await
        .expect("retrieve")
        .expect("exists");
    assert_eq!(one["id"], json!(Uuid::from_u128(1)));
    assert_eq!(one["content"], "memory 1");
    assert_eq!(
        one.keys().next().map(String::as_str),
        Some("id"),
        "the payload as written, in its order"
    );
    assert_eq!(one["userId"], "alice");
    assert!(store
        .retrieve(Uuid::from_u128(99))
        .await
        .expect("retrieve")
        .is_none());

    let alice = |condition: Option<Condition>| {
        PayloadFilter::all(
            [Some(equals("userId", "alice")), condition]
                .into_iter()
                .flatten()
                .collect(),
        )
    };
    let all = store.search(query(alice(None))).await.expect("search");
    assert_eq!(ids(&all), vec![1, 2, 3], "nearest first, only alice's");
    assert!(all[0].score > all[1].score);

    let semantic = Some(equals("type", "semantic"));
    assert_eq!(
        ids(&store.search(query(alice(semantic))).await.expect("search")),
        vec![2]
    );

    let important = Some(range("importance", Some(0.5), None));
    assert_eq!(
        ids(&store.search(query(alice(important))).await.expect("search")),
        vec![1, 3]
    );

    let calm = Some(range("emotionalValence", Some(-0.1), Some(0.6)));
    assert_eq!(
        ids(&store.search(query(alice(calm))).await.expect("search")),
        vec![1, 3]
    );

    let january_5_to_15 = Some(Condition::DateRange {
        field: "timestamp".into(),
        gte: Utc.with_ymd_and_hms(2025, 1, 5, 0, 0, 0).single(),
        lte: Utc.with_ymd_and_hms(2025, 1, 15, 0, 0, 0).single(),
    });
    assert_eq!(
        ids(&store
            .search(query(alice(january_5_to_15)))
            .await
            .expect("search")),
        vec![2]
    );

    let mut close = query(alice(None));
    close.score_threshold = Some(0.5);
    assert_eq!(ids(&store.search(close).await.expect("search")), vec![1, 2]);

    let mut top = query(alice(None));
    top.limit = 1;
    assert_eq!(ids(&store.search(top).await.expect("search")), vec![1]);

    let mut exact = query(alice(None));
    exact.exact = true;
    exact.ef = None;
    assert_eq!(
        ids(&store.search(exact).await.expect("search")),
        vec![1, 2, 3]
    );

    let scrolled = store.scroll(&alice(None), 2).await.expect("scroll");
    let scrolled: Vec<u128> = scrolled
        .iter()
        .filter_map(|m| m["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()))
        .map(|id| id.as_u128())
        .collect();
    assert_eq!(scrolled, vec![1, 2], "point-id order, up to the limit");

    let mut chunk = point(8, [0.0, 0.0, 1.0, 1.0], "semantic", 0.5, 0.0, 4, "alice");
    chunk.memory.insert(
        "context".into(),
        json!({"tags": [], "chunkOf": "parent-1", "chunkIndex": 0}),
    );
    store.upsert(vec![chunk]).await.expect("upsert");
    let chunks = store
        .scroll(
            &PayloadFilter::all(vec![equals("context.chunkOf", "parent-1")]),
            100,
        )
        .await
        .expect("scroll");
    assert_eq!(chunks.len(), 1);
    assert_eq!(chunks[0]["context"]["chunkOf"], "parent-1");
    store.delete(&[Uuid::from_u128(8)]).await.expect("delete");

    let vector = store
        .vector_of(Uuid::from_u128(3))
        .await
        .expect("vector")
        .expect("exists");
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    assert!(
        (vector[1] / norm - 1.0).abs() < 1e-4,
        "the stored direction: {vector:?}"
    );
    assert!(store
        .vector_of(Uuid::from_u128(99))
        .await
        .expect("vector")
        .is_none());

    let mut fields = StoredMemory::new();
    fields.insert("accessCount".into(), json!(7));
    store
        .set_fields(Uuid::from_u128(2), fields.clone())
        .await
        .expect("set fields");
    let two = store
        .retrieve(Uuid::from_u128(2))
        .await
        .expect("retrieve")
        .expect("exists");
    assert_eq!(two["accessCount"], 7);
    assert_eq!(two["content"], "memory 2", "other fields stay");
    store
        .set_fields(Uuid::from_u128(99), fields)
        .await
        .expect("a missing point is left alone");
    assert!(store
        .retrieve(Uuid::from_u128(99))
        .await
        .expect("retrieve")
        .is_none());

    keyword_scenario(store, alice(None)).await;

    store.delete(&[Uuid::from_u128(1)]).await.expect("delete");
    assert!(store
        .retrieve(Uuid::from_u128(1))
        .await
        .expect("retrieve")
        .is_none());
    store.health().await.expect("healthy");
}

/// Keyword search: content words (case-insensitive, whole words) or an exact tag, within the
/// filter.
async fn keyword_scenario(store: &dyn VectorStore, alice: PayloadFilter) {
    let mut tomatoes = point(5, [0.0, 0.0, 1.0, 0.0], "episodic", 0.5, 0.0, 2, "alice");
    tomatoes
        .memory
        .insert("content".into(), json!("Planted Tomatoes in the garden"));
    let mut tagged = point(6, [0.0, 0.0, 0.0, 1.0], "semantic", 0.5, 0.0, 3, "alice");
    tagged
        .memory
        .insert("context".into(), json!({"tags": ["tomatoes"]}));
    let mut bobs = point(7, [0.0, 0.0, 1.0, 0.0], "episodic", 0.5, 0.0, 2, "bob");
    bobs.memory
        .insert("content".into(), json!("tomatoes everywhere"));
    store
        .upsert(vec![tomatoes, tagged, bobs])
        .await
        .expect("upsert");
    // Any of the words in `content`, or one of them as a tag (the keyword rung's filter).
    let search = |terms: &[&str], filter: PayloadFilter| {
        let terms: Vec<String> = terms.iter().map(|t| t.to_string()).collect();
        let mut should: Vec<Condition> = terms
            .iter()
            .map(|term| Condition::HasWord {
                field: "content".into(),
                word: term.clone(),
            })
            .collect();
        should.push(Condition::AnyOf {
            field: "context.tags".into(),
            values: terms,
        });
        PayloadFilter { should, ..filter }
    };
    let found_ids = |found: Vec<StoredMemory>| {
        let mut ids: Vec<u128> = found
            .iter()
            .filter_map(|m| m["id"].as_str().and_then(|id| Uuid::parse_str(id).ok()))
            .map(|id| id.as_u128())
            .collect();
        ids.sort_unstable();
        ids
    };
    let found = store
        .scroll(&search(&["tomatoes"], alice.clone()), 10)
        .await
        .expect("keyword search");
    assert_eq!(found_ids(found), vec![5, 6], "content or tag, only alice's");
    let found = store
        .scroll(&search(&["cucumbers", "garden"], alice.clone()), 10)
        .await
        .expect("keyword search");
    assert_eq!(found_ids(found), vec![5], "any of the words");
    let mut semantic_only = alice;
    semantic_only.must.push(equals("type", "semantic"));
    let found = store
        .scroll(&search(&["tomatoes"], semantic_only), 10)
        .await
        .expect("keyword search");
    assert_eq!(found_ids(found), vec![6], "the filter holds");
    store
        .delete(&[Uuid::from_u128(5), Uuid::from_u128(6), Uuid::from_u128(7)])
        .await
        .expect("delete");
}

#[tokio::test]
async fn edge_store_contract() {
    let dir = tempfile::tempdir().expect("dir");
    let store = EdgeStore::open(Some(dir.path())).expect("open");
    scenario(&store, "memories").await;
    drop(store);

    let reopened = EdgeStore::open(Some(dir.path())).expect("open");
    reopened
        .ensure_collection(&spec("memories", 4))
        .await
        .expect("reload keeps data");
    assert!(reopened
        .retrieve(Uuid::from_u128(2))
        .await
        .expect("retrieve")
        .is_some());
    drop(reopened);

    let wrong_size = EdgeStore::open(Some(dir.path())).expect("open");
    let error = wrong_size
        .ensure_collection(&spec("memories", 8))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            VectorError::DimensionMismatch {
                found: 4,
                expected: 8,
                ..
            }
        ),
        "{error}"
    );
}

#[tokio::test]
async fn qdrant_store_contract() {
    let Ok(url) = std::env::var("QDRANT_URL") else {
        eprintln!("skipped: QDRANT_URL is not set (the Qdrant server backend needs a server)");
        return;
    };
    let collection = format!("memgate-test-{}", Uuid::new_v4());
    let api_key = std::env::var("QDRANT_API_KEY").ok();
    // Writes go over REST: `QDRANT_REST_URL`, else the gRPC URL on the REST port.
    let rest_url = std::env::var("QDRANT_REST_URL").ok().unwrap_or_else(|| {
        crate::config::VectorsConfig {
            url: Some(url.clone()),
            ..Default::default()
        }
        .rest_url()
        .expect("a REST URL")
    });
    let store = QdrantStore::connect(
        &url,
        &rest_url,
        api_key.as_deref(),
        &collection,
        std::time::Duration::from_secs(5),
        None,
    )
    .expect("client");
    scenario(&store, &collection).await;
    let error = store
        .ensure_collection(&spec(&collection, 8))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            VectorError::DimensionMismatch {
                found: 4,
                expected: 8,
                ..
            }
        ),
        "{error}"
    );
}
