//! The desired objects of YAML fixtures: a MemoryStore in, objects out, no API.

use k8s_openapi::api::core::v1::{Container, EnvVar, PodSpec};
use memgate_operator::build::{self, config, labels, worker, Desired, SecretDigests};
use memgate_operator::crd::{MemoryStore, SecretKeyRef};

fn fixture(name: &str) -> MemoryStore {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("fixture");
    serde_yaml::from_str(&text).expect("a MemoryStore")
}

/// Digests as the reconciler reads them: `openai` for the OpenAI key, `redis` for the
/// generated Redis password.
fn digests(openai: &str, redis: &str) -> SecretDigests {
    let reference = |name: &str, key: &str| SecretKeyRef {
        name: name.into(),
        key: key.into(),
    };
    let mut digests = SecretDigests::default();
    digests.insert(&reference("openai", "api-key"), openai);
    digests.insert(&reference("notes-redis-auth", "password"), redis);
    digests
}

fn desired(name: &str) -> (MemoryStore, Desired) {
    let store = fixture(name);
    let desired = build::build(&store, &digests("a", "b")).expect("builds");
    (store, desired)
}

fn pod_spec(spec: &Option<PodSpec>) -> &PodSpec {
    spec.as_ref().expect("pod spec")
}

fn env_names(container: &Container) -> Vec<&str> {
    container
        .env
        .iter()
        .flatten()
        .map(|env: &EnvVar| env.name.as_str())
        .collect()
}

fn secret_of(container: &Container, name: &str) -> Option<(String, String)> {
    container
        .env
        .iter()
        .flatten()
        .find(|env| env.name == name)
        .and_then(|env| env.value_from.as_ref())
        .and_then(|from| from.secret_key_ref.as_ref())
        .map(|secret| (secret.name.clone(), secret.key.clone()))
}

#[test]
fn a_managed_store_gets_redis_qdrant_workers_and_config() {
    let (_, desired) = desired("managed.yaml");
    let redis = desired.redis.as_ref().expect("managed redis");
    let qdrant = desired.qdrant.as_ref().expect("managed qdrant");
    assert_eq!(
        redis.stateful_set.metadata.name.as_deref(),
        Some("notes-redis")
    );
    assert_eq!(
        qdrant.service.metadata.name.as_deref(),
        Some("notes-qdrant")
    );
    assert_eq!(
        desired.worker.metadata.name.as_deref(),
        Some("notes-worker")
    );
    assert_eq!(
        desired.config_map.metadata.name.as_deref(),
        Some("notes-proxy-config")
    );
    let generated: Vec<&str> = desired
        .generated_secrets
        .iter()
        .map(|s| s.secret.name.as_str())
        .collect();
    assert_eq!(generated, vec!["notes-redis-auth", "notes-qdrant-auth"]);
    assert!(
        desired.worker_disruption_budget.is_some(),
        "three workers get a PDB"
    );
}

#[test]
fn every_object_is_labelled_and_owned() {
    let (_, desired) = desired("managed.yaml");
    let redis = desired.redis.expect("redis");
    let qdrant = desired.qdrant.expect("qdrant");
    let metas = [
        &desired.config_map.metadata,
        &redis.stateful_set.metadata,
        &redis.service.metadata,
        &qdrant.stateful_set.metadata,
        &qdrant.service.metadata,
        &desired.worker.metadata,
        &desired
            .worker_disruption_budget
            .as_ref()
            .expect("pdb")
            .metadata,
    ];
    for meta in metas {
        let labels = meta.labels.as_ref().expect("labels");
        for key in [
            labels::NAME,
            labels::INSTANCE,
            labels::COMPONENT,
            labels::MANAGED_BY,
        ] {
            assert!(labels.contains_key(key), "{:?} lacks {key}", meta.name);
        }
        assert_eq!(labels[labels::INSTANCE], "notes");
        assert_eq!(meta.namespace.as_deref(), Some("team-a"));
        let owner = &meta.owner_references.as_ref().expect("owner")[0];
        assert_eq!(owner.kind, "MemoryStore");
        assert_eq!(owner.name, "notes");
        assert_eq!(owner.controller, Some(true));
    }
}

