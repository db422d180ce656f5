//! A rollout raised on evidence, end to end: the operator on a real API server, Debian's
//! Prometheus scraping `memgate serve` processes (each in front of a `cldmemory-reference`
//! process holding the same memories, every read shadowed), and MemoryStores whose
//! `spec.rollout.analysis` reads them:
//!
//! - `matching`: memgate answers as cldmemory does → 1 → 5 → 25 → 50 → 100, every step;
//! - `drifting`: memgate's threshold differs from cldmemory's, so searches mismatch → rolled
//!   back to 0 with a condition and an Event naming the mismatch ratio and its bound;
//! - `held`: the matching proxy's figures, `paused` → stays at its first step;
//! - `blind`: a Prometheus that is not there → stays, and says so.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use memgate_testkit::{
    free_port, log_tail, ControlPlane, FakeOpenAi, McpSseClient, MemgateProcess, PrometheusServer,
    RedisServer, ReferenceProcess, ScrapeJob, TEST_PROJECT,
};
use serde_json::{json, Value};

const NAMESPACE: &str = "ramp";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A `memgate serve` process in front of a `cldmemory-reference` process, every fast-path
/// read shadowed. Each has a vector store of its own (Qdrant Edge is opened by one process
/// at a time), both holding the same memories: written once by a `memgate serve --embedded`
/// that is then stopped, and its store copied. cldmemory searches with its own threshold.
struct Shadowed {
    memgate: MemgateProcess,
    /// The seeded memories' ids.
    ids: Vec<String>,
    _reference: ReferenceProcess,
    _data: tempfile::TempDir,
}

/// The embedding settings both processes share: the OpenAI stand-in, 64 dimensions.
fn embedding_env(openai: &FakeOpenAi) -> Vec<(&'static str, String)> {
    vec![
        ("MEMGATE_EMBEDDINGS__PROVIDER", "openai".into()),
        ("MEMGATE_EMBEDDINGS__MODEL", "text-embedding-test".into()),
        ("MEMGATE_EMBEDDINGS__DIMENSIONS", "64".into()),
        ("MEMGATE_ENRICHMENT__PROVIDER", "openai".into()),
        ("MEMGATE_ENRICHMENT__MODEL", "gpt-test".into()),
        ("MEMGATE_OPENAI__BASE_URL", openai.base_url()),
        ("MEMGATE_OPENAI__API_KEY", "sk-test".into()),
        ("MEMGATE_LAYOUT__PROJECT", TEST_PROJECT.into()),
        ("MEMGATE_LOG", "warn".into()),
    ]
}

/// Five memories written by an embedded memgate into `{dir}/vectors`, applied; their ids.
async fn seed(dir: &Path, openai: &FakeOpenAi) -> anyhow::Result<Vec<String>> {
    let mut env = embedding_env(openai);
    env.push(("XDG_DATA_HOME", dir.display().to_string()));
    let seeding = MemgateProcess::spawn(
        &[
            "serve",
            "--embedded",
            "--data-dir",
            &dir.display().to_string(),
        ],
        &env,
        &dir.join("seed.log"),
    )
    .await?;
    let http = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..5 {
        let created: Value = http
            .post(format!("{}/memories", seeding.base))
            .json(&json!({"content": format!("the tide table for pier {n}"), "type": "semantic"}))
            .send()
            .await?
            .json()
            .await?;
        ids.push(created["id"].as_str().context("id")?.to_string());
    }
    for id in &ids {
        let applied = memgate_testkit::eventually(Duration::from_secs(30), || async {
            let memory: Value = match http
                .get(format!("{}/memories/{id}", seeding.base))
                .send()
                .await
            {
                Ok(response) => response.json().await.unwrap_or(Value::Null),
                Err(_) => Value::Null,
            };
            memory["status"] == "ready"
        })
        .await;
        anyhow::ensure!(applied, "{id} applied:\n{}", seeding.log_tail(20));
    }
    seeding.terminate()?;
    Ok(ids)
}

