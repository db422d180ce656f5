//! Shadow comparison: a sample of the fast path's `search_memories` and `get_memory` answers
//! is also asked of the legacy service, off the answer's path, and the two answers compared
//! ([`compare`]). Counted in `memgate_shadow_comparisons_total{tool,outcome}`; the last
//! mismatches are kept for the admin port's `/shadow/mismatches`.
//!
//! It never changes an answer or its latency: the client's answer is sent first, at most
//! `shadow.maxInFlight` shadow calls run at once, and a sampled read is skipped (and counted)
//! when none is free or the legacy service's breaker is open.
//!
//! Read counts stay exact: the legacy service counts the read it answers in its payload, so
//! memgate does not count its own read of a shadowed call ([`crate::core::Reads`]), and drops
//! the cached records of what the legacy service read, as for any forwarded read. When the
//! legacy call fails, memgate counts the read itself after all. The legacy service counts a
//! read by writing the memory back (read, add one, write), so two of its reads of one memory
//! at once can lose one: a shadow call is not sent while another one reading the same memory
//! is in flight (it is skipped, and memgate counts that read itself).

pub mod compare;

use std::collections::{HashSet, VecDeque};
use std::sync::{Arc, Mutex};

use uuid::Uuid;

use serde::Serialize;
use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use self::compare::{ShadowTool, Verdict};
use crate::config::ShadowConfig;
use crate::metrics::Metrics;

/// What one shadowed call came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Match,
    Mismatch,
    /// A mismatch on an answer memgate served from its cached search results, younger than
    /// `cache.searchTtl`: what the user got, stale by design, not a layout difference.
    StaleWithinTtl,
    LegacyError,
    FastError,
    Skipped,
}

impl Outcome {
    pub const ALL: [Outcome; 6] = [
        Self::Match,
        Self::Mismatch,
        Self::StaleWithinTtl,
        Self::LegacyError,
        Self::FastError,
        Self::Skipped,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Match => "match",
            Self::Mismatch => "mismatch",
            Self::StaleWithinTtl => "stale_within_ttl",
            Self::LegacyError => "legacy_error",
            Self::FastError => "fast_error",
            Self::Skipped => "skipped",
        }
    }
}

/// A kept mismatch, as `/shadow/mismatches` shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Mismatch {
    pub at: String,
    pub tool: &'static str,
    pub outcome: &'static str,
    /// What differs, in a few words.
    pub difference: String,
    /// The call's arguments (texts redacted unless `shadow.showContent`).
    pub arguments: Value,
    pub fast: Value,
    pub legacy: Value,
}

pub struct Shadow {
    settings: ShadowConfig,
    permits: Arc<Semaphore>,
    kept: Mutex<VecDeque<Mismatch>>,
    /// The memories the shadow calls in flight read.
    reading: Arc<Mutex<HashSet<Uuid>>>,
    metrics: Metrics,
}

/// The memories one shadow call reads, released when it is done.
pub struct Reading {
    ids: Vec<Uuid>,
    reading: Arc<Mutex<HashSet<Uuid>>>,
}

impl Drop for Reading {
    fn drop(&mut self) {
        let mut reading = self
            .reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        for id in &self.ids {
            reading.remove(id);
        }
    }
}

impl std::fmt::Debug for Shadow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shadow")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Shadow {
    pub fn new(settings: ShadowConfig, metrics: Metrics) -> Self {
        for tool in [ShadowTool::Search, ShadowTool::Get] {
            for outcome in Outcome::ALL {
                // Every series shows, at 0, before its first comparison.
                metrics
                    .front
                    .shadow_comparisons
                    .with_label_values(&[tool.name(), outcome.as_str()]);
            }
        }
        Self {
            permits: Arc::new(Semaphore::new(settings.max_in_flight)),
            kept: Mutex::new(VecDeque::new()),
            reading: Arc::new(Mutex::new(HashSet::new())),
            settings,
            metrics,
        }
    }

    pub fn enabled(&self) -> bool {
        self.settings.sample > 0.0
    }

    /// Whether this read is shadowed: sampled, and a slot free while the legacy service is
    /// not known to be down. A sampled read that cannot be shadowed is counted as skipped.
    pub fn admit(&self, tool: ShadowTool, legacy_refusing: bool) -> Option<OwnedSemaphorePermit> {
        if !self.enabled() || !sampled(self.settings.sample) {
            return None;
        }
        let permit = (!legacy_refusing)
            .then(|| self.permits.clone().try_acquire_owned().ok())
            .flatten();
        if permit.is_none() {
            self.count(tool, Outcome::Skipped);
        }
        permit
    }

    /// Claims `ids` for one shadow call, unless another in flight reads one of them.
    pub fn claim(&self, ids: &[Uuid]) -> Option<Reading> {
        let mut reading = self
            .reading
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if ids.iter().any(|id| reading.contains(id)) {
            return None;
        }
        reading.extend(ids.iter().copied());
        Some(Reading {
            ids: ids.to_vec(),
            reading: self.reading.clone(),
        })
    }

    pub fn count(&self, tool: ShadowTool, outcome: Outcome) {
        self.metrics
            .front
            .shadow_comparisons
            .with_label_values(&[tool.name(), outcome.as_str()])
            .inc();
    }

    /// Compares the two answers of a shadowed call, counts the outcome and keeps a mismatch.
    pub fn judge(
        &self,
        tool: ShadowTool,
        arguments: &Value,
        fast: &str,
        legacy: &str,
        from_cached_results: bool,
    ) -> Outcome {
        let outcome = match compare::compare(tool, fast, legacy) {
            Verdict::Match => Outcome::Match,
            Verdict::Mismatch(difference) => {
                let outcome = if from_cached_results {
                    Outcome::StaleWithinTtl
                } else {
                    Outcome::Mismatch
                };
                self.keep(tool, outcome, difference, arguments, fast, legacy);
                outcome
            }
        };
        self.count(tool, outcome);
        outcome
    }

    fn keep(
        &self,
        tool: ShadowTool,
        outcome: Outcome,
        difference: String,
        arguments: &Value,
        fast: &str,
        legacy: &str,
    ) {
        if self.settings.keep_mismatches == 0 {
            return;
        }
        let show = |text: &str| {
            if self.settings.show_content {
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
            } else {
                compare::redacted(text)
            }
        };
        let mismatch = Mismatch {
            at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            tool: tool.name(),
            outcome: outcome.as_str(),
            difference,
            arguments: show(&arguments.to_string()),
            fast: show(fast),
            legacy: show(legacy),
        };
        let mut kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.push_back(mismatch);
        while kept.len() > self.settings.keep_mismatches {
            kept.pop_front();
        }
    }

    /// The kept mismatches, newest last.
    pub fn mismatches(&self) -> Vec<Mismatch> {
        let kept = self
            .kept
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        kept.iter().cloned().collect()
    }
}

/// Whether a read falls in a sample of `share` (0–1).
fn sampled(share: f64) -> bool {
    if share >= 1.0 {
        return true;
    }
    let draw = (uuid::Uuid::new_v4().as_u128() >> 64) as u64;
    (draw as f64 / u64::MAX as f64) < share
}
