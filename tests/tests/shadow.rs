//! Shadow comparison, memgate in front of the reference cldmemory on one vector store: every
//! fast-path `search_memories` and `get_memory` (sample 1) is also asked of cldmemory and the
//! answers compared. Identical data gives no mismatch; a memory changed behind memgate's back
//! (in the vector store, memgate's cache still warm) gives mismatches, shown on the admin port;
//! cldmemory down leaves the answers unchanged; read counts stay exact on both sides; and REST
//! gets and searches are shadowed as the tools that read the same.

use std::time::Duration;

use memgate_testkit::{
    eventually, metric_value, scrape_metrics, Legacy, McpSseClient, SseRouting, TestStack,
};
use serde_json::{json, Map, Value};
use uuid::Uuid;

memgate_testkit::stack_env!(Env);

/// The outcomes of a shadow call that was sent.
const COMPARED: &[&str] = &[
    "match",
    "mismatch",
    "stale_within_ttl",
    "legacy_error",
    "fast_error",
];

impl Env {
    async fn start() -> Env {
        let stack = TestStack::builder()
            .legacy(Legacy::InFront(SseRouting::NewestStream))
            .configure(|config| {
                config.rollout.percent = 100;
                config.layout.similarity_threshold = 0.2;
                config.shadow.sample = 1.0;
                config.shadow.max_in_flight = 64;
                // The reads stay in memgate's tally until a sync would add them.
                config.worker.access_sync_interval = Duration::from_millis(100);
            })
            .start()
            .await;
        Env(stack)
    }

    async fn client(&self) -> McpSseClient {
        let client = McpSseClient::connect(&self.url(""), None)
            .await
            .expect("an MCP session with memgate");
        client.initialize().await.expect("initialize");
        client
    }

    async fn comparisons(&self, tool: &str, outcome: &str) -> f64 {
        let metrics = scrape_metrics(self.proxy.admin_addr).await;
        metric_value(
            &metrics,
            &format!("memgate_shadow_comparisons_total{{outcome=\"{outcome}\",tool=\"{tool}\"}}"),
        )
        .unwrap_or(0.0)
    }

    /// The calls of `tool` with one of `outcomes` so far.
    async fn counted(&self, tool: &str, outcomes: &[&str]) -> f64 {
        let mut total = 0.0;
        for outcome in outcomes {
            total += self.comparisons(tool, outcome).await;
        }
        total
    }

    /// Every outcome of `tool` so far, skipped ones included.
    async fn settled_calls(&self, tool: &str) -> f64 {
        self.counted(tool, &[COMPARED, &["skipped"]].concat()).await
    }

    /// Calls `tool` and waits until its shadow call is done: the next call reads with no
    /// shadow call in flight.
    async fn call_settled(&self, client: &McpSseClient, tool: &str, arguments: Value) -> String {
        let before = self.settled_calls(tool).await;
        let text = client.call_tool(tool, arguments).await.expect("tool call");
        let settled = eventually(Duration::from_secs(20), || async {
            self.settled_calls(tool).await > before
        })
        .await;
        assert!(settled, "the shadow of {tool} is done");
        text
    }

    /// Waits until `count` comparisons of `tool` have an outcome other than `skipped`.
    async fn compared(&self, tool: &str, count: f64) -> bool {
        eventually(Duration::from_secs(20), || async {
            self.counted(tool, COMPARED).await >= count
        })
        .await
    }

    async fn mismatches(&self) -> Vec<Value> {
        let answer: Value = reqwest::get(self.admin_url("/shadow/mismatches"))
            .await
            .expect("admin")
            .json()
            .await
            .expect("JSON");
        answer["mismatches"].as_array().cloned().unwrap_or_default()
    }

    async fn payload(&self, id: &str) -> Map<String, Value> {
        self.vectors()
            .retrieve(Uuid::parse_str(id).expect("uuid"))
            .await
            .expect("retrieve")
            .expect("stored")
    }
}

