//! The ramp's state machine over reconciles, with measurements given by the test.

use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::runtime::events::EventType;

use super::decide::Measured;
use super::{advance, Measure, RampOutcome};
use crate::crd::{AnalysisSpec, MemoryStore, MemoryStoreStatus};

struct Given(Mutex<Result<Measured, String>>);

#[async_trait]
impl Measure for Given {
    async fn measure(
        &self,
        _analysis: &AnalysisSpec,
        _namespace: &str,
        _store: &str,
        _window: Duration,
    ) -> Result<Measured, String> {
        self.0.lock().expect("lock").clone()
    }
}

fn good() -> Measured {
    Measured {
        samples: 500,
        mismatch_ratio: 0.0,
        error_ratio: 0.0,
        latency_p99: Some(0.003),
    }
}

fn store() -> MemoryStore {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/managed.yaml");
    let mut store: MemoryStore =
        serde_yaml::from_str(&std::fs::read_to_string(path).expect("fixture")).expect("store");
    store.metadata.generation = Some(3);
    store.spec.rollout.percent = 40;
    store.spec.rollout.analysis = Some(AnalysisSpec {
        steps: vec![1, 5, 25, 50, 100],
        interval: "5m".into(),
        min_samples: 100,
        max_mismatch_ratio: 0.01,
        max_error_ratio: 0.01,
        max_latency_p99: Some("50ms".into()),
        prometheus: "http://prometheus:9090".into(),
    });
    store
}

/// The store after a reconcile that decided `outcome`.
fn after(mut store: MemoryStore, outcome: &RampOutcome) -> MemoryStore {
    let status = store.status.get_or_insert_with(MemoryStoreStatus::default);
    status.rollout = outcome.status.clone();
    store
}

fn later(now: Timestamp, minutes: i64) -> Timestamp {
    now.checked_add(SignedDuration::from_mins(minutes))
        .expect("time")
}

#[tokio::test]
async fn matching_answers_ramp_through_every_step_one_interval_at_a_time() {
    let measure = Given(Mutex::new(Ok(good())));
    let mut now = Timestamp::now();
    let mut store = store();
    let started = advance(&store, &measure, now).await;
    assert_eq!(
        started.percent, 1,
        "the first step, not spec.rollout.percent"
    );
    let started_event = started.event.clone().expect("an event");
    assert_eq!(
        (started_event.type_, started_event.reason),
        (EventType::Normal, "RolloutStarted")
    );
    store = after(store, &started);
    // Within the interval: held, and told when to look again.
    let early = advance(&store, &measure, later(now, 2)).await;
    assert_eq!(early.percent, 1);
    assert_eq!(early.requeue, Some(Duration::from_secs(180)));
    let mut seen = vec![1];
    for _ in 0..5 {
        now = later(now, 5);
        let outcome = advance(&store, &measure, now).await;
        seen.push(outcome.percent);
        store = after(store, &outcome);
    }
    assert_eq!(seen, [1, 5, 25, 50, 100, 100]);
    let done = advance(&store, &measure, later(now, 5)).await;
    assert_eq!(done.condition.expect("condition").reason, "Complete");
    assert_eq!(
        store
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .and_then(|r| r.measured.clone())
            .map(|m| m.samples),
        Some(500)
    );
}

#[tokio::test]
async fn a_broken_bound_rolls_back_says_why_and_stays_until_the_spec_changes() {
    let measure = Given(Mutex::new(Ok(good())));
    let mut now = Timestamp::now();
    let mut store = store();
    for _ in 0..3 {
        let outcome = advance(&store, &measure, now).await;
        store = after(store, &outcome);
        now = later(now, 5);
    }
    assert_eq!(
        store
            .status
            .as_ref()
            .and_then(|s| s.rollout.as_ref())
            .map(|r| r.percent),
        Some(25)
    );
    *measure.0.lock().expect("lock") = Ok(Measured {
        mismatch_ratio: 0.08,
        ..good()
    });
    let rolled = advance(&store, &measure, now).await;
    assert_eq!(rolled.percent, 5, "back to the last good step");
    let condition = rolled.condition.clone().expect("condition");
    assert!(!condition.healthy);
    assert_eq!(condition.reason, "RolledBack");
    let rolled_event = rolled.event.clone().expect("event");
    assert_eq!(
        (rolled_event.type_, rolled_event.reason),
        (EventType::Warning, "RolledBack")
    );
    assert_eq!(rolled_event.action, "Ramp 25% to 5%");
    let note = &rolled_event.note;
    assert!(
        note.contains("mismatch ratio 0.0800 is above its bound 0.01"),
        "{note}"
    );
    store = after(store, &rolled);
    // Good numbers again do not move it: the same generation stays rolled back.
    *measure.0.lock().expect("lock") = Ok(good());
    let stays = advance(&store, &measure, later(now, 30)).await;
    assert_eq!(stays.percent, 5);
    // A new generation ramps again from there.
    store.metadata.generation = Some(4);
    let again = advance(&store, &measure, later(now, 30)).await;
    assert_eq!(again.percent, 25);
}

#[tokio::test]
async fn paused_holds_and_an_unreachable_prometheus_holds_and_says_so() {
    let measure = Given(Mutex::new(Ok(good())));
    let now = Timestamp::now();
    let mut store = store();
    let started = advance(&store, &measure, now).await;
    store = after(store, &started);
    store.spec.rollout.paused = true;
    let paused = advance(&store, &measure, later(now, 60)).await;
    assert_eq!(paused.percent, 1);
    assert_eq!(paused.condition.expect("condition").reason, "Paused");
    store.spec.rollout.paused = false;
    *measure.0.lock().expect("lock") =
        Err("Prometheus at http://prometheus:9090 cannot be reached: connection refused".into());
    let blind = advance(&store, &measure, later(now, 60)).await;
    assert_eq!(blind.percent, 1);
    let condition = blind.condition.expect("condition");
    assert_eq!(
        (condition.healthy, condition.reason),
        (false, "AnalysisUnavailable")
    );
    assert_eq!(
        blind.event.map(|event| event.reason),
        Some("AnalysisUnavailable")
    );
    // Too few samples: held, healthy.
    *measure.0.lock().expect("lock") = Ok(Measured {
        samples: 7,
        ..good()
    });
    let quiet = advance(&store, &measure, later(now, 60)).await;
    assert_eq!(quiet.percent, 1);
    assert_eq!(
        quiet.condition.expect("condition").reason,
        "WaitingForSamples"
    );
}

#[tokio::test]
async fn without_analysis_the_percent_is_taken_as_written() {
    let mut store = store();
    store.spec.rollout.analysis = None;
    let outcome = advance(&store, &Given(Mutex::new(Ok(good()))), Timestamp::now()).await;
    assert_eq!(outcome.percent, 40);
    assert_eq!(outcome.status, None);
}
