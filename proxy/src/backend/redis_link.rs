//! A connection to "the Redis primary", wherever it is: one address (`redis://`, `rediss://`),
//! the primary Redis Sentinel names for a master (`redis+sentinel://`), followed across a
//! failover, or the nodes of a Redis Cluster (`redis+cluster://`), each command sent to the
//! node of its key's slot. Each multiplexes one connection (per node) per [`RedisLink`] and
//! reconnects after a failure (redis-rs's `ConnectionManager` and cluster connection); every
//! command waits at most the timeout.
//!
//! In a cluster, a store's keys carry its hash tag (`memgate:{namespace/name}:…`, see
//! `Config::key_prefix`), so every key, script and stream of one store is in one slot, and
//! the scripts that touch several keys run on one node.
//!
//! With Sentinel, the primary is asked of the sentinels on first use and again after a command
//! failed in a way that says the primary is gone or moved: the connection dropped or was
//! refused, a timeout, or the node answering `READONLY` (a demoted primary). A command refused
//! with `READONLY` was not run, so it is sent once more to the new primary; any other failure
//! is returned to the caller, who cannot know whether it ran (as with one address).
//!
//! `redis+sentinel://[:password@]host:port[,host:port…]/master-name[/db]`: the sentinels'
//! addresses, the master's name, the database; the password is the Redis nodes' (the sentinels
//! are asked without one).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType};
use redis::{
    Cmd, ConnectionAddr, ErrorKind, IntoConnectionInfo, Pipeline, RedisError, RedisFuture,
    RedisResult, Value,
};

pub use crate::config::{CLUSTER_SCHEME, SENTINEL_SCHEME};

/// A connection to the Redis primary; cheap to clone (clones share the connection).
#[derive(Clone)]
pub enum RedisLink {
    /// One address.
    Direct(ConnectionManager),
    /// The primary the sentinels name.
    Sentinel(Arc<SentinelLink>),
    /// The nodes of a Redis Cluster.
    Cluster(Arc<ClusterLink>),
}

impl std::fmt::Debug for RedisLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Direct(_) => f.write_str("RedisLink::Direct"),
            Self::Sentinel(link) => f
                .debug_struct("RedisLink::Sentinel")
                .field("master", &link.master)
                .finish_non_exhaustive(),
            Self::Cluster(_) => f.write_str("RedisLink::Cluster"),
        }
    }
}

/// Opens a link without dialling: the first command dials. `password` overrides one in the URL.
pub fn connect_lazy(
    url: &str,
    password: Option<&str>,
    timeout: Duration,
) -> RedisResult<RedisLink> {
    let config = ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        .set_number_of_retries(2)
        .set_max_delay(Duration::from_secs(2));
    if let Some(rest) = url.strip_prefix(CLUSTER_SCHEME) {
        return Ok(RedisLink::Cluster(Arc::new(ClusterLink::new(
            rest, password, timeout,
        )?)));
    }
    if let Some(rest) = url.strip_prefix(SENTINEL_SCHEME) {
        let target = SentinelUrl::parse(rest)?;
        return Ok(RedisLink::Sentinel(Arc::new(SentinelLink::new(
            target, password, config, timeout,
        )?)));
    }
    let mut info = url.into_connection_info()?;
    if let Some(password) = password {
        let settings = info.redis_settings().clone().set_password(password);
        info = info.set_redis_settings(settings);
    }
    Ok(RedisLink::Direct(
        redis::Client::open(info)?.get_connection_manager_lazy(config)?,
    ))
}

/// A Sentinel URL's parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SentinelUrl {
    pub sentinels: Vec<(String, u16)>,
    pub master: String,
    pub db: i64,
    pub password: Option<String>,
}

impl SentinelUrl {
    /// Parses what follows `redis+sentinel://`.
    pub fn parse(rest: &str) -> RedisResult<Self> {
        let (password, rest) = credentials(rest);
        let (hosts, path) = rest.split_once('/').ok_or_else(|| {
            invalid_url("the master's name is missing: redis+sentinel://host:port,…/master")
        })?;
        let mut path = path.split('/');
        let master = path
            .next()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| invalid_url("the master's name is empty"))?;
        let db = match path.next().filter(|db| !db.is_empty()) {
            Some(db) => db
                .parse()
                .map_err(|_| invalid_url(format!("database {db:?} is not a number")))?,
            None => 0,
        };
        Ok(Self {
            sentinels: hosts_of(hosts, 26379)?,
            master: master.to_string(),
            db,
            password,
        })
    }
}

