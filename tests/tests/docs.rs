//! Docs that cannot drift: the README's laptop quick start runs as written, and every config
//! field, CLI flag, metric and Helm value is on its reference page.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use memgate::config::{Config, OAuthConfig, ScopeConfig, TokensConfig};
use memgate_testkit::{eventually, free_port, memgate_binary, McpHttpClient, TestStack};
use serde_json::{json, Value};

fn repository_file(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repository_file(path)).unwrap_or_else(|error| panic!("{path}: {error}"))
}

/// The fenced block following `marker` in `text`.
fn block_after<'a>(text: &'a str, marker: &str) -> &'a str {
    let start = text
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in the README"));
    let rest = &text[start..];
    let open = rest.find("```sh\n").expect("a sh block") + "```sh\n".len();
    let close = rest[open..].find("```").expect("the block's end");
    &rest[open..open + close]
}

#[tokio::test]
async fn the_readme_laptop_quick_start_runs_as_written() {
    let readme = read("README.md");
    // The server as the README starts it.
    let laptop = block_after(&readme, "## On a laptop");
    let serve_line = laptop
        .lines()
        .find(|line| line.starts_with("memgate serve"))
        .expect("the README starts memgate serve");
    let serve_args: Vec<&str> = serve_line
        .split('#')
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .collect();
    assert_eq!(serve_args, ["serve", "--embedded"]);
    assert!(
        readme.contains("cargo install --locked --path proxy && memgate serve --embedded"),
        "README command 1"
    );
    // On ports of its own (the README's 8080 and 9090 may be taken on a test machine), in a
    // data directory of its own.
    let (api, admin) = (free_port().expect("port"), free_port().expect("port"));
    let data = tempfile::tempdir().expect("dir");
    let mut server = Command::new(memgate_binary())
        .args(&serve_args)
        .args(["--listen", &format!("127.0.0.1:{api}")])
        .args(["--admin-listen", &format!("127.0.0.1:{admin}")])
        .env("XDG_DATA_HOME", data.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("memgate serve");
    let http = reqwest::Client::new();
    assert!(
        eventually(Duration::from_secs(30), || async {
            http.get(format!("http://127.0.0.1:{api}/openapi.json"))
                .send()
                .await
                .is_ok()
        })
        .await
    );

    let script = block_after(&readme, "<!-- quickstart -->")
        .replace("localhost:8080", &format!("localhost:{api}"))
        .replace("localhost:9090", &format!("localhost:{admin}"));
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .output()
        .expect("bash");
    let _ = server.kill();
    let _ = server.wait();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the quick start failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains(r#""status":"processing""#), "{stdout}");
    assert!(
        stdout.contains("We drank coffee in Paris last spring"),
        "the search finds the memory: {stdout}"
    );
    assert!(stdout.contains("memgate_requests_total{"), "{stdout}");
    assert!(data.path().join("memgate/vectors").is_dir());
}

/// Every field path of a config with its optional sections filled in, as `a.b.c`.
fn config_paths() -> BTreeSet<String> {
    let mut config = Config {
        data_dir: Some("/var/lib/memgate".into()),
        scope: Some(ScopeConfig {
            header: "x-user-id".into(),
            field: "userId".into(),
        }),
        ..Config::default()
    };
    config.security.tokens = Some(TokensConfig {
        path: "/tokens.yaml".into(),
    });
    config.security.oauth = Some(OAuthConfig::default());
    let mut paths = BTreeSet::new();
    collect_paths(
        &serde_json::to_value(&config).expect("JSON"),
        "",
        &mut paths,
    );
    paths
}

fn collect_paths(value: &Value, prefix: &str, paths: &mut BTreeSet<String>) {
    match value {
        Value::Object(fields) if !fields.is_empty() => {
            for (key, value) in fields {
                let path = if prefix.is_empty() {
                    key.clone()
                } else {
                    format!("{prefix}.{key}")
                };
                collect_paths(value, &path, paths);
            }
        }
        _ => {
            paths.insert(prefix.to_string());
        }
    }
}

/// The field paths of the reference's YAML example, its commented-out fields included.
fn documented_config_paths(reference: &str) -> BTreeSet<String> {
    let start = reference.find("```yaml\n").expect("a YAML block") + "```yaml\n".len();
    let end = start + reference[start..].find("```").expect("its end");
    let uncommented: Vec<String> = reference[start..end]
        .lines()
        .map(|line| {
            let indent = line.len() - line.trim_start().len();
            match line.trim_start().strip_prefix('#') {
                Some(rest)
                    if rest.trim_start().split(':').next().is_some_and(|key| {
                        !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric())
                    }) && rest.contains(':') =>
                {
                    format!("{}{}", " ".repeat(indent), rest.trim_start())
                }
                _ => line.to_string(),
            }
        })
        .collect();
    let example: Value =
        serde_yaml::from_str(&uncommented.join("\n")).expect("the example is YAML");
    let mut paths = BTreeSet::new();
    collect_paths(&example, "", &mut paths);
    paths
}

#[test]
fn every_config_field_is_in_the_configuration_reference() {
    let reference = read("docs/configuration.md");
    let documented = documented_config_paths(&reference);
    assert!(documented.len() > 50, "{documented:?}");
    let missing: Vec<String> = config_paths()
        .into_iter()
        .filter(|path| {
            !documented.contains(path)
                && !documented
                    .iter()
                    .any(|doc| path.starts_with(&format!("{doc}.")))
                && !reference.contains(&format!("`{path}`"))
        })
        .collect();
    assert!(
        missing.is_empty(),
        "config fields missing from docs/configuration.md: {missing:#?}"
    );
}

#[test]
fn every_cli_flag_is_in_the_configuration_reference() {
    use clap::CommandFactory;
    let reference = read("docs/configuration.md");
    let mut missing = BTreeSet::new();
    let mut commands = vec![memgate::cli::Cli::command()];
    while let Some(command) = commands.pop() {
        for arg in command.get_arguments() {
            if let Some(long) = arg.get_long() {
                if long != "help"
                    && long != "version"
                    && !reference.contains(&format!("`--{long}`"))
                {
                    missing.insert(format!("{} --{long}", command.get_name()));
                }
            }
        }
        commands.extend(command.get_subcommands().cloned());
    }
    assert!(
        missing.is_empty(),
        "flags missing from docs/configuration.md: {missing:#?}"
    );
}

/// Each leaf of the chart's values, as `a.b.c`; maps the chart passes through as they are
/// (resources, selectors, security contexts, labels) count as one value.
fn helm_value_paths() -> BTreeSet<String> {
    const WHOLE: &[&str] = &[
        "resources",
        "nodeSelector",
        "tolerations",
        "affinity",
        "podAnnotations",
        "podSecurityContext",
        "securityContext",
        "global",
        "webhook.namespaceSelector",
        "webhook.certManager.issuerRef",
        "metrics.podMonitor.labels",
        "metrics.dashboard.labels",
        "metrics.prometheusRule.labels",
    ];
    fn walk(value: &serde_yaml::Value, prefix: &str, paths: &mut BTreeSet<String>) {
        match value {
            serde_yaml::Value::Mapping(map) if !WHOLE.contains(&prefix) && !map.is_empty() => {
                for (key, value) in map {
                    let key = key.as_str().expect("string keys");
                    let path = if prefix.is_empty() {
                        key.to_string()
                    } else {
                        format!("{prefix}.{key}")
                    };
                    walk(value, &path, paths);
                }
            }
            _ => {
                paths.insert(prefix.to_string());
            }
        }
    }
    let values: serde_yaml::Value =
        serde_yaml::from_str(&read("charts/memgate/values.yaml")).expect("values.yaml");
    let mut paths = BTreeSet::new();
    walk(&values, "", &mut paths);
    paths
}

#[test]
fn every_helm_value_is_in_the_kubernetes_reference() {
    let reference = read("docs/kubernetes.md");
    let missing: Vec<String> = helm_value_paths()
        .into_iter()
        .filter(|path| !reference.contains(&format!("`{path}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "chart values missing from docs/kubernetes.md: {missing:#?}"
    );
}

/// The metric families a `/metrics` text declares.
fn metric_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

#[tokio::test]
async fn every_metric_memgate_exports_is_in_the_metrics_reference() {
    let stack = TestStack::builder().start().await;
    // Traffic of every kind, so the labelled metrics show.
    let id = stack
        .create_applied("a memory for the metrics reference")
        .await;
    stack
        .http
        .get(stack.url(&format!("/memories/{id}")))
        .send()
        .await
        .expect("get");
    stack
        .http
        .post(stack.url("/memories/search"))
        .json(&json!({"query": "metrics reference"}))
        .send()
        .await
        .expect("search");
    let mcp = McpHttpClient::connect(&stack.url("")).await.expect("MCP");
    mcp.call_tool("get_memory", json!({"id": id}))
        .await
        .expect("tool");
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let reference = read("docs/metrics.md");
    let mut names = metric_names(&memgate_testkit::scrape_metrics(stack.proxy.admin_addr).await);
    let worker = stack.worker.as_ref().expect("worker").admin_addr;
    names.extend(metric_names(&memgate_testkit::scrape_metrics(worker).await));
    assert!(names.len() > 20, "{names:?}");
    let missing: Vec<&String> = names
        .iter()
        .filter(|name| !reference.contains(&format!("`{name}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "metrics missing from docs/metrics.md: {missing:#?}"
    );
}
