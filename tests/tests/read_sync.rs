//! The end of a read sync, on both queues (a real `redis-server`, and the in-process one): the
//! reads added to the payload leave `unsynced` and the cached record is replaced by the one
//! with the new counts in the same step, unless a write of the memory is pending (its record
//! stays), and a memory whose counts were dropped (deleted) gets none back; a record read from
//! the vector store before a sync is not cached after it, nor a search answer read across a
//! sync's end or with a memory being synced.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use memgate::backend::cache::{
    CacheStore, FlushedReads, InProcessCache, ReadCounts, RedisCache, SearchFill, UnfinishedSync,
};
use memgate::backend::queue::{
    InProcessQueue, ReadSync, RecordWrite, RedisQueue, Submission, WriteOp, WriteQueue,
};
use memgate::keys::GenerationalKey;
use memgate_testkit::{RedisCluster, RedisServer};
use uuid::Uuid;

const TTL: Duration = Duration::from_secs(60);
/// The scope's read syncs.
const READ_SYNCS: &str = "{t}:search:readsyncs";

struct Stores {
    cache: Arc<dyn CacheStore>,
    queue: Arc<dyn WriteQueue>,
    _redis: Option<RedisServer>,
    _cluster: Option<RedisCluster>,
}

fn in_process() -> Stores {
    let cache = Arc::new(InProcessCache::new(1000));
    Stores {
        queue: Arc::new(InProcessQueue::new("writes", cache.clone(), None)),
        cache,
        _redis: None,
        _cluster: None,
    }
}

fn on_redis() -> Stores {
    let server = RedisServer::start().expect("redis-server");
    let timeout = Duration::from_secs(2);
    let cache = RedisCache::connect_lazy(&server.url(), None, timeout).expect("cache");
    let queue =
        RedisQueue::connect_lazy(&server.url(), None, timeout, "{t}:", "writes", None, None)
            .expect("queue");
    Stores {
        cache: Arc::new(cache),
        queue: Arc::new(queue),
        _redis: Some(server),
        _cluster: None,
    }
}

/// On a three-master Redis Cluster: the keys' hash tag keeps them in one slot.
async fn on_cluster() -> Stores {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let timeout = Duration::from_secs(2);
    let cache = RedisCache::connect_lazy(&cluster.url(), None, timeout).expect("cache");
    let queue =
        RedisQueue::connect_lazy(&cluster.url(), None, timeout, "{t}:", "writes", None, None)
            .expect("queue");
    Stores {
        cache: Arc::new(cache),
        queue: Arc::new(queue),
        _redis: None,
        _cluster: Some(cluster),
    }
}

struct Memory {
    id: Uuid,
    access: String,
    record: String,
    revision: String,
}

impl Memory {
    fn new() -> Self {
        let id = Uuid::new_v4();
        Self {
            id,
            access: format!("{{t}}:access:{id}"),
            record: format!("{{t}}:mem:{id}"),
            revision: format!("{{t}}:rev:{id}"),
        }
    }

