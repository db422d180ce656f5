//! Who may claim a queue entry, on every queue (a real `redis-server`, a real Redis Cluster, and
//! the in-process one):
//! a live worker keeps its entries however long its jobs run, a silent worker's entries go to
//! one other worker each, counted as one more delivery, and a worker takes back its own entries
//! it lost track of (and only those).

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use memgate::backend::cache::InProcessCache;
use memgate::backend::queue::{
    InProcessQueue, RecordWrite, RedisQueue, Submission, WriteOp, WriteQueue,
};
use memgate_testkit::{RedisCluster, RedisServer};
use uuid::Uuid;

/// How long a worker may be silent before it counts as dead, in these tests.
const CLAIM_IDLE: Duration = Duration::from_millis(400);
const LEASE: Duration = Duration::from_secs(5);

struct Queues {
    queue: Arc<dyn WriteQueue>,
    redis: Option<(RedisServer, redis::Client)>,
    _cluster: Option<RedisCluster>,
}

fn in_process() -> Queues {
    let cache = Arc::new(InProcessCache::new(1000));
    Queues {
        queue: Arc::new(InProcessQueue::new("writes", cache, None)),
        redis: None,
        _cluster: None,
    }
}

async fn on_redis() -> Queues {
    let server = RedisServer::start().expect("redis-server");
    let queue = RedisQueue::connect_lazy(
        &server.url(),
        None,
        Duration::from_secs(2),
        "{claims}:",
        "writes",
        None,
        None,
    )
    .expect("queue");
    let client = redis::Client::open(server.url()).expect("client");
    Queues {
        queue: Arc::new(queue),
        redis: Some((server, client)),
        _cluster: None,
    }
}

/// On a three-master Redis Cluster (the keys' hash tag keeps them in one slot).
async fn on_cluster() -> Queues {
    let cluster = RedisCluster::start().await.expect("redis cluster");
    let queue = RedisQueue::connect_lazy(
        &cluster.url(),
        None,
        Duration::from_secs(2),
        "{claims}:",
        "writes",
        None,
        None,
    )
    .expect("queue");
    Queues {
        queue: Arc::new(queue),
        redis: None,
        _cluster: Some(cluster),
    }
}

async fn submit_deletes(queue: &dyn WriteQueue, count: usize) {
    queue.prepare().await.expect("prepare");
    for _ in 0..count {
        let id = Uuid::new_v4();
        queue
            .submit(Submission {
                op: WriteOp::Delete { id, scope: None },
                record: RecordWrite {
                    key: format!("{{claims}}:record:{id}"),
                    value: Bytes::from_static(b"{}"),
                    ttl: Duration::from_secs(60),
                },
                idempotency: None,
                bump_generation: false,
                generation_key: "{claims}:generation".into(),
                revision_key: format!("{{claims}}:rev:{id}"),
                expected_revision: None,
            })
            .await
            .expect("submit");
    }
}

async fn take(queue: &dyn WriteQueue, consumer: &str, count: usize) -> Vec<String> {
    let taken = queue
        .take(consumer, count, Duration::from_millis(100))
        .await
        .expect("take");
    assert_eq!(taken.len(), count, "{consumer} takes {count}");
    taken.into_iter().map(|job| job.entry).collect()
}

async fn alive(queue: &dyn WriteQueue, consumer: &str) {
    queue
        .keep_alive(consumer, &[], LEASE)
        .await
        .expect("keep alive");
}

/// A worker working on nothing.
static NOTHING_HELD: std::sync::OnceLock<HashSet<String>> = std::sync::OnceLock::new();

fn held(entries: &[&String]) -> HashSet<String> {
    entries.iter().map(|entry| entry.to_string()).collect()
}

async fn a_live_workers_entries_stay_its_own(queues: Queues) {
    let queue = queues.queue.as_ref();
    submit_deletes(queue, 3).await;
    alive(queue, "a").await;
    let entries = take(queue, "a", 3).await;
    // Its jobs run three times `CLAIM_IDLE`; it says it is alive meanwhile.
    for _ in 0..12 {
        tokio::time::sleep(CLAIM_IDLE / 4).await;
        alive(queue, "a").await;
        alive(queue, "b").await;
        let claimed = queue
            .claim_stale("b", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new))
            .await
            .expect("claim");
        assert!(claimed.is_empty(), "b claimed a live worker's {claimed:?}");
    }
    let own = queue
        .claim_stale(
            "a",
            CLAIM_IDLE,
            10,
            &held(&entries.iter().collect::<Vec<_>>()),
        )
        .await
        .expect("claim");
    assert!(own.is_empty(), "a claimed its own live entries: {own:?}");
}

