//! The benchmark binary end to end, small and short: every scenario runs without an error
//! and the three outputs are written. (Figures from a debug build mean nothing; this checks
//! that the benchmark works, not how fast memgate is.)

use serde_json::Value;

const SCENARIOS: [&str; 16] = [
    "redis-get",
    "vector-search",
    "get",
    "get-cold",
    "search",
    "search-cold",
    "legacy-get",
    "legacy-search",
    "mcp-search",
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
    assert_eq!(report["targets"].as_array().map(Vec::len), Some(11));
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
