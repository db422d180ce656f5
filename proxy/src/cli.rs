//! The command line: `memgate serve`. Flags override the config file and `MEMGATE_*`
//! environment variables (docs/configuration.md lists every config field).

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::config::ConfigSources;

#[derive(Debug, Parser)]
#[command(
    name = "memgate",
    version,
    about = "A fast path in front of an AI memory service"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
    /// Log format.
    #[arg(
        long,
        global = true,
        value_enum,
        default_value = "text",
        env = "MEMGATE_LOG_FORMAT"
    )]
    pub log_format: LogFormat,
    /// Log filter, e.g. `info` or `memgate=debug,info`.
    #[arg(
        long,
        global = true,
        default_value = "info,qdrant_edge=error",
        env = "MEMGATE_LOG"
    )]
    pub log: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the Memory API (port 8080) and the admin endpoints (port 9090).
    ///
    /// Configuration is read from the YAML file, then `MEMGATE_*` environment variables
    /// (`MEMGATE_CACHE__MEMORY_TTL=30m` sets `cache.memoryTtl`), then these flags.
    ///
    /// `memgate serve [options] -- <legacy command…>` runs the legacy service (e.g.
    /// `node /opt/cldmemory/dist/index.js`) as this process's child over stdio, so no other
    /// client can share its MCP session.
    Serve(ServeCommandArgs),
    /// Drain the write queue: enrich new memories (summary, valence, keywords, embedding),
    /// store them in the vector store, and apply updates and deletes.
    ///
    /// Reads the same configuration as `serve` (`redis`, `vectors`, `embeddings`,
    /// `enrichment`, `openai`, `worker`); serves `/metrics`, `/healthz`, `/readyz` on
    /// `worker.adminListen` (`--admin-listen`; 127.0.0.1:9091 by default, so it runs beside a
    /// `serve` reading the same file). On SIGTERM it finishes the jobs in flight, then exits.
    Worker(ServeArgs),
    /// Speak MCP on another transport than the API port's.
    #[command(subcommand)]
    Mcp(McpCommand),
}

#[derive(Debug, Subcommand)]
pub enum McpCommand {
    /// MCP on this process's stdin and stdout, for clients that launch their memory server
    /// as a process: `memgate mcp stdio [options] -- <legacy command…>`.
    ///
    /// The legacy service (e.g. `node /opt/cldmemory/dist/index.js`) runs as a child over
    /// stdio; memgate answers the memory tools it covers from the fast path and forwards the
    /// rest. Without a command, memgate's own memory tools answer alone. The API and admin
    /// ports are bound on free ports unless given.
    ///
    /// With a data directory (`--embedded` keeps one in `$XDG_DATA_HOME/memgate`), launches
    /// share one local server, so every client sees the same memories: the first launch starts
    /// it in the background (log: `{dataDir}/memgate.log`) and each one attaches to its socket
    /// `{dataDir}/mcp.sock`.
    Stdio(StdioArgs),
}

#[derive(Debug, Args)]
pub struct StdioArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// This client's metadata, as cldmemory's `Memory-Metadata` (`key:value,key2:value2`).
    #[arg(long, env = "MEMORY_METADATA_CLIENT")]
    pub memory_metadata: Option<String>,
    /// With a data directory, launches share one local server, started by the first; it
    /// exits once no launch has been attached for this long.
    #[arg(long, env = "MEMGATE_IDLE_EXIT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub idle_exit: std::time::Duration,
    /// The legacy service's command line [config: upstream.mcp.command].
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl StdioArgs {
    /// The config sources: the serve options, the child command, free ports by default.
    pub fn sources(&self) -> ConfigSources {
        let mut sources = self.serve.sources();
        if self.serve.listen.is_none() {
            sources
                .overrides
                .push(("listen".into(), "127.0.0.1:0".into()));
        }
        if self.serve.admin_listen.is_none() {
            sources
                .overrides
                .push(("adminListen".into(), "127.0.0.1:0".into()));
        }
        legacy_child(&mut sources, &self.command);
        sources
    }
}

#[derive(Debug, Args)]
pub struct ServeCommandArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
    /// The legacy service's command line, run as a child over stdio
    /// [config: upstream.mcp.command].
    #[arg(last = true)]
    pub command: Vec<String>,
}

impl ServeCommandArgs {
    /// The config sources: the serve options and the legacy child command.
    pub fn sources(&self) -> ConfigSources {
        let mut sources = self.serve.sources();
        legacy_child(&mut sources, &self.command);
        sources
    }
}

