//! Sidecar injection, as a pure function on a pod spec: the memgate proxy joins the pod as a
//! native sidecar (an init container with `restartPolicy: Always`, so it starts before the app
//! and stops after it), with the store's config mounted, its secrets mounted as files (named by
//! `MEMGATE_*_FILE`: the kubelet rewrites them when a Secret is rotated, and the proxy restarts
//! in place to use the new value, the app container untouched), and `MEMGATE_URL` (REST), `MEMGATE_MCP_SSE_URL` and `MEMGATE_MCP_URL` (MCP over
//! HTTP+SSE and Streamable HTTP) given to every app container.
//!
//! Injecting twice changes nothing: a pod that already has the sidecar is left as it is.

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, HTTPGetAction,
    KeyToPath, PodSpec, Probe, ProjectedVolumeSource, ResourceRequirements, SecretProjection,
    SecretVolumeSource, Volume, VolumeMount, VolumeProjection,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::config::{ADMIN_PORT, CONFIG_DIR, CONFIG_KEY};
use crate::build::security::container_security;
use crate::build::{config_map_name, log_format_env, secret_refs, worker};
use crate::crd::MemoryStore;

/// The annotation that asks for the sidecar; its value names the MemoryStore.
pub const INJECT_ANNOTATION: &str = "memgate.dev/inject";
/// Set on an injected pod: the store whose sidecar it got.
pub const INJECTED_ANNOTATION: &str = "memgate.dev/injected";
pub const SIDECAR_NAME: &str = "memgate-proxy";
/// Chooses the port the sidecar serves the app on (loopback), when the default clashes.
pub const PORT_ANNOTATION: &str = "memgate.dev/port";
/// Chooses the sidecar's admin port (probes, metrics).
pub const ADMIN_PORT_ANNOTATION: &str = "memgate.dev/admin-port";
/// The ports tried, in order, when the annotations choose none: the first that no container of
/// the pod declares.
const API_PORTS: [u16; 4] = [8080, 18080, 28080, 38080];
const ADMIN_PORTS: [u16; 4] = [ADMIN_PORT, 19090, 29090, 39090];

/// Where one pod's sidecar listens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SidecarPorts {
    /// The app calls `http://127.0.0.1:{api}` instead of the legacy service.
    pub api: u16,
    pub admin: u16,
}

/// A port annotation that cannot be honoured.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PortError {
    #[error("annotation {annotation}: {value:?} is not a port number (1-65535)")]
    NotAPort {
        annotation: &'static str,
        value: String,
    },
    #[error("annotation {annotation}: port {port} is already declared by container {container:?}")]
    Taken {
        annotation: &'static str,
        port: u16,
        container: String,
    },
    #[error("annotations {PORT_ANNOTATION} and {ADMIN_PORT_ANNOTATION} are both {0}")]
    Same(u16),
    #[error("every candidate port for the sidecar is declared by a container of the pod; choose one with {0}")]
    NoneFree(&'static str),
}

