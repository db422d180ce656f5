//! The results: every scenario's latency distribution and throughput, the comparisons that
//! matter (fast against legacy, the proxy against direct calls), the targets, and the same as
//! Markdown. The JSON form is this module's types serialized.

use serde::Serialize;

use crate::driver::Outcome;
use crate::machine::Machine;
use crate::placement::Placement;

/// Which side of the comparison a scenario is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Group {
    /// A direct call with no proxy: Redis, the legacy service, the vector store.
    Baseline,
    /// memgate's fast path.
    Fast,
    /// The reference legacy service (cldmemory), over MCP.
    Legacy,
}

/// One point of a latency-by-percentile curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    pub percentile: f64,
    pub ms: f64,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ScenarioResult {
    pub name: String,
    pub group: Group,
    pub what: String,
    /// Requests started per second.
    pub rate: u64,
    pub requests: u64,
    pub answered: u64,
    pub errors: u64,
    /// Answered, but not the way the scenario measures (e.g. a cache miss in a hit scenario).
    pub unexpected: u64,
    pub first_failure: Option<String>,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    /// Answers per second, from the first send to the last answer.
    pub throughput: f64,
    pub max_send_lag_ms: f64,
    pub curve: Vec<CurvePoint>,
}

fn ms(micros: u64) -> f64 {
    micros as f64 / 1000.0
}

impl ScenarioResult {
    pub fn new(name: &str, group: Group, what: &str, rate: u64, outcome: &Outcome) -> Self {
        let h = &outcome.histogram;
        let quantile = |q: f64| ms(h.value_at_quantile(q));
        Self {
            name: name.to_string(),
            group,
            what: what.to_string(),
            rate,
            requests: outcome.answered() + outcome.errors,
            answered: outcome.answered(),
            errors: outcome.errors,
            unexpected: outcome.unexpected,
            first_failure: outcome.first_failure.clone(),
            p50_ms: quantile(0.50),
            p95_ms: quantile(0.95),
            p99_ms: quantile(0.99),
            p999_ms: quantile(0.999),
            max_ms: ms(h.max()),
            throughput: outcome.answered() as f64 / outcome.elapsed.as_secs_f64().max(1e-9),
            max_send_lag_ms: outcome.max_send_lag.as_secs_f64() * 1000.0,
            curve: curve(h),
        }
    }
}

/// Latency at percentiles spaced evenly in "nines" (0, 90, 99, 99.9 ... as far as the sample
/// count supports), then the maximum.
fn curve(h: &hdrhistogram::Histogram<u64>) -> Vec<CurvePoint> {
    if h.is_empty() {
        return Vec::new();
    }
    let max_nines = (h.len() as f64).log10().clamp(0.0, 5.0);
    let steps = (max_nines * 20.0).floor() as usize;
    let mut points: Vec<CurvePoint> = (0..=steps)
        .map(|step| {
            let nines = step as f64 / 20.0;
            let quantile = 1.0 - 10f64.powf(-nines);
            CurvePoint {
                percentile: quantile * 100.0,
                ms: ms(h.value_at_quantile(quantile)),
            }
        })
        .collect();
    points.push(CurvePoint {
        percentile: 100.0,
        ms: ms(h.max()),
    });
    points
}

/// How the benchmark was run.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Settings {
    pub dataset_size: usize,
    pub seconds: u64,
    pub rate: u64,
    pub vector_rate: u64,
    pub create_rate: u64,
    pub legacy_rate: u64,
    pub openai_latency_ms: u64,
    pub dimensions: u64,
    /// `None`: the collection's default, as cldmemory searches.
    pub search_ef: Option<u64>,
    pub placement: Placement,
}

/// The dataset as the runs found it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Seeding {
    pub memories: usize,
    pub seconds_to_store: f64,
    pub seconds_to_index: f64,
    /// Points with an HNSW index when the runs started.
    pub indexed_points: usize,
}

/// How long the workers took to finish the creates the proxy acknowledged.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WorkerDrain {
    pub creates: u64,
    /// From the end of the create run until the write queue was empty.
    pub seconds_after_run: f64,
    pub drained: bool,
}

/// The points the worker's read syncs rewrote while the scenarios ran: each rewrite moves an
/// indexed point out of its segment (Qdrant copies it into the appendable one) until the
/// optimizer indexes it again.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReadSyncs {
    /// `worker.accessSyncInterval`.
    pub interval_seconds: f64,
    /// `memgate_access_synced_total` over the runs.
    pub points_rewritten: u64,
    pub minutes: f64,
}

impl ReadSyncs {
    pub fn per_minute(&self) -> f64 {
        if self.minutes > 0.0 {
            self.points_rewritten as f64 / self.minutes
        } else {
            0.0
        }
    }
}