impl Shadowed {
    async fn start(
        name: &str,
        redis: &RedisServer,
        openai: &FakeOpenAi,
        memgate_threshold: f32,
        cldmemory_threshold: f32,
    ) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let (memgate_dir, cldmemory_dir) =
            (data.path().join("memgate"), data.path().join("cldmemory"));
        std::fs::create_dir_all(&memgate_dir)?;
        let ids = seed(&memgate_dir, openai).await?;
        let copied = Command::new("cp")
            .arg("-r")
            .arg(&memgate_dir)
            .arg(&cldmemory_dir)
            .status()?;
        anyhow::ensure!(copied.success(), "copying the vector store");
        let reference = ReferenceProcess::spawn(
            &[
                (
                    "EDGE_PATH",
                    cldmemory_dir.join("vectors").display().to_string(),
                ),
                ("VECTOR_DIMENSION", "64".into()),
                ("OPENAI_BASE_URL", openai.base_url()),
                ("OPENAI_API_KEY", "sk-test".into()),
                ("OPENAI_MODEL", "text-embedding-test".into()),
                ("SIMILARITY_THRESHOLD", cldmemory_threshold.to_string()),
                ("PROJECT", TEST_PROJECT.into()),
            ],
            &data.path().join("cldmemory.log"),
        )
        .await?;
        let mut env = embedding_env(openai);
        env.extend([
            ("MEMGATE_STORE__NAME", name.to_string()),
            ("MEMGATE_CACHE__BACKEND", "redis".into()),
            ("MEMGATE_REDIS__URL", redis.url()),
            ("MEMGATE_VECTORS__BACKEND", "edge".into()),
            (
                "MEMGATE_VECTORS__PATH",
                memgate_dir.join("vectors").display().to_string(),
            ),
            ("MEMGATE_UPSTREAM__URL", reference.url.clone()),
            ("MEMGATE_ROLLOUT__PERCENT", "100".into()),
            ("MEMGATE_SHADOW__SAMPLE", "1.0".into()),
            ("MEMGATE_SHADOW__MAX_IN_FLIGHT", "64".into()),
            (
                "MEMGATE_LAYOUT__SIMILARITY_THRESHOLD",
                memgate_threshold.to_string(),
            ),
        ]);
        let memgate =
            MemgateProcess::spawn(&["serve"], &env, &data.path().join("memgate.log")).await?;
        Ok(Self {
            memgate,
            ids,
            _reference: reference,
            _data: data,
        })
    }
}

/// Reads the seeded memories (or searches for them) over MCP until dropped.
async fn traffic(shadowed: &Shadowed, search: bool) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = McpSseClient::connect(&shadowed.memgate.base, None).await?;
    client.initialize().await?;
    let ids = shadowed.ids.clone();
    Ok(tokio::spawn(async move {
        for round in 0u64.. {
            let call = if search {
                client
                    .call_tool(
                        "search_memories",
                        json!({"query": format!("tide table {round}")}),
                    )
                    .await
            } else {
                let id = &ids[(round % ids.len() as u64) as usize];
                client.call_tool("get_memory", json!({"id": id})).await
            };
            if call.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(40)).await;
        }
    }))
}

fn store_yaml(name: &str, prometheus: &str, paused: bool) -> String {
    format!(
        r#"apiVersion: memgate.dev/v1alpha1
kind: MemoryStore
metadata: {{name: {name}, namespace: {NAMESPACE}}}
spec:
  redis: {{managed: {{storage: 1Gi}}}}
  qdrant: {{managed: {{storage: 1Gi}}}}
  proxy: {{upstream: "http://127.0.0.1:3000"}}
  rollout:
    paused: {paused}
    shadow: {{sample: 1.0}}
    analysis:
      steps: [1, 5, 25, 50, 100]
      interval: 4s
      minSamples: 5
      maxMismatchRatio: 0.05
      maxErrorRatio: 0.05
      maxLatencyP99: 2s
      prometheus: {prometheus}
"#
    )
}