async fn store(client: &McpSseClient, env: &Env, content: &str) -> String {
    let stored = client
        .call_tool(
            "store_memory",
            json!({"content": content, "type": "semantic"}),
        )
        .await
        .expect("store");
    let id = serde_json::from_str::<Value>(&stored).expect("JSON")["id"]
        .as_str()
        .expect("id")
        .to_string();
    env.wait_for_worker(&id).await;
    id
}

#[tokio::test]
async fn identical_data_gives_no_mismatch_and_a_change_behind_memgates_back_is_caught() {
    let env = Env::start().await;
    let client = env.client().await;
    let mut ids = Vec::new();
    for content in [
        "the lighthouse keeper feeds the gulls at dawn",
        "the ferry to the island leaves at nine",
        "the harbour master keeps the tide tables",
    ] {
        ids.push(store(&client, &env, content).await);
    }
    for round in 0..5 {
        for id in &ids {
            client
                .call_tool("get_memory", json!({"id": id}))
                .await
                .expect("get");
        }
        client
            .call_tool(
                "search_memories",
                json!({"query": format!("the ferry and the harbour {round}")}),
            )
            .await
            .expect("search");
    }
    // A shadow call waits for none: one reading a memory another is still reading is skipped.
    for (tool, calls) in [("get_memory", 15.0), ("search_memories", 5.0)] {
        let done = eventually(Duration::from_secs(20), || async {
            env.comparisons(tool, "match").await + env.comparisons(tool, "skipped").await >= calls
        })
        .await;
        assert!(done, "every {tool} compared or skipped");
    }
    assert!(env.comparisons("get_memory", "match").await >= 5.0);
    assert!(env.comparisons("search_memories", "match").await >= 1.0);
    assert_eq!(env.comparisons("get_memory", "mismatch").await, 0.0);
    assert_eq!(env.comparisons("search_memories", "mismatch").await, 0.0);
    assert!(env.mismatches().await.is_empty());

    // Changed in the vector store, not through memgate, while memgate's record of it is warm
    // (the worker left it there when it stored the memory; nothing has read it since).
    let changed = store(
        &client,
        &env,
        "the ferry to the island leaves at nine sharp",
    )
    .await;
    let mut fields = Map::new();
    fields.insert(
        "content".into(),
        json!("the ferry to the island leaves at ten sharp"),
    );
    env.vectors()
        .set_fields(Uuid::parse_str(&changed).expect("uuid"), fields)
        .await
        .expect("changed behind memgate's back");
    let answer: Value = serde_json::from_str(
        &env.call_settled(&client, "get_memory", json!({"id": changed}))
            .await,
    )
    .expect("JSON");
    assert_eq!(
        answer["content"], "the ferry to the island leaves at nine sharp",
        "memgate answered from its cache"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.comparisons("get_memory", "mismatch").await >= 1.0
        })
        .await,
        "the mismatch is counted"
    );
    let mismatches = env.mismatches().await;
    let shown = mismatches
        .iter()
        .find(|mismatch| mismatch["tool"] == "get_memory")
        .expect("kept on the admin endpoint");
    assert_eq!(shown["outcome"], "mismatch");
    assert!(
        shown["difference"]
            .as_str()
            .unwrap_or_default()
            .contains(".content"),
        "{shown}"
    );
    assert_eq!(shown["fast"]["id"], changed.as_str());
    // Content is redacted unless shadow.showContent.
    assert!(!shown.to_string().contains("leaves at"), "{shown}");
    assert_eq!(shown["fast"]["content"], "[redacted: 44 characters]");

    // A search memgate answers from its cached results shows the user the memory as it was:
    // classified apart from a layout difference. (A read sync ending while the first search
    // runs keeps its result out of the cache, every 100 ms here: then the second search reads
    // afresh and matches; try again.)
    let mismatches_before = env.comparisons("search_memories", "mismatch").await;
    let mut classified = false;
    for attempt in 0..5 {
        let query =
            json!({"query": format!("the lighthouse keeper and the gulls {attempt}"), "limit": 3});
        let first = env
            .call_settled(&client, "search_memories", query.clone())
            .await;
        assert!(first.contains(&ids[0]), "{first}");
        let mut fields = Map::new();
        fields.insert(
            "summary".into(),
            json!(format!("gulls fed by the keeper ({attempt})")),
        );
        env.vectors()
            .set_fields(Uuid::parse_str(&ids[0]).expect("uuid"), fields)
            .await
            .expect("changed behind memgate's back");
        client
            .call_tool("search_memories", query)
            .await
            .expect("search from the cached results");
        classified = eventually(Duration::from_secs(3), || async {
            env.comparisons("search_memories", "stale_within_ttl").await >= 1.0
        })
        .await;
        if classified {
            break;
        }
    }
    assert!(classified, "classified as stale within the cache's TTL");
    assert_eq!(
        env.comparisons("search_memories", "mismatch").await,
        mismatches_before,
        "a cached answer is not a layout difference"
    );
}

