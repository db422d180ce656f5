//! `memgate-operator`: `run` runs the controller; `crd` prints the CustomResourceDefinition;
//! `render` prints the objects a MemoryStore would get, without a cluster (for review, GitOps
//! and the tests' schema checks).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::{Parser, Subcommand};
use kube::runtime::events::Reporter;
use memgate_operator::build;
use memgate_operator::crd::{crd_yaml, MemoryStore};
use memgate_operator::leader::{self, LeaseSettings};
use memgate_operator::metrics::Metrics;

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
    /// Run the controller (in the cluster, or against the current kubeconfig).
    Run(Box<RunArgs>),
    /// Print the MemoryStore CustomResourceDefinition as YAML (what `crds/` holds).
    Crd,
    /// Print manifests with the memgate sidecar injected where a pod template is annotated
    /// `memgate.dev/inject: <store>` (like `istioctl kube-inject`), for GitOps and review.
    Inject {
        /// The manifests (multi-document YAML; `-` for standard input).
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// The MemoryStore manifests the annotations may name.
        #[arg(short, long = "store", required = true)]
        stores: Vec<PathBuf>,
    },
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

#[derive(clap::Args)]
struct RunArgs {
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    #[arg(
        long,
        default_value = "0.0.0.0:8080",
        env = "MEMGATE_OPERATOR_ADMIN_LISTEN"
    )]
    admin_listen: SocketAddr,
    /// Elect a leader on a Lease, so only one replica reconciles at a time.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, env = "MEMGATE_OPERATOR_LEADER_ELECTION")]
    leader_election: bool,
    /// The Lease's namespace: the operator's own.
    #[arg(long, env = "POD_NAMESPACE", default_value = "memgate-system")]
    lease_namespace: String,
    /// This replica's name in the Lease.
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a Lease lasts without renewal.
    #[arg(long, default_value = "15s", value_parser = humantime::parse_duration)]
    lease_duration: Duration,
    /// Where the sidecar-injection webhook listens (HTTPS); `off` to run without it.
    #[arg(
        long,
        default_value = "0.0.0.0:8443",
        env = "MEMGATE_OPERATOR_WEBHOOK_LISTEN"
    )]
    webhook_listen: String,
    /// The webhook's Service (the names its certificate is for).
    #[arg(long, default_value = "memgate-webhook")]
    webhook_service: String,
    /// The Secret the operator keeps the webhook's certificate in.
    #[arg(long, default_value = "memgate-webhook-tls")]
    webhook_secret: String,
    /// The MutatingWebhookConfiguration whose caBundle the operator keeps current.
    #[arg(long, default_value = "memgate")]
    webhook_configuration: String,
    /// The memgate image for workers and sidecars of stores that name none (the chart passes
    /// its own image).
    #[arg(long, env = "MEMGATE_DEFAULT_IMAGE")]
    default_image: Option<String>,
    /// Watch MemoryStores (and read Secrets) in these namespaces only, comma-separated; empty
    /// for every namespace. The chart's `watchNamespaces` sets it together with a Role in each.
    #[arg(long, env = "MEMGATE_WATCH_NAMESPACES", value_delimiter = ',')]
    watch_namespaces: Vec<String>,
    /// Serve `tls.crt`/`tls.key` from this directory (e.g. a cert-manager Secret) instead of
    /// issuing and rotating the certificate itself.
    #[arg(long)]
    webhook_cert_dir: Option<PathBuf>,
}

/// Starts the injection webhook unless it is off. Every replica serves it (the Service
/// spreads admission requests). Two replicas issuing the first certificate at once: the loser's
/// write conflicts, it exits, and restarted it serves the winner's.
async fn start_webhook(
    client: &kube::Client,
    args: &RunArgs,
    stopped: tokio::sync::watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    use memgate_operator::webhook::{serve, stores::ApiLookup, ReloadableCert};
    use memgate_operator::webhook_certs::{current, keep_fresh, CertSource, WebhookCertSettings};
    if args.webhook_listen == "off" {
        return Ok(Vec::new());
    }
    let listen: SocketAddr = args.webhook_listen.parse().with_context(|| {
        format!(
            "--webhook-listen {:?} is not an address",
            args.webhook_listen
        )
    })?;
    let source = match &args.webhook_cert_dir {
        Some(dir) => CertSource::Files(dir.clone()),
        None => CertSource::Managed(WebhookCertSettings {
            namespace: args.lease_namespace.clone(),
            secret: args.webhook_secret.clone(),
            service: args.webhook_service.clone(),
            configuration: args.webhook_configuration.clone(),
        }),
    };
    let pem = current(client, &source)
        .await
        .context("webhook certificate")?;
    let serving = Arc::new(ReloadableCert::new(&pem.0, &pem.1)?);
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot bind {listen}"))?;
    tracing::info!(%listen, "injection webhook serving");
    let server = tokio::spawn(serve(
        listener,
        serving.server_config()?,
        Arc::new(ApiLookup(client.clone())),
        stopped,
    ));
    let refresher = tokio::spawn(keep_fresh(
        client.clone(),
        source,
        serving,
        pem,
        Duration::from_secs(3600),
    ));
    Ok(vec![server, refresher])
}

/// SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = terminate.recv() => {},
    }
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default()
        .await
        .context("no Kubernetes configuration (in-cluster or kubeconfig)")?;
    let metrics = Metrics::new();
    if let Some(image) = &args.default_image {
        memgate_operator::build::worker::set_default_image(image.clone());
    }
    let identity = args.identity.clone().unwrap_or_else(|| {
        std::env::var("HOSTNAME")
            .unwrap_or_else(|_| format!("memgate-operator-{}", std::process::id()))
    });

    let listener = tokio::net::TcpListener::bind(args.admin_listen)
        .await
        .with_context(|| format!("cannot bind {}", args.admin_listen))?;
    let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
    let admin_metrics = metrics.clone();
    let admin = tokio::spawn(memgate_operator::http::serve(
        "admin",
        listener,
        move |request: http::Request<hyper::body::Incoming>, _remote| {
            memgate_operator::admin::answer(request.uri().path(), &admin_metrics)
        },
        admin_stopped,
    ));
    tracing::info!(admin = %args.admin_listen, %identity, "memgate operator starting");
    let webhook = start_webhook(&client, &args, stop_admin.subscribe()).await?;

    let lease = LeaseSettings {
        name: "memgate-operator".into(),
        namespace: args.lease_namespace.clone(),
        identity: identity.clone(),
        duration: args.lease_duration,
    };
    let lost = Arc::new(AtomicBool::new(false));
    if args.leader_election {
        tokio::select! {
            _ = leader::acquire(&client, &lease) => {},
            _ = shutdown_signal() => {
                let _ = stop_admin.send(true);
                let _ = admin.await;
                for task in webhook {
                    task.abort();
                }
                return Ok(());
            }
        }
    }
    let holder = client.clone();
    let lost_flag = lost.clone();
    let leader_election = args.leader_election;
    // Stop on SIGTERM, or as soon as the Lease cannot be held.
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        if leader_election {
            tokio::select! {
                _ = shutdown_signal() => {},
                _ = leader::hold(&holder, &lease) => lost_flag.store(true, Ordering::SeqCst),
            }
        } else {
            shutdown_signal().await;
        }
        let _ = stop.send(());
    });
    let shutdown = async move {
        let _ = stopped.await;
    };
    let reporter = Reporter {
        controller: "memgate-operator".into(),
        instance: Some(identity),
    };
    let scope = memgate_operator::controller::Scope::from_namespaces(args.watch_namespaces.clone());
    memgate_operator::controller::run(client, metrics, reporter, scope, shutdown).await;
    let _ = stop_admin.send(true);
    let _ = admin.await;
    for task in webhook {
        task.abort();
    }
    if lost.load(Ordering::SeqCst) {
        anyhow::bail!("lost the leader Lease; exiting so a restart rejoins the election");
    }
    Ok(())
}

fn read(file: &PathBuf) -> anyhow::Result<String> {
    if file.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text)?;
        return Ok(text);
    }
    std::fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))
}

/// Every document of a multi-document YAML text, in order.
fn documents(text: &str) -> anyhow::Result<Vec<serde_json::Value>> {
    serde_yaml::Deserializer::from_str(text)
        .map(|document| Ok(serde::Deserialize::deserialize(document)?))
        .filter(|value: &anyhow::Result<serde_json::Value>| {
            !matches!(value, Ok(serde_json::Value::Null))
        })
        .collect()
}

fn inject(file: &PathBuf, store_files: &[PathBuf]) -> anyhow::Result<String> {
    let mut stores = Vec::new();
    for path in store_files {
        for document in documents(&read(path)?)? {
            let store: MemoryStore = serde_json::from_value(document)
                .with_context(|| format!("{} is not a MemoryStore", path.display()))?;
            stores.push(store);
        }
    }
    let mut out = Vec::new();
    for mut manifest in documents(&read(file)?)? {
        memgate_operator::inject::inject_manifest(&mut manifest, &stores)?;
        out.push(yaml(&manifest)?);
    }
    Ok(out.join("---\n"))
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
    let desired = build::build(&store, &build::SecretDigests::default())?;
    let mut out = String::new();
    for secret in desired
        .generated_secrets
        .iter()
        .map(|generated| &generated.secret)
    {
        out.push_str(&format!(
            "# Secret {} (key {}) is generated once by the operator when missing\n",
            secret.name, secret.key
        ));
    }
    let mut documents = vec![yaml(&desired.config_map)?];
    for part in [&desired.redis, &desired.qdrant].into_iter().flatten() {
        documents.push(yaml(&part.service)?);
        documents.push(yaml(&part.stateful_set)?);
        documents.push(yaml(&part.network_policy)?);
    }
    documents.push(yaml(&desired.worker)?);
    if let Some(budget) = &desired.worker_disruption_budget {
        documents.push(yaml(budget)?);
    }
    out.push_str(&documents.join("---\n"));
    Ok(out)
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MEMGATE_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if std::env::var("MEMGATE_LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            init_tracing();
            // Both of rustls's providers are compiled in (kube uses ring, other dependencies
            // aws-lc-rs), so rustls cannot pick one itself: without this the first TLS
            // connection to the API server panics.
            if rustls::crypto::ring::default_provider()
                .install_default()
                .is_err()
            {
                tracing::debug!("a rustls crypto provider was already installed");
            }
            run(*args).await?;
        }
        Command::Crd => print!("{}", crd_yaml()?),
        Command::Inject { file, stores } => print!("{}", inject(&file, &stores)?),
        Command::Render { file, namespace } => print!("{}", render(&file, &namespace)?),
    }
    Ok(())
}
