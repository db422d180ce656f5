//! Cached records being dropped in the background, and the fence that keeps readers of this
//! process from serving one of them meanwhile.
//!
//! A forwarded read makes the legacy service count one more access in the memories it
//! returns, so memgate's cached records of them are stale once its answer arrives. Dropping
//! them from the shared cache is a round trip; made before the answer is relayed, it would add
//! that round trip to every forwarded read. So the answer goes out first and the records are
//! dropped after, fenced: a reader here that asks for a record still being dropped waits until
//! it is gone ([`Forgetting::settled`]), and so never serves what the answer made stale. A
//! reader in another process could, for the moment the drop takes, as it could before the
//! drop anyway.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::watch;

/// The keys whose records are being dropped, each with the drop's number and a receiver
/// that ends when the drop does.
#[derive(Debug, Default)]
pub struct Forgetting {
    dropping: Mutex<HashMap<String, (u64, watch::Receiver<()>)>>,
    next: AtomicU64,
}

/// One key's drop in progress: the fence stays up until this is dropped.
#[derive(Debug)]
pub struct Dropping {
    forgetting: Arc<Forgetting>,
    key: String,
    number: u64,
    _done: watch::Sender<()>,
}

impl Forgetting {
    /// Raises the fence on `key` until the returned [`Dropping`] is dropped. A drop begun
    /// while another is in progress replaces it as the one readers wait for.
    pub fn begin(self: &Arc<Self>, key: &str) -> Dropping {
        let number = self.next.fetch_add(1, Ordering::Relaxed);
        let (done, waiting) = watch::channel(());
        self.keys().insert(key.to_string(), (number, waiting));
        Dropping {
            forgetting: self.clone(),
            key: key.to_string(),
            number,
            _done: done,
        }
    }

    /// Returns once no drop of `key` is in progress.
    pub async fn settled(&self, key: &str) {
        loop {
            let waiting = self.keys().get(key).map(|(_, waiting)| waiting.clone());
            let Some(mut waiting) = waiting else {
                return;
            };
            // Ends with an error when the sender is dropped: the drop is over.
            while waiting.changed().await.is_ok() {}
        }
    }

    /// How many keys are fenced now.
    pub fn len(&self) -> usize {
        self.keys().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn keys(&self) -> MutexGuard<'_, HashMap<String, (u64, watch::Receiver<()>)>> {
        // The map is consistent after every statement: a panic elsewhere cannot break it.
        self.dropping
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

impl Drop for Dropping {
    fn drop(&mut self) {
        let mut keys = self.forgetting.keys();
        if keys
            .get(&self.key)
            .is_some_and(|(number, _)| *number == self.number)
        {
            keys.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_key_not_being_dropped_is_settled_at_once() {
        let forgetting = Arc::new(Forgetting::default());
        let _other = forgetting.begin("mem:b");
        tokio::time::timeout(Duration::from_millis(100), forgetting.settled("mem:a"))
            .await
            .expect("settled at once");
    }

    #[tokio::test]
    async fn a_reader_waits_until_the_drop_ends() {
        let forgetting = Arc::new(Forgetting::default());
        let dropping = forgetting.begin("mem:a");
        let reader = tokio::spawn({
            let forgetting = forgetting.clone();
            async move { forgetting.settled("mem:a").await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!reader.is_finished(), "the reader went past the fence");
        drop(dropping);
        tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("the reader goes on once the drop ends")
            .expect("reader task");
        assert!(forgetting.is_empty());
    }

    #[tokio::test]
    async fn a_reader_waits_for_the_newest_of_overlapping_drops() {
        let forgetting = Arc::new(Forgetting::default());
        let first = forgetting.begin("mem:a");
        let second = forgetting.begin("mem:a");
        drop(first);
        assert_eq!(forgetting.len(), 1, "the newer drop keeps the fence up");
        let reader = tokio::spawn({
            let forgetting = forgetting.clone();
            async move { forgetting.settled("mem:a").await }
        });
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(!reader.is_finished());
        drop(second);
        tokio::time::timeout(Duration::from_secs(1), reader)
            .await
            .expect("settled")
            .expect("reader task");
        assert!(forgetting.is_empty());
    }
}