fn invalid_url(why: impl Into<String>) -> RedisError {
    RedisError::from((
        ErrorKind::InvalidClientConfig,
        "invalid Redis URL",
        why.into(),
    ))
}

/// The password of `[user:password@]rest`, and the rest.
fn credentials(url: &str) -> (Option<String>, &str) {
    match url.rsplit_once('@') {
        Some((credentials, rest)) => {
            let password = credentials
                .split_once(':')
                .map_or(credentials, |(_, password)| password);
            ((!password.is_empty()).then(|| password.to_string()), rest)
        }
        None => (None, url),
    }
}

/// `host[:port],host[:port]…`, `default_port` where none is given.
fn hosts_of(hosts: &str, default_port: u16) -> RedisResult<Vec<(String, u16)>> {
    hosts
        .split(',')
        .map(|host| {
            let (name, port) = match host.rsplit_once(':') {
                Some((name, port)) => (
                    name,
                    port.parse()
                        .map_err(|_| invalid_url(format!("port of {host:?} is not a number")))?,
                ),
                None => (host, default_port),
            };
            if name.is_empty() {
                return Err(invalid_url(format!("a node without a host: {host:?}")));
            }
            Ok((name.to_string(), port))
        })
        .collect()
}

/// The nodes of a Redis Cluster, connected on first use.
pub struct ClusterLink {
    client: redis::cluster::ClusterClient,
    connection: tokio::sync::OnceCell<redis::cluster_async::ClusterConnection>,
}

impl ClusterLink {
    /// From what follows `redis+cluster://`: `[:password@]host:port,host:port…` (any of the
    /// nodes; the others are found from them).
    fn new(rest: &str, password: Option<&str>, timeout: Duration) -> RedisResult<Self> {
        let (url_password, hosts) = credentials(rest);
        let hosts = hosts.trim_end_matches('/');
        let nodes: Vec<String> = hosts_of(hosts, 6379)?
            .into_iter()
            .map(|(host, port)| format!("redis://{host}:{port}"))
            .collect();
        let mut builder = redis::cluster::ClusterClient::builder(nodes)
            .connection_timeout(timeout)
            .response_timeout(timeout)
            .retries(2);
        if let Some(password) = password.map(str::to_string).or(url_password) {
            builder = builder.password(password);
        }
        Ok(Self {
            client: builder.build()?,
            connection: tokio::sync::OnceCell::new(),
        })
    }

    async fn connection(&self) -> RedisResult<redis::cluster_async::ClusterConnection> {
        self.connection
            .get_or_try_init(|| self.client.get_async_connection())
            .await
            .cloned()
    }
}

/// The primary the sentinels name, asked again when it fails.
pub struct SentinelLink {
    master: String,
    sentinels: tokio::sync::Mutex<SentinelClient>,
    primary: Mutex<Option<Primary>>,
    config: ConnectionManagerConfig,
    timeout: Duration,
}

/// The primary in use, and which one it is (each ask of the sentinels makes a new one).
#[derive(Clone)]
struct Primary {
    connection: ConnectionManager,
    number: u64,
}

impl SentinelLink {
    fn new(
        target: SentinelUrl,
        password: Option<&str>,
        config: ConnectionManagerConfig,
        timeout: Duration,
    ) -> RedisResult<Self> {
        let addresses = target
            .sentinels
            .iter()
            .map(|(host, port)| ConnectionAddr::Tcp(host.clone(), *port));
        let mut builder =
            SentinelClientBuilder::new(addresses, &target.master, SentinelServerType::Master)?
                .set_client_to_redis_db(target.db);
        if let Some(password) = password.map(str::to_string).or(target.password) {
            builder = builder.set_client_to_redis_password(password);
        }
        Ok(Self {
            master: target.master,
            sentinels: tokio::sync::Mutex::new(builder.build()?),
            primary: Mutex::new(None),
            config,
            timeout,
        })
    }

