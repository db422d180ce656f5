//! The status a store reports, computed from the applied objects' real state: per-part ready
//! counts, the endpoints and Secrets in use, and the conditions `Available`, `Progressing` and
//! `Degraded`, whose `lastTransitionTime` moves only when their status flips.

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

use crate::apply::Applied;
use crate::build::{config, config_map_name, secret_refs};
use crate::crd::{Endpoints, MemoryStore, MemoryStoreStatus, PartStatus};

pub const AVAILABLE: &str = "Available";
pub const PROGRESSING: &str = "Progressing";
pub const DEGRADED: &str = "Degraded";
/// A measured rollout's state (`spec.rollout.analysis`): `True` while it holds its bounds.
pub const ROLLOUT: &str = "Rollout";

/// Why the store is degraded, when it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub reason: String,
    pub message: String,
}

fn part(ready: i32, desired: i32) -> PartStatus {
    PartStatus {
        ready: format!("{ready}/{desired}"),
        ready_replicas: ready,
        replicas: desired,
    }
}

fn external() -> PartStatus {
    PartStatus {
        ready: "external".into(),
        ready_replicas: 0,
        replicas: 0,
    }
}

/// What status needs of a StatefulSet or Deployment: the same fields in both.
struct Workload {
    desired: i32,
    ready: i32,
    updated: i32,
    generation: Option<i64>,
    observed: Option<i64>,
}

impl Workload {
    fn of_set(set: &StatefulSet) -> Self {
        let status = set.status.as_ref();
        Self {
            desired: set.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            generation: set.metadata.generation,
            observed: status.and_then(|s| s.observed_generation),
        }
    }

    fn of_deployment(deployment: &Deployment) -> Self {
        let status = deployment.status.as_ref();
        Self {
            desired: deployment
                .spec
                .as_ref()
                .and_then(|s| s.replicas)
                .unwrap_or(1),
            ready: status.and_then(|s| s.ready_replicas).unwrap_or(0),
            updated: status.and_then(|s| s.updated_replicas).unwrap_or(0),
            generation: deployment.metadata.generation,
            observed: status.and_then(|s| s.observed_generation),
        }
    }

    fn part(&self) -> PartStatus {
        part(self.ready, self.desired)
    }

    /// Whether it has caught up with its latest spec.
    fn rolled_out(&self) -> bool {
        self.generation.is_some()
            && self.generation <= self.observed
            && self.updated >= self.desired
    }
}