/// A ratio between two scenarios at one percentile.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Comparison {
    pub what: String,
    pub scenario: String,
    pub against: String,
    pub p50_ratio: f64,
    pub p99_ratio: f64,
    pub p50_difference_ms: f64,
}

/// One of the targets, checked.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    pub met: bool,
}

#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub generated_at: String,
    pub command: String,
    pub machine: Machine,
    pub settings: Settings,
    pub seeding: Seeding,
    pub worker: Option<WorkerDrain>,
    pub read_syncs: Option<ReadSyncs>,
    /// Search recall of `hnsw_ef` values against exact search.
    pub recall: Vec<crate::recall::RecallResult>,
    pub scenarios: Vec<ScenarioResult>,
    pub comparisons: Vec<Comparison>,
    pub targets: Vec<TargetCheck>,
}

impl Report {
    pub fn scenario(&self, name: &str) -> Option<&ScenarioResult> {
        self.scenarios.iter().find(|s| s.name == name)
    }

    /// Fills `comparisons` and `targets` from the scenarios present.
    pub fn evaluate(&mut self) {
        let pairs: [(&str, &str, &str); 16] = [
            (
                "MCP search with 10% of reads shadowed against none (the shadow's cost)",
                "mcp-search-shadow",
                "mcp-search",
            ),
            (
                "MCP search through memgate (cached, SSE) against the reference",
                "mcp-search",
                "legacy-search",
            ),
            (
                "MCP search through memgate (cached, Streamable HTTP) against the reference",
                "mcp-search-http",
                "legacy-search",
            ),
            (
                "MCP search through memgate (embedding cached) against the reference",
                "mcp-search-cold",
                "legacy-search",
            ),
            (
                "MCP store through memgate (SSE) against the reference",
                "mcp-store",
                "legacy-create",
            ),
            (
                "MCP store through memgate (Streamable HTTP) against the reference",
                "mcp-store-http",
                "legacy-create",
            ),
            (
                "a call forwarded by memgate against the reference direct",
                "mcp-forward",
                "legacy-get",
            ),
            ("fast get against legacy get", "get", "legacy-get"),
            (
                "fast search (cached) against legacy search",
                "search",
                "legacy-search",
            ),
            (
                "fast search (cold) against legacy search",
                "search-cold",
                "legacy-search",
            ),
            (
                "create acknowledged against legacy create",
                "create",
                "legacy-create",
            ),
            ("fast get against a direct Redis GET", "get", "redis-get"),
            (
                "fast get against memgate's HTTP hop alone",
                "get",
                "http-floor",
            ),
            (
                "memgate's HTTP hop alone against a direct Redis GET",
                "http-floor",
                "redis-get",
            ),
            (
                "fast get (cold) against a direct Redis GET",
                "get-cold",
                "redis-get",
            ),
            (
                "fast search (cold) against a direct vector search",
                "search-cold",
                "vector-search",
            ),
        ];
        self.comparisons = pairs
            .iter()
            .filter_map(|(what, name, against)| {
                let (a, b) = (self.scenario(name)?, self.scenario(against)?);
                Some(Comparison {
                    what: what.to_string(),
                    scenario: name.to_string(),
                    against: against.to_string(),
                    p50_ratio: b.p50_ms / a.p50_ms.max(1e-6),
                    p99_ratio: b.p99_ms / a.p99_ms.max(1e-6),
                    p50_difference_ms: a.p50_ms - b.p50_ms,
                })
            })
            .collect();
        let mut targets = Vec::new();
        let mut p99 = |name: &str, limit_ms: f64| {
            if let Some(s) = self.scenario(name) {
                targets.push(TargetCheck {
                    target: format!("`{name}` p99 < {limit_ms} ms at {} req/s", s.rate),
                    measured: format!("{:.3} ms", s.p99_ms),
                    met: s.p99_ms < limit_ms && s.errors == 0,
                });
            }
        };
        p99("get", 1.0);
        p99("search", 2.0);
        p99("search-cold", 15.0);
        p99("create", 3.0);
        // Against the baselines of the same run, so a slower machine does not hide a slower
        // proxy (issue 14's targets).
        let mut within = |name: &str, baseline: &str, times: f64| {
            if let (Some(fast), Some(base)) = (self.scenario(name), self.scenario(baseline)) {
                let ratio = fast.p99_ms / base.p99_ms.max(1e-6);
                targets.push(TargetCheck {
                    target: format!("`{name}` p99 ≤ {times}× `{baseline}` p99"),
                    measured: format!("{ratio:.1}×"),
                    met: ratio <= times && fast.errors == 0,
                });
            }
        };
        within("get", "redis-get", 2.0);
        within("search-cold", "vector-search", 3.0);
        if let (Some(fast), Some(legacy)) =
            (self.scenario("search"), self.scenario("legacy-search"))
        {
            let speedup = legacy.p50_ms / fast.p50_ms.max(1e-6);
            targets.push(TargetCheck {
                target: "fast search ≥ 20× faster than legacy at p50".into(),
                measured: format!("{speedup:.0}×"),
                met: speedup >= 20.0,
            });
        }
        let mut faster = |name: &str, against: &str, at_least: f64| {
            if let (Some(fast), Some(legacy)) = (self.scenario(name), self.scenario(against)) {
                let speedup = legacy.p50_ms / fast.p50_ms.max(1e-6);
                targets.push(TargetCheck {
                    target: format!("`{name}` ≥ {at_least}× faster than `{against}` at p50"),
                    measured: format!("{speedup:.0}×"),
                    met: speedup >= at_least && fast.errors == 0,
                });
            }
        };
        faster("mcp-search", "legacy-search", 100.0);
        faster("mcp-search-http", "legacy-search", 100.0);
        faster("mcp-search-cold", "legacy-search", 20.0);
        faster("mcp-store", "legacy-create", 100.0);
        faster("mcp-store-http", "legacy-create", 100.0);
        if let (Some(forwarded), Some(direct)) =
            (self.scenario("mcp-forward"), self.scenario("legacy-get"))
        {
            let added = forwarded.p50_ms - direct.p50_ms;
            targets.push(TargetCheck {
                target: "a forwarded MCP call adds ≤ 0.3 ms at p50".into(),
                measured: format!("{added:+.3} ms"),
                met: added <= 0.3 && forwarded.errors == 0,
            });
        }
        self.targets = targets;
    }

