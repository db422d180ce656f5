//! A rollout raised on evidence, end to end: the operator on a real API server, Debian's
//! Prometheus scraping real memgate proxies (each in front of the reference cldmemory, every
//! read shadowed), and MemoryStores whose `spec.rollout.analysis` reads them:
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
use memgate::app::{Backends, RunningProxy, RunningWorker};
use memgate_testkit::{
    free_port, log_tail, start_reference, test_config, ControlPlane, FakeOpenAi, McpSseClient,
    PrometheusServer, RedisServer, Reference, ScrapeJob,
};
use serde_json::{json, Value};

const NAMESPACE: &str = "ramp";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A memgate proxy and worker in front of the reference cldmemory on one vector store, every
/// fast-path read shadowed; the reference searches with its own threshold.
struct Shadowed {
    proxy: RunningProxy,
    _worker: RunningWorker,
    _reference: Reference,
    _data: tempfile::TempDir,
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
        let mut config = test_config(
            data.path(),
            Some(redis.url()),
            Some(openai.base_url()),
            None,
        );
        config.store.name = name.into();
        config.rollout.percent = 100;
        config.shadow.sample = 1.0;
        config.shadow.max_in_flight = 64;
        config.layout.similarity_threshold = memgate_threshold;
        let vectors = memgate::app::vector_store(&config)?;
        let backends = Backends::with_vectors(&config, vectors.clone())?;
        let mut legacy = config.clone();
        legacy.layout.similarity_threshold = cldmemory_threshold;
        let reference = start_reference(vectors, &openai.base_url(), &legacy).await?;
        config.upstream.url = Some(reference.url());
        let proxy = memgate::app::start_with(config.clone(), backends.clone(), None).await?;
        let worker = memgate::app::start_worker_with(config, backends).await?;
        Ok(Self {
            proxy,
            _worker: worker,
            _reference: reference,
            _data: data,
        })
    }

    fn base(&self) -> String {
        format!("http://{}", self.proxy.api_addr)
    }
}

/// Stores a few memories, then reads them (or searches for them) over MCP until dropped.
async fn traffic(shadowed: &Shadowed, search: bool) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let client = McpSseClient::connect(&shadowed.base(), None).await?;
    client.initialize().await?;
    let mut ids = Vec::new();
    for n in 0..5 {
        let stored = client
            .call_tool(
                "store_memory",
                json!({"content": format!("the tide table for pier {n}"), "type": "semantic"}),
            )
            .await?;
        let stored: Value = serde_json::from_str(&stored)?;
        ids.push(stored["id"].as_str().context("id")?.to_string());
    }
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
        target: shadowed.proxy.admin_addr,
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