async fn a_silent_workers_entries_go_to_one_other_worker_each(queues: Queues) {
    let queue = queues.queue.clone();
    submit_deletes(queue.as_ref(), 6).await;
    alive(queue.as_ref(), "a").await;
    let entries: BTreeSet<String> = take(queue.as_ref(), "a", 6).await.into_iter().collect();
    // `a` dies here. Too soon, nothing is claimed:
    alive(queue.as_ref(), "b").await;
    let early = queue
        .claim_stale("b", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new))
        .await
        .expect("claim");
    assert!(early.is_empty(), "claimed before `a` was silent: {early:?}");
    tokio::time::sleep(CLAIM_IDLE + CLAIM_IDLE / 2).await;
    // Two live workers claim at once: each entry goes to exactly one of them.
    alive(queue.as_ref(), "b").await;
    alive(queue.as_ref(), "c").await;
    let (by_b, by_c) = tokio::join!(
        queue.claim_stale("b", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new)),
        queue.claim_stale("c", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new)),
    );
    let (by_b, by_c) = (by_b.expect("b claims"), by_c.expect("c claims"));
    let claimed: Vec<String> = by_b.iter().chain(&by_c).map(|j| j.entry.clone()).collect();
    assert_eq!(claimed.len(), 6, "b {by_b:?}, c {by_c:?}");
    assert_eq!(claimed.into_iter().collect::<BTreeSet<_>>(), entries);
    for job in by_b.iter().chain(&by_c) {
        assert_eq!(job.deliveries, 2, "{job:?}");
    }
}

async fn a_worker_takes_back_only_the_entries_it_lost_track_of(queues: Queues) {
    let queue = queues.queue.as_ref();
    submit_deletes(queue, 2).await;
    alive(queue, "a").await;
    let entries = take(queue, "a", 2).await;
    let held = held(&[&entries[0]]);
    let early = queue
        .claim_stale("a", CLAIM_IDLE, 10, &held)
        .await
        .expect("claim");
    assert!(early.is_empty(), "taken back before `min_idle`: {early:?}");
    tokio::time::sleep(CLAIM_IDLE + CLAIM_IDLE / 2).await;
    alive(queue, "a").await;
    let back = queue
        .claim_stale("a", CLAIM_IDLE, 10, &held)
        .await
        .expect("claim");
    assert_eq!(back.len(), 1, "{back:?}");
    assert_eq!(back[0].entry, entries[1]);
    assert_eq!(back[0].deliveries, 2);
}

#[tokio::test]
async fn in_process_a_live_workers_entries_stay_its_own() {
    a_live_workers_entries_stay_its_own(in_process()).await;
}

#[tokio::test]
async fn redis_a_live_workers_entries_stay_its_own() {
    a_live_workers_entries_stay_its_own(on_redis().await).await;
}

#[tokio::test]
async fn in_process_a_silent_workers_entries_go_to_one_other_worker_each() {
    a_silent_workers_entries_go_to_one_other_worker_each(in_process()).await;
}

#[tokio::test]
async fn redis_a_silent_workers_entries_go_to_one_other_worker_each() {
    a_silent_workers_entries_go_to_one_other_worker_each(on_redis().await).await;
}

#[tokio::test]
async fn in_process_a_worker_takes_back_only_the_entries_it_lost_track_of() {
    a_worker_takes_back_only_the_entries_it_lost_track_of(in_process()).await;
}

#[tokio::test]
async fn redis_a_worker_takes_back_only_the_entries_it_lost_track_of() {
    a_worker_takes_back_only_the_entries_it_lost_track_of(on_redis().await).await;
}

