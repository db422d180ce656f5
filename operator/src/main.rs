//! `memgate-operator`: `crd` prints the CustomResourceDefinition.

use clap::{Parser, Subcommand};
use memgate_operator::crd::crd_yaml;

#[derive(Parser)]
#[command(
    name = "memgate-operator",
    version,
    about = "The memgate Kubernetes operator"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the MemoryStore CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", crd_yaml()?),
    }
    Ok(())
}
