//! A real Kubernetes control plane on loopback for the operator's end-to-end tests, like
//! controller-runtime's envtest but with the controllers too: etcd, kube-apiserver,
//! kube-controller-manager, kube-scheduler and kwok (fake nodes whose pods become Running and
//! Ready), from the binaries `scripts/control-plane.sh` builds from Go modules.
//!
//! The harness makes its own CA, serving and client certificates, service-account keys and an
//! admin kubeconfig in a temporary directory. Every process is killed on drop; their logs stay
//! in the directory, and [`ControlPlane::logs`] prints their tails when a test fails.

use std::net::{IpAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::{free_port, log_tail};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};

/// The address kube-apiserver gives ClusterIP Services.
pub const SERVICE_CIDR: &str = "10.96.0.0/16";
/// What the API server records in its audit log: every request of anyone but the cluster
/// admins (the harness, the controllers, kwok), so a test can see exactly which verbs the
/// operator's ServiceAccount used and which were refused.
const AUDIT_POLICY: &str = "apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: None
  userGroups: [\"system:masters\"]
- level: Metadata
";
/// The annotation kwok looks for on the Nodes it runs.
const KWOK_NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";

/// The directory with the control plane's binaries: `MEMGATE_CONTROL_PLANE_BIN`, or what
/// `scripts/control-plane.sh` prints (it builds them the first time, about 15 minutes).
pub fn control_plane_bin() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("MEMGATE_CONTROL_PLANE_BIN") {
        return Ok(PathBuf::from(bin));
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/control-plane.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    if !output.status.success() {
        bail!("{} failed ({})", script.display(), output.status);
    }
    Ok(PathBuf::from(
        String::from_utf8(output.stdout)?.trim().to_string(),
    ))
}

/// This machine's address on its default route: what an Endpoints object may point at (the
/// API server refuses loopback endpoints), so the API server can call a webhook that runs as
/// a local process.
pub fn host_ip() -> anyhow::Result<IpAddr> {
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.connect("10.255.255.255:1")?;
    Ok(socket.local_addr()?.ip())
}

/// The certificates and keys of one control plane, as files in its directory.
struct Pki {
    ca: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    admin_cert: String,
    admin_key: String,
    ca_pem: String,
    service_account_public: PathBuf,
    service_account_private: PathBuf,
}

fn write(dir: &Path, name: &str, contents: &str) -> anyhow::Result<PathBuf> {
    let path = dir.join(name);
    std::fs::write(&path, contents).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

impl Pki {
    fn generate(dir: &Path) -> anyhow::Result<Self> {
        let mut ca = CertificateParams::new(Vec::<String>::new())?;
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "memgate test cluster CA");
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_key = KeyPair::generate()?;
        let ca_cert = ca.self_signed(&ca_key)?;
        let issuer = Issuer::new(ca, ca_key);

        let mut serving = CertificateParams::new(vec![
            "localhost".to_string(),
            "kubernetes".to_string(),
            "kubernetes.default".to_string(),
            "kubernetes.default.svc".to_string(),
        ])?;
        serving
            .subject_alt_names
            .push(SanType::IpAddress("127.0.0.1".parse()?));
        serving
            .subject_alt_names
            .push(SanType::IpAddress("10.96.0.1".parse()?));
        serving
            .distinguished_name
            .push(DnType::CommonName, "kube-apiserver");
        serving.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let serving_key = KeyPair::generate()?;
        let serving_cert = serving.signed_by(&serving_key, &issuer)?;

        let mut admin = CertificateParams::new(Vec::<String>::new())?;
        admin.distinguished_name.push(DnType::CommonName, "admin");
        admin
            .distinguished_name
            .push(DnType::OrganizationName, "system:masters");
        admin.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let admin_key = KeyPair::generate()?;
        let admin_cert = admin.signed_by(&admin_key, &issuer)?;

        let service_account = KeyPair::generate()?;
        Ok(Self {
            ca: write(dir, "ca.crt", &ca_cert.pem())?,
            serving_cert: write(dir, "apiserver.crt", &serving_cert.pem())?,
            serving_key: write(dir, "apiserver.key", &serving_key.serialize_pem())?,
            admin_cert: admin_cert.pem(),
            admin_key: admin_key.serialize_pem(),
            ca_pem: ca_cert.pem(),
            service_account_public: write(dir, "sa.pub", &service_account.public_key_pem())?,
            service_account_private: write(dir, "sa.key", &service_account.serialize_pem())?,
        })
    }
}

/// A kubeconfig for `server` with the given user entry (YAML lines under `user:`).
fn kubeconfig(server: &str, ca_pem: &str, user: &str) -> String {
    use base64::Engine;
    let ca = base64::engine::general_purpose::STANDARD.encode(ca_pem);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: user\n  user:\n{user}\ncontexts:\n- \
         name: test\n  context: {{cluster: test, user: user, namespace: default}}\n\
         current-context: test\n"
    )
}