impl SidecarPorts {
    /// The ports for a pod with these annotations: the annotated ones, else the first
    /// candidates no container of the pod declares (an app on 8080 moves the sidecar to
    /// 18080, and the app learns it from `MEMGATE_URL`).
    pub fn for_pod(
        annotations: Option<&std::collections::BTreeMap<String, String>>,
        pod: &PodSpec,
    ) -> Result<Self, PortError> {
        let declared: Vec<(u16, &str)> = pod
            .containers
            .iter()
            .chain(pod.init_containers.iter().flatten())
            .filter(|container| container.name != SIDECAR_NAME)
            .flat_map(|container| {
                container.ports.iter().flatten().filter_map(|port| {
                    u16::try_from(port.container_port)
                        .ok()
                        .map(|number| (number, container.name.as_str()))
                })
            })
            .collect();
        let chosen = |annotation: &'static str,
                      candidates: &[u16],
                      other: Option<u16>|
         -> Result<u16, PortError> {
            match annotations.and_then(|all| all.get(annotation)) {
                Some(value) => {
                    let port = value
                        .trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|port| *port > 0)
                        .ok_or_else(|| PortError::NotAPort {
                            annotation,
                            value: value.clone(),
                        })?;
                    match declared.iter().find(|(taken, _)| *taken == port) {
                        Some((_, container)) => Err(PortError::Taken {
                            annotation,
                            port,
                            container: container.to_string(),
                        }),
                        None => Ok(port),
                    }
                }
                None => candidates
                    .iter()
                    .copied()
                    .find(|port| {
                        Some(*port) != other && !declared.iter().any(|(taken, _)| taken == port)
                    })
                    .ok_or(PortError::NoneFree(annotation)),
            }
        };
        let api = chosen(PORT_ANNOTATION, &API_PORTS, None)?;
        let admin = chosen(ADMIN_PORT_ANNOTATION, &ADMIN_PORTS, Some(api))?;
        if api == admin {
            return Err(PortError::Same(api));
        }
        Ok(Self { api, admin })
    }

    /// The variables every app container gets, unless it sets them itself: where memgate
    /// answers REST, MCP over HTTP+SSE (where a client configured for cldmemory's `…/sse`
    /// connects instead) and MCP over Streamable HTTP.
    fn app_env(self) -> [(&'static str, String); 3] {
        let base = format!("http://127.0.0.1:{}", self.api);
        [
            ("MEMGATE_URL", base.clone()),
            ("MEMGATE_MCP_SSE_URL", format!("{base}/sse")),
            ("MEMGATE_MCP_URL", format!("{base}/mcp")),
        ]
    }
}

impl Default for SidecarPorts {
    fn default() -> Self {
        Self {
            api: API_PORTS[0],
            admin: ADMIN_PORTS[0],
        }
    }
}
const CONFIG_VOLUME: &str = "memgate-config";
const TMP_VOLUME: &str = "memgate-tmp";
/// The store's Secrets, one file per credential.
const CREDENTIALS_VOLUME: &str = "memgate-credentials";
const CREDENTIALS_DIR: &str = "/var/run/memgate/credentials";
/// `spec.proxy.auth.tokensSecretRef`, as the tokens file the config names.
const AUTH_VOLUME: &str = "memgate-auth";

/// `MEMGATE_REDIS__PASSWORD` → `redis-password`: the credential's file name.
fn credential_file(variable: &str) -> String {
    variable
        .trim_start_matches("MEMGATE_")
        .to_ascii_lowercase()
        .replace("__", "-")
        .replace('_', "-")
}
/// The proxy runs as this user whatever the pod's own security context says.
const UID: i64 = 65532;

fn default_resources() -> ResourceRequirements {
    crate::build::resources("50m", "64Mi", "256Mi")
}

fn admin_probe(path: &str, failure_threshold: i32) -> Probe {
    Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("memgate-admin".into()),
            ..Default::default()
        }),
        period_seconds: Some(2),
        failure_threshold: Some(failure_threshold),
        ..Default::default()
    }
}

/// The sidecar container for `store`, listening on `ports`.
pub fn sidecar(store: &MemoryStore, ports: SidecarPorts) -> Container {
    let mut security = container_security();
    security.run_as_user = Some(UID);
    security.run_as_group = Some(UID);
    Container {
        name: SIDECAR_NAME.into(),
        image: Some(worker::image(store)),
        args: Some(vec![
            "serve".into(),
            "--config".into(),
            format!("{CONFIG_DIR}/{CONFIG_KEY}"),
        ]),
        env: Some(sidecar_env(store, ports)),
        ports: Some(vec![ContainerPort {
            name: Some("memgate-admin".into()),
            container_port: i32::from(ports.admin),
            ..Default::default()
        }]),
        // The app starts once the proxy listens. Readiness is the process's health, not its
        // dependencies': with Redis or Qdrant down the proxy still answers (from legacy, or
        // degraded), so it must not take the app out of its Service.
        startup_probe: Some(admin_probe("/healthz", 30)),
        readiness_probe: Some(admin_probe("/healthz", 3)),
        restart_policy: Some("Always".into()),
        resources: Some(
            store
                .spec
                .proxy
                .resources
                .clone()
                .unwrap_or_else(default_resources),
        ),
        security_context: Some(security),
        volume_mounts: Some(
            [
                VolumeMount {
                    name: CONFIG_VOLUME.into(),
                    mount_path: CONFIG_DIR.into(),
                    read_only: Some(true),
                    ..Default::default()
                },
                VolumeMount {
                    name: TMP_VOLUME.into(),
                    mount_path: "/tmp".into(),
                    ..Default::default()
                },
            ]
            .into_iter()
            .chain((!secret_refs(store).is_empty()).then(|| VolumeMount {
                name: CREDENTIALS_VOLUME.into(),
                mount_path: CREDENTIALS_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }))
            .chain(tokens_ref(store).map(|_| VolumeMount {
                name: AUTH_VOLUME.into(),
                mount_path: crate::build::config::AUTH_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            }))
            .collect(),
        ),
        ..Default::default()
    }
}