/// A condition with `lastTransitionTime` kept from the old one unless the status flipped.
pub(crate) fn condition(
    old: &[Condition],
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: Timestamp,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_string();
    let last_transition_time = old
        .iter()
        .find(|c| c.type_ == type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(now));
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

fn endpoints(store: &MemoryStore) -> Endpoints {
    Endpoints {
        redis_url: config::redis_url(store),
        qdrant_url: config::qdrant_url(store),
        config_map: config_map_name(store),
        secrets: secret_refs(store)
            .into_iter()
            .map(|(_, r)| format!("{}/{}", r.name, r.key))
            .collect(),
    }
}

/// The status after a reconcile that applied (or, paused, read) `applied`; `problem` when the
/// store is degraded.
pub fn compute(
    store: &MemoryStore,
    applied: &Applied,
    problem: Option<Problem>,
    now: Timestamp,
) -> MemoryStoreStatus {
    let old = store
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let generation = store.metadata.generation;
    let redis = match &applied.redis {
        Some(set) => Workload::of_set(set).part(),
        None if store.spec.redis.external.is_some() => external(),
        None => part(0, 1),
    };
    let qdrant = match &applied.qdrant {
        Some(set) => Workload::of_set(set).part(),
        None if store.spec.qdrant.external.is_some() => external(),
        None => part(0, 1),
    };
    let workers = applied
        .worker
        .as_ref()
        .map(|d| Workload::of_deployment(d).part())
        .unwrap_or_else(|| part(0, store.spec.workers.replicas));

    let part_up = |p: &PartStatus| p.ready == "external" || p.ready_replicas >= 1;
    let workers_up = workers.replicas == 0 || workers.ready_replicas >= 1;
    // A replicated Redis fails over only while a quorum of its Sentinels is up.
    let sentinels = applied
        .redis_sentinel
        .as_ref()
        .map(|set| Workload::of_set(set).part());
    let sentinels_up = sentinels
        .as_ref()
        .is_none_or(|p| p.ready_replicas >= crate::build::sentinel::QUORUM as i32);
    let available = part_up(&redis) && part_up(&qdrant) && workers_up && sentinels_up;
    let mut waiting = Vec::new();
    for (name, p) in [
        ("redis", Some(&redis)),
        ("redis-sentinel", sentinels.as_ref()),
        ("qdrant", Some(&qdrant)),
        ("workers", Some(&workers)),
    ] {
        let Some(p) = p else { continue };
        if p.ready != "external" && p.ready_replicas < p.replicas {
            waiting.push(format!("{name} {}", p.ready));
        }
    }
    let rolling = [&applied.redis, &applied.redis_sentinel]
        .into_iter()
        .flatten()
        .any(|s| !Workload::of_set(s).rolled_out())
        || applied
            .qdrant
            .as_ref()
            .is_some_and(|s| !Workload::of_set(s).rolled_out())
        || applied
            .worker
            .as_ref()
            .is_some_and(|d| !Workload::of_deployment(d).rolled_out());
    let progressing = !waiting.is_empty() || rolling;

    let paused = store.spec.paused;
    let conditions = vec![
        condition(
            old,
            AVAILABLE,
            available,
            if available {
                "AllPartsReady"
            } else {
                "PartsNotReady"
            },
            if available {
                "Redis, Qdrant and the workers are ready".into()
            } else {
                format!("waiting for {}", waiting.join(", "))
            },
            generation,
            now,
        ),
        condition(
            old,
            PROGRESSING,
            progressing && !paused,
            match (paused, progressing) {
                (true, _) => "Paused",
                (false, true) => "RollingOut",
                (false, false) => "UpToDate",
            },
            match (paused, progressing) {
                (true, _) => "spec.paused is true: no changes are made".into(),
                (false, true) if waiting.is_empty() => "rolling out the latest spec".into(),
                (false, true) => format!("waiting for {}", waiting.join(", ")),
                (false, false) => "every part runs the latest spec".into(),
            },
            generation,
            now,
        ),
        match &problem {
            Some(problem) => condition(
                old,
                DEGRADED,
                true,
                &problem.reason,
                problem.message.clone(),
                generation,
                now,
            ),
            None => condition(
                old,
                DEGRADED,
                false,
                "AsExpected",
                String::new(),
                generation,
                now,
            ),
        },
    ];
    MemoryStoreStatus {
        observed_generation: generation,
        conditions,
        redis: Some(redis),
        qdrant: Some(qdrant),
        workers: Some(workers),
        endpoints: Some(endpoints(store)),
        worker_scaler: applied.worker_scaler.map(str::to_string),
        // A measured rollout's state carries over; the reconcile sets what it decided.
        rollout: store.status.as_ref().and_then(|s| s.rollout.clone()),
    }
}

/// The status after a reconcile that failed with `problem`: the conditions say what is wrong
/// with the current generation, but `observedGeneration` stays the last one applied in full,
/// so nobody takes a failed generation for a rolled-out one.
pub fn failed(
    store: &MemoryStore,
    applied: &Applied,
    problem: Problem,
    now: Timestamp,
) -> MemoryStoreStatus {
    let mut status = compute(store, applied, Some(problem), now);
    status.observed_generation = store.status.as_ref().and_then(|s| s.observed_generation);
    status
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStatus, StatefulSetSpec, StatefulSetStatus,
    };
    use k8s_openapi::jiff::SignedDuration;

    fn store() -> MemoryStore {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store")
    }

    fn set(ready: i32, updated: i32) -> StatefulSet {
        let mut set = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                ..Default::default()
            }),
            status: Some(StatefulSetStatus {
                ready_replicas: Some(ready),
                updated_replicas: Some(updated),
                observed_generation: Some(2),
                ..Default::default()
            }),
            ..Default::default()
        };
        set.metadata.generation = Some(2);
        set
    }

    fn workers(ready: i32) -> Deployment {
        let mut deployment = Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(3),
                ..Default::default()
            }),
            status: Some(DeploymentStatus {
                ready_replicas: Some(ready),
                updated_replicas: Some(3),
                observed_generation: Some(1),
                ..Default::default()
            }),
            ..Default::default()
        };
        deployment.metadata.generation = Some(1);
        deployment
    }

    fn get<'a>(status: &'a MemoryStoreStatus, type_: &str) -> &'a Condition {
        status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition")
    }

    #[test]
    fn conditions_follow_the_objects_real_state() {
        let store = store();
        let t0 = Timestamp::now();
        let rolling = Applied {
            redis: Some(set(1, 1)),
            qdrant: Some(set(0, 1)),
            worker: Some(workers(1)),
            ..Default::default()
        };
        let first = compute(&store, &rolling, None, t0);
        assert_eq!(get(&first, AVAILABLE).status, "False");
        assert_eq!(get(&first, PROGRESSING).status, "True");
        assert!(get(&first, PROGRESSING).message.contains("qdrant 0/1"));
        assert_eq!(first.redis.as_ref().map(|p| p.ready.as_str()), Some("1/1"));
        assert_eq!(
            first.workers.as_ref().map(|p| p.ready.as_str()),
            Some("1/3")
        );

        let mut store = store;
        store.status = Some(first.clone());
        let ready = Applied {
            redis: Some(set(1, 1)),
            qdrant: Some(set(1, 1)),
            worker: Some(workers(3)),
            ..Default::default()
        };
        let t1 = t0 + SignedDuration::from_secs(30);
        let second = compute(&store, &ready, None, t1);
        assert_eq!(get(&second, AVAILABLE).status, "True");
        assert_eq!(get(&second, PROGRESSING).status, "False");
        assert_eq!(
            get(&second, AVAILABLE).last_transition_time,
            Time(t1),
            "flipped"
        );
        assert_eq!(
            get(&second, DEGRADED).last_transition_time,
            get(&first, DEGRADED).last_transition_time,
            "Degraded stayed False: its time stays"
        );
        assert_eq!(second.observed_generation, Some(3));

        let problem = Problem {
            reason: "SecretNotFound".into(),
            message: "Secret \"openai\" has no key".into(),
        };
        let third = compute(&store, &ready, Some(problem.clone()), t1);
        assert_eq!(get(&third, DEGRADED).status, "True");
        assert_eq!(get(&third, DEGRADED).reason, "SecretNotFound");

        // A failed reconcile of generation 4 leaves observedGeneration at the last one applied.
        store.status = Some(second.clone());
        store.metadata.generation = Some(4);
        let failed = failed(&store, &ready, problem, t1);
        assert_eq!(failed.observed_generation, Some(3));
        assert_eq!(get(&failed, DEGRADED).status, "True");
        assert_eq!(get(&failed, DEGRADED).observed_generation, Some(4));
    }
}