struct Operator {
    child: Child,
    log: PathBuf,
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_operator(plane: &ControlPlane) -> anyhow::Result<Operator> {
    let log = plane.dir().join("operator-ramp.log");
    let file = std::fs::File::create(&log)?;
    let child = Command::new(env!("CARGO_BIN_EXE_memgate-operator"))
        .args([
            "run",
            "--webhook-listen=off",
            "--leader-election=false",
            &format!("--admin-listen=127.0.0.1:{}", free_port()?),
        ])
        .env("KUBECONFIG", &plane.admin_kubeconfig)
        .env("MEMGATE_LOG_FORMAT", "text")
        .env("RUST_LOG", "info,memgate_operator=debug")
        .stdout(file.try_clone()?)
        .stderr(file)
        .spawn()?;
    Ok(Operator { child, log })
}

/// A store's `status.rollout` and its `Rollout` condition.
fn rollout(plane: &ControlPlane, name: &str) -> anyhow::Result<(Value, Value)> {
    let text = plane.kubectl_ok(["get", "memorystore", name, "-n", NAMESPACE, "-o", "json"])?;
    let store: Value = serde_json::from_str(&text)?;
    let condition = store["status"]["conditions"]
        .as_array()
        .and_then(|conditions| conditions.iter().find(|c| c["type"] == "Rollout"))
        .cloned()
        .unwrap_or(Value::Null);
    Ok((store["status"]["rollout"].clone(), condition))
}

/// Waits until `check` holds of `name`'s rollout and condition, recording the percents seen.
async fn watch(
    plane: &ControlPlane,
    name: &str,
    timeout: Duration,
    seen: &mut Vec<u64>,
    check: impl Fn(&Value, &Value) -> bool,
) -> anyhow::Result<(Value, Value)> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok((status, condition)) = rollout(plane, name) {
            if let Some(percent) = status["percent"].as_u64() {
                if seen.last() != Some(&percent) {
                    seen.push(percent);
                }
            }
            if check(&status, &condition) {
                return Ok((status, condition));
            }
            if Instant::now() > deadline {
                bail!("{name}: not within {timeout:?}; rollout {status}, condition {condition}");
            }
        } else if Instant::now() > deadline {
            bail!("{name}: no status within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn events(plane: &ControlPlane, reason: &str) -> anyhow::Result<Vec<Value>> {
    let text = plane.kubectl_ok([
        "get",
        "events",
        "-n",
        NAMESPACE,
        "--field-selector",
        &format!("reason={reason}"),
        "-o",
        "json",
    ])?;
    let list: Value = serde_json::from_str(&text)?;
    Ok(list["items"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn the_operator_ramps_on_evidence_and_rolls_back_when_a_bound_breaks() {
    let redis = RedisServer::start().expect("redis-server");
    let openai = FakeOpenAi::start(64).await.expect("fake OpenAI");
    let matching = Shadowed::start("matching", &redis, &openai, 0.2, 0.2)
        .await
        .expect("a matching memgate");
    // memgate lists every memory; cldmemory's threshold leaves them all out.
    let drifting = Shadowed::start("drifting", &redis, &openai, 0.0, 0.99)
        .await
        .expect("a drifting memgate");
    let scraped_as = |shadowed: &Shadowed, store: &str| ScrapeJob {
        target: shadowed.memgate.admin,
        labels: vec![
            ("namespace".into(), NAMESPACE.into()),
            ("store".into(), store.into()),
        ],
    };
    let prometheus = PrometheusServer::start_jobs(
        &[
            scraped_as(&matching, "matching"),
            scraped_as(&matching, "held"),
            scraped_as(&drifting, "drifting"),
        ],
        &[],
    )
    .await
    .expect("prometheus");
    let _matching_reads = traffic(&matching, false).await.expect("traffic");
    let _drifting_searches = traffic(&drifting, true).await.expect("traffic");

    let plane = ControlPlane::start_api_server().expect("the API server");
    let crds = root().join("crds").display().to_string();
    plane.kubectl_ok(["apply", "-f", &crds]).expect("the CRD");
    plane
        .kubectl_ok([
            "wait",
            "--for=condition=Established",
            "crd/memorystores.memgate.dev",
            "--timeout=60s",
        ])
        .expect("established");
    plane
        .kubectl_ok(["create", "namespace", NAMESPACE])
        .expect("namespace");
    let operator = start_operator(&plane).expect("the operator");
    let url = format!("http://{}", prometheus.addr);
    let nowhere = format!("http://127.0.0.1:{}", free_port().expect("port"));
    let stores = [
        store_yaml("matching", &url, false),
        store_yaml("drifting", &url, false),
        store_yaml("held", &url, true),
        store_yaml("blind", &nowhere, false),
    ]
    .join("---\n");
    plane.apply_yaml(&stores).expect("the stores");

    let outcome = async {
        let mut seen = Vec::new();
        let (status, condition) = watch(
            &plane,
            "matching",
            Duration::from_secs(120),
            &mut seen,
            |status, _| status["percent"] == 100 && status["measured"].is_object(),
        )
        .await?;
        anyhow::ensure!(seen == [1, 5, 25, 50, 100], "matching went {seen:?}");
        anyhow::ensure!(condition["status"] == "True", "{condition}");
        let advanced = events(&plane, "RolloutAdvanced")?;
        anyhow::ensure!(
            advanced.len() >= 4,
            "an Event per step: {advanced:?}; all: {}",
            plane.kubectl_ok(["get", "events", "-n", NAMESPACE])?
        );
        anyhow::ensure!(
            status["measured"]["samples"].as_u64().unwrap_or(0) >= 5,
            "{status}"
        );
        let config = plane.kubectl_ok([
            "get",
            "configmap",
            "matching-proxy-config",
            "-n",
            NAMESPACE,
            "-o",
            "jsonpath={.data.config\\.yaml}",
        ])?;
        anyhow::ensure!(
            config.contains("percent: 100"),
            "the sidecars get 100%:\n{config}"
        );

        let mut seen = Vec::new();
        let (status, condition) = watch(
            &plane,
            "drifting",
            Duration::from_secs(60),
            &mut seen,
            |_, condition| condition["reason"] == "RolledBack",
        )
        .await?;
        anyhow::ensure!(
            status["percent"] == 0,
            "back below the first step: {status}"
        );
        anyhow::ensure!(condition["status"] == "False", "{condition}");
        let message = condition["message"].as_str().unwrap_or_default();
        anyhow::ensure!(
            message.contains("mismatch ratio") && message.contains("above its bound 0.05"),
            "{message}"
        );
        let rolled = events(&plane, "RolledBack")?;
        anyhow::ensure!(
            rolled.iter().any(|event| event["message"]
                .as_str()
                .unwrap_or_default()
                .contains("mismatch ratio")),
            "a Warning Event names the metric: {rolled:?}"
        );

        let mut seen = Vec::new();
        let (status, condition) = watch(
            &plane,
            "held",
            Duration::from_secs(30),
            &mut seen,
            |_, condition| condition["reason"] == "Paused",
        )
        .await?;
        tokio::time::sleep(Duration::from_secs(9)).await;
        let (later, _) = rollout(&plane, "held")?;
        anyhow::ensure!(
            status["percent"] == 1 && later["percent"] == 1,
            "paused holds: {later}"
        );
        anyhow::ensure!(condition["status"] == "True", "{condition}");

        let mut seen = Vec::new();
        let (status, condition) = watch(
            &plane,
            "blind",
            Duration::from_secs(60),
            &mut seen,
            |_, condition| condition["reason"] == "AnalysisUnavailable",
        )
        .await?;
        anyhow::ensure!(status["percent"] == 1, "held: {status}");
        anyhow::ensure!(
            condition["message"]
                .as_str()
                .unwrap_or_default()
                .contains("cannot be reached"),
            "{condition}"
        );
        let columns = plane.kubectl_ok(["get", "memorystore", "-n", NAMESPACE])?;
        anyhow::ensure!(
            columns.contains("STEP") && columns.contains("MISMATCH"),
            "{columns}"
        );
        Ok::<(), anyhow::Error>(())
    }
    .await;
    if let Err(error) = outcome {
        panic!("{error:#}\n{}{}", log_tail(&operator.log, 60), plane.logs());
    }
}
