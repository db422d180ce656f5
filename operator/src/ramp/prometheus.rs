//! A rollout step's measurements, asked of Prometheus's HTTP API (`/api/v1/query`), over the
//! sidecars' series of one store (labelled `namespace` and `store`, as the chart's PodMonitor
//! labels them).

use std::time::Duration;

use serde_json::Value;

use super::decide::Measured;
use crate::crd::AnalysisSpec;

/// Asks Prometheus.
#[derive(Clone)]
pub struct PrometheusClient {
    http: reqwest::Client,
}

impl Default for PrometheusClient {
    fn default() -> Self {
        Self {
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap_or_default(),
        }
    }
}

impl std::fmt::Debug for PrometheusClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PrometheusClient").finish_non_exhaustive()
    }
}

/// The PromQL of each measurement of one store over `window`.
pub struct Queries {
    selector: String,
    window: String,
}

impl Queries {
    pub fn new(namespace: &str, store: &str, window: Duration) -> Self {
        Self {
            selector: format!("namespace=\"{namespace}\",store=\"{store}\""),
            window: format!("{}s", window.as_secs().max(1)),
        }
    }

    fn increase(&self, metric: &str, labels: &str) -> String {
        format!(
            "sum(increase({metric}{{{},{labels}}}[{}]))",
            self.selector, self.window
        )
    }

    pub fn samples(&self) -> String {
        self.increase("memgate_shadow_comparisons_total", "outcome!=\"skipped\"")
    }

    pub fn mismatches(&self) -> String {
        self.increase("memgate_shadow_comparisons_total", "outcome=\"mismatch\"")
    }

    /// Fast-path MCP tool calls and REST requests: all, and the failed ones.
    pub fn fast_calls(&self) -> [String; 4] {
        [
            self.increase("memgate_mcp_tool_calls_total", "path=\"fast\""),
            self.increase("memgate_requests_total", "path=\"fast\""),
            self.increase(
                "memgate_mcp_tool_calls_total",
                "path=\"fast\",outcome=\"error\"",
            ),
            self.increase("memgate_requests_total", "path=\"fast\",status=\"5xx\""),
        ]
    }

    pub fn latency_p99(&self) -> String {
        format!(
            "histogram_quantile(0.99, sum by (le) (rate(memgate_mcp_tool_duration_seconds_bucket{{{},path=\"fast\"}}[{}])))",
            self.selector, self.window
        )
    }
}

#[async_trait::async_trait]
impl super::Measure for PrometheusClient {
    /// One store's measurements over `window`, from the Prometheus `analysis` names; its
    /// queries sent at once.
    async fn measure(
        &self,
        analysis: &AnalysisSpec,
        namespace: &str,
        store: &str,
        window: Duration,
    ) -> Result<Measured, String> {
        let base = analysis.prometheus.as_str();
        let queries = Queries::new(namespace, store, window);
        let [tools, requests, tool_errors, request_errors] = queries.fast_calls();
        let asked = [
            queries.samples(),
            queries.mismatches(),
            tools,
            requests,
            tool_errors,
            request_errors,
            queries.latency_p99(),
        ];
        let answers =
            futures::future::try_join_all(asked.iter().map(|query| self.value(base, query)))
                .await?;
        let value = |index: usize| answers[index].unwrap_or(0.0);
        let samples = value(0);
        Ok(Measured {
            samples: samples.round() as u64,
            mismatch_ratio: ratio(value(1), samples),
            error_ratio: ratio(value(4) + value(5), value(2) + value(3)),
            latency_p99: answers[6].filter(|p99| p99.is_finite()),
        })
    }
}

impl PrometheusClient {
    /// An instant query's first value; none when it has no series.
    async fn value(&self, base: &str, query: &str) -> Result<Option<f64>, String> {
        let url = format!(
            "{}/api/v1/query?query={}",
            base.trim_end_matches('/'),
            percent_encoding::utf8_percent_encode(query, percent_encoding::NON_ALPHANUMERIC)
        );
        let answer: Value = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|error| format!("Prometheus at {base} cannot be reached: {error}"))?
            .json()
            .await
            .map_err(|error| format!("Prometheus at {base} answered no JSON: {error}"))?;
        if answer["status"] != "success" {
            return Err(format!(
                "Prometheus refused {query}: {}",
                answer["error"].as_str().unwrap_or("no reason given")
            ));
        }
        Ok(answer["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|value| value.parse().ok()))
    }
}

/// `part / whole` within 0–1 (`increase()` extrapolates each series apart, so a part can come
/// out a hair above its whole).
fn ratio(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        (part / whole).clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_queries_select_one_stores_series_over_the_window() {
        let queries = Queries::new("team-a", "notes", Duration::from_secs(300));
        assert_eq!(
            queries.mismatches(),
            "sum(increase(memgate_shadow_comparisons_total{namespace=\"team-a\",store=\"notes\",outcome=\"mismatch\"}[300s]))"
        );
        assert!(queries.latency_p99().contains("path=\"fast\"}[300s]"));
        assert_eq!(ratio(1.0, 0.0), 0.0);
        assert_eq!(ratio(1.0, 4.0), 0.25);
    }
}