#[test]
fn managed_redis_persists_every_write_and_never_evicts_the_queue() {
    let (_, desired) = desired("managed.yaml");
    let set = desired.redis.expect("redis").stateful_set;
    let spec = set.spec.expect("spec");
    let pod = pod_spec(&spec.template.spec);
    let container = &pod.containers[0];
    let args = container.args.clone().expect("args").join(" ");
    assert!(args.contains("--appendonly yes"));
    assert!(args.contains("--appendfsync everysec"));
    assert!(args.contains("--maxmemory-policy volatile-lru"));
    // 80% of the 1Gi limit.
    assert!(
        args.contains(&format!("--maxmemory {}", (1u64 << 30) / 5 * 4)),
        "{args}"
    );
    assert_eq!(
        secret_of(container, "REDIS_PASSWORD"),
        Some(("notes-redis-auth".into(), "password".into()))
    );
    assert!(container.readiness_probe.is_some() && container.liveness_probe.is_some());
    let security = container.security_context.as_ref().expect("security");
    assert_eq!(security.read_only_root_filesystem, Some(true));
    assert_eq!(security.allow_privilege_escalation, Some(false));
    assert_eq!(
        pod.security_context
            .as_ref()
            .and_then(|s| s.run_as_non_root),
        Some(true)
    );
    let claim = &spec.volume_claim_templates.expect("claims")[0];
    let storage = &claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .expect("requests")["storage"];
    assert_eq!(storage.0, "2Gi");
}

#[test]
fn managed_qdrant_is_ready_on_readyz_and_never_restarted_by_a_probe() {
    let (_, desired) = desired("managed.yaml");
    let qdrant = desired.qdrant.expect("qdrant");
    let spec = qdrant.stateful_set.spec.expect("spec");
    let container = &pod_spec(&spec.template.spec).containers[0];
    let readiness = container
        .readiness_probe
        .as_ref()
        .and_then(|p| p.http_get.as_ref())
        .expect("http readiness");
    assert_eq!(readiness.path.as_deref(), Some("/readyz"));
    assert!(container.liveness_probe.is_none());
    assert_eq!(
        secret_of(container, "QDRANT__SERVICE__API_KEY"),
        Some(("notes-qdrant-auth".into(), "api-key".into()))
    );
    let ports: Vec<i32> = qdrant
        .service
        .spec
        .expect("spec")
        .ports
        .expect("ports")
        .iter()
        .map(|p| p.port)
        .collect();
    assert_eq!(ports, vec![6333, 6334]);
    let claim = &spec.volume_claim_templates.expect("claims")[0];
    assert_eq!(
        claim
            .spec
            .as_ref()
            .and_then(|s| s.storage_class_name.as_deref()),
        Some("fast")
    );
}

#[test]
fn the_config_map_holds_the_proxy_config_without_secrets() {
    let (_, desired) = desired("managed.yaml");
    let text = &desired.config_map.data.expect("data")[config::CONFIG_KEY];
    let config: memgate::config::Config = serde_yaml::from_str(text).expect("the proxy's type");
    config.validate().expect("valid for the proxy");
    assert_eq!(
        config.redis.url.as_deref(),
        Some("redis://notes-redis.team-a.svc:6379")
    );
    assert_eq!(
        config.vectors.url.as_deref(),
        Some("http://notes-qdrant.team-a.svc:6334")
    );
    assert_eq!(config.vectors.collection, "agent-memories");
    assert_eq!(config.vectors.search_ef, Some(48));
    assert_eq!(config.layout.similarity_threshold, 0.3);
    assert_eq!(
        config.layout.memory_metadata.as_deref(),
        Some("team:core,env:prod")
    );
    assert_eq!(config.layout.project.as_deref(), Some("3f2a9c1b:/app"));
    assert_eq!(config.rollout.percent, 25);
    assert_eq!(
        config.cache.memory_ttl,
        std::time::Duration::from_secs(7200)
    );
    assert_eq!(config.worker.concurrency, 16);
    assert_eq!(config.store.namespace, "team-a");
    assert_eq!(
        config.scope.as_ref().map(|s| s.field.as_str()),
        Some("userId")
    );
    assert!(config.redis.password.is_none());
    assert!(config.vectors.api_key.is_none());
    assert!(config.openai.api_key.is_none());
}

