//! The operator, its CRD and its chart on a real Kubernetes control plane (etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok nodes, built from Go modules by
//! `scripts/control-plane.sh`): what the mocked API server of the other tests cannot show.
//!
//! One control plane serves the whole suite, one scenario after another (each in a namespace
//! of its own), so the two cores are not shared by several API servers.

use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use memgate_testkit::{free_port, log_tail, ControlPlane};
use serde_json::Value;

const OPERATOR_NAMESPACE: &str = "memgate-system";
/// The chart's release name; its objects and ServiceAccount are called this.
const RELEASE: &str = "memgate";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The control plane and what the scenarios share.
struct Cluster {
    plane: ControlPlane,
}

impl Cluster {
    fn kubectl(&self, args: &[&str]) -> anyhow::Result<String> {
        self.plane.kubectl_ok(args)
    }

    /// `kubectl get -o json`, or `None` when it does not exist.
    fn get(&self, kind: &str, name: &str, namespace: &str) -> anyhow::Result<Option<Value>> {
        let output = self
            .plane
            .kubectl(["get", kind, name, "-n", namespace, "-o", "json"])?;
        if !output.status.success() {
            let stderr = String::from_utf8_lossy(&output.stderr);
            if stderr.contains("NotFound") {
                return Ok(None);
            }
            bail!("kubectl get {kind} {name}: {stderr}");
        }
        Ok(Some(serde_json::from_slice(&output.stdout)?))
    }

    fn apply(&self, yaml: &str) -> anyhow::Result<()> {
        self.plane.apply_yaml(yaml)
    }

    /// `kubectl apply` of `yaml` expected to be refused: the refusal's text.
    fn refused(&self, args: &[&str], yaml: Option<&str>) -> anyhow::Result<String> {
        let output = match yaml {
            Some(yaml) => self.plane.kubectl_with_input(args, yaml)?,
            None => self.plane.kubectl(args)?,
        };
        if output.status.success() {
            bail!("kubectl {args:?} was accepted");
        }
        Ok(String::from_utf8_lossy(&output.stderr).into_owned())
    }