/// The overrides for a legacy service run as a child over stdio, when a command is given.
fn legacy_child(sources: &mut ConfigSources, command: &[String]) {
    if command.is_empty() {
        return;
    }
    sources
        .overrides
        .push(("upstream.mcp.transport".into(), "stdio".into()));
    let command: Vec<figment::value::Value> =
        command.iter().map(|part| part.clone().into()).collect();
    sources
        .overrides
        .push(("upstream.mcp.command".into(), command.into()));
}

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The YAML config file (the operator mounts it from the `{name}-proxy-config` ConfigMap).
    /// Re-read while running: a new `rollout.percent` applies without a restart.
    #[arg(long, short, env = "MEMGATE_CONFIG")]
    pub config: Option<PathBuf>,
    /// Run with no Redis, no Qdrant server and no API key: in-process cache, Qdrant Edge,
    /// the built-in hashing embedder, every request on the fast path.
    #[arg(long)]
    pub embedded: bool,
    /// Memory API address [config: listen; default 127.0.0.1:8080].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Admin address for /metrics, /healthz, /readyz [config: adminListen; default 127.0.0.1:9090].
    #[arg(long)]
    pub admin_listen: Option<SocketAddr>,
    /// The legacy memory service's base URL [config: upstream.url].
    #[arg(long)]
    pub upstream: Option<String>,
    /// Share of requests (0-100) on the fast path [config: rollout.percent].
    #[arg(long, value_parser = clap::value_parser!(u8).range(0..=100))]
    pub rollout_percent: Option<u8>,
    /// Header whose value keeps one user on one path [config: rollout.stickyHeader].
    #[arg(long)]
    pub sticky_header: Option<String>,
    /// Redis URL; implies `cache.backend: redis` [config: redis.url].
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Qdrant gRPC URL; implies `vectors.backend: qdrant` [config: vectors.url].
    #[arg(long)]
    pub qdrant_url: Option<String>,
    /// Where this process's own parts keep their data: Qdrant Edge, the write queue's
    /// journal, the socket other stdio launches attach to [config: dataDir; with
    /// `--embedded`, default `$XDG_DATA_HOME/memgate`].
    #[arg(long, conflicts_with = "ephemeral")]
    pub data_dir: Option<PathBuf>,
    /// Keep nothing on disk: Qdrant Edge in a temporary directory removed at exit, the write
    /// queue in memory only [config: dataDir unset].
    #[arg(long)]
    pub ephemeral: bool,
    /// OpenAI-compatible API base URL [config: openai.baseUrl].
    #[arg(long)]
    pub openai_base_url: Option<String>,
    /// Embedding model [config: embeddings.model].
    #[arg(long)]
    pub embedding_model: Option<String>,
}

impl ServeArgs {
    /// The config sources of `memgate worker`: `--admin-listen` is the worker's own
    /// (`worker.adminListen`).
    pub fn worker_sources(&self) -> ConfigSources {
        let mut sources = self.sources();
        if let Some(admin) = self.admin_listen {
            sources
                .overrides
                .push(("worker.adminListen".into(), admin.to_string().into()));
        }
        sources
    }

    /// The config sources these arguments describe, with this process's environment.
    pub fn sources(&self) -> ConfigSources {
        let mut sources = ConfigSources::from_process_env(self.config.clone(), self.embedded);
        sources.ephemeral = self.ephemeral;
        if self.embedded && !self.ephemeral {
            sources.embedded_data_dir = crate::app::data_dir::default_data_dir();
        }
        let mut set = |path: &str, value: figment::value::Value| {
            sources.overrides.push((path.to_string(), value));
        };
        if let Some(listen) = self.listen {
            set("listen", listen.to_string().into());
        }
        if let Some(admin) = self.admin_listen {
            set("adminListen", admin.to_string().into());
        }
        if let Some(upstream) = &self.upstream {
            set("upstream.url", upstream.clone().into());
        }
        if let Some(percent) = self.rollout_percent {
            set("rollout.percent", percent.into());
        }
        if let Some(header) = &self.sticky_header {
            set("rollout.stickyHeader", header.clone().into());
        }
        if let Some(url) = &self.redis_url {
            set("redis.url", url.clone().into());
            set("cache.backend", "redis".into());
        }
        if let Some(url) = &self.qdrant_url {
            set("vectors.url", url.clone().into());
            set("vectors.backend", "qdrant".into());
        }
        if let Some(dir) = &self.data_dir {
            set("dataDir", dir.display().to_string().into());
        }
        if let Some(url) = &self.openai_base_url {
            set("openai.baseUrl", url.clone().into());
        }
        if let Some(model) = &self.embedding_model {
            set("embeddings.model", model.clone().into());
        }
        sources
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cli_is_well_formed() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    #[test]
    fn flags_become_overrides() {
        let cli = Cli::try_parse_from([
            "memgate",
            "serve",
            "--embedded",
            "--rollout-percent",
            "30",
            "--upstream",
            "http://127.0.0.1:3000",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve")
        };
        let config = crate::config::load(&args.sources()).expect("valid");
        assert_eq!(config.rollout.percent, 30);
        assert_eq!(
            config.upstream.url.as_deref(),
            Some("http://127.0.0.1:3000")
        );
    }

    #[test]
    fn serve_runs_the_legacy_command_after_a_double_dash_as_its_child() {
        let cli = Cli::try_parse_from([
            "memgate",
            "serve",
            "--embedded",
            "--rollout-percent",
            "50",
            "--",
            "node",
            "/opt/cldmemory/dist/index.js",
        ])
        .expect("parses");
        let Command::Serve(args) = cli.command else {
            panic!("parsed as serve")
        };
        let config = crate::config::load(&args.sources()).expect("valid");
        assert_eq!(
            config.upstream.mcp.transport,
            crate::config::UpstreamMcpTransport::Stdio
        );
        assert_eq!(
            config.upstream.mcp.command,
            ["node", "/opt/cldmemory/dist/index.js"]
        );
        assert_eq!(config.rollout.percent, 50);
    }

    #[test]
    fn stdio_takes_the_legacy_command_after_a_double_dash() {
        let cli = Cli::try_parse_from([
            "memgate",
            "mcp",
            "stdio",
            "--embedded",
            "--",
            "node",
            "dist/index.js",
        ])
        .expect("parses");
        let Command::Mcp(McpCommand::Stdio(args)) = cli.command else {
            panic!("parsed as mcp stdio")
        };
        let config = crate::config::load(&args.sources()).expect("valid");
        assert_eq!(
            config.upstream.mcp.command,
            vec!["node".to_string(), "dist/index.js".to_string()]
        );
        assert_eq!(config.listen.port(), 0);
    }

    #[test]
    fn out_of_range_flags_are_refused() {
        assert!(Cli::try_parse_from(["memgate", "serve", "--rollout-percent", "101"]).is_err());
    }
}
