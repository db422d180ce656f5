//! The cache contract: the same scenarios on every cache (in process, Redis through a real
//! `redis-server`, and a real three-master Redis Cluster), so `serve --embedded`, a Redis
//! deployment and a cluster answer alike. Keys carry a hash tag (`{t}:`), as memgate's do with
//! a cluster (one store, one slot). What a read
//! sync does to the counts is in `read_sync.rs`; this covers the rest of `CacheStore`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::{TimeZone, Utc};
use memgate::backend::cache::{CacheStore, FlushedReads, InProcessCache, RedisCache};
use memgate::keys::GenerationalKey;
use memgate_testkit::{RedisCluster, RedisServer};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(60);

struct Cache {
    store: Arc<dyn CacheStore>,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

fn in_process() -> Cache {
    Cache {
        store: Arc::new(InProcessCache::new(1000)),
        _redis: None,
        _cluster: None,
    }
}

fn on_redis() -> Cache {
    let server = RedisServer::start().expect("redis-server");
    let store =
        RedisCache::connect_lazy(&server.url(), None, Duration::from_secs(2)).expect("cache");
    Cache {
        store: Arc::new(store),
        _redis: Some(server),
        _cluster: None,
    }
}

async fn on_cluster() -> Cache {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let store =
        RedisCache::connect_lazy(&cluster.url(), None, Duration::from_secs(2)).expect("cache");
    Cache {
        store: Arc::new(store),
        _redis: None,
        _cluster: Some(cluster),
    }
}

fn bytes(text: &'static str) -> Bytes {
    Bytes::from_static(text.as_bytes())
}

/// Values under keys: set, set only where nothing is, read one or many, delete, expire.
async fn values(cache: Cache) {
    let store = cache.store.as_ref();
    store.ping().await.expect("ping");
    assert_eq!(store.get("{t}:a").await.expect("get"), None);
    store.set("{t}:a", bytes("one"), TTL).await.expect("set");
    store
        .set_if_absent("{t}:a", bytes("two"), TTL)
        .await
        .expect("set_if_absent");
    assert_eq!(
        store.get("{t}:a").await.expect("get"),
        Some(bytes("one")),
        "a fill never overwrites what is there"
    );
    store
        .set_if_absent("{t}:b", bytes("three"), TTL)
        .await
        .expect("set_if_absent");
    let many = store
        .get_many(&["{t}:a".into(), "{t}:missing".into(), "{t}:b".into()])
        .await
        .expect("get_many");
    assert_eq!(many, vec![Some(bytes("one")), None, Some(bytes("three"))]);
    assert!(store.get_many(&[]).await.expect("none").is_empty());
    store.delete("{t}:a").await.expect("delete");
    assert_eq!(store.get("{t}:a").await.expect("get"), None);
    store
        .set("{t}:short", bytes("x"), Duration::from_millis(50))
        .await
        .expect("set");
    let mut expired = false;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if store.get("{t}:short").await.expect("get").is_none() {
            expired = true;
            break;
        }
    }
    assert!(expired, "a value goes when its TTL runs out");
}

/// Counters and search generations: a value cached at one generation is not found at the next.
async fn generations(cache: Cache) {
    let store = cache.store.as_ref();
    assert_eq!(store.counter("{t}:gen").await.expect("counter"), 0);
    assert_eq!(store.increment("{t}:gen").await.expect("increment"), 1);
    assert_eq!(store.increment("{t}:gen").await.expect("increment"), 2);
    assert_eq!(store.counter("{t}:gen").await.expect("counter"), 2);
    let counters = ["{t}:gen".to_string(), "{t}:scopegen".to_string()];
    let key = GenerationalKey {
        head: "{t}:search:".into(),
        tail: ":params".into(),
    };
    let first = store
        .get_at_generation(&counters, "{t}:readsyncs", &key)
        .await
        .expect("read");
    assert_eq!((first.generation, first.read_syncs), (2, 0));
    assert_eq!(first.value, None);
    store
        .set(&key.with_generation(first.generation), bytes("answer"), TTL)
        .await
        .expect("set");
    let cached = store
        .get_at_generation(&counters, "{t}:readsyncs", &key)
        .await
        .expect("read");
    assert_eq!(cached.value, Some(bytes("answer")));
    store.increment("{t}:scopegen").await.expect("retire");
    let retired = store
        .get_at_generation(&counters, "{t}:readsyncs", &key)
        .await
        .expect("read");
    assert_eq!(retired.generation, 3, "both counters count");
    assert_eq!(retired.value, None, "a retired answer is not found");
}