/// The store's environment, and where this pod's sidecar listens (over the config's own
/// addresses, which are the defaults).
fn sidecar_env(store: &MemoryStore, ports: SidecarPorts) -> Vec<EnvVar> {
    let mut env: Vec<EnvVar> = secret_refs(store)
        .into_iter()
        .map(|(variable, _)| EnvVar {
            name: format!("{variable}_FILE"),
            value: Some(format!("{CREDENTIALS_DIR}/{}", credential_file(variable))),
            ..Default::default()
        })
        .collect();
    env.push(log_format_env());
    for (name, value) in [
        ("MEMGATE_LISTEN", format!("127.0.0.1:{}", ports.api)),
        ("MEMGATE_ADMIN_LISTEN", format!("0.0.0.0:{}", ports.admin)),
    ] {
        env.push(EnvVar {
            name: name.into(),
            value: Some(value),
            ..Default::default()
        });
    }
    env
}

/// The store's Secrets as files, one per credential; none when it references no Secret.
fn credentials_volume(store: &MemoryStore) -> Option<Volume> {
    let sources: Vec<VolumeProjection> = secret_refs(store)
        .into_iter()
        .map(|(variable, reference)| VolumeProjection {
            secret: Some(SecretProjection {
                name: reference.name,
                items: Some(vec![KeyToPath {
                    key: reference.key,
                    path: credential_file(variable),
                    ..Default::default()
                }]),
                optional: Some(false),
            }),
            ..Default::default()
        })
        .collect();
    (!sources.is_empty()).then(|| Volume {
        name: CREDENTIALS_VOLUME.into(),
        projected: Some(ProjectedVolumeSource {
            sources: Some(sources),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn tokens_ref(store: &MemoryStore) -> Option<&crate::crd::SecretKeyRef> {
    store.spec.proxy.auth.as_ref()?.tokens_secret_ref.as_ref()
}

/// The tokens Secret's key as the file the config names (no `subPath`: the kubelet updates
/// it in place when the Secret is rotated, and the sidecar reads it again).
fn auth_volume(store: &MemoryStore) -> Option<Volume> {
    let reference = tokens_ref(store)?;
    Some(Volume {
        name: AUTH_VOLUME.into(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(reference.name.clone()),
            items: Some(vec![KeyToPath {
                key: reference.key.clone(),
                path: crate::build::config::AUTH_TOKENS_KEY.into(),
                ..Default::default()
            }]),
            optional: Some(false),
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn volumes(store: &MemoryStore) -> Vec<Volume> {
    let mut volumes = vec![
        Volume {
            name: CONFIG_VOLUME.into(),
            config_map: Some(ConfigMapVolumeSource {
                name: config_map_name(store),
                ..Default::default()
            }),
            ..Default::default()
        },
        Volume {
            name: TMP_VOLUME.into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        },
    ];
    volumes.extend(credentials_volume(store));
    volumes.extend(auth_volume(store));
    volumes
}

/// Whether the pod already has the sidecar.
pub fn is_injected(pod: &PodSpec) -> bool {
    pod.init_containers
        .iter()
        .flatten()
        .any(|container| container.name == SIDECAR_NAME)
}

/// Adds the sidecar to `pod`, listening on `ports`. Returns whether anything changed (false
/// when already injected).
pub fn inject(pod: &mut PodSpec, store: &MemoryStore, ports: SidecarPorts) -> bool {
    if is_injected(pod) {
        return false;
    }
    // First among the init containers: the others (migrations, say) may call it already.
    pod.init_containers
        .get_or_insert_with(Vec::new)
        .insert(0, sidecar(store, ports));
    let volumes_list = pod.volumes.get_or_insert_with(Vec::new);
    for volume in volumes(store) {
        if !volumes_list.iter().any(|v| v.name == volume.name) {
            volumes_list.push(volume);
        }
    }
    for container in &mut pod.containers {
        let env = container.env.get_or_insert_with(Vec::new);
        for (name, value) in ports.app_env() {
            if !env.iter().any(|var| var.name == name) {
                env.push(EnvVar {
                    name: name.into(),
                    value: Some(value),
                    ..Default::default()
                });
            }
        }
    }
    true
}

/// Why a manifest could not be injected.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum InjectError {
    #[error("{kind} {name:?} asks for MemoryStore {store:?}, which is not among the given stores")]
    UnknownStore {
        kind: String,
        name: String,
        store: String,
    },
    #[error("{kind} {name:?} has a pod template that does not parse: {reason}")]
    InvalidPod {
        kind: String,
        name: String,
        reason: String,
    },
}

/// The path to the pod template (`metadata` + `spec`) of a workload kind, if it has one.
fn template_path(kind: &str) -> Option<&'static [&'static str]> {
    match kind {
        "Pod" => Some(&[]),
        "Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet" | "Job" => {
            Some(&["spec", "template"])
        }
        "CronJob" => Some(&["spec", "jobTemplate", "spec", "template"]),
        _ => None,
    }
}

fn lookup<'a>(
    value: &'a mut serde_json::Value,
    path: &[&str],
) -> Option<&'a mut serde_json::Value> {
    path.iter()
        .try_fold(value, |value, key| value.get_mut(*key))
}

/// Injects the sidecar into one manifest (a Pod or a workload with a pod template) when its
/// pod template is annotated `memgate.dev/inject: <store>`. Returns whether it changed.
pub fn inject_manifest(
    manifest: &mut serde_json::Value,
    stores: &[MemoryStore],
) -> Result<bool, InjectError> {
    let kind = manifest["kind"].as_str().unwrap_or_default().to_string();
    let name = manifest["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let Some(path) = template_path(&kind) else {
        return Ok(false);
    };
    let Some(template) = lookup(manifest, path) else {
        return Ok(false);
    };
    let Some(wanted) = template["metadata"]["annotations"][INJECT_ANNOTATION]
        .as_str()
        .map(str::to_string)
    else {
        return Ok(false);
    };
    let namespace = template["metadata"]["namespace"]
        .as_str()
        .map(str::to_string);
    let store = stores
        .iter()
        .find(|store| {
            store.metadata.name.as_deref() == Some(wanted.as_str())
                && (namespace.is_none() || store.metadata.namespace == namespace)
        })
        .ok_or_else(|| InjectError::UnknownStore {
            kind: kind.clone(),
            name: name.clone(),
            store: wanted.clone(),
        })?;
    let mut pod: PodSpec = serde_json::from_value(template["spec"].clone()).map_err(|error| {
        InjectError::InvalidPod {
            kind: kind.clone(),
            name: name.clone(),
            reason: error.to_string(),
        }
    })?;
    let annotations: std::collections::BTreeMap<String, String> =
        serde_json::from_value(template["metadata"]["annotations"].clone()).unwrap_or_default();
    let ports = SidecarPorts::for_pod(Some(&annotations), &pod).map_err(|error| {
        InjectError::InvalidPod {
            kind: kind.clone(),
            name: name.clone(),
            reason: error.to_string(),
        }
    })?;
    if !inject(&mut pod, store, ports) {
        return Ok(false);
    }
    template["spec"] = serde_json::to_value(&pod).map_err(|error| InjectError::InvalidPod {
        kind,
        name,
        reason: error.to_string(),
    })?;
    template["metadata"]["annotations"][INJECTED_ANNOTATION] =
        serde_json::Value::String(wanted.clone());
    // What the store's NetworkPolicies let reach its Redis and Qdrant.
    template["metadata"]["labels"][crate::build::network::STORE_LABEL] =
        serde_json::Value::String(wanted);
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn store() -> MemoryStore {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
    }

    fn app() -> PodSpec {
        PodSpec {
            containers: vec![Container {
                name: "app".into(),
                image: Some("example/app:1".into()),
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn the_sidecar_joins_as_a_native_sidecar() {
        let mut pod = app();
        assert!(inject(&mut pod, &store(), SidecarPorts::default()));
        let init = pod.init_containers.as_ref().expect("init containers");
        assert_eq!(init[0].name, SIDECAR_NAME);
        assert_eq!(init[0].restart_policy.as_deref(), Some("Always"));
        assert_eq!(
            init[0].args.as_deref().map(|a| a.join(" ")),
            Some("serve --config /etc/memgate/config.yaml".into())
        );
        // Secrets as files the kubelet keeps current, never as env (fixed at start).
        assert!(init[0].env.iter().flatten().all(|e| e.value_from.is_none()));
        let secret_files: Vec<(&str, &str)> = init[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name.ends_with("_FILE"))
            .map(|e| (e.name.as_str(), e.value.as_deref().unwrap_or_default()))
            .collect();
        assert_eq!(
            secret_files,
            vec![
                (
                    "MEMGATE_REDIS__PASSWORD_FILE",
                    "/var/run/memgate/credentials/redis-password"
                ),
                (
                    "MEMGATE_VECTORS__API_KEY_FILE",
                    "/var/run/memgate/credentials/vectors-api-key"
                ),
                (
                    "MEMGATE_OPENAI__API_KEY_FILE",
                    "/var/run/memgate/credentials/openai-api-key"
                ),
            ]
        );
        let volumes = pod.volumes.as_ref().expect("volumes");
        let projected: Vec<(String, String, String)> = volumes
            .iter()
            .find(|v| v.name == CREDENTIALS_VOLUME)
            .and_then(|v| v.projected.as_ref()?.sources.clone())
            .expect("credentials volume")
            .into_iter()
            .filter_map(|source| {
                let secret = source.secret?;
                let item = secret.items?.into_iter().next()?;
                Some((secret.name, item.key, item.path))
            })
            .collect();
        assert_eq!(
            projected,
            vec![
                (
                    "notes-redis-auth".to_string(),
                    "password".to_string(),
                    "redis-password".to_string()
                ),
                (
                    "notes-qdrant-auth".to_string(),
                    "api-key".to_string(),
                    "vectors-api-key".to_string()
                ),
                (
                    "openai".to_string(),
                    "api-key".to_string(),
                    "openai-api-key".to_string()
                ),
            ]
        );
        assert!(init[0]
            .volume_mounts
            .iter()
            .flatten()
            .any(|m| m.name == CREDENTIALS_VOLUME && m.mount_path == CREDENTIALS_DIR));
        let config = volumes
            .iter()
            .find(|v| v.name == CONFIG_VOLUME)
            .and_then(|v| v.config_map.as_ref())
            .expect("config volume");
        assert_eq!(config.name, "notes-proxy-config");
        let url = pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "MEMGATE_URL")
            .and_then(|e| e.value.clone());
        assert_eq!(url.as_deref(), Some("http://127.0.0.1:8080"));
        let mcp = pod.containers[0]
            .env
            .iter()
            .flatten()
            .find(|e| e.name == "MEMGATE_MCP_SSE_URL")
            .and_then(|e| e.value.clone());
        assert_eq!(mcp.as_deref(), Some("http://127.0.0.1:8080/sse"));
    }

    #[test]
    fn workloads_are_injected_through_their_pod_template() {
        let mut deployment = serde_json::json!({
            "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent"},
            "spec": {"selector": {"matchLabels": {"app": "agent"}}, "template": {
                "metadata": {"labels": {"app": "agent"}, "annotations": {"memgate.dev/inject": "notes"}},
                "spec": {"containers": [{"name": "agent", "image": "example/agent:1"}]}}}
        });
        assert_eq!(inject_manifest(&mut deployment, &[store()]), Ok(true));
        let template = &deployment["spec"]["template"];
        assert_eq!(template["spec"]["initContainers"][0]["name"], SIDECAR_NAME);
        assert_eq!(
            template["metadata"]["annotations"][INJECTED_ANNOTATION],
            "notes"
        );
        let again = deployment.clone();
        assert_eq!(inject_manifest(&mut deployment, &[store()]), Ok(false));
        assert_eq!(deployment, again, "idempotent");

        let mut plain = serde_json::json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
            "spec": {"containers": [{"name": "c"}]}});
        let before = plain.clone();
        assert_eq!(inject_manifest(&mut plain, &[store()]), Ok(false));
        assert_eq!(plain, before, "no annotation, no change");

        let mut unknown = serde_json::json!({"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": "p", "annotations": {"memgate.dev/inject": "nope"}},
            "spec": {"containers": [{"name": "c"}]}});
        assert!(matches!(
            inject_manifest(&mut unknown, &[store()]),
            Err(InjectError::UnknownStore { .. })
        ));
        let mut service =
            serde_json::json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}});
        assert_eq!(inject_manifest(&mut service, &[store()]), Ok(false));
    }

    #[test]
    fn the_tokens_secret_is_mounted_where_the_config_names_it() {
        let mut store = store();
        store.spec.proxy.auth = Some(crate::crd::ProxyAuthSpec {
            tokens_secret_ref: Some(crate::crd::SecretKeyRef {
                name: "memgate-tokens".into(),
                key: "tokens".into(),
            }),
            oauth: None,
        });
        let config = crate::build::config::proxy_config(&store).expect("config");
        let file = config.security.tokens.expect("tokens").path;
        let mut pod = app();
        assert!(inject(&mut pod, &store, SidecarPorts::default()));
        let sidecar = &pod.init_containers.as_ref().expect("init")[0];
        let mount = sidecar
            .volume_mounts
            .as_ref()
            .expect("mounts")
            .iter()
            .find(|m| m.name == AUTH_VOLUME)
            .expect("auth mount");
        assert!(
            mount.sub_path.is_none(),
            "a subPath would never see a rotation"
        );
        let volume = pod
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .find(|v| v.name == AUTH_VOLUME)
            .and_then(|v| v.secret.as_ref())
            .expect("auth volume");
        assert_eq!(volume.secret_name.as_deref(), Some("memgate-tokens"));
        let item = &volume.items.as_ref().expect("items")[0];
        assert_eq!(item.key, "tokens");
        assert_eq!(
            file,
            std::path::PathBuf::from(format!("{}/{}", mount.mount_path, item.path))
        );
        // Without auth, nothing of it.
        let mut plain = app();
        inject(&mut plain, &self::store(), SidecarPorts::default());
        assert!(!plain
            .volumes
            .as_ref()
            .expect("volumes")
            .iter()
            .any(|v| v.name == AUTH_VOLUME));
    }

    #[test]
    fn injecting_twice_changes_nothing() {
        let mut pod = app();
        inject(&mut pod, &store(), SidecarPorts::default());
        let once = pod.clone();
        assert!(!inject(&mut pod, &store(), SidecarPorts::default()));
        assert_eq!(pod, once);
    }

    #[test]
    fn the_apps_own_settings_are_kept() {
        let mut pod = app();
        pod.containers[0].env = Some(vec![EnvVar {
            name: "MEMGATE_URL".into(),
            value: Some("http://127.0.0.1:9999".into()),
            ..Default::default()
        }]);
        pod.init_containers = Some(vec![Container {
            name: "migrate".into(),
            ..Default::default()
        }]);
        inject(&mut pod, &store(), SidecarPorts::default());
        let names: Vec<&str> = pod
            .init_containers
            .iter()
            .flatten()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(names, vec![SIDECAR_NAME, "migrate"]);
        let urls: Vec<&str> = pod.containers[0]
            .env
            .iter()
            .flatten()
            .filter(|e| e.name == "MEMGATE_URL")
            .filter_map(|e| e.value.as_deref())
            .collect();
        assert_eq!(
            urls,
            vec!["http://127.0.0.1:9999"],
            "an app's own value wins"
        );
    }
}
