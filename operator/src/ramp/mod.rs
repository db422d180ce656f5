//! A rollout raised on evidence (`spec.rollout.analysis`), as Flagger ramps a canary: the
//! store starts at its first step, and after each `interval` the operator measures the step in
//! Prometheus ([`prometheus`]) and judges it ([`decide`]): every bound held → the next step;
//! a bound broken → one step back (or 0), with a condition and an Event naming the metric, its
//! value and its bound, and the ramp stays there until the spec changes; too few samples, or
//! Prometheus unreachable → the same step, and the condition says why. `spec.rollout.paused`
//! holds the step. Without `analysis` the percent is taken as written.

pub mod decide;
pub mod prometheus;

use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::jiff::Timestamp;
use kube::runtime::events::EventType;
use kube::ResourceExt;

use self::decide::{judge, next_step, percent, Bounds, Measured, Step, Verdict};
use crate::crd::{AnalysisSpec, MemoryStore, RolloutMeasurements, RolloutStatus};

/// Measures one store's step (Prometheus, or a test's numbers).
#[async_trait]
pub trait Measure: Send + Sync {
    async fn measure(
        &self,
        analysis: &AnalysisSpec,
        namespace: &str,
        store: &str,
        window: Duration,
    ) -> Result<Measured, String>;
}

/// The `Rollout` condition's state.
#[derive(Debug, Clone, PartialEq)]
pub struct RampCondition {
    pub healthy: bool,
    pub reason: &'static str,
    pub message: String,
}

/// An Event about the ramp. Its action names the move, so that each move is an Event of its
/// own (Events of one object with the same reason and action are folded into one series).
#[derive(Debug, Clone, PartialEq)]
pub struct RampEvent {
    pub type_: EventType,
    pub reason: &'static str,
    pub action: String,
    pub note: String,
}

fn event(
    type_: EventType,
    reason: &'static str,
    action: String,
    note: String,
) -> Option<RampEvent> {
    Some(RampEvent {
        type_,
        reason,
        action,
        note,
    })
}

/// What one reconcile decided.
#[derive(Debug, Clone, PartialEq)]
pub struct RampOutcome {
    /// The percent the sidecars are given.
    pub percent: u8,
    /// `status.rollout` (none without analysis).
    pub status: Option<RolloutStatus>,
    pub condition: Option<RampCondition>,
    pub event: Option<RampEvent>,
    /// When to look again.
    pub requeue: Option<Duration>,
}

impl RampOutcome {
    /// The store as the build sees it: its percent the ramp's.
    pub fn applied_to(&self, store: &MemoryStore) -> MemoryStore {
        let mut store = store.clone();
        store.spec.rollout.percent = self.percent;
        store
    }
}

fn bounds(analysis: &AnalysisSpec) -> Result<Bounds, String> {
    let max_latency_p99 = analysis
        .max_latency_p99
        .as_deref()
        .map(humantime::parse_duration)
        .transpose()
        .map_err(|error| format!("maxLatencyP99: {error}"))?;
    Ok(Bounds {
        min_samples: analysis.min_samples,
        max_mismatch_ratio: analysis.max_mismatch_ratio,
        max_error_ratio: analysis.max_error_ratio,
        max_latency_p99,
    })
}

fn measurements(measured: &Measured) -> RolloutMeasurements {
    RolloutMeasurements {
        samples: measured.samples,
        mismatch_ratio: format!("{:.4}", measured.mismatch_ratio),
        error_ratio: format!("{:.4}", measured.error_ratio),
        latency_p99: measured.latency_p99.map(|p99| format!("{p99:.4}")),
    }
}

fn healthy(reason: &'static str, message: String) -> Option<RampCondition> {
    Some(RampCondition {
        healthy: true,
        reason,
        message,
    })
}

fn unhealthy(reason: &'static str, message: String) -> Option<RampCondition> {
    Some(RampCondition {
        healthy: false,
        reason,
        message,
    })
}