    /// Polls `check` every 250 ms until it gives a value or `timeout` passes; an error of
    /// `check` counts as not yet. Fails at once when RBAC refused the operator something, which
    /// no wait would mend.
    async fn wait<T>(
        &self,
        what: &str,
        timeout: Duration,
        mut check: impl FnMut(&Self) -> anyhow::Result<Option<T>>,
    ) -> anyhow::Result<T> {
        let deadline = Instant::now() + timeout;
        let mut last_error = None;
        loop {
            match check(self) {
                Ok(Some(value)) => return Ok(value),
                Ok(None) => {}
                Err(error) => last_error = Some(error),
            }
            no_refusals(self)?;
            if Instant::now() > deadline {
                bail!("{what}: not within {timeout:?} (last error: {last_error:?})");
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

/// A `memgate-operator run` process, killed on drop.
struct Operator {
    child: Child,
    log: PathBuf,
    admin: std::net::SocketAddr,
    webhook_port: u16,
}

/// The arguments the chart's Deployment gives the operator, as installed on the API server.
fn chart_operator_args(cluster: &Cluster) -> anyhow::Result<Vec<String>> {
    let deployment = cluster
        .get("deployment", RELEASE, OPERATOR_NAMESPACE)?
        .context("the chart's Deployment")?;
    let args = &deployment["spec"]["template"]["spec"]["containers"][0]["args"];
    args.as_array()
        .context("the operator container's args")?
        .iter()
        .map(|arg| arg.as_str().map(String::from).context("an arg"))
        .collect()
}

impl Operator {
    /// Runs the operator with the chart's arguments, but listening on free local ports and
    /// with a short Lease.
    fn start(
        kubeconfig: &Path,
        identity: &str,
        dir: &Path,
        chart_args: &[String],
    ) -> anyhow::Result<Self> {
        let admin_port = free_port()?;
        let webhook_port = free_port()?;
        let log = dir.join(format!("operator-{identity}.log"));
        let file = std::fs::File::create(&log)?;
        let kept = chart_args.iter().filter(|arg| {
            !arg.starts_with("--admin-listen") && !arg.starts_with("--webhook-listen")
        });
        let child = Command::new(env!("CARGO_BIN_EXE_memgate-operator"))
            .args(kept)
            .args([
                &format!("--admin-listen=127.0.0.1:{admin_port}"),
                &format!("--webhook-listen=0.0.0.0:{webhook_port}"),
                "--lease-duration=6s",
            ])
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAMESPACE", OPERATOR_NAMESPACE)
            .env("POD_NAME", identity)
            .env("MEMGATE_LOG_FORMAT", "text")
            .env("RUST_LOG", "info,memgate_operator=debug")
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .context("cannot run memgate-operator")?;
        Ok(Self {
            child,
            log,
            admin: ([127, 0, 0, 1], admin_port).into(),
            webhook_port,
        })
    }

    /// Its successful reconciles so far (`memgate_operator_reconciles_total{result="ok"}`).
    async fn reconciles(&self) -> anyhow::Result<f64> {
        let text = memgate_testkit::scrape_metrics(self.admin).await;
        Ok(memgate_testkit::metric_value(
            &text,
            r#"memgate_operator_reconciles_total{result="ok"}"#,
        )
        .unwrap_or_default())
    }

    /// The last `lines` lines the operator logged.
    fn log_tail(&self, lines: usize) -> String {
        log_tail(&self.log, lines)
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn sample(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).expect("the sample is readable")
}

/// 1. The CRD: established by `kubectl apply -f crds/`, explained, its columns printed, and
///    the invalid samples refused by the API server itself (schema and CEL, on create and on
///    update).
async fn the_crd_is_served_explained_and_enforced(cluster: &Cluster) -> anyhow::Result<()> {
    let crds = root().join("crds");
    cluster.kubectl(&["apply", "-f", &crds.display().to_string()])?;
    cluster.kubectl(&[
        "wait",
        "--for=condition=Established",
        "crd/memorystores.memgate.dev",
        "--timeout=60s",
    ])?;

    // The API server publishes a new CRD's OpenAPI a moment after it is established.
    let explained = cluster
        .wait("kubectl explain", Duration::from_secs(30), |c| {
            Ok(c.kubectl(&["explain", "memorystore.spec.cache"]).ok())
        })
        .await?;
    for field in ["memoryTtl", "searchTtl", "embeddingTtl"] {
        assert!(
            explained.contains(field),
            "explain lacks {field}:\n{explained}"
        );
    }
    assert!(
        !explained.contains("<empty>"),
        "a field without a description:\n{explained}"
    );

    cluster.kubectl(&["create", "namespace", "team-a"])?;
    for path in [
        "operator/tests/fixtures/managed.yaml",
        "examples/memorystore.yaml",
    ] {
        let path = root().join(path);
        cluster.kubectl(&[
            "apply",
            "--dry-run=server",
            "-n",
            "team-a",
            "-f",
            &path.display().to_string(),
        ])?;
    }
    for dir in ["schema", "cel"] {
        let dir = root().join("operator/tests/fixtures/invalid").join(dir);
        for entry in std::fs::read_dir(&dir)? {
            let path = entry?.path();
            let refusal = cluster.refused(
                &["apply", "-n", "team-a", "-f", &path.display().to_string()],
                None,
            )?;
            assert!(
                refusal.contains("is invalid") || refusal.contains("Invalid value"),
                "{}: refused, but not by validation: {refusal}",
                path.display()
            );
            if dir.ends_with("cel") {
                let first_line = std::fs::read_to_string(&path)?;
                let expected = first_line
                    .lines()
                    .next()
                    .and_then(|line| line.strip_prefix("# refused: "))
                    .context("a CEL fixture says what refuses it")?;
                assert!(refusal.contains(expected), "{}: {refusal}", path.display());
            }
        }
    }

    let managed = sample("operator/tests/fixtures/managed.yaml");
    cluster.apply(&managed)?;
    let collection = cluster.refused(
        &["apply", "-f", "-"],
        Some(&managed.replace("collection: agent-memories", "collection: other")),
    )?;
    assert!(
        collection.contains("collection is immutable"),
        "{collection}"
    );
    let table = cluster.kubectl(&["get", "mstore", "-n", "team-a"])?;
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(
        header,
        [
            "NAME",
            "AVAILABLE",
            "ROLLOUT",
            "REDIS",
            "QDRANT",
            "STEP",
            "MISMATCH",
            "AGE"
        ],
        "{table}"
    );
    let row: Vec<&str> = table
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    assert_eq!(row.first(), Some(&"notes"), "{table}");
    assert_eq!(row.get(1), Some(&"25"), "rollout column: {table}");
    cluster.kubectl(&["delete", "namespace", "team-a", "--wait=false"])?;
    Ok(())
}

/// The chart's objects, the operator started as the chart's ServiceAccount (a token, so any
/// verb missing from its roles is a 403), and the webhook Service pointed at that process.
/// The chart's own Deployment is kept off the nodes: the operator runs here, not from an image.
async fn the_chart_installs_and_the_operator_runs_as_its_service_account(
    cluster: &Cluster,
) -> anyhow::Result<Operator> {
    let helm = std::env::var_os("HELM")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("target/helm/helm"));
    // The operator watches the stores' namespaces only: a Role in each, none anywhere else.
    for namespace in [STORE_NAMESPACE, FAULTS_NAMESPACE, "plain"] {
        cluster.kubectl(&["create", "namespace", namespace])?;
    }
    let output = Command::new(&helm)
        .args(["install", RELEASE])
        .arg(root().join("charts/memgate"))
        .args(["--namespace", OPERATOR_NAMESPACE, "--create-namespace"])
        .args(["--set", "crds.install=false"])
        .args([
            "--set",
            &format!("watchNamespaces={{{STORE_NAMESPACE},{FAULTS_NAMESPACE}}}"),
        ])
        .args(["--set", "nodeSelector.memgate\\.dev/e2e=nowhere"])
        .arg("--kubeconfig")
        .arg(&cluster.plane.admin_kubeconfig)
        .output()
        .with_context(|| {
            format!(
                "cannot run {} (scripts/test.sh installs it)",
                helm.display()
            )
        })?;
    if !output.status.success() {
        bail!("helm install: {}", String::from_utf8_lossy(&output.stderr));
    }

    secrets_are_readable_only_where_stores_are_watched(cluster)?;

    let token = cluster.kubectl(&[
        "create",
        "token",
        RELEASE,
        "-n",
        OPERATOR_NAMESPACE,
        "--duration=2h",
    ])?;
    let kubeconfig = cluster.plane.token_kubeconfig("operator", token.trim())?;
    let args = chart_operator_args(cluster)?;
    if !args.contains(&format!(
        "--watch-namespaces={STORE_NAMESPACE},{FAULTS_NAMESPACE}"
    )) {
        bail!("the chart's operator does not watch its two namespaces alone: {args:?}");
    }
    let operator = Operator::start(&kubeconfig, "operator-a", cluster.plane.dir(), &args)?;

    // The API server calls the webhook at its Service's endpoints: here, this process.
    let service = format!("{RELEASE}-webhook");
    cluster.kubectl(&[
        "patch",
        "service",
        &service,
        "-n",
        OPERATOR_NAMESPACE,
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/selector"}]"#,
    ])?;
    cluster.apply(&format!(
        "apiVersion: v1\nkind: Endpoints\nmetadata: {{name: {service}, namespace: \
         {OPERATOR_NAMESPACE}}}\nsubsets:\n- addresses: [{{ip: \"{}\"}}]\n  ports: [{{name: webhook, \
         port: {}}}]\n",
        memgate_testkit::host_ip()?,
        operator.webhook_port
    ))?;

    let written = cluster
        .wait(
            "the operator writes the webhook's caBundle",
            Duration::from_secs(30),
            |c| {
                let configuration = c.get("mutatingwebhookconfiguration", RELEASE, "default")?;
                Ok(configuration.filter(|value| {
                    value["webhooks"][0]["clientConfig"]["caBundle"]
                        .as_str()
                        .is_some_and(|bundle| !bundle.is_empty())
                }))
            },
        )
        .await;
    match written {
        Ok(_) => Ok(operator),
        Err(error) => Err(error.context(operator.log_tail(40))),
    }
}

/// What the API server answers to `kubectl auth can-i <verb> <resource>` for the operator's
/// ServiceAccount in `namespace` (`None`: across all namespaces).
fn operator_can(
    cluster: &Cluster,
    verb: &str,
    resource: &str,
    namespace: Option<&str>,
) -> anyhow::Result<bool> {
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}");
    let mut args = vec!["auth", "can-i", verb, resource, "--as", &user];
    match namespace {
        Some(namespace) => args.extend(["-n", namespace]),
        None => args.push("--all-namespaces"),
    }
    // `can-i` exits 1 for "no": read the answer, not the status.
    let output = cluster.plane.kubectl(&args)?;
    match String::from_utf8_lossy(&output.stdout).trim() {
        "yes" => Ok(true),
        "no" => Ok(false),
        other => bail!(
            "kubectl auth can-i {verb} {resource}: {other:?} {}",
            String::from_utf8_lossy(&output.stderr)
        ),
    }
}

/// 2a. With `watchNamespaces`, the chart lets the operator read Secrets in the stores'
///     namespace and nowhere else.
fn secrets_are_readable_only_where_stores_are_watched(cluster: &Cluster) -> anyhow::Result<()> {
    for verb in ["get", "list", "watch"] {
        if !operator_can(cluster, verb, "secrets", Some(STORE_NAMESPACE))? {
            bail!("the operator cannot {verb} Secrets in {STORE_NAMESPACE}, its stores' namespace");
        }
        for elsewhere in [Some("plain"), Some("default"), None] {
            if operator_can(cluster, verb, "secrets", elsewhere)? {
                bail!(
                    "the operator can {verb} Secrets in {}",
                    elsewhere.unwrap_or("every namespace")
                );
            }
        }
    }
    if operator_can(cluster, "list", "memorystores.memgate.dev", Some("plain"))? {
        bail!("the operator can list MemoryStores outside its namespaces");
    }
    Ok(())
}

/// The children of store `notes` in the e2e namespace, as `kind/name`.
const CHILDREN: [&str; 9] = [
    "configmap/notes-proxy-config",
    "statefulset/notes-redis",
    "statefulset/notes-qdrant",
    "service/notes-redis",
    "service/notes-qdrant",
    "deployment/notes-worker",
    "poddisruptionbudget/notes-worker",
    "networkpolicy/notes-redis",
    "networkpolicy/notes-qdrant",
];
const STORE_NAMESPACE: &str = "team-e2e";
/// Where the stores that cannot be reconciled live (the operator watches both).
const FAULTS_NAMESPACE: &str = "team-faults";

fn split(child: &str) -> (&str, &str) {
    child.split_once('/').expect("kind/name")
}

/// Volumes for the managed parts: a StorageClass that allows expansion and PersistentVolumes
/// for its claims to bind to (there is no provisioner here).
fn volumes(cluster: &Cluster) -> anyhow::Result<()> {
    let mut yaml = String::from(
        "apiVersion: storage.k8s.io/v1\nkind: StorageClass\nmetadata: {name: e2e}\nprovisioner: \
         kubernetes.io/no-provisioner\nallowVolumeExpansion: true\nvolumeBindingMode: Immediate\n",
    );
    for index in 0..8 {
        yaml.push_str(&format!(
            "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: e2e-{index}}}\nspec:\n  \
             storageClassName: e2e\n  capacity: {{storage: 50Gi}}\n  accessModes: \
             [ReadWriteOnce]\n  hostPath: {{path: /tmp/memgate-e2e-{index}}}\n"
        ));
    }
    cluster.apply(&yaml)
}

fn store_yaml(redis_storage: &str) -> String {
    format!(
        "apiVersion: memgate.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: notes, namespace: \
         {STORE_NAMESPACE}}}\nspec:\n  redis:\n    managed: {{storage: {redis_storage}, \
         storageClassName: e2e}}\n  qdrant:\n    managed: {{storage: 2Gi, storageClassName: e2e}}\n    \
         collection: human_memories\n  openai:\n    apiKeySecretRef: {{name: openai, key: \
         api-key}}\n  workers: {{replicas: 2, concurrency: 4}}\n  proxy:\n    upstream: \
         http://127.0.0.1:3000\n"
    )
}

/// The store's status condition of this type.
fn condition_of<'a>(store: &'a Value, type_: &str) -> Option<&'a Value> {
    store["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

/// A condition's status (`True`/`False`).
fn condition(store: &Value, type_: &str) -> Option<String> {
    condition_of(store, type_)
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

/// 3. A MemoryStore applied: its children by server-side apply, pods scheduled on kwok nodes
///    and Ready, `Available=True`.
async fn a_store_becomes_available(cluster: &Cluster) -> anyhow::Result<()> {
    volumes(cluster)?;
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "openai",
        "-n",
        STORE_NAMESPACE,
        "--from-literal=api-key=sk-e2e",
    ])?;
    cluster.apply(&store_yaml("1Gi"))?;
    for child in CHILDREN {
        let (kind, name) = split(child);
        cluster
            .wait(child, Duration::from_secs(60), |c| {
                c.get(kind, name, STORE_NAMESPACE)
            })
            .await?;
    }
    cluster
        .wait("Available=True", Duration::from_secs(120), |c| {
            let store = c.get("memorystore", "notes", STORE_NAMESPACE)?;
            Ok(store.filter(|s| condition(s, "Available").as_deref() == Some("True")))
        })
        .await?;
    Ok(())
}

/// The resourceVersion of the store and of each child.
fn versions(cluster: &Cluster) -> anyhow::Result<Vec<(String, String)>> {
    let mut versions = Vec::new();
    for child in CHILDREN.iter().copied().chain(["memorystore/notes"]) {
        let (kind, name) = split(child);
        let object = cluster
            .get(kind, name, STORE_NAMESPACE)?
            .with_context(|| format!("{child} is gone"))?;
        let version = object["metadata"]["resourceVersion"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        versions.push((child.to_string(), version));
    }
    Ok(versions)
}

/// Waits until the store's status reports its current generation.
async fn observed(cluster: &Cluster) -> anyhow::Result<Value> {
    cluster
        .wait(
            "status.observedGeneration = metadata.generation",
            Duration::from_secs(60),
            |c| {
                let store = c.get("memorystore", "notes", STORE_NAMESPACE)?;
                Ok(store
                    .filter(|s| s["status"]["observedGeneration"] == s["metadata"]["generation"]))
            },
        )
        .await
}

/// 3b. Once everything settled, a reconcile (here forced by an annotation) writes nothing.
async fn a_second_reconcile_writes_nothing(
    cluster: &Cluster,
    operator: &Operator,
) -> anyhow::Result<()> {
    let mut settled = versions(cluster)?;
    let mut stable_since = Instant::now();
    cluster
        .wait("the children settle", Duration::from_secs(60), |c| {
            let now = versions(c)?;
            if now != settled {
                settled = now;
                stable_since = Instant::now();
            }
            Ok((stable_since.elapsed() > Duration::from_secs(3)).then_some(()))
        })
        .await?;
    let reconciles = operator.reconciles().await?;
    cluster.kubectl(&[
        "annotate",
        "memorystore",
        "notes",
        "-n",
        STORE_NAMESPACE,
        "e2e.memgate.dev/poke=1",
    ])?;
    let before = versions(cluster)?;
    let mut done = false;
    for _ in 0..120 {
        if operator.reconciles().await? > reconciles {
            done = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if !done {
        bail!("no reconcile after the annotation");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = versions(cluster)?;
    let changed: Vec<String> = before
        .iter()
        .zip(&after)
        .filter(|(b, a)| b != a)
        .map(|(b, a)| format!("{} {} -> {}", b.0, b.1, a.1))
        .collect();
    if !changed.is_empty() {
        bail!("a reconcile with nothing to do wrote: {changed:?}");
    }
    Ok(())
}

fn claim_storage(cluster: &Cluster, claim: &str) -> anyhow::Result<Option<String>> {
    Ok(cluster
        .get("persistentvolumeclaim", claim, STORE_NAMESPACE)?
        .and_then(|c| {
            c["spec"]["resources"]["requests"]["storage"]
                .as_str()
                .map(String::from)
        }))
}

/// 3c. Growing `storage` grows the claim and leaves the StatefulSet's `volumeClaimTemplates`
///     alone (the API server refuses to change them).
async fn storage_grows(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.apply(&store_yaml("3Gi"))?;
    cluster
        .wait(
            "the redis claim grows to 3Gi",
            Duration::from_secs(60),
            |c| {
                Ok(
                    (claim_storage(c, "data-notes-redis-0")?.as_deref() == Some("3Gi"))
                        .then_some(()),
                )
            },
        )
        .await?;
    let store = observed(cluster).await?;
    if condition(&store, "Degraded").as_deref() == Some("True") {
        bail!("Degraded after growing storage: {}", store["status"]);
    }
    let set = cluster
        .get("statefulset", "notes-redis", STORE_NAMESPACE)?
        .context("notes-redis")?;
    let template =
        &set["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"];
    if template != "1Gi" {
        bail!("volumeClaimTemplates changed: {template}");
    }
    Ok(())
}

/// The pod template's annotations (where the config and Secret hashes are), as JSON text.
fn pod_template_annotation(cluster: &Cluster, child: &str) -> anyhow::Result<Option<String>> {
    let (kind, name) = split(child);
    Ok(cluster.get(kind, name, STORE_NAMESPACE)?.and_then(|o| {
        let annotations = &o["spec"]["template"]["metadata"]["annotations"];
        (!annotations.is_null()).then(|| annotations.to_string())
    }))
}

/// 3d. A rotated Secret rolls everything that reads it: the OpenAI key the workers, the
///     generated Redis password Redis itself and the workers.
async fn a_rotated_secret_rolls_what_reads_it(cluster: &Cluster) -> anyhow::Result<()> {
    for (secret, key, readers) in [
        ("openai", "api-key", &["deployment/notes-worker"][..]),
        (
            "notes-redis-auth",
            "password",
            &["statefulset/notes-redis", "deployment/notes-worker"][..],
        ),
    ] {
        let mut before = Vec::new();
        for reader in readers {
            before.push(pod_template_annotation(cluster, reader)?);
        }
        let value = format!("rotated-{}", uuid::Uuid::new_v4().simple());
        use base64::Engine;
        let encoded = base64::engine::general_purpose::STANDARD.encode(value);
        cluster.kubectl(&[
            "patch",
            "secret",
            secret,
            "-n",
            STORE_NAMESPACE,
            "--type=merge",
            "-p",
            &format!(r#"{{"data":{{"{key}":"{encoded}"}}}}"#),
        ])?;
        for (reader, before) in readers.iter().zip(before) {
            cluster
                .wait(
                    &format!("{reader} rolls after {secret} changed"),
                    Duration::from_secs(60),
                    |c| {
                        let now = pod_template_annotation(c, reader)?;
                        Ok((now.is_some() && now != before).then_some(()))
                    },
                )
                .await?;
        }
    }
    Ok(())
}

fn replicas(cluster: &Cluster) -> anyhow::Result<i64> {
    Ok(cluster
        .get("deployment", "notes-worker", STORE_NAMESPACE)?
        .and_then(|d| d["spec"]["replicas"].as_i64())
        .unwrap_or_default())
}

fn patch_store(cluster: &Cluster, patch: &str) -> anyhow::Result<String> {
    cluster.kubectl(&[
        "patch",
        "memorystore",
        "notes",
        "-n",
        STORE_NAMESPACE,
        "--type=merge",
        "-p",
        patch,
    ])
}

/// 3e. `paused`: changes wait until it is cleared.
async fn a_paused_store_is_left_alone(cluster: &Cluster) -> anyhow::Result<()> {
    patch_store(cluster, r#"{"spec":{"paused":true}}"#)?;
    observed(cluster).await?;
    patch_store(cluster, r#"{"spec":{"workers":{"replicas":3}}}"#)?;
    let store = observed(cluster).await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if replicas(cluster)? != 2 {
        bail!("a paused store's workers were scaled");
    }
    let progressing = condition_of(&store, "Progressing")
        .map(|c| c["message"].to_string())
        .unwrap_or_default();
    if !progressing.contains("paused") {
        bail!("the status does not say the store is paused: {progressing}");
    }
    patch_store(cluster, r#"{"spec":{"paused":false}}"#)?;
    cluster
        .wait(
            "the workers scale once unpaused",
            Duration::from_secs(30),
            |c| Ok((replicas(c)? == 3).then_some(())),
        )
        .await
}

/// 3f. Managed → external: the managed Redis's StatefulSet and Service are deleted, and the
///     external URL's credentials appear neither in the ConfigMap nor in the status.
async fn managed_to_external_cleans_up(cluster: &Cluster) -> anyhow::Result<()> {
    let external = |redis: &str| {
        store_yaml("3Gi").replace(
            "  redis:\n    managed: {storage: 3Gi, storageClassName: e2e}\n",
            &format!("  redis:\n    external: {redis}\n"),
        )
    };
    let refusal = cluster.refused(
        &["apply", "-f", "-"],
        Some(&external(
            r#"{url: "redis://memgate:hunter2@redis.example:6379"}"#,
        )),
    )?;
    if !refusal.contains("must not carry a password") {
        bail!("a password in the URL: {refusal}");
    }
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "external-redis",
        "-n",
        STORE_NAMESPACE,
        "--from-literal=password=hunter2",
    ])?;
    cluster.apply(&external(
        r#"{url: "redis://memgate@redis.example:6379", passwordSecretRef: {name: external-redis, key: password}}"#,
    ))?;
    for child in [
        "statefulset/notes-redis",
        "service/notes-redis",
        "networkpolicy/notes-redis",
    ] {
        let (kind, name) = split(child);
        cluster
            .wait(&format!("{child} deleted"), Duration::from_secs(60), |c| {
                Ok(c.get(kind, name, STORE_NAMESPACE)?.is_none().then_some(()))
            })
            .await?;
    }
    let store = observed(cluster).await?;
    let config = cluster
        .get("configmap", "notes-proxy-config", STORE_NAMESPACE)?
        .context("the config map")?;
    for (what, text) in [
        ("ConfigMap", config.to_string()),
        ("status", store["status"].to_string()),
    ] {
        if text.contains("hunter2") {
            bail!("the external URL's password is in the {what}: {text}");
        }
    }
    Ok(())
}

/// 3h. Deleting the store garbage-collects every child.
async fn deleting_the_store_collects_its_children(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.kubectl(&["delete", "memorystore", "notes", "-n", STORE_NAMESPACE])?;
    for child in CHILDREN
        .iter()
        .chain(&["secret/notes-qdrant-auth", "secret/notes-redis-auth"])
    {
        let (kind, name) = split(child);
        cluster
            .wait(
                &format!("{child} collected"),
                Duration::from_secs(60),
                |c| Ok(c.get(kind, name, STORE_NAMESPACE)?.is_none().then_some(())),
            )
            .await?;
    }
    Ok(())
}

fn pod_yaml(name: &str, namespace: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {namespace}\n  \
         annotations: {{memgate.dev/inject: notes}}\nspec:\n  containers:\n  - {{name: agent, \
         image: example/agent:1.4}}\n"
    )
}

/// The names of a pod's init containers that run as native sidecars.
fn sidecars(cluster: &Cluster, name: &str, namespace: &str) -> anyhow::Result<Vec<String>> {
    let pod = cluster
        .get("pod", name, namespace)?
        .with_context(|| format!("pod {namespace}/{name}"))?;
    Ok(pod["spec"]["initContainers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|c| c["restartPolicy"] == "Always")
        .filter_map(|c| c["name"].as_str().map(String::from))
        .collect())
}

/// 4. The webhook, called by the API server over TLS with the caBundle the operator wrote:
///    a pod in a labelled namespace gets the native sidecar; one elsewhere is left alone.
async fn the_webhook_injects_the_sidecar(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.kubectl(&[
        "label",
        "namespace",
        STORE_NAMESPACE,
        "memgate.dev/injection=enabled",
    ])?;
    cluster.apply(&pod_yaml("agent", STORE_NAMESPACE))?;
    let injected = sidecars(cluster, "agent", STORE_NAMESPACE)?;
    if injected != ["memgate-proxy"] {
        bail!("a pod in a labelled namespace got sidecars {injected:?}");
    }
    // The store's Secrets reach the sidecar as files (which the kubelet rewrites on rotation),
    // one per credential, as the API server stored the pod.
    let pod = cluster
        .get("pod", "agent", STORE_NAMESPACE)?
        .context("the injected pod")?;
    let projected: Vec<&str> = pod["spec"]["volumes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|volume| volume["name"] == "memgate-credentials")
        .flat_map(|volume| {
            volume["projected"]["sources"]
                .as_array()
                .into_iter()
                .flatten()
        })
        .filter_map(|source| source["secret"]["name"].as_str())
        .collect();
    if projected != ["notes-redis-auth", "notes-qdrant-auth", "openai"] {
        bail!("the sidecar's credentials volume projects {projected:?}");
    }
    // The store's NetworkPolicies let pods with this label reach its Redis and Qdrant.
    if pod["metadata"]["labels"]["memgate.dev/store"] != "notes" {
        bail!(
            "the injected pod is not labelled for its store: {}",
            pod["metadata"]
        );
    }
    let files: Vec<&str> = pod["spec"]["initContainers"][0]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|var| var["name"].as_str())
        .filter(|name| name.ends_with("_FILE"))
        .collect();
    if files.len() != 3 {
        bail!("the sidecar reads {files:?} from files, not its three credentials");
    }
    cluster.apply(&pod_yaml("agent", "plain"))?;
    let untouched = sidecars(cluster, "agent", "plain")?;
    if !untouched.is_empty() {
        bail!("a pod in an unlabelled namespace got sidecars {untouched:?}");
    }
    Ok(())
}

/// The API server's count of calls to the webhook that failed open.
fn webhook_fail_open(cluster: &Cluster) -> anyhow::Result<f64> {
    let metrics = cluster.kubectl(&["get", "--raw", "/metrics"])?;
    Ok(metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_admission_webhook_fail_open_count")
                && line.contains("inject.memgate.dev")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

/// 4b. With the webhook down and `failurePolicy: Ignore`, a pod is created without the
///     sidecar, and the API server counts the call that failed open.
async fn with_the_webhook_down_pods_are_created_without_it(
    cluster: &Cluster,
) -> anyhow::Result<()> {
    let before = webhook_fail_open(cluster)?;
    cluster.apply(&pod_yaml("agent-while-down", STORE_NAMESPACE))?;
    let injected = sidecars(cluster, "agent-while-down", STORE_NAMESPACE)?;
    if !injected.is_empty() {
        bail!("injected with no webhook running: {injected:?}");
    }
    let after = webhook_fail_open(cluster)?;
    if after <= before {
        bail!("apiserver_admission_webhook_fail_open_count did not count it ({before} -> {after})");
    }
    Ok(())
}

fn lease_holder(cluster: &Cluster) -> anyhow::Result<Option<String>> {
    Ok(cluster
        .get("lease", "memgate-operator", OPERATOR_NAMESPACE)?
        .and_then(|lease| lease["spec"]["holderIdentity"].as_str().map(String::from)))
}

/// 3g. Two operators: the leader SIGKILLed, the other takes over within the lease duration
///     and reconciles.
async fn the_other_operator_takes_over(
    cluster: &Cluster,
    leader: Operator,
    kubeconfig: &Path,
) -> anyhow::Result<Operator> {
    let args = chart_operator_args(cluster)?;
    let standby = Operator::start(kubeconfig, "operator-b", cluster.plane.dir(), &args)?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    if lease_holder(cluster)?.as_deref() != Some("operator-a") {
        bail!(
            "operator-a does not hold the lease: {:?}",
            lease_holder(cluster)?
        );
    }
    drop(leader); // SIGKILL
    let killed = Instant::now();
    cluster
        .wait("operator-b takes the lease", Duration::from_secs(20), |c| {
            Ok((lease_holder(c)?.as_deref() == Some("operator-b")).then_some(()))
        })
        .await
        .map_err(|error| error.context(standby.log_tail(30)))?;
    let took = killed.elapsed();
    eprintln!(
        "operator-b took over {:.1} s after operator-a was killed",
        took.as_secs_f64()
    );
    // The Lease expires at most its duration (6 s) after the kill; the standby tries every
    // third of it (2 s); 2 s more for a loaded machine.
    if took > Duration::from_secs(6 + 2 + 2) {
        bail!("the takeover took {took:?}: more than the 6 s lease, one retry and 2 s");
    }
    patch_store(cluster, r#"{"spec":{"workers":{"replicas":2}}}"#)?;
    cluster
        .wait("the new leader reconciles", Duration::from_secs(30), |c| {
            Ok((replicas(c)? == 2).then_some(()))
        })
        .await?;
    Ok(standby)
}

/// The operator's requests, from the API server's audit log: the (group, resource, verb)
/// grants it used, and the requests RBAC refused.
type Grant = (String, String, String);
fn operator_requests(
    cluster: &Cluster,
) -> anyhow::Result<(std::collections::BTreeSet<Grant>, Vec<String>)> {
    let user = format!("system:serviceaccount:{OPERATOR_NAMESPACE}:{RELEASE}");
    let mut used = std::collections::BTreeSet::new();
    let mut refused = Vec::new();
    for event in cluster.plane.audit_events()? {
        if event["user"]["username"] != user.as_str() {
            continue;
        }
        let object = &event["objectRef"];
        let resource = match object["subresource"].as_str() {
            Some(sub) => format!("{}/{sub}", object["resource"].as_str().unwrap_or_default()),
            None => object["resource"].as_str().unwrap_or_default().to_string(),
        };
        let group = object["apiGroup"].as_str().unwrap_or_default().to_string();
        let verb = event["verb"].as_str().unwrap_or_default().to_string();
        // A 403 from RBAC, not from admission (say, a namespace being deleted).
        if event["annotations"]["authorization.k8s.io/decision"] == "forbid" {
            refused.push(format!(
                "{verb} {group}/{resource}: {}",
                event["requestURI"]
            ));
        }
        used.insert((group, resource, verb));
    }
    Ok((used, refused))
}

/// Fails when RBAC refused the operator something (a verb missing from the chart's roles).
fn no_refusals(cluster: &Cluster) -> anyhow::Result<()> {
    let (_, refused) = operator_requests(cluster)?;
    if !refused.is_empty() {
        bail!("the chart's roles refused the operator: {refused:#?}");
    }
    Ok(())
}

/// 2b. What the operator did as the chart's ServiceAccount, from the API server's audit log:
///     no request refused (a verb missing from the chart's roles), and the grants it never
///     used, reported.
fn the_chart_grants_what_the_operator_uses(cluster: &Cluster) -> anyhow::Result<()> {
    let (used, refused) = operator_requests(cluster)?;
    if !refused.is_empty() {
        bail!("the chart's roles refused the operator: {refused:#?}");
    }
    let mut unused = Vec::new();
    let stores_role = format!("{RELEASE}-stores");
    for (kind, name, namespace) in [
        ("clusterrole", RELEASE, "default"),
        ("role", RELEASE, OPERATOR_NAMESPACE),
        ("role", stores_role.as_str(), STORE_NAMESPACE),
    ] {
        let role = cluster
            .get(kind, name, namespace)?
            .with_context(|| format!("{kind} {name}"))?;
        for rule in role["rules"].as_array().into_iter().flatten() {
            let strings = |field: &str| -> Vec<String> {
                rule[field]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect()
            };
            for group in strings("apiGroups") {
                for resource in strings("resources") {
                    for verb in strings("verbs") {
                        let grant =
                            |verb: &str| (group.clone(), resource.clone(), verb.to_string());
                        // Server-side apply is a PATCH, and the API server checks `create`
                        // itself when the object is new: no request of its own is audited.
                        let applied = verb == "create" && used.contains(&grant("patch"));
                        if !applied && !used.contains(&grant(&verb)) {
                            unused.push(format!("{kind} {verb} {group}/{resource}"));
                        }
                    }
                }
            }
        }
    }
    eprintln!(
        "the operator used {} (group, resource, verb) grants; granted but not used in this run: {unused:?}",
        used.len()
    );
    Ok(())
}
/// A `memgate` process (serve or worker), killed on drop.
struct Memgate {
    child: Child,
    log: PathBuf,
}

impl Memgate {
    fn start(
        command: &str,
        config: &Path,
        env: &[(&str, String)],
        dir: &Path,
    ) -> anyhow::Result<Self> {
        let log = dir.join(format!("memgate-{command}.log"));
        let file = std::fs::File::create(&log)?;
        let child = Command::new(memgate_testkit::memgate_binary())
            .args([command, "--config"])
            .arg(config)
            .envs(env.iter().map(|(name, value)| (*name, value.as_str())))
            .stdout(file.try_clone()?)
            .stderr(file)
            .spawn()
            .with_context(|| format!("cannot run memgate {command}"))?;
        Ok(Self { child, log })
    }

    fn log_tail(&self) -> String {
        log_tail(&self.log, 20)
    }

    /// How it exited, if it has.
    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for Memgate {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// 5. The config a MemoryStore renders, read back from the API server, runs a real
///    `memgate serve` and `memgate worker` here: a store with an external Redis (a local
///    `redis-server`), the hashing embedder and the local enricher, in front of a stand-in
///    legacy service. No Qdrant server can run here: the serve answers without it (forwarding
///    to legacy), the worker waits for the Qdrant the config names. The serve's addresses are moved off the sidecar defaults the way the
///    webhook moves them (`MEMGATE_LISTEN`, `MEMGATE_ADMIN_LISTEN`): this machine is no pod.
async fn the_rendered_config_runs_memgate(cluster: &Cluster) -> anyhow::Result<()> {
    let redis = memgate_testkit::RedisServer::start()?;
    let legacy = memgate_testkit::FakeUpstream::start().await?;
    let namespace = STORE_NAMESPACE;
    cluster.apply(&format!(
        "apiVersion: memgate.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: served, \
         namespace: {namespace}}}\nspec:\n  redis:\n    external: {{url: \"{}\"}}\n  qdrant:\n    \
         external: {{url: \"http://127.0.0.1:1\"}}\n  embeddings: {{provider: hashing, model: \
         memgate-hashing-v1, dimensions: 384}}\n  enrichment: {{provider: local}}\n  workers: \
         {{replicas: 1}}\n  proxy:\n    upstream: \"{}\"\n",
        redis.url(),
        legacy.url()
    ))?;
    let config = cluster
        .wait("the rendered ConfigMap", Duration::from_secs(60), |c| {
            Ok(c.get("configmap", "served-proxy-config", namespace)?
                .and_then(|map| map["data"]["config.yaml"].as_str().map(String::from)))
        })
        .await?;
    let path = cluster.plane.dir().join("served-config.yaml");
    std::fs::write(&path, &config)?;

    let (api, admin) = (free_port()?, free_port()?);
    let env = [
        ("MEMGATE_LISTEN", format!("127.0.0.1:{api}")),
        ("MEMGATE_ADMIN_LISTEN", format!("127.0.0.1:{admin}")),
    ];
    let serve = Memgate::start("serve", &path, &env, cluster.plane.dir())?;
    let worker_env = [(
        "MEMGATE_ADMIN_LISTEN",
        format!("127.0.0.1:{}", free_port()?),
    )];
    let mut worker = Memgate::start("worker", &path, &worker_env, cluster.plane.dir())?;
    let answered = async {
        let http = reqwest::Client::new();
        let mut healthy = false;
        for _ in 0..100 {
            let health = http
                .get(format!("http://127.0.0.1:{admin}/healthz"))
                .send()
                .await;
            if health.is_ok_and(|r| r.status().is_success()) {
                healthy = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        if !healthy {
            bail!("memgate serve never answered /healthz");
        }
        // A request off the fast path reaches the legacy service through it.
        let forwarded = http
            .get(format!("http://127.0.0.1:{api}/api/legacy-only"))
            .send()
            .await?;
        let received = legacy.received();
        if !received
            .iter()
            .any(|r| r.path_and_query.contains("legacy-only"))
        {
            bail!(
                "not forwarded to the legacy service (answer {})",
                forwarded.status()
            );
        }
        // The worker runs on the same config: there is no Qdrant server here, so it waits for
        // the one the config names before it takes jobs, and says so.
        for _ in 0..100 {
            if worker.log_tail().contains("127.0.0.1:1") {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("memgate worker did not come to the config's Qdrant")
    }
    .await;
    if let Some(status) = worker.exited() {
        return Err(anyhow::anyhow!("memgate worker exited ({status})")).context(worker.log_tail());
    }
    answered.map_err(|error| {
        error.context(format!(
            "--- memgate serve\n{}\n--- memgate worker\n{}",
            serve.log_tail(),
            worker.log_tail()
        ))
    })
}

fn degraded_reason(store: &Value) -> Option<(String, String)> {
    condition_of(store, "Degraded").map(|c| {
        (
            c["status"].as_str().unwrap_or_default().to_string(),
            c["reason"].as_str().unwrap_or_default().to_string(),
        )
    })
}

/// 3i. What the reconciler cannot do is reported and changes nothing: a store whose OpenAI
///     Secret is missing is `Degraded/SecretNotFound` with no children until the Secret
///     appears, then converges; a spec the schema lets through but the proxy refuses (a zero
///     TTL) is `Degraded/InvalidSpec`; a smaller `storage` is `Degraded/StorageShrinkRefused`
///     and the claim keeps its size.
async fn what_cannot_be_done_is_reported(cluster: &Cluster) -> anyhow::Result<()> {
    let namespace = FAULTS_NAMESPACE;
    let store = |name: &str, extra: &str| {
        format!(
            "apiVersion: memgate.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: {name}, \
             namespace: {namespace}}}\nspec:\n  redis:\n    managed: {{storage: 2Gi, \
             storageClassName: e2e}}\n  qdrant:\n    external: {{url: \"http://qdrant.example:6334\"}}\n  \
             openai:\n    apiKeySecretRef: {{name: openai, key: api-key}}\n  proxy:\n    upstream: \
             http://127.0.0.1:3000\n{extra}"
        )
    };
    let degraded = |name: &'static str, reason: &'static str| {
        move |c: &Cluster| -> anyhow::Result<Option<Value>> {
            let store = c.get("memorystore", name, namespace)?;
            Ok(store
                .filter(|s| degraded_reason(s) == Some(("True".to_string(), reason.to_string()))))
        }
    };

    cluster.apply(&store("lost", ""))?;
    let lost = cluster
        .wait(
            "lost: Degraded/SecretNotFound",
            Duration::from_secs(30),
            degraded("lost", "SecretNotFound"),
        )
        .await?;
    if !lost["status"]["observedGeneration"].is_null() {
        bail!(
            "a store never applied reports observedGeneration: {}",
            lost["status"]
        );
    }
    if cluster
        .get("deployment", "lost-worker", namespace)?
        .is_some()
    {
        bail!("a store with a missing Secret got its workers");
    }
    cluster.kubectl(&[
        "create",
        "secret",
        "generic",
        "openai",
        "-n",
        namespace,
        "--from-literal=api-key=sk-e2e",
    ])?;
    cluster
        .wait(
            "lost converges once its Secret exists",
            Duration::from_secs(60),
            |c| c.get("deployment", "lost-worker", namespace),
        )
        .await?;

    cluster.apply(&store("zero", "  cache: {memoryTtl: 0s}\n"))?;
    cluster
        .wait(
            "zero: Degraded/InvalidSpec",
            Duration::from_secs(30),
            degraded("zero", "InvalidSpec"),
        )
        .await?;
    if cluster
        .get("configmap", "zero-proxy-config", namespace)?
        .is_some()
    {
        bail!("an invalid spec was applied");
    }

    cluster
        .wait("lost's Redis claim", Duration::from_secs(60), |c| {
            c.get("persistentvolumeclaim", "data-lost-redis-0", namespace)
        })
        .await?;
    cluster.apply(&store("lost", "").replace("storage: 2Gi", "storage: 1Gi"))?;
    cluster
        .wait(
            "lost: Degraded/StorageShrinkRefused",
            Duration::from_secs(30),
            degraded("lost", "StorageShrinkRefused"),
        )
        .await?;
    let claim = cluster
        .get("persistentvolumeclaim", "data-lost-redis-0", namespace)?
        .context("the claim")?;
    if claim["spec"]["resources"]["requests"]["storage"] != "2Gi" {
        bail!("the claim shrank: {}", claim["spec"]["resources"]);
    }
    Ok(())
}

/// Runs one scenario, failing with the control plane's and the operators' logs.
/// A store whose Redis has `replicas` nodes, on a distributed Qdrant of three peers.
fn replicated_store_yaml(replicas: u32) -> String {
    format!(
        "apiVersion: memgate.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: replicated, \
         namespace: {STORE_NAMESPACE}}}\nspec:\n  redis:\n    managed: {{storage: 1Gi, \
         storageClassName: e2e, replicas: {replicas}}}\n  qdrant:\n    managed: {{storage: 2Gi, \
         storageClassName: e2e, replicas: 3}}\n  openai:\n    apiKeySecretRef: {{name: openai, key: \
         api-key}}\n  workers: {{replicas: 1, concurrency: 4}}\n  proxy:\n    upstream: \
         http://127.0.0.1:3000\n"
    )
}

fn replicated_set_replicas(cluster: &Cluster, name: &str) -> anyhow::Result<Option<i64>> {
    Ok(cluster
        .get("statefulset", name, STORE_NAMESPACE)?
        .and_then(|set| set["spec"]["replicas"].as_i64()))
}

/// 3h. Redis with replicas: refused with 2 nodes by the CRD; with 3, a primary and replicas
///     with stable names and three Sentinels, spread over nodes, one pod down at a time, all
///     accepted by the API server, the config naming the Sentinels; Qdrant's distributed mode
///     with three peers and their peer-to-peer port, the collection sharded over them;
///     `Available` once they run; Redis scaled 3 → 5.
async fn a_replicated_redis_runs_under_sentinel(cluster: &Cluster) -> anyhow::Result<()> {
    let mut volumes = String::new();
    for index in 0..9 {
        volumes.push_str(&format!(
            "---\napiVersion: v1\nkind: PersistentVolume\nmetadata: {{name: e2e-replicated-{index}}}\n\
             spec:\n  storageClassName: e2e\n  capacity: {{storage: 50Gi}}\n  accessModes: \
             [ReadWriteOnce]\n  hostPath: {{path: /tmp/memgate-e2e-replicated-{index}}}\n"
        ));
    }
    cluster.apply(&volumes)?;
    let refused = cluster.refused(&["apply", "-f", "-"], Some(&replicated_store_yaml(2)))?;
    if !refused.contains("replicas is 1 (one node) or 3 to 9") {
        bail!("two Redis nodes were not refused as expected: {refused}");
    }
    cluster.apply(&replicated_store_yaml(3))?;
    let children = [
        "statefulset/replicated-redis",
        "statefulset/replicated-redis-sentinel",
        "service/replicated-redis",
        "service/replicated-redis-headless",
        "service/replicated-redis-sentinel",
        "service/replicated-redis-sentinel-any",
        "poddisruptionbudget/replicated-redis",
        "poddisruptionbudget/replicated-redis-sentinel",
        "networkpolicy/replicated-redis-sentinel",
        "service/replicated-qdrant-headless",
        "poddisruptionbudget/replicated-qdrant",
    ];
    for child in children {
        let (kind, name) = split(child);
        cluster
            .wait(child, Duration::from_secs(60), |c| {
                c.get(kind, name, STORE_NAMESPACE)
            })
            .await?;
    }
    let redis = cluster
        .get("statefulset", "replicated-redis", STORE_NAMESPACE)?
        .context("redis")?;
    let spec = &redis["spec"];
    let anti_affinity = &spec["template"]["spec"]["affinity"]["podAntiAffinity"]
        ["preferredDuringSchedulingIgnoredDuringExecution"][0]["podAffinityTerm"]["topologyKey"];
    if spec["replicas"] != 3
        || spec["serviceName"] != "replicated-redis-headless"
        || anti_affinity != "kubernetes.io/hostname"
    {
        bail!("the Redis StatefulSet is not as built: {spec}");
    }
    let headless = cluster
        .get("service", "replicated-redis-headless", STORE_NAMESPACE)?
        .context("headless")?;
    if headless["spec"]["clusterIP"] != "None" {
        bail!(
            "the Redis pods' Service is not headless: {}",
            headless["spec"]
        );
    }
    let sentinels = cluster
        .get("statefulset", "replicated-redis-sentinel", STORE_NAMESPACE)?
        .context("sentinels")?;
    if sentinels["spec"]["replicas"] != 3 || sentinels["spec"]["podManagementPolicy"] != "Parallel"
    {
        bail!("the Sentinels are not as built: {}", sentinels["spec"]);
    }
    let qdrant = cluster
        .get("statefulset", "replicated-qdrant", STORE_NAMESPACE)?
        .context("qdrant")?;
    let peer_ports = qdrant["spec"]["template"]["spec"]["containers"][0]["ports"].to_string();
    if qdrant["spec"]["replicas"] != 3
        || qdrant["spec"]["serviceName"] != "replicated-qdrant-headless"
        || !peer_ports.contains("6335")
    {
        bail!("the distributed Qdrant is not as built: {}", qdrant["spec"]);
    }
    let config = cluster
        .get("configmap", "replicated-proxy-config", STORE_NAMESPACE)?
        .context("config")?;
    let yaml = config["data"]["config.yaml"].as_str().unwrap_or_default();
    if !yaml.contains(
        "redis+sentinel://replicated-redis-sentinel-0.replicated-redis-sentinel.team-e2e.svc:26379",
    ) {
        bail!("the config does not name the Sentinels: {yaml}");
    }
    if !yaml.contains("shardNumber: 3") {
        bail!("the config does not shard the collection over the peers: {yaml}");
    }
    cluster
        .wait("Available=True", Duration::from_secs(120), |c| {
            let store = c.get("memorystore", "replicated", STORE_NAMESPACE)?;
            Ok(store.filter(|s| condition(s, "Available").as_deref() == Some("True")))
        })
        .await?;
    cluster.kubectl(&[
        "patch",
        "memorystore",
        "replicated",
        "-n",
        STORE_NAMESPACE,
        "--type=merge",
        "-p",
        r#"{"spec":{"redis":{"managed":{"replicas":5}}}}"#,
    ])?;
    cluster
        .wait("Redis scaled to 5", Duration::from_secs(60), |c| {
            Ok((replicated_set_replicas(c, "replicated-redis")? == Some(5)).then_some(()))
        })
        .await?;
    if replicated_set_replicas(cluster, "replicated-redis-sentinel")? != Some(3) {
        bail!("the Sentinels scaled with Redis");
    }
    cluster.kubectl(&["delete", "memorystore", "replicated", "-n", STORE_NAMESPACE])?;
    Ok(())
}

/// A store whose workers autoscale (`lagPerReplica` as given).
fn autoscaled_store_yaml(lag_per_replica: u32) -> String {
    format!(
        "apiVersion: memgate.dev/v1alpha1\nkind: MemoryStore\nmetadata: {{name: scaled, \
         namespace: {STORE_NAMESPACE}}}\nspec:\n  redis:\n    managed: {{storage: 1Gi, \
         storageClassName: e2e}}\n  qdrant:\n    external: {{url: \"http://qdrant.example:6334\"}}\n  \
         openai:\n    apiKeySecretRef: {{name: openai, key: api-key}}\n  workers:\n    \
         autoscale: {{min: 1, max: 4, lagPerReplica: {lag_per_replica}}}\n  proxy:\n    \
         upstream: http://127.0.0.1:3000\n"
    )
}

fn worker_scaler_status(cluster: &Cluster) -> anyhow::Result<Option<String>> {
    Ok(cluster
        .get("memorystore", "scaled", STORE_NAMESPACE)?
        .and_then(|store| store["status"]["workerScaler"].as_str().map(str::to_string)))
}

/// 3i. `workers.autoscale`: without KEDA a HorizontalPodAutoscaler on CPU; once KEDA's CRDs
///     (from KEDA's Go module, `MEMGATE_KEDA_CRDS`) are installed, a ScaledObject with KEDA's
///     Redis Streams scaler on the store's consumer group and a TriggerAuthentication, both
///     accepted by KEDA's schema as rendered (nothing pruned), and the HPA gone; the status says
///     which.
async fn workers_scale_with_the_queue(cluster: &Cluster) -> anyhow::Result<()> {
    cluster.apply(&autoscaled_store_yaml(20))?;
    cluster
        .wait("an HPA", Duration::from_secs(60), |c| {
            c.get("horizontalpodautoscaler", "scaled-worker", STORE_NAMESPACE)
        })
        .await?;
    cluster
        .wait("the status names the HPA", Duration::from_secs(60), |c| {
            Ok(worker_scaler_status(c)?.filter(|s| s.starts_with("HorizontalPodAutoscaler")))
        })
        .await?;
    let Some(crds) = std::env::var_os("MEMGATE_KEDA_CRDS") else {
        eprintln!(
            "MEMGATE_KEDA_CRDS is not set (scripts/test.sh sets it): the KEDA half is skipped"
        );
        return Ok(());
    };
    let crds = PathBuf::from(crds);
    for crd in [
        "keda.sh_scaledobjects.yaml",
        "keda.sh_triggerauthentications.yaml",
    ] {
        let path = crds.join(crd);
        cluster.kubectl(&["create", "-f", &path.to_string_lossy()])?;
    }
    cluster.kubectl(&[
        "wait",
        "--for",
        "condition=established",
        "--timeout=60s",
        "crd/scaledobjects.keda.sh",
        "crd/triggerauthentications.keda.sh",
    ])?;
    // A spec change makes the operator look again (it looks for KEDA on each reconcile).
    cluster.apply(&autoscaled_store_yaml(30))?;
    let scaled = cluster
        .wait("a ScaledObject", Duration::from_secs(60), |c| {
            c.get("scaledobject", "scaled-worker", STORE_NAMESPACE)
        })
        .await?;
    let spec = &scaled["spec"];
    let trigger = &spec["triggers"][0];
    if spec["scaleTargetRef"]["name"] != "scaled-worker"
        || spec["minReplicaCount"] != 1
        || spec["maxReplicaCount"] != 4
        || trigger["type"] != "redis-streams"
        || trigger["metadata"]["stream"] != "memgate:team-e2e/scaled:writes"
        || trigger["metadata"]["consumerGroup"] != "workers"
        || trigger["metadata"]["lagCount"] != "30"
        || trigger["authenticationRef"]["name"] != "scaled-worker"
    {
        bail!("the ScaledObject is not as rendered (pruned by KEDA's schema?): {spec}");
    }
    let authentication = cluster
        .get("triggerauthentication", "scaled-worker", STORE_NAMESPACE)?
        .context("the TriggerAuthentication")?;
    if authentication["spec"]["secretTargetRef"][0]["name"] != "scaled-redis-auth" {
        bail!(
            "the TriggerAuthentication is not as rendered: {}",
            authentication["spec"]
        );
    }
    cluster
        .wait("the HPA gone", Duration::from_secs(60), |c| {
            Ok(
                c.get("horizontalpodautoscaler", "scaled-worker", STORE_NAMESPACE)?
                    .is_none()
                    .then_some(()),
            )
        })
        .await?;
    cluster
        .wait("the status names KEDA", Duration::from_secs(60), |c| {
            Ok(worker_scaler_status(c)?.filter(|s| s.starts_with("KEDA ScaledObject")))
        })
        .await?;
    cluster.kubectl(&["delete", "memorystore", "scaled", "-n", STORE_NAMESPACE])?;
    Ok(())
}

async fn step<T>(
    cluster: &Cluster,
    operators: &[&Operator],
    name: &str,
    scenario: impl std::future::Future<Output = anyhow::Result<T>>,
) -> T {
    let started = Instant::now();
    match scenario.await {
        Ok(value) => {
            eprintln!("ok: {name} ({:.1} s)", started.elapsed().as_secs_f64());
            value
        }
        Err(error) => {
            let mut logs = cluster.plane.logs();
            for operator in operators {
                logs.push_str(&operator.log_tail(40));
            }
            panic!("{name}: {error:#}\n{logs}");
        }
    }
}

#[tokio::test]
async fn the_operator_on_a_real_control_plane() {
    let plane = ControlPlane::start().expect("the control plane starts");
    plane.add_node("kwok-node-1").expect("a kwok node");
    let cluster = Cluster { plane };
    let c = &cluster;
    step(
        c,
        &[],
        "the CRD is served, explained and enforced",
        the_crd_is_served_explained_and_enforced(c),
    )
    .await;
    let operator = step(
        c,
        &[],
        "the chart installs; the operator runs as its ServiceAccount",
        the_chart_installs_and_the_operator_runs_as_its_service_account(c),
    )
    .await;
    let a = &[&operator];
    step(
        c,
        a,
        "a MemoryStore becomes Available",
        a_store_becomes_available(c),
    )
    .await;
    step(
        c,
        a,
        "a second reconcile writes nothing",
        a_second_reconcile_writes_nothing(c, &operator),
    )
    .await;
    step(
        c,
        a,
        "the webhook injects the sidecar",
        the_webhook_injects_the_sidecar(c),
    )
    .await;
    step(
        c,
        a,
        "storage grows; volumeClaimTemplates stay",
        storage_grows(c),
    )
    .await;
    step(
        c,
        a,
        "a rotated Secret rolls what reads it",
        a_rotated_secret_rolls_what_reads_it(c),
    )
    .await;
    step(
        c,
        a,
        "a paused store is left alone",
        a_paused_store_is_left_alone(c),
    )
    .await;
    step(
        c,
        a,
        "what cannot be done is reported",
        what_cannot_be_done_is_reported(c),
    )
    .await;
    let kubeconfig = c.plane.dir().join("operator.kubeconfig");
    let operator = step(
        c,
        &[],
        "the other operator takes over",
        the_other_operator_takes_over(c, operator, &kubeconfig),
    )
    .await;
    let b = &[&operator];
    step(
        c,
        b,
        "managed to external cleans up",
        managed_to_external_cleans_up(c),
    )
    .await;
    step(
        c,
        b,
        "the rendered config runs memgate",
        the_rendered_config_runs_memgate(c),
    )
    .await;
    step(
        c,
        b,
        "a replicated Redis under Sentinel and a distributed Qdrant run, and scale",
        a_replicated_redis_runs_under_sentinel(c),
    )
    .await;
    step(
        c,
        b,
        "workers scale with the queue: an HPA, then KEDA's ScaledObject",
        workers_scale_with_the_queue(c),
    )
    .await;
    drop(operator);
    step(
        c,
        &[],
        "with the webhook down, pods are created without it",
        with_the_webhook_down_pods_are_created_without_it(c),
    )
    .await;
    step(
        c,
        &[],
        "deleting the store collects its children",
        deleting_the_store_collects_its_children(c),
    )
    .await;
    step(c, &[], "the chart grants what the operator uses", async {
        the_chart_grants_what_the_operator_uses(c)
    })
    .await;
}
