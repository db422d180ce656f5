//! The chart's dashboard and alerts against a real Prometheus (Debian's `prometheus`) scraping
//! a running memgate proxy and worker: every panel's query is accepted and returns series, every
//! alert is evaluated without error, and every metric an alert reads exists.

use std::path::{Path, PathBuf};
use std::time::Duration;

use memgate_testkit::{eventually, McpHttpClient, PrometheusServer, TestStack};
use serde_json::{json, Value};

fn monitoring_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../charts/memgate/files/monitoring")
        .join(name)
}

/// A panel's query as Grafana sends it, with the dashboard's variables filled in.
fn as_grafana_sends(expr: &str) -> String {
    expr.replace("$namespace", ".*")
        .replace("$__rate_interval", "30s")
}

/// Traffic of every kind the dashboard shows: creates applied by the worker, cached and
/// uncached reads and searches, MCP tool calls.
async fn traffic(stack: &TestStack) {
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            stack
                .create_applied(&format!("the monitoring memory number {n}"))
                .await,
        );
    }
    for id in &ids {
        for _ in 0..2 {
            stack
                .http
                .get(stack.url(&format!("/memories/{id}")))
                .send()
                .await
                .expect("get");
        }
    }
    for _ in 0..2 {
        stack
            .http
            .post(stack.url("/memories/search"))
            .json(&json!({"query": "monitoring memory"}))
            .send()
            .await
            .expect("search");
    }
    let mcp = McpHttpClient::connect(&stack.url(""))
        .await
        .expect("an MCP session");
    mcp.call_tool("search_memories", json!({"query": "monitoring"}))
        .await
        .expect("search tool");
    mcp.call_tool("get_memory", json!({"id": ids[0]}))
        .await
        .expect("get tool");
}

#[tokio::test]
async fn the_dashboard_and_the_alerts_work_on_a_real_prometheus_scraping_memgate() {
    let alerts = monitoring_file("alerts.yaml");
    let checked = std::process::Command::new("promtool")
        .args(["check", "rules"])
        .arg(&alerts)
        .output()
        .expect("promtool (scripts/test.sh installs Debian's prometheus)");
    assert!(
        checked.status.success(),
        "{}",
        String::from_utf8_lossy(&checked.stdout)
    );

    let stack = TestStack::builder().start().await;
    let worker = stack.worker.as_ref().expect("a worker").admin_addr;
    let prometheus = PrometheusServer::start(&[stack.proxy.admin_addr, worker], &[&alerts])
        .await
        .expect("prometheus");
    traffic(&stack).await;
    // A few scrapes after the traffic, so every rate has two samples.
    let scraped = eventually(Duration::from_secs(30), || async {
        prometheus
            .query("count_over_time(up[30s]) >= 4")
            .await
            .is_ok_and(|series| series.len() == 2)
    })
    .await;
    assert!(scraped, "prometheus scraped both memgate processes");
    traffic(&stack).await;
    tokio::time::sleep(Duration::from_secs(3)).await;

    let dashboard: Value = serde_json::from_str(
        &std::fs::read_to_string(monitoring_file("dashboard.json")).expect("dashboard"),
    )
    .expect("the dashboard is JSON");
    let mut empty = Vec::new();
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.len() >= 10);
    for panel in panels {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = as_grafana_sends(target["expr"].as_str().expect("expr"));
            let series = prometheus
                .query(&expr)
                .await
                .unwrap_or_else(|error| panic!("panel {:?}: {error:#}", panel["title"]));
            if series.is_empty() {
                empty.push(format!("{}: {expr}", panel["title"]));
            }
        }
    }
    assert!(empty.is_empty(), "panel queries without series: {empty:#?}");

    // Every alert evaluated without error, on what memgate exports.
    let evaluated = eventually(Duration::from_secs(20), || async {
        let rules = prometheus.rules().await.unwrap_or_default();
        rules.len() == 5 && rules.iter().all(|rule| rule["health"] == "ok")
    })
    .await;
    let rules = prometheus.rules().await.expect("rules");
    assert!(evaluated, "every alert evaluates: {rules:#?}");
    let file: serde_yaml::Value =
        serde_yaml::from_str(&std::fs::read_to_string(&alerts).expect("alerts")).expect("YAML");
    for rule in file["groups"][0]["rules"].as_sequence().expect("rules") {
        let expr = rule["expr"].as_str().expect("expr");
        for name in metric_names(expr) {
            let series = prometheus.query(&name).await.expect("query");
            assert!(
                !series.is_empty(),
                "alert {:?} reads {name}, which memgate does not export",
                rule["alert"]
            );
        }
    }
}

/// The `memgate_…` metric names an expression reads.
fn metric_names(expr: &str) -> Vec<String> {
    let mut names: Vec<String> = expr
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|word| word.starts_with("memgate_"))
        .map(str::to_string)
        .collect();
    names.sort();
    names.dedup();
    names
}