    fn current(&self) -> Option<Primary> {
        self.primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    /// The primary in use, asking the sentinels when there is none.
    async fn primary(&self) -> RedisResult<Primary> {
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        // One ask at a time; whoever waited finds the answer the one before got.
        let mut sentinels = self.sentinels.lock().await;
        if let Some(primary) = self.current() {
            return Ok(primary);
        }
        let client = tokio::time::timeout(self.timeout * 4, sentinels.async_get_client())
            .await
            .map_err(|_| {
                RedisError::from((
                    ErrorKind::Io,
                    "no sentinel named the primary in time",
                    self.master.clone(),
                ))
            })??;
        let connection = client.get_connection_manager_lazy(self.config.clone())?;
        let mut slot = self
            .primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let number = NEXT_PRIMARY.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let primary = Primary { connection, number };
        tracing::info!(master = %self.master, "asked the sentinels for the Redis primary");
        *slot = Some(primary.clone());
        Ok(primary)
    }

    /// Forgets `primary` (when it is still the one in use): the next command asks again.
    fn forget(&self, primary: &Primary) {
        let mut slot = self
            .primary
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if slot
            .as_ref()
            .is_some_and(|current| current.number == primary.number)
        {
            tracing::warn!(master = %self.master, "the Redis primary failed; asking the sentinels again");
            *slot = None;
        }
    }

    async fn command(&self, cmd: &Cmd) -> RedisResult<Value> {
        let primary = self.primary().await?;
        let result = primary.connection.clone().req_packed_command(cmd).await;
        match result {
            Err(error) if not_run_here(&error) => {
                self.forget(&primary);
                let primary = self.primary().await?;
                primary.connection.clone().req_packed_command(cmd).await
            }
            Err(error) => {
                if primary_gone(&error) {
                    self.forget(&primary);
                }
                Err(error)
            }
            ok => ok,
        }
    }

    async fn commands(
        &self,
        pipeline: &Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisResult<Vec<Value>> {
        let primary = self.primary().await?;
        let result = primary
            .connection
            .clone()
            .req_packed_commands(pipeline, offset, count)
            .await;
        if let Err(error) = &result {
            if primary_gone(error) || not_run_here(error) {
                self.forget(&primary);
            }
        }
        result
    }
}

static NEXT_PRIMARY: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A failure that says the primary is gone or moved.
fn primary_gone(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_timeout()
        || not_run_here(error)
}

/// Refused by a node that is no longer the primary: the command did not run.
fn not_run_here(error: &RedisError) -> bool {
    matches!(error.code(), Some("READONLY") | Some("MASTERDOWN"))
}

impl ConnectionLike for RedisLink {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Direct(connection) => connection.req_packed_command(cmd),
            Self::Sentinel(link) => {
                let link = link.clone();
                Box::pin(async move { link.command(cmd).await })
            }
            Self::Cluster(link) => {
                let link = link.clone();
                Box::pin(async move { link.connection().await?.req_packed_command(cmd).await })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Direct(connection) => connection.req_packed_commands(pipeline, offset, count),
            Self::Sentinel(link) => {
                let link = link.clone();
                Box::pin(async move { link.commands(pipeline, offset, count).await })
            }
            Self::Cluster(link) => {
                let link = link.clone();
                Box::pin(async move {
                    link.connection()
                        .await?
                        .req_packed_commands(pipeline, offset, count)
                        .await
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Direct(connection) => connection.get_db(),
            Self::Sentinel(link) => link
                .current()
                .map(|primary| primary.connection.get_db())
                .unwrap_or(0),
            // A cluster has database 0 only.
            Self::Cluster(_) => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_master_and_the_database() {
        let url = SentinelUrl::parse(":secret@10.0.0.1:26379,sentinel-b,10.0.0.3:26380/mymaster/2")
            .expect("valid");
        assert_eq!(
            url.sentinels,
            vec![
                ("10.0.0.1".to_string(), 26379),
                ("sentinel-b".to_string(), 26379),
                ("10.0.0.3".to_string(), 26380)
            ]
        );
        assert_eq!(url.master, "mymaster");
        assert_eq!(url.db, 2);
        assert_eq!(url.password.as_deref(), Some("secret"));
        let plain = SentinelUrl::parse("s1:26379/memgate").expect("valid");
        assert_eq!((plain.db, plain.password), (0, None));
    }

    #[test]
    fn a_sentinel_url_without_a_master_or_with_a_bad_port_is_refused() {
        for bad in ["s1:26379", "s1:26379/", "s1:port/m", ":26379/m", "s1/m/db"] {
            assert!(SentinelUrl::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_cluster_url_names_its_nodes() {
        assert_eq!(
            hosts_of("10.0.0.1:7000,node-b", 6379).expect("valid"),
            vec![("10.0.0.1".to_string(), 7000), ("node-b".to_string(), 6379)]
        );
        assert!(ClusterLink::new(":pw@n1:7000,n2:7001", None, Duration::from_secs(1)).is_ok());
        assert!(ClusterLink::new("n1:port", None, Duration::from_secs(1)).is_err());
    }
}
