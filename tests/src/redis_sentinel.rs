//! Redis with replicas under Sentinel, the test's own: a primary, its replicas and the
//! sentinels watching them, on free loopback ports (Debian's `redis-server` and
//! `redis-sentinel`). Dropping it kills them all.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;
use redis::AsyncCommands;

use crate::{free_port, RedisServer};

/// The name the sentinels know the primary by.
pub const MASTER_NAME: &str = "memgate";

fn sentinel_binary() -> PathBuf {
    std::env::var_os("REDIS_SENTINEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| "redis-sentinel".into())
}

/// One `redis-sentinel` process and its config file (Sentinel rewrites it).
struct SentinelProcess {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl SentinelProcess {
    fn start(primary_port: u16, quorum: usize) -> anyhow::Result<Self> {
        let port = free_port()?;
        let dir = tempfile::tempdir()?;
        let config = dir.path().join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {port}\nbind 127.0.0.1\ndir {dir}\n\
                 sentinel monitor {MASTER_NAME} 127.0.0.1 {primary_port} {quorum}\n\
                 sentinel down-after-milliseconds {MASTER_NAME} 1000\n\
                 sentinel failover-timeout {MASTER_NAME} 10000\n\
                 sentinel parallel-syncs {MASTER_NAME} 1\n",
                dir = dir.path().display()
            ),
        )?;
        let child = Command::new(sentinel_binary())
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run redis-sentinel (install it: apt-get install redis-sentinel)")?;
        Ok(Self {
            port,
            child,
            _dir: dir,
        })
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }
}

impl Drop for SentinelProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct SentinelGroup {
    /// Every Redis node started, the first as the primary; a killed one stays (stopped).
    nodes: Vec<RedisServer>,
    sentinels: Vec<SentinelProcess>,
}

impl SentinelGroup {
    /// A primary with `replicas` replicas and `sentinels` sentinels (quorum: a majority),
    /// once every replica is in sync and every sentinel knows the others and the replicas.
    pub async fn start(replicas: usize, sentinels: usize) -> anyhow::Result<Self> {
        let primary = RedisServer::start()?;
        let primary_port = primary.port();
        let mut nodes = vec![primary];
        for _ in 0..replicas {
            nodes.push(RedisServer::start_replica_of(primary_port)?);
        }
        let quorum = sentinels / 2 + 1;
        let sentinels = (0..sentinels)
            .map(|_| SentinelProcess::start(primary_port, quorum))
            .collect::<anyhow::Result<Vec<_>>>()?;
        let group = Self { nodes, sentinels };
        group.wait_until_ready(replicas).await?;
        Ok(group)
    }

    async fn wait_until_ready(&self, replicas: usize) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if self.ready(replicas).await {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the replicas or the sentinels were not ready within 30 s"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn ready(&self, replicas: usize) -> bool {
        for replica in &self.nodes[1..] {
            let Ok(mut connection) = replica.client().await else {
                return false;
            };
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut connection)
                .await
                .unwrap_or_default();
            if !info.contains("master_link_status:up") {
                return false;
            }
        }
        for sentinel in &self.sentinels {
            let Ok(fields) = sentinel_master(&sentinel.url()).await else {
                return false;
            };
            let field = |name: &str| {
                fields
                    .iter()
                    .position(|field| field == name)
                    .and_then(|at| fields.get(at + 1))
                    .and_then(|value| value.parse::<usize>().ok())
            };
            if field("num-other-sentinels") != Some(self.sentinels.len() - 1)
                || field("num-slaves") != Some(replicas)
            {
                return false;
            }
        }
        true
    }

    /// `redis+sentinel://` with every sentinel, for memgate's `redis.url`.
    pub fn url(&self) -> String {
        let hosts: Vec<String> = self
            .sentinels
            .iter()
            .map(|sentinel| format!("127.0.0.1:{}", sentinel.port))
            .collect();
        format!("redis+sentinel://{}/{MASTER_NAME}", hosts.join(","))
    }

    /// The primary's port, as the first sentinel that answers names it.
    pub async fn primary_port(&self) -> anyhow::Result<u16> {
        for sentinel in &self.sentinels {
            let client = redis::Client::open(sentinel.url())?;
            let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
                continue;
            };
            let address: Result<(String, String), _> = redis::cmd("SENTINEL")
                .arg("get-master-addr-by-name")
                .arg(MASTER_NAME)
                .query_async(&mut connection)
                .await;
            if let Ok((_, port)) = address {
                return Ok(port.parse()?);
            }
        }
        anyhow::bail!("no sentinel named the primary")
    }

    /// A connection to the primary the sentinels name now.
    pub async fn primary(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let port = self.primary_port().await?;
        let client = redis::Client::open(format!("redis://127.0.0.1:{port}"))?;
        Ok(client.get_multiplexed_async_connection().await?)
    }

    /// SIGKILLs the primary the sentinels name; its port.
    pub async fn kill_primary(&mut self) -> anyhow::Result<u16> {
        let port = self.primary_port().await?;
        let node = self
            .nodes
            .iter_mut()
            .find(|node| node.port() == port)
            .context("the primary is not one of this group's nodes")?;
        node.kill();
        Ok(port)
    }

    /// Waits until the sentinels name a primary other than `old` and it answers as one.
    pub async fn wait_for_new_primary(&self, old: u16, within: Duration) -> anyhow::Result<u16> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(port) = self.primary_port().await {
                if port != old && self.answers_as_primary(port).await {
                    return Ok(port);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        anyhow::bail!("no replica was promoted within {within:?}")
    }

    async fn answers_as_primary(&self, port: u16) -> bool {
        let Ok(client) = redis::Client::open(format!("redis://127.0.0.1:{port}")) else {
            return false;
        };
        let Ok(mut connection) = client.get_multiplexed_async_connection().await else {
            return false;
        };
        let role: Result<Vec<redis::Value>, _> =
            redis::cmd("ROLE").query_async(&mut connection).await;
        matches!(role.as_deref(), Ok([redis::Value::BulkString(role), ..]) if role == b"master")
    }

    /// Stops (`SIGSTOP`) every replica: they take no more of the primary's writes until
    /// [`Self::resume_replicas`].
    pub async fn pause_replicas(&self) -> anyhow::Result<()> {
        self.signal_replicas("-STOP").await
    }

    pub async fn resume_replicas(&self) -> anyhow::Result<()> {
        self.signal_replicas("-CONT").await
    }

    async fn signal_replicas(&self, signal: &str) -> anyhow::Result<()> {
        let primary = self.primary_port().await?;
        for node in self.nodes.iter().filter(|node| node.port() != primary) {
            let Some(pid) = node.pid() else { continue };
            let status = Command::new("kill")
                .arg(signal)
                .arg(pid.to_string())
                .status()?;
            anyhow::ensure!(status.success(), "kill {signal} {pid} failed");
        }
        Ok(())
    }

    /// The primary's keys of memgate's store under `prefix`, for the test's own checks.
    pub async fn keys(&self, prefix: &str) -> anyhow::Result<Vec<String>> {
        let mut primary = self.primary().await?;
        Ok(primary.keys(format!("{prefix}*")).await?)
    }
}

/// `SENTINEL MASTER`'s fields, as name/value strings.
async fn sentinel_master(url: &str) -> anyhow::Result<Vec<String>> {
    let client = redis::Client::open(url)?;
    let mut connection = client.get_multiplexed_async_connection().await?;
    Ok(redis::cmd("SENTINEL")
        .arg("master")
        .arg(MASTER_NAME)
        .query_async(&mut connection)
        .await?)
}
