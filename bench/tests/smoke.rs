//! The benchmark binary end to end, small and short: every scenario runs without an error
//! and the three outputs are written. (Figures from a debug build mean nothing; this checks
//! that the benchmark works, not how fast memgate is.)

use serde_json::Value;

const SCENARIOS: [&str; 18] = [
    "redis-get",
    "vector-search",
    "http-floor",
    "get",
    "get-cold",
    "search",
    "search-cold",
    "legacy-get",
    "legacy-search",
    "mcp-search",
    "mcp-search-shadow",
    "mcp-search-http",
    "mcp-search-cold",
    "mcp-forward",
    "create",
    "mcp-store",
    "mcp-store-http",
    "legacy-create",
];

#[test]
fn a_short_run_measures_every_scenario_and_writes_the_results() {
    let out = tempfile::tempdir().expect("dir");
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_memgate-bench"))
        .args([
            "--dataset-size",
            "400",
            "--seconds",
            "1",
            "--rate",
            "200",
            "--create-rate",
            "100",
            "--legacy-rate",
            "20",
            "--openai-latency-ms",
            "20",
            "--quiet",
            "--out",
        ])
        .arg(out.path())
        .status()
        .expect("memgate-bench runs");
    assert!(status.success(), "memgate-bench failed: {status}");

    let json = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let report: Value = serde_json::from_str(&json).expect("JSON");
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let names: Vec<&str> = scenarios
        .iter()
        .filter_map(|s| s["name"].as_str())
        .collect();
    assert_eq!(names, SCENARIOS);
    for scenario in scenarios {
        let name = &scenario["name"];
        assert_eq!(
            scenario["errors"], 0,
            "{name}: {}",
            scenario["firstFailure"]
        );
        assert_eq!(
            scenario["unexpected"], 0,
            "{name}: {}",
            scenario["firstFailure"]
        );
        assert!(
            scenario["answered"].as_u64().is_some_and(|n| n > 0),
            "{name}"
        );
        assert!(
            scenario["p99Ms"].as_f64() >= scenario["p50Ms"].as_f64(),
            "{name}"
        );
    }
    assert_eq!(report["seeding"]["memories"], 400);
    assert_eq!(report["targets"].as_array().map(Vec::len), Some(13));
    assert_eq!(report["settings"]["placement"]["kind"], "unpinned");
    let recall = report["recall"].as_array().expect("recall");
    assert_eq!(recall.len(), 5, "the default ef and four others");
    assert!(
        recall.iter().all(|r| r["recallAt10"]
            .as_f64()
            .is_some_and(|x| (0.0..=1.0).contains(&x))),
        "{recall:?}"
    );
    assert_eq!(report["worker"]["drained"], true);

    let markdown = std::fs::read_to_string(out.path().join("results.md")).expect("results.md");
    assert!(markdown.contains("| `search-cold` |"), "{markdown}");
    let svg = std::fs::read_to_string(out.path().join("latency.svg")).expect("latency.svg");
    assert!(svg.starts_with("<svg"));
    assert_eq!(svg.matches("<polyline").count(), SCENARIOS.len());
}

#[test]
fn a_pinned_run_gives_the_proxy_and_redis_a_core_of_their_own() {
    if std::thread::available_parallelism().map_or(1, usize::from) < 2 {
        eprintln!("skipped: pinning needs two cores");
        return;
    }
    let out = tempfile::tempdir().expect("dir");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_memgate-bench"))
        .args([
            "--pin",
            "--dataset-size",
            "300",
            "--seconds",
            "1",
            "--rate",
            "200",
            "--vector-rate",
            "50",
            "--openai-latency-ms",
            "20",
            "--only",
            "get,search-cold",
            "--quiet",
            "--out",
        ])
        .arg(out.path())
        .output()
        .expect("memgate-bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "memgate-bench failed: {stderr}");
    assert!(
        stderr.contains("placement: pinned: proxy and Redis on CPU"),
        "{stderr}"
    );

    let json = std::fs::read_to_string(out.path().join("results.json")).expect("results.json");
    let report: Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(report["settings"]["placement"]["kind"], "pinned");
    // With CAP_SYS_NICE (root, as in CI) the load generator runs at a real-time priority;
    // without it the run says it keeps the default.
    let may_raise = memgate_bench::placement::may_raise_priority();
    assert_eq!(
        report["settings"]["placement"]["realtimeGenerator"],
        Value::Bool(may_raise),
        "{stderr}"
    );
    if !may_raise {
        assert!(stderr.contains("keeps the default priority"), "{stderr}");
    }
    assert_eq!(report["settings"]["vectorRate"], 50);
    let scenarios = report["scenarios"].as_array().expect("scenarios");
    let rates: Vec<(&str, u64)> = scenarios
        .iter()
        .filter_map(|s| Some((s["name"].as_str()?, s["rate"].as_u64()?)))
        .collect();
    assert_eq!(rates, [("get", 200), ("search-cold", 50)]);
    for scenario in scenarios {
        assert_eq!(scenario["errors"], 0, "{}", scenario["firstFailure"]);
        assert_eq!(scenario["unexpected"], 0, "{}", scenario["firstFailure"]);
    }
    assert!(report["worker"].is_null(), "no create ran, so no drain");
}
