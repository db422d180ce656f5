//! Debian's `prometheus`, started on a free port to scrape memgate processes of a test every
//! second, with rule files to evaluate; stopped on drop.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// A target scraped with labels of its own.
#[derive(Debug, Clone)]
pub struct ScrapeJob {
    pub target: SocketAddr,
    pub labels: Vec<(String, String)>,
}

pub struct PrometheusServer {
    child: Child,
    pub addr: SocketAddr,
    _data: tempfile::TempDir,
}

impl PrometheusServer {
    /// Scrapes `targets` (`/metrics`) every second and evaluates `rule_files` every second.
    pub async fn start(targets: &[SocketAddr], rule_files: &[&Path]) -> anyhow::Result<Self> {
        let jobs: Vec<ScrapeJob> = targets
            .iter()
            .map(|target| ScrapeJob {
                target: *target,
                labels: Vec::new(),
            })
            .collect();
        Self::start_jobs(&jobs, rule_files).await
    }

    /// One scrape job per entry of `jobs`, each adding its labels to what it scrapes (as a
    /// PodMonitor adds `namespace` and `store`): one target may be scraped as two stores.
    pub async fn start_jobs(jobs: &[ScrapeJob], rule_files: &[&Path]) -> anyhow::Result<Self> {
        let data = tempfile::tempdir()?;
        let rules: Vec<String> = rule_files
            .iter()
            .map(|file| format!("'{}'", file.display()))
            .collect();
        let mut config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\n\
             rule_files: [{}]\n\
             scrape_configs:\n",
            rules.join(", ")
        );
        for (n, job) in jobs.iter().enumerate() {
            let labels: Vec<String> = job
                .labels
                .iter()
                .map(|(name, value)| format!("{name}: '{value}'"))
                .collect();
            config.push_str(&format!(
                "  - job_name: memgate-{n}\n    static_configs: [{{targets: ['{}'], labels: {{{}}}}}]\n",
                job.target,
                labels.join(", ")
            ));
        }
        let config_file = data.path().join("prometheus.yml");
        std::fs::write(&config_file, config)?;
        let port = crate::free_port()?;
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse()?;
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config_file.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                data.path().join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(std::fs::File::create(
                data.path().join("prometheus.log"),
            )?))
            .spawn()
            .context("starting prometheus (scripts/test.sh installs Debian's package)")?;
        let server = Self {
            child,
            addr,
            _data: data,
        };
        let ready = crate::eventually(Duration::from_secs(30), || async {
            reqwest::get(format!("http://{addr}/-/ready"))
                .await
                .is_ok_and(|answer| answer.status().is_success())
        })
        .await;
        anyhow::ensure!(ready, "prometheus did not get ready on {addr}");
        Ok(server)
    }

    /// An instant query's `data.result`; an error when Prometheus refuses the expression.
    pub async fn query(&self, expr: &str) -> anyhow::Result<Vec<Value>> {
        let answer: Value = reqwest::Client::new()
            .get(format!("http://{}/api/v1/query", self.addr))
            .query(&[("query", expr)])
            .send()
            .await?
            .json()
            .await?;
        anyhow::ensure!(answer["status"] == "success", "{expr}: {answer}");
        Ok(answer["data"]["result"]
            .as_array()
            .cloned()
            .unwrap_or_default())
    }

    /// `/api/v1/rules`: every rule with its `health` and `lastError`.
    pub async fn rules(&self) -> anyhow::Result<Vec<Value>> {
        let answer: Value = reqwest::get(format!("http://{}/api/v1/rules", self.addr))
            .await?
            .json()
            .await?;
        Ok(answer["data"]["groups"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|group| group["rules"].as_array().cloned().unwrap_or_default())
            .collect())
    }
}

impl Drop for PrometheusServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
