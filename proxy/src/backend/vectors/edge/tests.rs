//! Qdrant Edge in this process: writes, searches, filters and the optimizer.

use super::*;

/// A deterministic pseudo-random unit vector.
fn vector(seed: u64, dimensions: usize) -> Vec<f32> {
    let mut state = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let raw: Vec<f32> = (0..dimensions)
        .map(|_| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((state >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    let norm = raw.iter().map(|x| x * x).sum::<f32>().sqrt();
    raw.into_iter().map(|x| x / norm).collect()
}

/// Past Edge's indexing threshold (10 MB of vectors) the optimizer builds an HNSW index;
/// searches answer the same while it runs and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn optimize_indexes_what_was_written_and_searches_go_on() {
    const DIMENSIONS: usize = 1536;
    const POINTS: u128 = 2000;
    let dir = tempfile::tempdir().expect("dir");
    let store = Arc::new(EdgeStore::open(Some(dir.path())).expect("open"));
    let spec = CollectionSpec {
        name: "memories".into(),
        dimensions: DIMENSIONS as u64,
        distance: DistanceMetric::Cosine,
        scope_field: None,
        indexes: Vec::new(),
        shards: None,
    };
    store.ensure_collection(&spec).await.expect("collection");
    assert!(
        !store.optimize().await.expect("optimize"),
        "nothing written yet"
    );
    for chunk in (0..POINTS).collect::<Vec<_>>().chunks(500) {
        let points = chunk
            .iter()
            .map(|&i| MemoryPoint {
                id: Uuid::from_u128(i + 1),
                vector: vector(i as u64, DIMENSIONS),
                memory: [
                    (
                        "id".to_string(),
                        Value::from(Uuid::from_u128(i + 1).to_string()),
                    ),
                    ("content".to_string(), Value::from(format!("memory {i}"))),
                ]
                .into_iter()
                .collect(),
            })
            .collect();
        store.upsert(points).await.expect("upsert");
    }
    assert_eq!(store.index_status(), Some((POINTS as usize, 0)));

    let query = |i: u64| VectorQuery {
        vector: vector(i, DIMENSIONS),
        filter: PayloadFilter::default(),
        limit: 3,
        score_threshold: None,
        ef: Some(64),
        exact: false,
    };
    let searcher = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut searches = 0;
            while searches < 200 {
                let found = store.search(query(searches % 50)).await.expect("search");
                assert_eq!(
                    found[0].memory["id"],
                    Uuid::from_u128(u128::from(searches % 50) + 1).to_string()
                );
                searches += 1;
            }
        })
    };
    assert!(store.optimize().await.expect("optimize"));
    searcher.await.expect("searches during the optimization");

    let (points, indexed) = store.index_status().expect("open");
    assert_eq!(points, POINTS as usize);
    assert!(indexed > 0, "no HNSW index after optimizing");
    let found = store.search(query(1234)).await.expect("search");
    assert_eq!(found[0].memory["id"], Uuid::from_u128(1235).to_string());
    assert!(
        !store.optimize().await.expect("optimize"),
        "nothing new to index"
    );
}

#[test]
fn every_condition_parses_as_an_edge_filter() {
    let field = |name: &str| name.to_string();
    let filter = PayloadFilter {
        must: vec![
            Condition::Equals {
                field: field("userId"),
                value: "alice".into(),
            },
            Condition::Range {
                field: field("importance"),
                gte: Some(0.4),
                lte: None,
            },
            Condition::Range {
                field: field("emotionalValence"),
                gte: Some(-0.5),
                lte: Some(0.5),
            },
            Condition::DateRange {
                field: field("timestamp"),
                gte: Some(chrono::Utc::now()),
                lte: None,
            },
            // No bounds: no condition.
            Condition::DateRange {
                field: field("timestamp"),
                gte: None,
                lte: None,
            },
        ],
        should: vec![
            Condition::HasWord {
                field: field("content"),
                word: "garden".into(),
            },
            Condition::AnyOf {
                field: field("context.tags"),
                values: vec!["garden".into(), "tomatoes".into()],
            },
        ],
    };
    let parsed = to_filter(&filter).expect("valid").expect("some");
    assert_eq!(parsed.must.as_ref().map(Vec::len), Some(4));
    assert_eq!(parsed.should.as_ref().map(Vec::len), Some(2));
    assert!(to_filter(&PayloadFilter::default())
        .expect("valid")
        .is_none());
}