/// Reads flushed into the cache: counts, the last read, the most read, the ids to sync.
async fn reads(cache: Cache) {
    let store = cache.store.as_ref();
    let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
    let at = |seconds: i64| {
        Utc.timestamp_opt(1_800_000_000 + seconds, 0)
            .single()
            .expect("a time")
    };
    let update = |id: Uuid, count, last| FlushedReads {
        id,
        access_key: format!("{{t}}:access:{id}"),
        popular_key: "{t}:popular".into(),
        count,
        last,
        tenant: None,
    };
    store
        .record_reads(&[update(a, 2, at(10)), update(b, 5, at(20))], "{t}:dirty")
        .await
        .expect("record");
    store
        .record_reads(&[update(a, 4, at(30))], "{t}:dirty")
        .await
        .expect("record");
    let stats = store
        .access_stats(&format!("{{t}}:access:{a}"))
        .await
        .expect("stats");
    assert_eq!(stats, Some((6, at(30))));
    assert_eq!(
        store
            .access_stats("{t}:access:nobody")
            .await
            .expect("stats"),
        None
    );
    let counts = store
        .read_counts(&[format!("{{t}}:access:{a}"), format!("{{t}}:access:{b}")])
        .await
        .expect("counts");
    assert_eq!((counts[0].unsynced, counts[1].unsynced), (6, 5));
    assert_eq!(counts[0].last, Some(at(30)));
    assert_eq!(
        store.most_read("{t}:popular", 10).await.expect("popular"),
        vec![a.to_string(), b.to_string()]
    );
    assert_eq!(
        store.most_read("{t}:popular", 1).await.expect("popular"),
        vec![a.to_string()]
    );
    let mut dirty = store.take_dirty("{t}:dirty", 10).await.expect("dirty");
    dirty.sort();
    let mut both = vec![a, b];
    both.sort();
    assert_eq!(dirty, both);
    assert!(store
        .take_dirty("{t}:dirty", 10)
        .await
        .expect("taken")
        .is_empty());
    store.mark_dirty("{t}:dirty", &[b]).await.expect("put back");
    assert_eq!(
        store.take_dirty("{t}:dirty", 10).await.expect("dirty"),
        vec![b]
    );
    let unsynced = store
        .unsynced_reads(&format!("{{t}}:access:{b}"))
        .await
        .expect("unsynced")
        .expect("some");
    assert_eq!((unsynced.count, unsynced.last), (5, at(20)));
}

/// A client's pending writes: noted, taken once, gone after their TTL.
async fn noted_writes(cache: Cache) {
    let store = cache.store.as_ref();
    let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
    store.note_write("{t}:own:x", a, TTL).await.expect("note");
    store.note_write("{t}:own:x", b, TTL).await.expect("note");
    store
        .note_write("{t}:own:x", a, TTL)
        .await
        .expect("noted twice");
    store
        .note_write("{t}:own:y", b, TTL)
        .await
        .expect("another client");
    let mut taken = store.take_writes("{t}:own:x", 10).await.expect("take");
    taken.sort();
    assert_eq!(taken, vec![a, b], "each once");
    assert!(
        store
            .take_writes("{t}:own:x", 10)
            .await
            .expect("take")
            .is_empty(),
        "taken"
    );
    assert_eq!(
        store.take_writes("{t}:own:y", 10).await.expect("take"),
        vec![b]
    );
    store
        .note_write("{t}:own:z", a, Duration::from_millis(50))
        .await
        .expect("note");
    tokio::time::sleep(Duration::from_millis(120)).await;
    assert!(
        store
            .take_writes("{t}:own:z", 10)
            .await
            .expect("take")
            .is_empty(),
        "expired"
    );
}

#[tokio::test]
async fn in_process_noted_writes() {
    noted_writes(in_process()).await;
}

#[tokio::test]
async fn redis_noted_writes() {
    noted_writes(on_redis()).await;
}

#[tokio::test]
async fn in_process_values() {
    values(in_process()).await;
}

#[tokio::test]
async fn redis_values() {
    values(on_redis()).await;
}

#[tokio::test]
async fn in_process_generations() {
    generations(in_process()).await;
}

#[tokio::test]
async fn redis_generations() {
    generations(on_redis()).await;
}

#[tokio::test]
async fn in_process_reads() {
    reads(in_process()).await;
}

#[tokio::test]
async fn redis_reads() {
    reads(on_redis()).await;
}

#[tokio::test]
async fn cluster_noted_writes() {
    noted_writes(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_values() {
    values(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_generations() {
    generations(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_reads() {
    reads(on_cluster().await).await;
}
