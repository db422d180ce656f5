//! Wakes a worker's jobs that wait for an earlier write of their memory when the worker itself
//! finishes that write, instead of leaving them to notice on their next look at Redis. Only a
//! hint: a waiting job still reads the memory's revisions to know it is its turn, and still
//! looks by itself (for writes finished by other workers).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

#[derive(Debug, Default)]
pub struct Turns {
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

impl Turns {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, Arc<Notify>>> {
        self.waiting
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// What a job waiting on the memory under `key` is woken by.
    pub fn watch(&self, key: &str) -> Arc<Notify> {
        self.waiting()
            .entry(key.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    /// The job stopped waiting; the last one out removes the entry.
    pub fn unwatch(&self, key: &str, notify: Arc<Notify>) {
        let mut waiting = self.waiting();
        drop(notify);
        if waiting
            .get(key)
            .is_some_and(|left| Arc::strong_count(left) == 1)
        {
            waiting.remove(key);
        }
    }

    /// A write of the memory under `key` was finished here: its waiters look again.
    pub fn finished(&self, key: &str) {
        if let Some(notify) = self.waiting().get(key) {
            notify.notify_waiters();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_finish_wakes_the_memorys_waiters_and_the_entry_goes_with_them() {
        let turns = Arc::new(Turns::default());
        let notify = turns.watch("rev:a");
        {
            let notified = notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            turns.finished("rev:b");
            turns.finished("rev:a");
            tokio::time::timeout(std::time::Duration::from_secs(1), notified)
                .await
                .expect("woken");
        }
        turns.unwatch("rev:a", notify);
        assert!(turns.waiting().is_empty());
    }
}