/// One reconcile's step of the ramp.
pub async fn advance(store: &MemoryStore, measure: &dyn Measure, now: Timestamp) -> RampOutcome {
    let Some(analysis) = &store.spec.rollout.analysis else {
        return RampOutcome {
            percent: store.spec.rollout.percent,
            status: None,
            condition: None,
            event: None,
            requeue: None,
        };
    };
    let steps = &analysis.steps;
    let generation = store.metadata.generation;
    let previous = store.status.as_ref().and_then(|s| s.rollout.clone());
    let Some(previous) = previous else {
        let status = RolloutStatus {
            percent: percent(steps, Some(0)),
            step: Some(0),
            last_moved: Some(now.to_string()),
            ..RolloutStatus::default()
        };
        return RampOutcome {
            percent: status.percent,
            condition: healthy("Started", format!("at {}% of {steps:?}", status.percent)),
            event: event(
                EventType::Normal,
                "RolloutStarted",
                "Measure".into(),
                format!(
                    "measured rollout started at {}% (steps {steps:?})",
                    status.percent
                ),
            ),
            status: Some(status),
            requeue: humantime::parse_duration(&analysis.interval).ok(),
        };
    };
    let step: Step = previous
        .step
        .map(|at| (at as usize).min(steps.len().saturating_sub(1)));
    let hold = |condition: Option<RampCondition>, requeue: Option<Duration>| RampOutcome {
        percent: percent(steps, step),
        status: Some(RolloutStatus {
            percent: percent(steps, step),
            step: step.map(|at| at as u32),
            ..previous.clone()
        }),
        condition,
        event: None,
        requeue,
    };
    if previous.rolled_back_generation.is_some() && previous.rolled_back_generation == generation {
        return hold(
            unhealthy(
                "RolledBack",
                format!(
                    "rolled back to {}%: {}; change the spec to try again",
                    percent(steps, step),
                    previous
                        .rolled_back_because
                        .as_deref()
                        .unwrap_or("a bound was broken")
                ),
            ),
            None,
        );
    }
    if store.spec.rollout.paused || store.spec.paused {
        return hold(
            healthy("Paused", format!("held at {}%", percent(steps, step))),
            None,
        );
    }
    let (interval, bounds) = match (
        humantime::parse_duration(&analysis.interval),
        bounds(analysis),
    ) {
        (Ok(interval), Ok(bounds)) => (interval, bounds),
        (Err(error), _) => {
            return hold(
                unhealthy("InvalidAnalysis", format!("interval: {error}")),
                None,
            )
        }
        (_, Err(error)) => return hold(unhealthy("InvalidAnalysis", error), None),
    };
    let since = previous
        .last_moved
        .as_deref()
        .and_then(|moved| moved.parse::<Timestamp>().ok())
        .map(|moved| now.duration_since(moved).unsigned_abs())
        .unwrap_or(interval);
    if since < interval {
        return hold(
            healthy(
                "Measuring",
                format!(
                    "at {}%, measured again in {:?}",
                    percent(steps, step),
                    interval - since
                ),
            ),
            Some(interval - since),
        );
    }
    let namespace = store.namespace().unwrap_or_default();
    let measured = match measure
        .measure(analysis, &namespace, &store.name_any(), interval)
        .await
    {
        Ok(measured) => measured,
        Err(error) => {
            let mut outcome = hold(
                unhealthy(
                    "AnalysisUnavailable",
                    format!("held at {}%: {error}", percent(steps, step)),
                ),
                Some(interval.min(Duration::from_secs(60))),
            );
            outcome.event = event(
                EventType::Warning,
                "AnalysisUnavailable",
                "Measure".into(),
                error,
            );
            return outcome;
        }
    };
    decided(
        steps,
        step,
        &previous,
        &measured,
        judge(&measured, &bounds),
        generation,
        now,
        interval,
    )
}

/// The outcome of a judged interval.
#[allow(clippy::too_many_arguments)]
fn decided(
    steps: &[u8],
    step: Step,
    previous: &RolloutStatus,
    measured: &Measured,
    verdict: Verdict,
    generation: Option<i64>,
    now: Timestamp,
    interval: Duration,
) -> RampOutcome {
    let next = next_step(step, steps.len(), &verdict);
    let (from, to) = (percent(steps, step), percent(steps, next));
    let summary = format!(
        "{} samples, mismatch ratio {:.4}, error ratio {:.4}, p99 {}",
        measured.samples,
        measured.mismatch_ratio,
        measured.error_ratio,
        measured
            .latency_p99
            .map_or("none".to_string(), |p99| format!("{:.1} ms", p99 * 1000.0))
    );
    let moved = next != step;
    let status = RolloutStatus {
        percent: to,
        step: next.map(|at| at as u32),
        last_moved: if moved {
            Some(now.to_string())
        } else {
            previous.last_moved.clone()
        },
        measured: Some(measurements(measured)),
        rolled_back_generation: match verdict {
            Verdict::Broken { .. } => generation,
            _ => previous.rolled_back_generation,
        },
        rolled_back_because: match verdict {
            Verdict::Broken { .. } => Some(verdict.explain()),
            _ => previous.rolled_back_because.clone(),
        },
    };
    let (condition, event) = match &verdict {
        Verdict::Held if moved => (
            healthy("Advanced", format!("{from}% → {to}%: {summary}")),
            event(
                EventType::Normal,
                "RolloutAdvanced",
                format!("Ramp {from}% to {to}%"),
                format!("from {from}% to {to}%: every bound held ({summary})"),
            ),
        ),
        Verdict::Held => (
            healthy("Complete", format!("at {to}%, every bound held: {summary}")),
            None,
        ),
        Verdict::TooFewSamples { .. } => (
            healthy(
                "WaitingForSamples",
                format!("held at {to}%: {}", verdict.explain()),
            ),
            None,
        ),
        Verdict::Broken { .. } => (
            unhealthy(
                "RolledBack",
                format!("{from}% → {to}%: {}", verdict.explain()),
            ),
            event(
                EventType::Warning,
                "RolledBack",
                format!("Ramp {from}% to {to}%"),
                format!("from {from}% to {to}%: {} ({summary})", verdict.explain()),
            ),
        ),
    };
    RampOutcome {
        percent: to,
        status: Some(status),
        condition,
        event,
        requeue: Some(interval),
    }
}

#[cfg(test)]
mod tests;