#[test]
fn the_rendered_config_loads_in_the_proxy() {
    let (_, desired) = desired("external.yaml");
    let text = &desired.config_map.data.expect("data")[config::CONFIG_KEY];
    let dir = tempfile_dir();
    let path = dir.join("config.yaml");
    std::fs::write(&path, text).expect("write");
    let sources = memgate::config::ConfigSources {
        file: Some(path),
        ..Default::default()
    };
    let loaded = memgate::config::load(&sources).expect("the proxy loads it");
    let parsed: memgate::config::Config = serde_yaml::from_str(text).expect("parses");
    assert_eq!(loaded, parsed);
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("memgate-operator-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

#[test]
fn workers_get_secrets_as_references_and_roll_on_changes() {
    let (store, desired) = desired("managed.yaml");
    let spec = desired.worker.spec.expect("spec");
    assert_eq!(spec.replicas, Some(3));
    let template = spec.template;
    let container = &pod_spec(&template.spec).containers[0];
    assert_eq!(
        container.args.as_deref(),
        Some(
            &[
                "worker".to_string(),
                "--config".into(),
                "/etc/memgate/config.yaml".into()
            ][..]
        )
    );
    assert_eq!(container.image.as_deref(), Some(worker::DEFAULT_IMAGE));
    assert_eq!(
        env_names(container),
        vec![
            "MEMGATE_REDIS__PASSWORD",
            "MEMGATE_VECTORS__API_KEY",
            "MEMGATE_OPENAI__API_KEY",
            "MEMGATE_LOG_FORMAT"
        ]
    );
    assert_eq!(
        secret_of(container, "MEMGATE_OPENAI__API_KEY"),
        Some(("openai".into(), "api-key".into()))
    );
    let hash = |desired: &Desired| {
        desired
            .worker
            .spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .map(|a| a[worker::CONFIG_HASH].clone())
            .expect("hash")
    };
    let first = build::build(&store, &digests("a", "b")).expect("builds");
    let again = build::build(&store, &digests("a", "b")).expect("builds");
    let new_key = build::build(&store, &digests("a2", "b")).expect("builds");
    let new_password = build::build(&store, &digests("a", "b2")).expect("builds");
    let mut changed = store.clone();
    changed.spec.rollout.percent = 50;
    let new_config = build::build(&changed, &digests("a", "b")).expect("builds");
    assert_eq!(hash(&first), hash(&again), "deterministic");
    assert_ne!(
        hash(&first),
        hash(&new_key),
        "a Secret change rolls the workers"
    );
    assert_ne!(
        hash(&first),
        hash(&new_password),
        "the Redis password rolls the workers"
    );
    assert_ne!(
        hash(&first),
        hash(&new_config),
        "a config change rolls the workers"
    );

    let redis_hash = |desired: &Desired| {
        desired
            .redis
            .as_ref()
            .and_then(|part| part.stateful_set.spec.as_ref())
            .and_then(|spec| spec.template.metadata.as_ref())
            .and_then(|meta| meta.annotations.as_ref())
            .map(|annotations| annotations[build::SECRET_HASH].clone())
            .expect("Redis's pods carry the hash of the password they read")
    };
    assert_ne!(
        redis_hash(&first),
        redis_hash(&new_password),
        "a new password rolls Redis"
    );
    assert_eq!(
        redis_hash(&first),
        redis_hash(&new_key),
        "Redis does not read the OpenAI key"
    );
}

#[test]
fn an_external_store_gets_no_redis_or_qdrant_objects() {
    let (_, desired) = desired("external.yaml");
    assert!(desired.redis.is_none());
    assert!(desired.qdrant.is_none());
    assert!(desired.generated_secrets.is_empty());
    assert!(
        desired.worker_disruption_budget.is_none(),
        "one worker: no PDB"
    );
    let text = &desired.config_map.data.expect("data")[config::CONFIG_KEY];
    let config: memgate::config::Config = serde_yaml::from_str(text).expect("parses");
    assert_eq!(
        config.redis.url.as_deref(),
        Some("rediss://redis.example.internal:6380")
    );
    assert_eq!(
        config.vectors.url.as_deref(),
        Some("https://qdrant.example.internal:6334")
    );
    assert_eq!(config.embeddings.dimensions, 384);
    let spec = desired.worker.spec.expect("spec");
    let container = &pod_spec(&spec.template.spec).containers[0];
    assert_eq!(
        secret_of(container, "MEMGATE_REDIS__PASSWORD"),
        Some(("redis-creds".into(), "password".into()))
    );
    assert_eq!(
        secret_of(container, "MEMGATE_VECTORS__API_KEY"),
        Some(("qdrant-creds".into(), "api-key".into()))
    );
    assert!(secret_of(container, "MEMGATE_OPENAI__API_KEY").is_none());
}

#[test]
fn switching_redis_from_managed_to_external_drops_its_objects() {
    let mut store = fixture("managed.yaml");
    let external = fixture("external.yaml");
    store.spec.redis = external.spec.redis.clone();
    let desired = build::build(&store, &digests("a", "b")).expect("builds");
    assert!(desired.redis.is_none());
    assert!(desired.qdrant.is_some());
    let generated: Vec<&str> = desired
        .generated_secrets
        .iter()
        .map(|s| s.secret.name.as_str())
        .collect();
    assert_eq!(generated, vec!["notes-qdrant-auth"]);
}

/// `replicas: 3`: a primary and two replicas with stable names, three Sentinels, both spread
/// over nodes and one pod down at a time; memgate reaches the primary through the Sentinels.
#[test]
fn a_replicated_redis_gets_sentinels_stable_names_and_budgets() {
    let (_, desired) = desired("replicated.yaml");
    let redis = desired.redis.as_ref().expect("managed redis");
    let set = redis.stateful_set.spec.as_ref().expect("spec");
    assert_eq!(set.replicas, Some(3));
    assert_eq!(set.service_name.as_deref(), Some("notes-redis-headless"));
    let pod = pod_spec(&set.template.spec);
    assert!(
        pod.affinity
            .as_ref()
            .and_then(|a| a.pod_anti_affinity.as_ref())
            .is_some(),
        "spread over nodes"
    );
    let script = pod.containers[0].args.as_ref().expect("args")[0].clone();
    for part in [
        "sentinel get-master-addr-by-name memgate",
        "notes-redis-0.notes-redis-headless.team-a.svc",
        "--replicaof \"$primary\" 6379",
        "--masterauth \"$REDIS_PASSWORD\"",
        "--requirepass \"$REDIS_PASSWORD\"",
        "--appendonly yes",
    ] {
        assert!(script.contains(part), "{part} in {script}");
    }
    let headless = redis.headless_service.as_ref().expect("headless");
    assert_eq!(
        headless.spec.as_ref().and_then(|s| s.cluster_ip.as_deref()),
        Some("None")
    );
    assert!(redis.disruption_budget.is_some());

    let sentinels = desired.redis_sentinel.as_ref().expect("sentinels");
    let sentinel_set = sentinels.stateful_set.spec.as_ref().expect("spec");
    assert_eq!(sentinel_set.replicas, Some(3));
    assert_eq!(
        sentinel_set.service_name.as_deref(),
        Some("notes-redis-sentinel")
    );
    let sentinel_pod = pod_spec(&sentinel_set.template.spec);
    let sentinel_script = sentinel_pod.containers[0].args.as_ref().expect("args")[0].clone();
    for part in [
        "sentinel monitor memgate $primary 6379 2",
        "sentinel auth-pass memgate $REDIS_PASSWORD",
        "sentinel announce-hostnames yes",
        "notes-redis-0.notes-redis-headless.team-a.svc",
    ] {
        assert!(
            sentinel_script.contains(part),
            "{part} in {sentinel_script}"
        );
    }
    assert_eq!(
        secret_of(&sentinel_pod.containers[0], "REDIS_PASSWORD"),
        Some(("notes-redis-auth".into(), "password".into()))
    );
    assert!(sentinels.disruption_budget.is_some());
    // The Sentinels reach Redis; Redis's pods ask the Sentinels.
    let redis_policy = serde_json::to_string(&redis.network_policy).expect("json");
    assert!(redis_policy.contains("redis-sentinel"), "{redis_policy}");
    let sentinel_policy = serde_json::to_string(&sentinels.network_policy).expect("json");
    assert!(sentinel_policy.contains("26379"), "{sentinel_policy}");

    let config = desired.config_map.data.as_ref().expect("data")[config::CONFIG_KEY].clone();
    assert!(
        config.contains(
            "redis+sentinel://notes-redis-sentinel-0.notes-redis-sentinel.team-a.svc:26379,\
             notes-redis-sentinel-1.notes-redis-sentinel.team-a.svc:26379,\
             notes-redis-sentinel-2.notes-redis-sentinel.team-a.svc:26379/memgate"
        ),
        "{config}"
    );
    let rendered: memgate_config::Config = serde_yaml::from_str(&config).expect("memgate config");
    assert_eq!(
        rendered.redis.effective_durability(),
        memgate_config::Durability::Replicated
    );
}

#[test]
fn one_redis_node_has_no_sentinels() {
    let (_, desired) = desired("managed.yaml");
    assert!(desired.redis_sentinel.is_none());
    let redis = desired.redis.as_ref().expect("managed redis");
    assert!(redis.headless_service.is_none() && redis.disruption_budget.is_none());
}

/// The start scripts of a replicated Redis's pods are valid `sh`.
#[test]
fn the_replicated_redis_start_scripts_are_valid_shell() {
    let (_, desired) = desired("replicated.yaml");
    let parts = [
        desired.redis.as_ref().expect("redis"),
        desired.redis_sentinel.as_ref().expect("sentinels"),
    ];
    for part in parts {
        let spec = part.stateful_set.spec.as_ref().expect("spec");
        let container = &pod_spec(&spec.template.spec).containers[0];
        assert_eq!(
            container.command.as_deref(),
            Some(&["sh".to_string(), "-c".to_string()][..])
        );
        let script = &container.args.as_ref().expect("args")[0];
        let checked = std::process::Command::new("sh")
            .args(["-n", "-c", script])
            .output()
            .expect("sh");
        assert!(
            checked.status.success(),
            "{}: {}",
            container.name,
            String::from_utf8_lossy(&checked.stderr)
        );
    }
}

/// `qdrant.managed.replicas: 3`: Qdrant's distributed mode, pod 0 starting the cluster and
/// the others joining it through its stable name, spread over nodes, one peer down at a time;
/// memgate creates its collection with one shard per peer and two copies of each.
#[test]
fn a_distributed_qdrant_bootstraps_from_its_first_peer() {
    let (_, desired) = desired("distributed.yaml");
    let qdrant = desired.qdrant.as_ref().expect("managed qdrant");
    let set = qdrant.stateful_set.spec.as_ref().expect("spec");
    assert_eq!(set.replicas, Some(3));
    assert_eq!(set.service_name.as_deref(), Some("notes-qdrant-headless"));
    let pod = pod_spec(&set.template.spec);
    assert!(pod.affinity.is_some(), "spread over nodes");
    let container = &pod.containers[0];
    let script = &container.args.as_ref().expect("args")[0];
    for part in [
        "if [ \"$(hostname)\" = \"notes-qdrant-0\" ]; then exec /qdrant/qdrant --uri \"$me\"; fi",
        "--bootstrap \"http://notes-qdrant-0.notes-qdrant-headless.team-a.svc:6335\"",
        "me=\"http://$(hostname).notes-qdrant-headless.team-a.svc:6335\"",
    ] {
        assert!(script.contains(part), "{part} in {script}");
    }
    let env: Vec<(&str, Option<&str>)> = container
        .env
        .iter()
        .flatten()
        .map(|env| (env.name.as_str(), env.value.as_deref()))
        .collect();
    assert!(env.contains(&("QDRANT__CLUSTER__ENABLED", Some("true"))));
    assert!(env.contains(&("QDRANT__CLUSTER__P2P__PORT", Some("6335"))));
    let headless = qdrant.headless_service.as_ref().expect("headless");
    let ports: Vec<i32> = headless
        .spec
        .as_ref()
        .and_then(|spec| spec.ports.as_ref())
        .map(|ports| ports.iter().map(|port| port.port).collect())
        .unwrap_or_default();
    assert_eq!(ports, vec![6333, 6334, 6335]);
    assert!(qdrant.disruption_budget.is_some());
    let checked = std::process::Command::new("sh")
        .args(["-n", "-c", script])
        .output()
        .expect("sh");
    assert!(checked.status.success(), "valid sh");

    let config = desired.config_map.data.as_ref().expect("data")[config::CONFIG_KEY].clone();
    let rendered: memgate_config::Config = serde_yaml::from_str(&config).expect("config");
    let cluster = rendered.vectors.cluster.clone().expect("vectors.cluster");
    assert_eq!(
        (
            cluster.shard_number,
            cluster.replication_factor,
            cluster.write_consistency_factor
        ),
        (3, 2, 1)
    );
    assert_eq!(
        cluster.read_consistency,
        memgate_config::ReadConsistency::Majority
    );
    rendered.validate().expect("a config memgate takes");
}

fn autoscaled(fixture_name: &str) -> MemoryStore {
    let mut store = fixture(fixture_name);
    store.spec.workers.autoscale = Some(memgate_operator::crd::WorkerAutoscale {
        min: 0,
        max: 8,
        lag_per_replica: 50,
    });
    store
}

/// `workers.autoscale` with KEDA: a ScaledObject on the write queue's consumer group with
/// KEDA's Redis Streams scaler, the password from the workers' Secret; the Deployment's count
/// is left to it.
#[test]
fn autoscaled_workers_get_a_keda_scaled_object_on_the_queue_lag() {
    use memgate_operator::build::autoscale::WorkerScaler;
    use memgate_operator::build::ClusterFeatures;
    let store = autoscaled("managed.yaml");
    let desired = build::build_for(&store, &digests("a", "b"), ClusterFeatures { keda: true })
        .expect("builds");
    assert_eq!(
        desired.worker.spec.as_ref().and_then(|spec| spec.replicas),
        None,
        "the count is KEDA's"
    );
    let Some(WorkerScaler::Keda {
        scaled_object,
        authentication,
    }) = &desired.worker_scaler
    else {
        panic!("a ScaledObject: {:?}", desired.worker_scaler);
    };
    let spec = &scaled_object.data["spec"];
    assert_eq!(spec["scaleTargetRef"]["name"], "notes-worker");
    assert_eq!(
        (
            spec["minReplicaCount"].clone(),
            spec["maxReplicaCount"].clone()
        ),
        (0.into(), 8.into())
    );
    let trigger = &spec["triggers"][0];
    assert_eq!(trigger["type"], "redis-streams");
    assert_eq!(
        trigger["metadata"]["address"],
        "notes-redis.team-a.svc:6379"
    );
    assert_eq!(trigger["metadata"]["stream"], "memgate:team-a/notes:writes");
    assert_eq!(trigger["metadata"]["consumerGroup"], "workers");
    assert_eq!(trigger["metadata"]["lagCount"], "50");
    assert_eq!(trigger["authenticationRef"]["name"], "notes-worker");
    let authentication = authentication.as_ref().expect("the password");
    assert_eq!(
        authentication.data["spec"]["secretTargetRef"][0],
        serde_json::json!({"parameter": "password", "name": "notes-redis-auth", "key": "password"})
    );

    // Redis with replicas: the Sentinel variant, on every Sentinel.
    let replicated = autoscaled("replicated.yaml");
    let desired = build::build_for(
        &replicated,
        &digests("a", "b"),
        ClusterFeatures { keda: true },
    )
    .expect("builds");
    let Some(WorkerScaler::Keda { scaled_object, .. }) = &desired.worker_scaler else {
        panic!("a ScaledObject");
    };
    let trigger = &scaled_object.data["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "redis-sentinel-streams");
    assert_eq!(trigger["metadata"]["sentinelMaster"], "memgate");
    assert!(trigger["metadata"]["addresses"]
        .as_str()
        .unwrap_or_default()
        .starts_with("notes-redis-sentinel-0.notes-redis-sentinel.team-a.svc:26379,"));
}

/// Without KEDA: a HorizontalPodAutoscaler on CPU, at least one worker.
#[test]
fn autoscaled_workers_without_keda_get_a_cpu_autoscaler() {
    use memgate_operator::build::autoscale::WorkerScaler;
    let store = autoscaled("managed.yaml");
    let desired = build::build(&store, &digests("a", "b")).expect("builds");
    let Some(WorkerScaler::Cpu(hpa)) = &desired.worker_scaler else {
        panic!("an HPA: {:?}", desired.worker_scaler);
    };
    let spec = hpa.spec.as_ref().expect("spec");
    assert_eq!(spec.scale_target_ref.name, "notes-worker");
    assert_eq!((spec.min_replicas, spec.max_replicas), (Some(1), 8));
    assert!(
        desired.worker_disruption_budget.is_some(),
        "up to 8 workers"
    );
    let (_, fixed) = self::desired("managed.yaml");
    assert!(fixed.worker_scaler.is_none());
    assert_eq!(fixed.worker.spec.as_ref().and_then(|s| s.replicas), Some(3));
}