#[tokio::test]
async fn read_counts_stay_exact_when_every_read_is_shadowed() {
    let env = Env::start().await;
    let client = env.client().await;
    let id = store(&client, &env, "the spare oars hang in the boathouse").await;
    let before = env.payload(&id).await["accessCount"]
        .as_u64()
        .expect("count");
    // One at a time, each shadowed: cldmemory counts them all.
    for read in 1..=6 {
        client
            .call_tool("get_memory", json!({"id": id}))
            .await
            .expect("get");
        assert!(env.compared("get_memory", f64::from(read)).await);
    }
    assert_eq!(env.comparisons("get_memory", "match").await, 6.0);
    // Back to back: a shadow call still reading the memory makes the next one skip, and
    // memgate counts that read itself.
    for _ in 0..10 {
        client
            .call_tool("get_memory", json!({"id": id}))
            .await
            .expect("get");
    }
    let settled = eventually(Duration::from_secs(20), || async {
        env.comparisons("get_memory", "match").await
            + env.comparisons("get_memory", "skipped").await
            >= 16.0
    })
    .await;
    assert!(settled);
    // cldmemory counted each shadowed read in its payload, memgate each skipped one (added by
    // its read syncs, every 100 ms here): every read once.
    let exact = eventually(Duration::from_secs(20), || async {
        env.payload(&id).await["accessCount"].as_u64() == Some(before + 16)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = env.payload(&id).await["accessCount"]
        .as_u64()
        .expect("count");
    assert!(
        exact && after == before + 16,
        "each read counted once: {before} + 16 != {after}"
    );
    // And memgate's next answer shows what cldmemory's would.
    let shown: Value = serde_json::from_str(
        &client
            .call_tool("get_memory", json!({"id": id}))
            .await
            .expect("get"),
    )
    .expect("JSON");
    assert_eq!(shown["accessCount"], before + 16);
}

#[tokio::test]
async fn with_cldmemory_down_the_answers_are_unchanged_and_the_shadow_says_why() {
    let mut env = Env::start().await;
    let client = env.client().await;
    let id = store(&client, &env, "the lantern oil is in the blue can").await;
    let first = client
        .call_tool("get_memory", json!({"id": id}))
        .await
        .expect("get");
    assert!(env.compared("get_memory", 1.0).await);
    let before = env.payload(&id).await["accessCount"]
        .as_u64()
        .expect("count");

    env.reference_mut().stop().await;
    for _ in 0..5 {
        let answer = client
            .call_tool("get_memory", json!({"id": id}))
            .await
            .expect("answered by the fast path");
        let answer: Value = serde_json::from_str(&answer).expect("JSON");
        assert_eq!(answer["content"], "the lantern oil is in the blue can");
    }
    assert!(first.contains("blue can"));
    assert!(
        eventually(Duration::from_secs(20), || async {
            env.comparisons("get_memory", "legacy_error").await
                + env.comparisons("get_memory", "skipped").await
                >= 5.0
        })
        .await,
        "every shadow of the five gets failed or was skipped"
    );
    assert_eq!(env.comparisons("get_memory", "mismatch").await, 0.0);
    // Reads cldmemory could not count are memgate's to count: five reads, synced to the payload.
    assert!(
        eventually(Duration::from_secs(20), || async {
            env.payload(&id).await["accessCount"].as_u64() == Some(before + 5)
        })
        .await,
        "the reads cldmemory missed are counted by memgate: {:?}",
        env.payload(&id).await["accessCount"]
    );
}

/// A REST get or search is shadowed as the tool that reads the same (cldmemory has no REST
/// API): the same data compares equal, a memory missing on both sides too, a change behind
/// memgate's back is caught, and every read is counted once.
#[tokio::test]
async fn rest_reads_are_shadowed_as_the_tools_that_read_the_same() {
    let env = Env::start().await;
    let client = env.client().await;
    let id = store(&client, &env, "the tide tables hang by the harbour door").await;
    store(&client, &env, "the gulls gather on the breakwater at noon").await;
    let before = env.payload(&id).await["accessCount"]
        .as_u64()
        .expect("count");
    let http = reqwest::Client::new();

    let mut reads_of_id = 0;
    for read in 1..=3 {
        let got = http
            .get(env.url(&format!("/memories/{id}")))
            .send()
            .await
            .expect("REST get");
        assert_eq!(got.status(), 200);
        reads_of_id += 1;
        assert!(env.compared("get_memory", f64::from(read)).await);
        let found: Value = http
            .post(env.url("/memories/search"))
            .json(&json!({"query": "the tide tables by the harbour", "limit": 5}))
            .send()
            .await
            .expect("REST search")
            .json()
            .await
            .expect("JSON");
        let rows = found["memories"].as_array().expect("memories");
        assert!(!rows.is_empty(), "{found}");
        reads_of_id += rows.iter().filter(|row| row["id"] == id.as_str()).count() as u64;
        assert!(env.compared("search_memories", f64::from(read)).await);
    }
    assert_eq!(env.comparisons("get_memory", "match").await, 3.0);
    assert_eq!(env.comparisons("search_memories", "match").await, 3.0);

    // Not found on both sides is the same answer.
    let missing = http
        .get(env.url(&format!("/memories/{}", Uuid::new_v4())))
        .send()
        .await
        .expect("REST get");
    assert_eq!(missing.status(), 404);
    assert!(env.compared("get_memory", 4.0).await);
    assert_eq!(env.comparisons("get_memory", "match").await, 4.0);

    // cldmemory counted every shadowed read, memgate none of them twice.
    let exact = eventually(Duration::from_secs(20), || async {
        env.payload(&id).await["accessCount"].as_u64() == Some(before + reads_of_id)
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = env.payload(&id).await["accessCount"].as_u64();
    assert!(
        exact && after == Some(before + reads_of_id),
        "each read counted once: {before} + {reads_of_id} != {after:?}"
    );

    // Changed behind memgate's back while its record is warm (the worker left it there when
    // it stored the memory; nothing has read it since).
    let id = store(&client, &env, "the tide tables hang by the harbour door").await;
    let mut fields = Map::new();
    fields.insert(
        "content".into(),
        json!("the tide tables hang by the boathouse"),
    );
    env.vectors()
        .set_fields(Uuid::parse_str(&id).expect("uuid"), fields)
        .await
        .expect("changed behind memgate's back");
    let answer: Value = http
        .get(env.url(&format!("/memories/{id}")))
        .send()
        .await
        .expect("REST get")
        .json()
        .await
        .expect("JSON");
    assert_eq!(
        answer["content"],
        "the tide tables hang by the harbour door"
    );
    assert!(
        eventually(Duration::from_secs(10), || async {
            env.comparisons("get_memory", "mismatch").await >= 1.0
        })
        .await,
        "the REST get's mismatch is counted"
    );
    let kept = env.mismatches().await;
    assert!(
        kept.iter().any(|m| m["tool"] == "get_memory"
            && m["difference"]
                .as_str()
                .unwrap_or_default()
                .contains(".content")),
        "{kept:?}"
    );
}
