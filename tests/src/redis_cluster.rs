//! A Redis Cluster of the test's own: three masters (no replicas) on free loopback ports, the
//! slots shared out by `redis-cli --cluster create`. Dropping it kills the nodes.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::RedisServer;

pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Three masters, once every node says the cluster is `ok`.
    pub async fn start() -> anyhow::Result<Self> {
        let nodes = (0..3)
            .map(|_| RedisServer::start_cluster_node())
            .collect::<anyhow::Result<Vec<_>>>()?;
        let addresses: Vec<String> = nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        let output = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .context("cannot run redis-cli (it comes with redis-server)")?;
        anyhow::ensure!(
            output.status.success(),
            "redis-cli --cluster create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let cluster = Self { nodes };
        cluster.wait_until_ok().await?;
        Ok(cluster)
    }

    async fn wait_until_ok(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        'wait: loop {
            anyhow::ensure!(
                Instant::now() < deadline,
                "the cluster was not ok within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
            for node in &self.nodes {
                let Ok(mut connection) = node.client().await else {
                    continue 'wait;
                };
                let info: String = redis::cmd("CLUSTER")
                    .arg("INFO")
                    .query_async(&mut connection)
                    .await
                    .unwrap_or_default();
                if !info.contains("cluster_state:ok") {
                    continue 'wait;
                }
            }
            return Ok(());
        }
    }

    /// `redis+cluster://` with every node, for memgate's `redis.url`.
    pub fn url(&self) -> String {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|node| format!("127.0.0.1:{}", node.port()))
            .collect();
        format!("redis+cluster://{}", nodes.join(","))
    }

    /// Every key of every node that starts with `prefix`, with its slot.
    pub async fn keys_with_slots(&self, prefix: &str) -> anyhow::Result<Vec<(String, u16)>> {
        let mut found = Vec::new();
        for node in &self.nodes {
            let mut connection = node.client().await?;
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{prefix}*"))
                .query_async(&mut connection)
                .await?;
            for key in keys {
                let slot: u16 = redis::cmd("CLUSTER")
                    .arg("KEYSLOT")
                    .arg(&key)
                    .query_async(&mut connection)
                    .await?;
                found.push((key, slot));
            }
        }
        Ok(found)
    }
}