/// One process of the control plane, its output in `<name>.log`.
struct Process {
    name: &'static str,
    child: Child,
}

pub struct ControlPlane {
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// A kubeconfig with cluster-admin rights (`system:masters`).
    pub admin_kubeconfig: PathBuf,
    ca_pem: String,
    processes: Vec<Process>,
}

impl ControlPlane {
    /// Starts etcd, the API server, the controller manager, the scheduler and kwok, and waits
    /// until the API server is ready and the `default` namespace has its ServiceAccount.
    pub fn start() -> anyhow::Result<Self> {
        Self::boot(true)
    }

    /// Starts etcd and the API server only (no controllers, no nodes): for tests of API calls
    /// alone, ready in a few seconds.
    pub fn start_api_server() -> anyhow::Result<Self> {
        Self::boot(false)
    }

    fn boot(with_controllers: bool) -> anyhow::Result<Self> {
        let started = Instant::now();
        let bin = control_plane_bin()?;
        let dir = tempfile::Builder::new()
            .prefix("memgate-control-plane-")
            .tempdir()?;
        let pki = Pki::generate(dir.path())?;
        let port = free_port()?;
        let server = format!("https://127.0.0.1:{port}");
        let admin_user = {
            use base64::Engine;
            let b64 = &base64::engine::general_purpose::STANDARD;
            format!(
                "    client-certificate-data: {}\n    client-key-data: {}",
                b64.encode(&pki.admin_cert),
                b64.encode(&pki.admin_key)
            )
        };
        let admin_kubeconfig = write(
            dir.path(),
            "admin.kubeconfig",
            &kubeconfig(&server, &pki.ca_pem, &admin_user),
        )?;
        let mut plane = Self {
            bin,
            server,
            admin_kubeconfig,
            ca_pem: pki.ca_pem.clone(),
            processes: Vec::new(),
            dir,
        };
        let etcd = plane.start_etcd()?;
        plane.start_apiserver(port, &etcd, &pki)?;
        plane.wait_ready(Duration::from_secs(90))?;
        if !with_controllers {
            eprintln!(
                "API server ready in {:.1} s ({})",
                started.elapsed().as_secs_f64(),
                plane.server
            );
            return Ok(plane);
        }
        plane.start_controllers(&pki)?;
        plane.start_kwok()?;
        plane.wait_for(
            Duration::from_secs(60),
            "the default ServiceAccount",
            |plane| {
                plane
                    .kubectl(["get", "serviceaccount", "default", "-n", "default"])
                    .is_ok_and(|output| output.status.success())
            },
        )?;
        eprintln!(
            "control plane ready in {:.1} s ({})",
            started.elapsed().as_secs_f64(),
            plane.server
        );
        Ok(plane)
    }

    fn log_file(&self, name: &str) -> anyhow::Result<std::fs::File> {
        Ok(std::fs::File::create(
            self.dir.path().join(format!("{name}.log")),
        )?)
    }