    pub fn markdown(&self) -> String {
        let mut out = String::new();
        let s = &self.settings;
        out.push_str(&format!(
            "{} memories ({} dimensions, `hnsw_ef` {}), open loop, {} s per scenario; every \
             OpenAI call takes {} ms. Machine: {}; {}.\n\n",
            s.dataset_size,
            s.dimensions,
            s.search_ef
                .map_or("the collection's default".into(), |ef| ef.to_string()),
            s.seconds,
            s.openai_latency_ms,
            self.machine.summary(),
            s.placement
        ));
        out.push_str("| scenario | what | req/s | p50 ms | p95 ms | p99 ms | max ms | answers/s | errors |\n");
        out.push_str("|---|---|---:|---:|---:|---:|---:|---:|---:|\n");
        for r in &self.scenarios {
            let errors = if r.unexpected > 0 {
                format!("{} (+{} unexpected)", r.errors, r.unexpected)
            } else {
                r.errors.to_string()
            };
            out.push_str(&format!(
                "| `{}` | {} | {} | {} | {} | {} | {} | {:.0} | {} |\n",
                r.name,
                r.what,
                r.rate,
                fmt_ms(r.p50_ms),
                fmt_ms(r.p95_ms),
                fmt_ms(r.p99_ms),
                fmt_ms(r.max_ms),
                r.throughput,
                errors
            ));
        }
        out.push_str("\n| comparison | p50 | p99 |\n|---|---:|---:|\n");
        for c in &self.comparisons {
            out.push_str(&format!(
                "| {} (`{}` / `{}`) | {} | {} |\n",
                c.what,
                c.against,
                c.scenario,
                fmt_ratio(c.p50_ratio),
                fmt_ratio(c.p99_ratio)
            ));
        }
        out.push_str("\n| target | measured | |\n|---|---:|---|\n");
        for t in &self.targets {
            out.push_str(&format!(
                "| {} | {} | {} |\n",
                t.target,
                t.measured,
                if t.met { "met" } else { "**missed**" }
            ));
        }
        if !self.recall.is_empty() {
            out.push_str("\n| `hnsw_ef` | recall@10 against exact search |\n|---|---:|\n");
            for r in &self.recall {
                out.push_str(&format!(
                    "| {} | {:.4} ({} queries) |\n",
                    r.ef.map_or("default (as cldmemory)".into(), |ef| ef.to_string()),
                    r.recall_at_10,
                    r.queries
                ));
            }
        }
        if let Some(worker) = &self.worker {
            out.push_str(&format!(
                "\nThe workers finished the {} acknowledged creates {:.1} s after the run ended{}.\n",
                worker.creates,
                worker.seconds_after_run,
                if worker.drained { "" } else { " (not drained when the benchmark gave up waiting)" }
            ));
        }
        out.push_str(&format!(
            "\nSeeding: {} memories stored in {:.1} s, indexed in {:.1} s ({} points with an HNSW \
             index).\n",
            self.seeding.memories,
            self.seeding.seconds_to_store,
            self.seeding.seconds_to_index,
            self.seeding.indexed_points
        ));
        if let Some(syncs) = &self.read_syncs {
            out.push_str(&format!(
                "\nRead syncs: {} points rewritten in {:.1} min of runs ({:.0} a minute; \
                 `worker.accessSyncInterval` {} s).\n",
                syncs.points_rewritten,
                syncs.minutes,
                syncs.per_minute(),
                syncs.interval_seconds
            ));
        }
        out
    }
}