    fn sync(&self, count: u64, record: &'static str) -> ReadSync<'_> {
        ReadSync {
            access_key: &self.access,
            count,
            read_syncs_key: READ_SYNCS,
            record_key: &self.record,
            revision_key: &self.revision,
            record: Bytes::from_static(record.as_bytes()),
            ttl: TTL,
        }
    }
}

async fn read(stores: &Stores, memory: &Memory) -> (Option<Bytes>, u64, u64) {
    let (record, counts) = stores
        .cache
        .get_with_read_counts(&memory.record, &memory.access)
        .await
        .expect("read");
    (record, counts.unsynced, counts.syncs)
}

async fn counts(stores: &Stores, memory: &Memory) -> ReadCounts {
    let counts = stores
        .cache
        .read_counts(std::slice::from_ref(&memory.access))
        .await
        .expect("read counts");
    counts[0]
}

/// `count` reads of `memory`, flushed.
async fn read_times(stores: &Stores, memory: &Memory, count: u64) {
    let reads = FlushedReads {
        id: memory.id,
        access_key: memory.access.clone(),
        popular_key: "{t}:popular".into(),
        count,
        last: Utc::now(),
        tenant: None,
    };
    stores
        .cache
        .record_reads(&[reads], "{t}:access:dirty")
        .await
        .expect("reads");
}

async fn a_read_sync_ends_in_one_step(stores: Stores) {
    stores.queue.prepare().await.expect("prepare");
    let memory = Memory::new();
    read_times(&stores, &memory, 3).await;
    stores
        .cache
        .set(&memory.record, Bytes::from_static(b"before"), TTL)
        .await
        .expect("record");

    let replaced = stores
        .queue
        .commit_read_sync(memory.sync(2, "after"))
        .await
        .expect("commit");
    assert!(replaced, "nothing pending: the record is replaced");
    assert_eq!(
        read(&stores, &memory).await,
        (Some(Bytes::from_static(b"after")), 1, 1),
        "the new record, 1 read left unsynced, 1 sync"
    );

    // A write acknowledged and not applied: its record is the memory as last written.
    stores
        .queue
        .submit(Submission {
            op: WriteOp::Delete {
                id: memory.id,
                scope: None,
            },
            record: RecordWrite {
                key: memory.record.clone(),
                value: Bytes::from_static(b"pending"),
                ttl: TTL,
            },
            idempotency: None,
            bump_generation: false,
            generation_key: "{t}:generation".into(),
            revision_key: memory.revision.clone(),
            expected_revision: None,
        })
        .await
        .expect("submit");
    let replaced = stores
        .queue
        .commit_read_sync(memory.sync(1, "after again"))
        .await
        .expect("commit");
    assert!(!replaced, "a pending write's record stays");
    assert_eq!(
        read(&stores, &memory).await,
        (Some(Bytes::from_static(b"pending")), 0, 2)
    );

    // Counts dropped with the memory: a late sync brings none back.
    let deleted = Memory::new();
    stores
        .queue
        .commit_read_sync(deleted.sync(4, "ghost"))
        .await
        .expect("commit");
    assert_eq!(read(&stores, &deleted).await, (None, 0, 0));
}

/// A record read from the vector store before a sync ended is not stored after it: it would
/// show the counts from before beside the `unsynced` from after.
async fn a_record_read_before_a_sync_is_not_stored_after_it(stores: Stores) {
    stores.queue.prepare().await.expect("prepare");
    let memory = Memory::new();
    read_times(&stores, &memory, 1).await;
    let syncs_when_read = read(&stores, &memory).await.2;
    stores
        .queue
        .commit_read_sync(memory.sync(1, "synced"))
        .await
        .expect("commit");
    let fill = |value: &'static str, syncs: u64| {
        let cache = stores.cache.clone();
        let (record, access) = (memory.record.clone(), memory.access.clone());
        async move {
            cache
                .fill_record(
                    &record,
                    Bytes::from_static(value.as_bytes()),
                    TTL,
                    &access,
                    syncs,
                )
                .await
                .expect("fill");
        }
    };
    fill("read before the sync", syncs_when_read).await;
    assert_eq!(read(&stores, &memory).await.0, None, "not stored");
    fill("read after it", syncs_when_read + 1).await;
    fill("another, later", syncs_when_read + 1).await;
    assert_eq!(
        read(&stores, &memory).await.0,
        Some(Bytes::from_static(b"read after it")),
        "stored if absent"
    );
}

