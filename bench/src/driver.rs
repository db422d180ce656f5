//! The open-loop load driver: requests are started on a fixed schedule (`rate` per second),
//! each in its own task, whatever the answers; a slow answer never delays the next send, so a
//! stall shows in the latency tail instead of lowering the rate. Latencies go into an HDR
//! histogram (1 µs to 60 s, 3 significant digits).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use hdrhistogram::Histogram;
use indicatif::ProgressBar;

/// What one request found wrong, if anything.
#[derive(Debug)]
pub enum Failure {
    /// No usable answer: connection error or an unexpected status.
    Error(String),
    /// Answered, but not by the path or cache the scenario measures (a header said otherwise).
    Unexpected(String),
}

pub type OpFuture = Pin<Box<dyn Future<Output = Result<(), Failure>> + Send>>;

/// The `i`-th request of a scenario.
pub type Op = Arc<dyn Fn(usize) -> OpFuture + Send + Sync>;

/// What a run measured.
pub struct Outcome {
    pub histogram: Histogram<u64>,
    pub errors: u64,
    pub unexpected: u64,
    /// The first failure seen, to report.
    pub first_failure: Option<String>,
    /// From the first send to the last answer.
    pub elapsed: Duration,
    /// The latest a send started after it was due: the load generator's own delay.
    pub max_send_lag: Duration,
}

impl Outcome {
    pub fn answered(&self) -> u64 {
        self.histogram.len()
    }
}

fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000, 3).expect("static histogram bounds are valid")
}

/// Sends `count` requests at `rate` per second, open loop; `progress` advances per answer.
pub async fn run(op: &Op, rate: u64, count: usize, progress: &ProgressBar) -> Outcome {
    let interval = Duration::from_nanos(1_000_000_000 / rate.max(1));
    let start = tokio::time::Instant::now() + Duration::from_millis(20);
    let mut tasks = Vec::with_capacity(count);
    for i in 0..count {
        let due = start + interval.saturating_mul(i as u32);
        tokio::time::sleep_until(due).await;
        let op = op.clone();
        let progress = progress.clone();
        tasks.push(tokio::spawn(async move {
            // Timed from the actual send: tokio's timer fires up to 1 ms late, and that is the
            // generator's delay (reported as send lag), not the system's.
            let sent = tokio::time::Instant::now();
            let result = op(i).await;
            progress.inc(1);
            (sent.elapsed(), sent.saturating_duration_since(due), result)
        }));
    }
    let mut outcome = Outcome {
        histogram: new_histogram(),
        errors: 0,
        unexpected: 0,
        first_failure: None,
        elapsed: Duration::ZERO,
        max_send_lag: Duration::ZERO,
    };
    for task in tasks {
        let (latency, lag, result) = match task.await {
            Ok(done) => done,
            Err(error) => (
                Duration::ZERO,
                Duration::ZERO,
                Err(Failure::Error(format!("request task failed: {error}"))),
            ),
        };
        outcome.max_send_lag = outcome.max_send_lag.max(lag);
        match result {
            Ok(()) => record(&mut outcome.histogram, latency),
            Err(Failure::Unexpected(why)) => {
                record(&mut outcome.histogram, latency);
                outcome.unexpected += 1;
                outcome.first_failure.get_or_insert(why);
            }
            Err(Failure::Error(why)) => {
                outcome.errors += 1;
                outcome.first_failure.get_or_insert(why);
            }
        }
    }
    outcome.elapsed = start.elapsed();
    outcome
}

/// What a closed-loop run found: how many failed, and the first failure.
pub struct ClosedOutcome {
    pub errors: u64,
    pub first_failure: Option<String>,
}

/// Sends `count` requests closed loop, `concurrency` at a time: the rate adapts to what the
/// system answers, so filling caches never overloads it (warm-ups, not measurements).
pub async fn run_closed(
    op: &Op,
    concurrency: usize,
    count: usize,
    progress: &ProgressBar,
) -> ClosedOutcome {
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let lanes: Vec<_> = (0..concurrency.max(1))
        .map(|_| {
            let (op, next, progress) = (op.clone(), next.clone(), progress.clone());
            tokio::spawn(async move {
                let mut failures = Vec::new();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    if i >= count {
                        return failures;
                    }
                    if let Err(Failure::Error(why) | Failure::Unexpected(why)) = op(i).await {
                        failures.push(why);
                    }
                    progress.inc(1);
                }
            })
        })
        .collect();
    let mut outcome = ClosedOutcome {
        errors: 0,
        first_failure: None,
    };
    for lane in lanes {
        let failures = lane
            .await
            .unwrap_or_else(|error| vec![format!("request task failed: {error}")]);
        outcome.errors += failures.len() as u64;
        if outcome.first_failure.is_none() {
            outcome.first_failure = failures.into_iter().next();
        }
    }
    outcome
}

fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    // Saturates at the top bound rather than losing the sample.
    histogram.saturating_record(micros.max(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn keeps_the_schedule_when_answers_are_slow() {
        // Every answer takes 200 ms; 50 requests at 500/s must still all start within ~100 ms,
        // so the whole run takes about 0.1 s + 0.2 s, not 50 × 0.2 s.
        let op: Op = Arc::new(|_| {
            Box::pin(async {
                tokio::time::sleep(Duration::from_millis(200)).await;
                Ok(())
            })
        });
        let outcome = run(&op, 500, 50, &ProgressBar::hidden()).await;
        assert_eq!(outcome.answered(), 50);
        assert!(
            outcome.elapsed < Duration::from_secs(1),
            "{:?}",
            outcome.elapsed
        );
        assert!(outcome.histogram.value_at_quantile(0.5) >= 200_000);
    }

    #[tokio::test]
    async fn a_closed_loop_never_has_more_than_its_concurrency_in_flight() {
        let in_flight = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let most = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let (now, peak) = (in_flight.clone(), most.clone());
        let op: Op = Arc::new(move |i| {
            let (now, peak) = (now.clone(), peak.clone());
            Box::pin(async move {
                let current = now.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
                peak.fetch_max(current, std::sync::atomic::Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(5)).await;
                now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                if i == 7 {
                    Err(Failure::Error("request 7: 503".into()))
                } else {
                    Ok(())
                }
            })
        });
        let progress = ProgressBar::hidden();
        let outcome = run_closed(&op, 4, 40, &progress).await;
        assert_eq!(progress.position(), 40);
        assert_eq!(most.load(std::sync::atomic::Ordering::SeqCst), 4);
        assert_eq!(outcome.errors, 1);
        assert_eq!(outcome.first_failure.as_deref(), Some("request 7: 503"));
    }

    #[tokio::test]
    async fn counts_errors_and_unexpected_answers_apart() {
        let op: Op = Arc::new(|i| {
            Box::pin(async move {
                match i % 3 {
                    0 => Ok(()),
                    1 => Err(Failure::Unexpected(format!("request {i}: cache miss"))),
                    _ => Err(Failure::Error(format!("request {i}: 500"))),
                }
            })
        });
        let outcome = run(&op, 1000, 9, &ProgressBar::hidden()).await;
        assert_eq!(outcome.answered(), 6, "errors are not latencies");
        assert_eq!(outcome.unexpected, 3);
        assert_eq!(outcome.errors, 3);
        assert_eq!(
            outcome.first_failure.as_deref(),
            Some("request 1: cache miss")
        );
    }
}
