//! The ramp's rules, pure: given where a measured rollout stands, what was measured over its
//! last interval and the bounds, the next state and why. No clock, no I/O.

use std::time::Duration;

/// A step's bounds (`spec.rollout.analysis`).
#[derive(Debug, Clone, PartialEq)]
pub struct Bounds {
    pub min_samples: u64,
    pub max_mismatch_ratio: f64,
    pub max_error_ratio: f64,
    pub max_latency_p99: Option<Duration>,
}

/// One interval's measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct Measured {
    /// Shadow comparisons made (skipped ones left out).
    pub samples: u64,
    pub mismatch_ratio: f64,
    pub error_ratio: f64,
    /// Seconds; none without fast-path calls.
    pub latency_p99: Option<f64>,
}

/// What a step's measurements say.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Every bound held: go on.
    Held,
    /// Too few comparisons to judge.
    TooFewSamples { samples: u64, needed: u64 },
    /// A bound was broken.
    Broken {
        metric: &'static str,
        value: f64,
        bound: f64,
    },
}

impl Verdict {
    pub fn explain(&self) -> String {
        match self {
            Self::Held => "every bound held".into(),
            Self::TooFewSamples { samples, needed } => {
                format!("{samples} shadow comparisons in the interval, {needed} needed")
            }
            Self::Broken {
                metric,
                value,
                bound,
            } => format!("{metric} {value:.4} is above its bound {bound}"),
        }
    }
}

/// Judges one interval: errors and latency first (they do not need shadow samples), then the
/// samples, then the mismatches.
pub fn judge(measured: &Measured, bounds: &Bounds) -> Verdict {
    if measured.error_ratio > bounds.max_error_ratio {
        return Verdict::Broken {
            metric: "error ratio",
            value: measured.error_ratio,
            bound: bounds.max_error_ratio,
        };
    }
    if let (Some(p99), Some(max)) = (measured.latency_p99, bounds.max_latency_p99) {
        if p99 > max.as_secs_f64() {
            return Verdict::Broken {
                metric: "latency p99 (s)",
                value: p99,
                bound: max.as_secs_f64(),
            };
        }
    }
    if measured.samples < bounds.min_samples {
        return Verdict::TooFewSamples {
            samples: measured.samples,
            needed: bounds.min_samples,
        };
    }
    if measured.mismatch_ratio > bounds.max_mismatch_ratio {
        return Verdict::Broken {
            metric: "mismatch ratio",
            value: measured.mismatch_ratio,
            bound: bounds.max_mismatch_ratio,
        };
    }
    Verdict::Held
}

/// Where a ramp stands among its steps: `None` below the first (0%).
pub type Step = Option<usize>;

/// The step after a verdict: one up when it held (at most the last), one down when a bound
/// was broken (below the first is 0%), the same otherwise.
pub fn next_step(step: Step, steps: usize, verdict: &Verdict) -> Step {
    match verdict {
        Verdict::Held => match step {
            None => Some(0),
            Some(at) => Some((at + 1).min(steps.saturating_sub(1))),
        },
        Verdict::Broken { .. } => step.and_then(|at| at.checked_sub(1)),
        Verdict::TooFewSamples { .. } => step,
    }
}

/// The percent of a step.
pub fn percent(steps: &[u8], step: Step) -> u8 {
    step.and_then(|at| steps.get(at)).copied().unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bounds() -> Bounds {
        Bounds {
            min_samples: 100,
            max_mismatch_ratio: 0.01,
            max_error_ratio: 0.01,
            max_latency_p99: Some(Duration::from_millis(50)),
        }
    }

    fn good() -> Measured {
        Measured {
            samples: 500,
            mismatch_ratio: 0.002,
            error_ratio: 0.0,
            latency_p99: Some(0.004),
        }
    }

    #[test]
    fn a_step_within_every_bound_goes_on_up_to_the_last() {
        assert_eq!(judge(&good(), &bounds()), Verdict::Held);
        let steps = [1, 5, 25, 50, 100];
        let mut step = Some(0);
        let mut seen = vec![percent(&steps, step)];
        for _ in 0..6 {
            step = next_step(step, steps.len(), &Verdict::Held);
            seen.push(percent(&steps, step));
        }
        assert_eq!(seen, [1, 5, 25, 50, 100, 100, 100]);
    }

    #[test]
    fn a_broken_bound_names_the_metric_and_goes_one_step_back_or_to_zero() {
        let mismatching = Measured {
            mismatch_ratio: 0.05,
            ..good()
        };
        let verdict = judge(&mismatching, &bounds());
        assert_eq!(
            verdict,
            Verdict::Broken {
                metric: "mismatch ratio",
                value: 0.05,
                bound: 0.01
            }
        );
        assert_eq!(
            verdict.explain(),
            "mismatch ratio 0.0500 is above its bound 0.01"
        );
        assert_eq!(next_step(Some(2), 5, &verdict), Some(1));
        assert_eq!(next_step(Some(0), 5, &verdict), None);
        assert_eq!(percent(&[1, 5], None), 0);
        let slow = Measured {
            latency_p99: Some(0.2),
            ..good()
        };
        assert!(matches!(
            judge(&slow, &bounds()),
            Verdict::Broken {
                metric: "latency p99 (s)",
                ..
            }
        ));
    }

    #[test]
    fn errors_count_even_without_samples_and_too_few_samples_hold() {
        let failing = Measured {
            samples: 3,
            error_ratio: 0.5,
            ..good()
        };
        assert!(matches!(
            judge(&failing, &bounds()),
            Verdict::Broken {
                metric: "error ratio",
                ..
            }
        ));
        let quiet = Measured {
            samples: 3,
            ..good()
        };
        let verdict = judge(&quiet, &bounds());
        assert_eq!(
            verdict,
            Verdict::TooFewSamples {
                samples: 3,
                needed: 100
            }
        );
        assert_eq!(next_step(Some(2), 5, &verdict), Some(2));
    }
}
