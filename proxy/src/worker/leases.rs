//! A job's leases on its memory (`lock:{id}`): taken one at a time, renewed by the worker's
//! heartbeat while held, so one memory's writes, association discovery and read syncs never
//! run at once.

use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};

use super::flight::InFlight;
use super::Worker;

/// The leases one job takes, one at a time, renewed by the worker's heartbeat while held.
pub(super) struct Leases<'a> {
    pub worker: &'a Worker,
    pub flight: &'a InFlight,
    pub entry: &'a str,
    pub owner: String,
}

impl Leases<'_> {
    /// Waits until the lease `key` is this job's: its holder finishes, or dies and its lease
    /// runs out.
    pub async fn acquire(&self, key: &str) {
        let mut pauses = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(2))
            .with_max_delay(Duration::from_millis(100))
            .without_max_times()
            .build();
        loop {
            match self
                .worker
                .queue
                .lock(key, &self.owner, self.worker.settings.claim_idle)
                .await
            {
                Ok(true) => {
                    self.flight
                        .set_lock(self.entry, Some((key.to_string(), self.owner.clone())));
                    return;
                }
                Ok(false) => {}
                Err(error) => tracing::warn!(%error, key, "could not take a memory's lease"),
            }
            let pause = pauses.next().unwrap_or(Duration::from_millis(100));
            tokio::time::sleep(pause).await;
        }
    }

    pub async fn release(&self, key: &str) {
        self.flight.set_lock(self.entry, None);
        if let Err(error) = self.worker.queue.unlock(key, &self.owner).await {
            tracing::warn!(%error, key, "could not give a memory's lease back; it runs out by itself");
        }
    }
}
