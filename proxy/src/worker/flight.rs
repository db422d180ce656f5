//! The entries a worker is working on, and the heartbeat that says the worker is alive.
//!
//! Every entry taken or claimed is registered here until its job ends, with the lease its job
//! holds at the moment. A heartbeat task says the worker is alive every `claimIdle / 5` (so its
//! entries are never claimed by another worker) and extends the leases its jobs hold (so only
//! a dead worker's leases expire). It costs one presence and one renewal per lease held,
//! whatever the number of entries; the entries themselves are not touched.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::backend::queue::WriteQueue;

/// `(lock key, owner token)` of a lease a job holds.
pub type Lease = (String, String);

/// Leases renewed per call to the queue: Redis runs one call at a time, so a worker holding
/// hundreds of leases renews them in short calls that writes can come between.
const LEASES_PER_RENEWAL: usize = 64;

#[derive(Debug, Clone, Default)]
pub struct InFlight {
    /// Each entry in flight, with the lease its job holds now.
    held: Arc<Mutex<HashMap<String, Option<Lease>>>>,
}

impl InFlight {
    fn held(&self) -> MutexGuard<'_, HashMap<String, Option<Lease>>> {
        self.held
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Registers `entry`; false if it is in flight already (a claim of one's own live entry).
    pub fn start(&self, entry: &str) -> bool {
        let mut held = self.held();
        if held.contains_key(entry) {
            return false;
        }
        held.insert(entry.to_string(), None);
        true
    }

    /// The lease `entry`'s job holds now (`None`: none).
    pub fn set_lock(&self, entry: &str, lock: Option<Lease>) {
        if let Some(held) = self.held().get_mut(entry) {
            *held = lock;
        }
    }

    pub fn end(&self, entry: &str) {
        self.held().remove(entry);
    }

    /// The entries in flight now.
    pub fn entries(&self) -> std::collections::HashSet<String> {
        self.held().keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.held().len()
    }

    /// The leases held now.
    fn leases(&self) -> Vec<Lease> {
        self.held().values().flatten().cloned().collect()
    }

    /// Says this worker is alive and renews its leases every `interval`, forever.
    pub async fn keep_alive_forever(
        self,
        queue: Arc<dyn WriteQueue>,
        consumer: String,
        interval: Duration,
        lease: Duration,
    ) {
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticker.tick().await;
            let leases = self.leases();
            // The first call says the worker is alive even when it holds no lease.
            let mut chunks: Vec<&[Lease]> = leases.chunks(LEASES_PER_RENEWAL).collect();
            if chunks.is_empty() {
                chunks.push(&[]);
            }
            for chunk in chunks {
                if let Err(error) = queue.keep_alive(&consumer, chunk, lease).await {
                    tracing::warn!(%error, leases = leases.len(), "could not say this worker is alive and renew its leases");
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_in_flight_is_not_started_twice() {
        let flight = InFlight::default();
        assert!(flight.start("1-0"));
        assert!(!flight.start("1-0"));
        flight.set_lock("1-0", Some(("lock:a".into(), "w/1-0".into())));
        assert_eq!(flight.leases(), vec![("lock:a".into(), "w/1-0".into())]);
        flight.end("1-0");
        assert_eq!(flight.len(), 0);
        assert!(flight.leases().is_empty());
        assert!(flight.start("1-0"));
    }
}
