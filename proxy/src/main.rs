//! `memgate`: parses the command line, sets up logging, and runs the chosen role.

use anyhow::Context;
use clap::Parser;
use memgate::cli::{Cli, Command, LogFormat, McpCommand};
use tracing_subscriber::EnvFilter;

fn init_tracing(cli: &Cli) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(&cli.log).with_context(|| format!("--log {:?}", cli.log))?;
    use std::io::IsTerminal;
    // Colours only for a person: not in a log file or a collector.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

/// How often `serve` checks its credential files (`MEMGATE_*_FILE`) for a new value.
const CREDENTIAL_POLL: std::time::Duration = std::time::Duration::from_secs(2);

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate = match tokio::signal::unix::signal(
            tokio::signal::unix::SignalKind::terminate(),
        ) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; only Ctrl-C stops the proxy");
                let _ = ctrl_c.await;
                return;
            }
        };
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    init_tracing(&cli)?;
    match cli.command {
        Command::Serve(args) => {
            let sources = args.sources();
            let config = memgate::config::load(&sources)?;
            let credentials =
                memgate::config::credentials::changed(sources.credential_files(), CREDENTIAL_POLL);
            let proxy = memgate::app::start(config, Some(sources)).await?;
            tokio::select! {
                _ = shutdown_signal() => {
                    tracing::info!("shutting down: draining in-flight requests");
                }
                changed = credentials => {
                    tracing::warn!(
                        variable = %changed.variable,
                        file = %changed.file.display(),
                        "a credential changed: draining and exiting, to be started again with it"
                    );
                }
            }
            proxy.shutdown().await;
        }
        Command::Worker(args) => {
            let config = memgate::config::load(&args.worker_sources())?;
            let worker = memgate::app::start_worker(config).await?;
            shutdown_signal().await;
            tracing::info!("shutting down: finishing in-flight jobs");
            worker.shutdown().await;
        }
        Command::Mcp(McpCommand::Stdio(args)) => {
            let config = memgate::config::load(&args.sources())?;
            memgate::app::stdio_launch::run(
                config,
                args.memory_metadata.clone(),
                args.idle_exit,
                shutdown_signal(),
            )
            .await?;
        }
    }
    Ok(())
}
