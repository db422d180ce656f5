//! The entries a worker is working on, and the heartbeat that keeps them its own.
//!
//! Every entry taken or claimed is registered here until its job ends, with the lease its job
//! holds at the moment. A heartbeat task renews them all every `claimIdle / 5`: the entries'
//! idle time is reset (so only a dead worker's entries ever go idle and get claimed) and the
//! leases are extended (so only a dead worker's leases expire).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use crate::queue::{Held, WriteQueue};

#[derive(Debug, Clone, Default)]
pub struct InFlight {
    held: Arc<Mutex<HashMap<String, Held>>>,
}

impl InFlight {
    fn held(&self) -> MutexGuard<'_, HashMap<String, Held>> {
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
        held.insert(
            entry.to_string(),
            Held {
                entry: entry.to_string(),
                lock: None,
            },
        );
        true
    }

    /// The lease `entry`'s job holds now (`None`: none).
    pub fn set_lock(&self, entry: &str, lock: Option<(String, String)>) {
        if let Some(held) = self.held().get_mut(entry) {
            held.lock = lock;
        }
    }

    pub fn end(&self, entry: &str) {
        self.held().remove(entry);
    }

    pub fn is_in_flight(&self, entry: &str) -> bool {
        self.held().contains_key(entry)
    }

    pub fn len(&self) -> usize {
        self.held().len()
    }

    fn snapshot(&self) -> Vec<Held> {
        self.held().values().cloned().collect()
    }

    /// Renews this worker's entries and leases every `interval`, forever.
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
            let held = self.snapshot();
            if let Err(error) = queue.keep_alive(&consumer, &held, lease).await {
                tracing::warn!(%error, entries = held.len(), "could not renew this worker's entries and leases");
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
        assert_eq!(
            flight.snapshot()[0].lock,
            Some(("lock:a".into(), "w/1-0".into()))
        );
        flight.end("1-0");
        assert_eq!(flight.len(), 0);
        assert!(flight.start("1-0"));
    }
}