/// The consumer names in the group, as Redis lists them.
async fn group_members(client: &redis::Client) -> BTreeSet<String> {
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
        .arg("CONSUMERS")
        .arg("{claims}:writes")
        .arg("workers")
        .query_async(&mut connection)
        .await
        .expect("xinfo");
    reply.consumers.into_iter().map(|c| c.name).collect()
}

#[tokio::test]
async fn redis_silent_workers_with_nothing_pending_leave_the_group() {
    let queues = on_redis().await;
    let queue = queues.queue.as_ref();
    let (_, client) = queues.redis.as_ref().expect("redis");
    submit_deletes(queue, 1).await;
    for worker in ["a", "b"] {
        alive(queue, worker).await;
        queue
            .take(worker, 1, Duration::from_millis(50))
            .await
            .expect("take");
    }
    // `a` holds the entry, `b` holds nothing; both go silent.
    tokio::time::sleep(CLAIM_IDLE + CLAIM_IDLE / 2).await;
    alive(queue, "c").await;
    let claimed = queue
        .claim_stale("c", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    // `a` had something pending when it was looked at; `b` had nothing and is gone.
    let members = group_members(client).await;
    assert!(!members.contains("b"), "{members:?}");
    assert!(members.contains("c"), "{members:?}");
    // At the next look, `a` has nothing pending any more either.
    queue
        .claim_stale("c", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new))
        .await
        .expect("claim");
    assert!(!group_members(client).await.contains("a"));
}

#[tokio::test]
async fn redis_a_claim_after_redis_lost_its_data_recreates_the_group() {
    let queues = on_redis().await;
    let queue = queues.queue.as_ref();
    let (_, client) = queues.redis.as_ref().expect("redis");
    submit_deletes(queue, 1).await;
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("connect");
    redis::cmd("FLUSHALL")
        .exec_async(&mut connection)
        .await
        .expect("flushall");
    let claimed = queue
        .claim_stale("a", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new))
        .await
        .expect("a claim heals the group");
    assert!(claimed.is_empty());
    submit_deletes(queue, 1).await;
    take(queue, "a", 1).await;
    // The stream is there and its group is not.
    redis::cmd("XGROUP")
        .arg("DESTROY")
        .arg("{claims}:writes")
        .arg("workers")
        .exec_async(&mut connection)
        .await
        .expect("destroy the group");
    queue
        .claim_stale("a", CLAIM_IDLE, 10, NOTHING_HELD.get_or_init(HashSet::new))
        .await
        .expect("a claim heals the group");
    assert_eq!(group_members(client).await, BTreeSet::new());
}

/// The lag the workers export (`memgate_queue_oldest_seconds`): the age of the oldest entry not
/// finished, taken or not; none for an empty queue.
async fn the_oldest_unfinished_entry_tells_the_lag(queues: Queues) {
    let queue = queues.queue.as_ref();
    queue.prepare().await.expect("prepare");
    assert_eq!(queue.stats().await.expect("stats").oldest_age, None);
    submit_deletes(queue, 2).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    take(queue, "w1", 1).await;
    let age = queue.stats().await.expect("stats").oldest_age;
    assert!(
        age.is_some_and(|age| age >= Duration::from_millis(250) && age < Duration::from_secs(30)),
        "{age:?}"
    );
}

#[tokio::test]
async fn in_process_the_oldest_unfinished_entry_tells_the_lag() {
    the_oldest_unfinished_entry_tells_the_lag(in_process()).await;
}

#[tokio::test]
async fn redis_the_oldest_unfinished_entry_tells_the_lag() {
    the_oldest_unfinished_entry_tells_the_lag(on_redis().await).await;
}

#[tokio::test]
async fn cluster_a_live_workers_entries_stay_its_own() {
    a_live_workers_entries_stay_its_own(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_a_silent_workers_entries_go_to_one_other_worker_each() {
    a_silent_workers_entries_go_to_one_other_worker_each(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_a_worker_takes_back_only_the_entries_it_lost_track_of() {
    a_worker_takes_back_only_the_entries_it_lost_track_of(on_cluster().await).await;
}

#[tokio::test]
async fn cluster_the_oldest_unfinished_entry_tells_the_lag() {
    the_oldest_unfinished_entry_tells_the_lag(on_cluster().await).await;
}