fn fmt_ms(ms: f64) -> String {
    if ms >= 100.0 {
        format!("{ms:.0}")
    } else {
        format!("{ms:.3}")
    }
}

/// `b / a` as "N× faster" or, below one, as a slowdown.
fn fmt_ratio(ratio: f64) -> String {
    if ratio >= 1.0 {
        format!("{ratio:.1}× faster")
    } else {
        format!("{:.2}× slower", 1.0 / ratio.max(1e-9))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn outcome(micros: &[u64]) -> Outcome {
        let mut histogram = hdrhistogram::Histogram::new_with_bounds(1, 60_000_000, 3).unwrap();
        for &m in micros {
            histogram.record(m).unwrap();
        }
        Outcome {
            histogram,
            errors: 0,
            unexpected: 0,
            first_failure: None,
            elapsed: Duration::from_secs(1),
            max_send_lag: Duration::ZERO,
        }
    }

    fn result(name: &str, group: Group, micros: u64) -> ScenarioResult {
        ScenarioResult::new(name, group, name, 100, &outcome(&vec![micros; 100]))
    }

    fn report(scenarios: Vec<ScenarioResult>) -> Report {
        let mut report = Report {
            generated_at: String::new(),
            command: String::new(),
            machine: Machine::default(),
            settings: Settings {
                dataset_size: 1,
                seconds: 1,
                rate: 1,
                vector_rate: 1,
                create_rate: 1,
                legacy_rate: 1,
                openai_latency_ms: 150,
                dimensions: 384,
                search_ef: None,
                placement: Placement::Unpinned,
            },
            seeding: Seeding {
                memories: 1,
                seconds_to_store: 0.0,
                seconds_to_index: 0.0,
                indexed_points: 0,
            },
            worker: None,
            read_syncs: None,
            recall: Vec::new(),
            scenarios,
            comparisons: Vec::new(),
            targets: Vec::new(),
        };
        report.evaluate();
        report
    }

    #[test]
    fn targets_are_judged_from_the_measurements() {
        let good = report(vec![
            result("get", Group::Fast, 500),
            result("search", Group::Fast, 900),
            result("legacy-search", Group::Legacy, 160_000),
            result("legacy-get", Group::Legacy, 400),
            result("redis-get", Group::Baseline, 300),
        ]);
        assert!(good.targets.iter().all(|t| t.met), "{:?}", good.targets);
        let speedup = good
            .comparisons
            .iter()
            .find(|c| c.scenario == "search")
            .expect("search comparison");
        assert!((speedup.p50_ratio - 160_000.0 / 900.0).abs() < 1.0);

        let bad = report(vec![
            result("get", Group::Fast, 1500),
            result("search", Group::Fast, 10_000),
            result("legacy-search", Group::Legacy, 160_000),
            result("legacy-get", Group::Legacy, 900),
            result("redis-get", Group::Baseline, 300),
        ]);
        let missed: Vec<_> = bad.targets.iter().filter(|t| !t.met).collect();
        assert_eq!(missed.len(), 4, "{missed:?}");
        assert!(missed
            .iter()
            .any(|t| t.target == "`get` p99 ≤ 2× `redis-get` p99"));
        assert!(bad.markdown().contains("**missed**"));
    }

    #[test]
    fn curves_rise_to_the_maximum() {
        let micros: Vec<u64> = (1..=10_000).collect();
        let curve = curve(&outcome(&micros).histogram);
        assert_eq!(curve.first().map(|p| p.percentile), Some(0.0));
        assert_eq!(curve.last().map(|p| p.percentile), Some(100.0));
        assert!(curve
            .windows(2)
            .all(|w| w[0].ms <= w[1].ms && w[0].percentile <= w[1].percentile));
        let p99 = curve
            .iter()
            .find(|p| (p.percentile - 99.0).abs() < 1e-9)
            .expect("p99 point");
        assert!((p99.ms - 9.9).abs() < 0.05, "{p99:?}");
    }
}
