//! A bounded, thread-safe string interner for the names that repeat on every task and
//! step: namespaces, template names, versions, step and handler names.
//!
//! A name is stored once as an `Arc<str>`; interning it again returns a clone of that
//! `Arc` (a reference count, no allocation). The interner is bounded by bytes: past
//! its budget it forgets its oldest names. Forgetting only loses sharing — a handle
//! given out stays valid for as long as it is held, and the next request for that name
//! stores it anew.

use std::collections::{HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

/// The budget of [`Interner::global`]: far more than the names of any real deployment.
pub const DEFAULT_BUDGET_BYTES: usize = 4 * 1024 * 1024;

/// Bytes charged per name on top of its text: the `Arc` header and the two table slots.
const OVERHEAD: usize = 16 + 2 * std::mem::size_of::<Arc<str>>();

/// Counters of an interner, for metrics.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InternerStats {
    pub entries: usize,
    pub bytes: usize,
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
}

/// See the module docs.
#[derive(Debug)]
pub struct Interner {
    budget: usize,
    table: Mutex<Table>,
    hits: AtomicU64,
    misses: AtomicU64,
    evictions: AtomicU64,
}

#[derive(Debug, Default)]
struct Table {
    names: HashSet<Arc<str>>,
    /// Insertion order, oldest first: what is forgotten first.
    order: VecDeque<Arc<str>>,
    bytes: usize,
}

impl Interner {
    pub fn new(budget_bytes: usize) -> Self {
        Self {
            budget: budget_bytes,
            table: Mutex::new(Table::default()),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            evictions: AtomicU64::new(0),
        }
    }

    /// The process's interner.
    pub fn global() -> &'static Interner {
        static GLOBAL: OnceLock<Interner> = OnceLock::new();
        GLOBAL.get_or_init(|| Interner::new(DEFAULT_BUDGET_BYTES))
    }

    /// The shared handle for `name`.
    pub fn intern(&self, name: &str) -> Arc<str> {
        let mut t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(found) = t.names.get(name) {
            self.hits.fetch_add(1, Ordering::Relaxed);
            return found.clone();
        }
        self.misses.fetch_add(1, Ordering::Relaxed);
        let handle: Arc<str> = Arc::from(name);
        let cost = name.len() + OVERHEAD;
        if cost > self.budget {
            return handle; // Too big to keep: shared by no one, valid all the same.
        }
        t.bytes += cost;
        t.names.insert(handle.clone());
        t.order.push_back(handle.clone());
        while t.bytes > self.budget {
            let Some(old) = t.order.pop_front() else {
                break;
            };
            t.names.remove(&old);
            t.bytes -= old.len() + OVERHEAD;
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        handle
    }

    pub fn stats(&self) -> InternerStats {
        let t = self.table.lock().unwrap_or_else(|e| e.into_inner());
        InternerStats {
            entries: t.names.len(),
            bytes: t.bytes,
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            evictions: self.evictions.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_name_is_one_allocation() {
        let i = Interner::new(1024);
        let a = i.intern("fulfillment");
        let b = i.intern("fulfillment");
        assert!(Arc::ptr_eq(&a, &b));
        let s = i.stats();
        assert_eq!((s.entries, s.hits, s.misses), (1, 1, 1));
        assert_eq!(s.bytes, "fulfillment".len() + OVERHEAD);
    }

    #[test]
    fn stays_within_its_budget_and_handles_outlive_eviction() {
        let budget = 10 * (8 + OVERHEAD);
        let i = Interner::new(budget);
        let first = i.intern("name-000");
        for n in 1..100 {
            i.intern(&format!("name-{n:03}"));
        }
        let s = i.stats();
        assert!(s.bytes <= budget, "{s:?}");
        assert_eq!(s.entries, 10);
        assert_eq!(s.evictions, 90);
        assert_eq!(&*first, "name-000", "an evicted handle is still valid");
        let again = i.intern("name-000");
        assert!(
            !Arc::ptr_eq(&first, &again),
            "sharing was lost, nothing else"
        );
        assert_eq!(first, again);
    }

    #[test]
    fn shared_across_threads() {
        let i = Arc::new(Interner::new(DEFAULT_BUDGET_BYTES));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let i = i.clone();
                std::thread::spawn(move || {
                    (0..1000).for_each(|n| {
                        i.intern(&format!("step_{}", n % 10));
                    })
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let s = i.stats();
        assert_eq!(s.entries, 10);
        assert_eq!(s.hits + s.misses, 4000);
    }
}
