//! `memgate-operator`: `crd` prints the CustomResourceDefinition; `render` prints the objects
//! a MemoryStore would get, without a cluster (for review, GitOps and the tests' schema
//! checks).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use memgate_operator::build;
use memgate_operator::crd::{crd_yaml, MemoryStore};

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
    /// Print the objects the operator would apply for a MemoryStore, as multi-document YAML.
    Render {
        /// The MemoryStore manifest.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Its namespace, when the manifest names none.
        #[arg(short, long, default_value = "default")]
        namespace: String,
    },
}

/// YAML as Kubernetes tools read it: strings YAML 1.1 would take for booleans (`yes`, `on`)
/// are quoted.
fn yaml<T: serde::Serialize>(value: &T) -> anyhow::Result<String> {
    Ok(serde_saphyr::to_string(value)?)
}

fn render(file: &PathBuf, namespace: &str) -> anyhow::Result<String> {
    let text =
        std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    let mut store: MemoryStore = serde_yaml::from_str(&text)
        .with_context(|| format!("{} is not a MemoryStore", file.display()))?;
    if store.metadata.namespace.is_none() {
        store.metadata.namespace = Some(namespace.to_string());
    }
    // The owner reference needs a uid; a cluster assigns the real one.
    if store.metadata.uid.is_none() {
        store.metadata.uid = Some("00000000-0000-0000-0000-000000000000".into());
    }
    let desired = build::build(&store, "")?;
    let mut out = String::new();
    for secret in &desired.generated_secrets {
        out.push_str(&format!(
            "# Secret {} (key {}) is generated once by the operator when missing\n",
            secret.name, secret.key
        ));
    }
    let mut documents = vec![yaml(&desired.config_map)?];
    for part in [&desired.redis, &desired.qdrant].into_iter().flatten() {
        documents.push(yaml(&part.service)?);
        documents.push(yaml(&part.stateful_set)?);
    }
    documents.push(yaml(&desired.worker)?);
    if let Some(budget) = &desired.worker_disruption_budget {
        documents.push(yaml(budget)?);
    }
    out.push_str(&documents.join("---\n"));
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => print!("{}", crd_yaml()?),
        Command::Render { file, namespace } => print!("{}", render(&file, &namespace)?),
    }
    Ok(())
}
