//! Collapses concurrent lookups of one id into one upstream call.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::OnceCell;

type Calls<T> = Mutex<HashMap<Box<str>, Arc<OnceCell<T>>>>;

/// While a call for a key is in flight, later callers for that key wait for its result
/// instead of starting their own. Results are not kept once every caller has its copy: this
/// is deduplication, not a cache.
pub(crate) struct SingleFlight<T> {
    calls: Calls<T>,
}

impl<T: Clone> SingleFlight<T> {
    pub(crate) fn new() -> Self {
        Self {
            calls: Mutex::new(HashMap::new()),
        }
    }

    pub(crate) async fn run<F, Fut>(&self, key: &str, call: F) -> T
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        let cell = self
            .calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(key.into())
            .or_default()
            .clone();
        // Forget the entry when this caller is done or cancelled. If the caller running the
        // call is cancelled, a waiting caller takes it over (`OnceCell` semantics).
        let _forget = Forget {
            calls: &self.calls,
            key,
            cell: &cell,
        };
        cell.get_or_init(call).await.clone()
    }

    #[cfg(test)]
    fn in_flight(&self) -> usize {
        self.calls
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

struct Forget<'a, T> {
    calls: &'a Calls<T>,
    key: &'a str,
    cell: &'a Arc<OnceCell<T>>,
}

impl<T> Drop for Forget<'_, T> {
    fn drop(&mut self) {
        let mut calls = self.calls.lock().unwrap_or_else(PoisonError::into_inner);
        if calls
            .get(self.key)
            .is_some_and(|c| Arc::ptr_eq(c, self.cell))
        {
            calls.remove(self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[tokio::test]
    async fn concurrent_callers_share_one_call() {
        let flight = Arc::new(SingleFlight::<u32>::new());
        let calls = Arc::new(AtomicUsize::new(0));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let flight = flight.clone();
                let calls = calls.clone();
                tokio::spawn(async move {
                    flight
                        .run("k", || async {
                            calls.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            7
                        })
                        .await
                })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.unwrap(), 7);
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        assert_eq!(flight.in_flight(), 0);
        // Not a cache: the next call runs again.
        assert_eq!(flight.run("k", || async { 8 }).await, 8);
    }
}