/// A search answer is cached only if no read sync of its scope ended while it was read, and
/// none of its memories is being synced: its stored counts and the `synced` counts kept with
/// it are then from one moment.
async fn a_search_answer_is_cached_only_between_read_syncs(stores: Stores) {
    stores.queue.prepare().await.expect("prepare");
    let memory = Memory::new();
    read_times(&stores, &memory, 2).await;
    let key = GenerationalKey {
        head: "{t}:search:".into(),
        tail: ":q".into(),
    };
    let generations = [
        "{t}:search:gen".to_string(),
        "{t}:search:scopegen".to_string(),
    ];
    let lookup = || {
        let (cache, key, generations) = (stores.cache.clone(), key.clone(), generations.clone());
        async move {
            cache
                .get_at_generation(&generations, READ_SYNCS, &key)
                .await
                .expect("lookup")
        }
    };
    // A search answer naming the memory: the store appends each memory's `synced` count, and
    // says whether it stored the answer.
    let fill = |label: &'static str, read_syncs: u64| {
        let (cache, key, access, id) = (
            stores.cache.clone(),
            key.with_generation(0),
            memory.access.clone(),
            memory.id,
        );
        async move {
            let (ids, access_keys) = ([id], [access]);
            let fill = SearchFill {
                key: &key,
                body_head: Bytes::from(format!(r#"{{"label":"{label}","synced":"#)),
                ids: &ids,
                access_keys: &access_keys,
                ttl: TTL,
                read_syncs_key: READ_SYNCS,
                read_syncs,
            };
            cache.fill_search(fill).await.expect("fill")
        }
    };
    let answer = |label: &str, synced: u64| {
        Some(Bytes::from(format!(
            r#"{{"label":"{label}","synced":{{"{}":{synced}}}}}"#,
            memory.id
        )))
    };
    let before = lookup().await.read_syncs;
    assert_eq!(before, 0);

    let reads = stores
        .cache
        .unsynced_reads(&memory.access)
        .await
        .expect("reads")
        .expect("reads to sync");
    assert_eq!((reads.count, reads.unfinished), (2, None));
    let fields = Bytes::from_static(br#"{"accessCount":2}"#);
    stores
        .cache
        .begin_sync(&memory.access, 2, fields.clone())
        .await
        .expect("begin");
    assert_eq!(counts(&stores, &memory).await.syncing, 2);
    let reads = stores
        .cache
        .unsynced_reads(&memory.access)
        .await
        .expect("reads")
        .expect("reads to sync");
    assert_eq!(
        reads.unfinished,
        Some(UnfinishedSync { count: 2, fields }),
        "a sync begun and not committed shows, with the fields it writes"
    );
    assert!(!fill("read while the memory is being synced", before).await);
    assert_eq!(lookup().await.value, None, "not stored");

    stores
        .queue
        .commit_read_sync(memory.sync(2, "synced"))
        .await
        .expect("commit");
    let after = counts(&stores, &memory).await;
    assert_eq!(
        (after.unsynced, after.synced, after.syncing, after.syncs),
        (0, 2, 0, 1),
        "the reads moved from unsynced to synced"
    );
    assert!(!fill("read across the sync's end", before).await);
    assert_eq!(lookup().await.value, None, "not stored");
    let read_syncs = lookup().await.read_syncs;
    assert_eq!(read_syncs, before + 1, "the scope's read syncs moved on");
    assert!(fill("read after it", read_syncs).await);
    assert_eq!(
        lookup().await.value,
        answer("read after it", 2),
        "stored, with the reads synced to the memory by then"
    );
    assert_eq!(
        stores
            .cache
            .unsynced_reads(&memory.access)
            .await
            .expect("reads"),
        None,
        "nothing left to sync"
    );

    // The cache's own commit (the in-process queue's step) counts the same way.
    read_times(&stores, &memory, 3).await;
    let reads = stores.cache.unsynced_reads(&memory.access).await;
    let reads = reads.expect("reads").expect("reads to sync");
    assert_eq!((reads.count, reads.unfinished), (3, None));
    stores
        .cache
        .begin_sync(&memory.access, 3, Bytes::from_static(b"{}"))
        .await
        .expect("begin");
    stores
        .cache
        .commit_synced(&memory.access, 3, READ_SYNCS)
        .await
        .expect("commit");
    let after = counts(&stores, &memory).await;
    assert_eq!(
        (after.unsynced, after.synced, after.syncing, after.syncs),
        (0, 5, 0, 2)
    );
    assert_eq!(lookup().await.read_syncs, read_syncs + 1);
}

#[tokio::test]
async fn in_process_a_search_answer_is_cached_only_between_read_syncs() {
    a_search_answer_is_cached_only_between_read_syncs(in_process()).await;
}

#[tokio::test]
async fn redis_a_search_answer_is_cached_only_between_read_syncs() {
    a_search_answer_is_cached_only_between_read_syncs(on_redis()).await;
}

#[tokio::test]
async fn in_process_a_record_read_before_a_sync_is_not_stored_after_it() {
    a_record_read_before_a_sync_is_not_stored_after_it(in_process()).await;
}

#[tokio::test]
async fn redis_a_record_read_before_a_sync_is_not_stored_after_it() {
    a_record_read_before_a_sync_is_not_stored_after_it(on_redis()).await;
}

#[tokio::test]
async fn in_process_a_read_sync_ends_in_one_step() {
    a_read_sync_ends_in_one_step(in_process()).await;
}

#[tokio::test]
async fn redis_a_read_sync_ends_in_one_step() {
    a_read_sync_ends_in_one_step(on_redis()).await;
}

#[tokio::test]
async fn cluster_a_search_answer_is_cached_only_between_read_syncs() {
    a_search_answer_is_cached_only_between_read_syncs(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_a_record_read_before_a_sync_is_not_stored_after_it() {
    a_record_read_before_a_sync_is_not_stored_after_it(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_a_read_sync_ends_in_one_step() {
    a_read_sync_ends_in_one_step(on_cluster().await).await;
}
