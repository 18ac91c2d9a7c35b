//! [`BodyBudget`]: how many body bytes all the requests a layer is reading may hold at once.
//!
//! Each body the layer buffers is bounded on its own (the body limit, the body timeout); the
//! budget bounds their sum, so many slow clients each holding most of a body cannot grow the
//! process without limit. A body reserves its share before it is read — its `Content-Length`
//! at once, or, without one (chunked), its bytes as they arrive — and gives it back when its
//! buffer is dropped. A body whose share does not fit is not read (503 `busy`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

/// The bytes of buffered bodies a layer (and its clones) may hold at once.
pub(crate) struct BodyBudget {
    max: usize,
    used: AtomicUsize,
}

impl BodyBudget {
    pub(crate) fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Reserves `bytes`, if they fit.
    pub(crate) fn reserve(self: &Arc<Self>, bytes: usize) -> Option<Reserved> {
        self.take(bytes).then(|| Reserved {
            budget: self.clone(),
            bytes,
        })
    }

    fn take(&self, bytes: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    /// The bytes reserved now.
    pub(crate) fn in_use(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }
}

impl fmt::Debug for BodyBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyBudget")
            .field("max", &self.max)
            .field("in_use", &self.in_use())
            .finish()
    }
}

/// One body's share of the budget, given back on drop.
pub(crate) struct Reserved {
    budget: Arc<BodyBudget>,
    bytes: usize,
}

impl Reserved {
    /// The bytes this share holds.
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }

    /// Grows the share to at least `bytes`; `false` (the share unchanged) if that does not fit.
    pub(crate) fn grow_to(&mut self, bytes: usize) -> bool {
        let more = bytes.saturating_sub(self.bytes);
        if more == 0 {
            return true;
        }
        if !self.budget.take(more) {
            return false;
        }
        self.bytes += more;
        true
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

impl fmt::Debug for Reserved {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserved")
            .field("bytes", &self.bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_fit_grow_and_come_back() {
        let budget = BodyBudget::new(100);
        let mut a = budget.reserve(60).unwrap();
        assert!(budget.reserve(41).is_none(), "over the budget");
        let b = budget.reserve(40).unwrap();
        assert_eq!(budget.in_use(), 100);
        assert!(!a.grow_to(61), "no room to grow");
        assert!(a.grow_to(60), "already that large");
        drop(b);
        assert!(a.grow_to(100));
        assert_eq!(budget.in_use(), 100);
        drop(a);
        assert_eq!(budget.in_use(), 0);
        assert!(budget.reserve(100).is_some());
        assert_eq!(budget.in_use(), 0, "a share dropped at once is given back");
    }
}