    fn spawn(&mut self, name: &'static str, args: &[String]) -> anyhow::Result<()> {
        let log = self.log_file(name)?;
        let child = Command::new(self.bin.join(name))
            .args(args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot run {}", self.bin.join(name).display()))?;
        self.processes.push(Process { name, child });
        Ok(())
    }

    fn start_etcd(&mut self) -> anyhow::Result<String> {
        let client = format!("http://127.0.0.1:{}", free_port()?);
        let peer = format!("http://127.0.0.1:{}", free_port()?);
        let data = self.dir.path().join("etcd");
        self.spawn(
            "etcd",
            &[
                "--name=test".into(),
                format!("--data-dir={}", data.display()),
                format!("--listen-client-urls={client}"),
                format!("--advertise-client-urls={client}"),
                format!("--listen-peer-urls={peer}"),
                format!("--initial-advertise-peer-urls={peer}"),
                format!("--initial-cluster=test={peer}"),
                "--unsafe-no-fsync=true".into(),
                "--log-level=warn".into(),
            ],
        )?;
        Ok(client)
    }

    fn start_apiserver(&mut self, port: u16, etcd: &str, pki: &Pki) -> anyhow::Result<()> {
        let path = |p: &Path| p.display().to_string();
        let audit_policy = write(self.dir.path(), "audit-policy.yaml", AUDIT_POLICY)?;
        self.spawn(
            "kube-apiserver",
            &[
                format!("--etcd-servers={etcd}"),
                format!("--secure-port={port}"),
                "--bind-address=127.0.0.1".into(),
                // The `kubernetes` Service's endpoint: not loopback, which Endpoints refuse.
                format!("--advertise-address={}", host_ip()?),
                format!("--requestheader-client-ca-file={}", path(&pki.ca)),
                "--requestheader-username-headers=X-Remote-User".into(),
                "--requestheader-group-headers=X-Remote-Group".into(),
                "--requestheader-extra-headers-prefix=X-Remote-Extra-".into(),
                format!("--tls-cert-file={}", path(&pki.serving_cert)),
                format!("--tls-private-key-file={}", path(&pki.serving_key)),
                format!("--client-ca-file={}", path(&pki.ca)),
                format!(
                    "--service-account-key-file={}",
                    path(&pki.service_account_public)
                ),
                format!(
                    "--service-account-signing-key-file={}",
                    path(&pki.service_account_private)
                ),
                format!("--service-account-issuer={}", self.server),
                format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                "--authorization-mode=RBAC".into(),
                "--allow-privileged=true".into(),
                // Webhooks are called at their Service's endpoints, not its ClusterIP: there
                // is no kube-proxy here.
                "--enable-aggregator-routing=true".into(),
                format!(
                    "--cert-dir={}",
                    path(&self.dir.path().join("apiserver-certs"))
                ),
                format!("--audit-policy-file={}", path(&audit_policy)),
                format!("--audit-log-path={}", path(&self.audit_log())),
            ],
        )
    }

    fn start_controllers(&mut self, pki: &Pki) -> anyhow::Result<()> {
        let kubeconfig = self.admin_kubeconfig.display().to_string();
        let common = |port: u16| -> Vec<String> {
            vec![
                format!("--kubeconfig={kubeconfig}"),
                format!("--authentication-kubeconfig={kubeconfig}"),
                format!("--authorization-kubeconfig={kubeconfig}"),
                "--leader-elect=false".into(),
                "--bind-address=127.0.0.1".into(),
                format!("--secure-port={port}"),
            ]
        };
        let mut manager = common(free_port()?);
        manager.extend([
            format!(
                "--service-account-private-key-file={}",
                pki.service_account_private.display()
            ),
            format!("--root-ca-file={}", pki.ca.display()),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--use-service-account-credentials=false".into(),
            // Garbage collection and the workload controllers run at test speed.
            "--concurrent-gc-syncs=5".into(),
        ]);
        self.spawn("kube-controller-manager", &manager)?;
        self.spawn("kube-scheduler", &common(free_port()?))
    }

    fn start_kwok(&mut self) -> anyhow::Result<()> {
        let kubeconfig = self.admin_kubeconfig.display().to_string();
        self.spawn(
            "kwok",
            &[
                format!("--kubeconfig={kubeconfig}"),
                "--manage-all-nodes=false".into(),
                format!("--manage-nodes-with-annotation-selector={KWOK_NODE_ANNOTATION}=fake"),
                "--cidr=10.244.0.0/16".into(),
                format!("--node-ip={}", host_ip()?),
                "--server-address=".into(),
            ],
        )
    }

    /// Adds a Node run by kwok (its pods become Running and Ready without a kubelet).
    pub fn add_node(&self, name: &str) -> anyhow::Result<()> {
        let node = format!(
            "apiVersion: v1\nkind: Node\nmetadata:\n  name: {name}\n  annotations: \
             {{{KWOK_NODE_ANNOTATION}: fake, node.alpha.kubernetes.io/ttl: \"0\"}}\n  labels: \
             {{kubernetes.io/hostname: {name}, kubernetes.io/os: linux, kubernetes.io/arch: \
             amd64, type: kwok}}\nstatus:\n  allocatable: {{cpu: \"32\", memory: 256Gi, pods: \
             \"110\"}}\n  capacity: {{cpu: \"32\", memory: 256Gi, pods: \"110\"}}\n"
        );
        self.apply_yaml(&node)
    }

    /// `kubectl apply -f -` of `yaml` as cluster admin.
    pub fn apply_yaml(&self, yaml: &str) -> anyhow::Result<()> {
        let output = self.kubectl_with_input(["apply", "-f", "-"], yaml)?;
        if !output.status.success() {
            bail!(
                "kubectl apply failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(())
    }

    /// Runs `kubectl` as cluster admin.
    pub fn kubectl<I, S>(&self, args: I) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        self.kubectl_command(args)
            .output()
            .context("cannot run kubectl")
    }

    /// Runs `kubectl` as cluster admin with `input` on its standard input.
    pub fn kubectl_with_input<I, S>(&self, args: I, input: &str) -> anyhow::Result<Output>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        use std::io::Write;
        let mut child = self
            .kubectl_command(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run kubectl")?;
        child
            .stdin
            .take()
            .context("kubectl's stdin")?
            .write_all(input.as_bytes())?;
        Ok(child.wait_with_output()?)
    }

    /// A `kubectl` command as cluster admin, for callers that set more on it.
    pub fn kubectl_command<I, S>(&self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut command = Command::new(self.bin.join("kubectl"));
        command.arg("--kubeconfig").arg(&self.admin_kubeconfig);
        command.args(args);
        command
    }

    /// `kubectl` succeeded and printed this (its stdout), or the error with its stderr.
    pub fn kubectl_ok<I, S>(&self, args: I) -> anyhow::Result<String>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let output = self.kubectl(args)?;
        if !output.status.success() {
            bail!(
                "kubectl failed: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        Ok(String::from_utf8(output.stdout)?)
    }

    /// A kubeconfig that authenticates with `token` (a ServiceAccount's, say), written next to
    /// the admin one.
    pub fn token_kubeconfig(&self, name: &str, token: &str) -> anyhow::Result<PathBuf> {
        write(
            self.dir.path(),
            &format!("{name}.kubeconfig"),
            &kubeconfig(&self.server, &self.ca_pem, &format!("    token: {token}")),
        )
    }

    /// The API server's audit log (JSON lines; see [`AUDIT_POLICY`]).
    pub fn audit_log(&self) -> PathBuf {
        self.dir.path().join("audit.log")
    }

    /// The audit events recorded so far.
    pub fn audit_events(&self) -> anyhow::Result<Vec<serde_json::Value>> {
        let text = std::fs::read_to_string(self.audit_log()).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str(line).context("an audit event is JSON"))
            .collect()
    }

    /// The directory the control plane keeps its files in (free for the test's own).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The path of a binary of the control plane (`kubectl`, say).
    pub fn binary(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    fn wait_ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        self.wait_for(timeout, "kube-apiserver /readyz", |plane| {
            plane
                .kubectl(["get", "--raw", "/readyz"])
                .is_ok_and(|output| output.status.success())
        })
    }

    /// Polls `condition` every 200 ms; a process of the control plane that exits fails it.
    fn wait_for(
        &mut self,
        timeout: Duration,
        what: &str,
        condition: impl Fn(&Self) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now() + timeout;
        loop {
            if condition(self) {
                return Ok(());
            }
            if let Some(exited) = self.exited()? {
                bail!("{exited} exited while waiting for {what}\n{}", self.logs());
            }
            if Instant::now() > deadline {
                bail!("no {what} after {timeout:?}\n{}", self.logs());
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The first process that has exited, with its status.
    fn exited(&mut self) -> anyhow::Result<Option<String>> {
        for process in &mut self.processes {
            if let Some(status) = process.child.try_wait()? {
                return Ok(Some(format!("{} ({status})", process.name)));
            }
        }
        Ok(None)
    }

    /// The last lines each process logged, for a failing test's output.
    pub fn logs(&self) -> String {
        self.processes
            .iter()
            .map(|process| log_tail(&self.dir.path().join(format!("{}.log", process.name)), 15))
            .collect()
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        // Controllers first, etcd last, so nothing logs a storm of connection errors.
        for process in self.processes.iter_mut().rev() {
            let _ = process.child.kill();
            let _ = process.child.wait();
        }
        if std::env::var_os("MEMGATE_KEEP_CONTROL_PLANE").is_some() {
            let kept = std::mem::replace(
                &mut self.dir,
                tempfile::tempdir().expect("a temporary directory"),
            );
            eprintln!("control plane files kept in {}", kept.keep().display());
        }
    }
}
