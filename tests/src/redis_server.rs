//! A `redis-server` of the test's own on a free loopback port, with its data in a temporary
//! directory. It can be stopped and started again on the same port; dropping it kills it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::free_port;

pub struct RedisServer {
    port: u16,
    /// `appendfsync` (`everysec` unless started durable).
    fsync: &'static str,
    /// More arguments (`--replicaof host port` for a replica).
    extra: Vec<String>,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

fn binary() -> PathBuf {
    std::env::var_os("REDIS_SERVER")
        .map(PathBuf::from)
        .unwrap_or_else(|| "redis-server".into())
}

impl RedisServer {
    /// Starts a server with AOF on (as memgate runs it), waiting until it answers PING.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_with_fsync("everysec")
    }

    /// Starts a server that writes every command to its AOF before answering
    /// (`appendfsync always`): a SIGKILL loses nothing it acknowledged. With `everysec`,
    /// Redis may answer while a background fsync holds its AOF write back, and a SIGKILL then
    /// loses up to a second or two of acknowledged writes — Redis's durability window, not
    /// memgate's, so the tests that check acknowledged writes under SIGKILL use this.
    pub fn start_durable() -> anyhow::Result<Self> {
        Self::start_with_fsync("always")
    }

    /// Starts a replica of the server on `primary_port` (AOF on, `appendfsync everysec`).
    pub fn start_replica_of(primary_port: u16) -> anyhow::Result<Self> {
        let extra = vec![
            "--replicaof".to_string(),
            "127.0.0.1".to_string(),
            primary_port.to_string(),
        ];
        Self::start_with("everysec", extra)
    }

    /// Starts a node of a Redis Cluster (not yet in one: see `RedisCluster`).
    pub fn start_cluster_node() -> anyhow::Result<Self> {
        let extra = ["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"]
            .map(String::from)
            .to_vec();
        Self::start_with("everysec", extra)
    }

    fn start_with_fsync(fsync: &'static str) -> anyhow::Result<Self> {
        Self::start_with(fsync, Vec::new())
    }

    fn start_with(fsync: &'static str, extra: Vec<String>) -> anyhow::Result<Self> {
        let mut server = Self {
            fsync,
            extra,
            port: free_port()?,
            dir: tempfile::tempdir()?,
            child: None,
        };
        server.spawn()?;
        Ok(server)
    }

    fn spawn(&mut self) -> anyhow::Result<()> {
        let child = Command::new(binary())
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.fsync,
            ])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("cannot run redis-server (install it: apt-get install redis-server)")?;
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if self.ping() {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        anyhow::bail!(
            "redis-server on port {} did not answer within 10 s",
            self.port
        )
    }

    fn ping(&self) -> bool {
        use std::io::{Read, Write};
        let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut reply = [0u8; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// Kills the server (SIGKILL): clients see it vanish.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts it again on the same port with the same data directory.
    pub fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.spawn()
    }

    pub async fn client(&self) -> anyhow::Result<redis::aio::MultiplexedConnection> {
        let client = redis::Client::open(self.url())?;
        Ok(client.get_multiplexed_async_connection().await?)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether memgate's worker stored the memory `id` of the store under key `prefix` (its record
/// is `ready`) and left no association job, within ten seconds.
pub async fn worker_done(redis: &RedisServer, prefix: &str, id: &str) -> bool {
    let Ok(connection) = redis.client().await else {
        return false;
    };
    let key = format!("{prefix}mem:{id}");
    let assoc = format!("{prefix}assoc");
    crate::eventually(std::time::Duration::from_secs(10), || {
        let mut connection = connection.clone();
        let (key, assoc) = (key.clone(), assoc.clone());
        async move {
            use redis::AsyncCommands;
            let record: Option<String> = connection.get(&key).await.unwrap_or(None);
            let pending: u64 = connection.xlen(&assoc).await.unwrap_or(1);
            record.is_some_and(|r| r.contains("\"status\":\"ready\"")) && pending == 0
        }
    })
    .await
}
