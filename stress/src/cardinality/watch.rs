//! Every aggregator cycle's time and lag, as the engine publishes them: a sink reads
//! `Health::last_cycle` and `Health::lag` from each snapshot, so no cycle goes unseen between two
//! one-second samples.

use std::sync::{Arc, Mutex, PoisonError};

use laptime::sink::{Cycle, Sink};

use crate::report::ns;

/// The cycles seen so far, in microseconds.
#[derive(Debug, Default)]
pub struct Cycles {
    /// `Health::last_cycle` of each snapshot: the time the cycle before it took.
    pub cycle_us: Vec<u64>,
    /// `Health::lag` of each snapshot: the age of the oldest record that cycle drained.
    pub lag_us: Vec<u64>,
    /// Cycles not kept because the preallocated room was full (reported, never grown into: the
    /// run's own bookkeeping must not show as memory growth).
    pub unrecorded: u64,
    /// The longest cycle and lag since the monitor last took them, for the progress line.
    pub max_cycle_us_since: u64,
    /// See `max_cycle_us_since`.
    pub max_lag_us_since: u64,
}

/// The sink; the run keeps the other end of the `Arc`.
pub struct CycleWatch(pub Arc<Mutex<Cycles>>);

impl CycleWatch {
    /// A watch with room for `cycles` cycles, allocated now.
    pub fn with_room(cycles: usize) -> Self {
        let cycles = Cycles {
            cycle_us: Vec::with_capacity(cycles),
            lag_us: Vec::with_capacity(cycles),
            ..Cycles::default()
        };
        Self(Arc::new(Mutex::new(cycles)))
    }
}

impl Sink for CycleWatch {
    fn name(&self) -> &'static str {
        "cycle-watch"
    }

    fn cycle(&mut self, cycle: &Cycle<'_>) {
        let h = &cycle.snapshot().health;
        let (took, lag) = (ns(h.last_cycle) / 1_000, ns(h.lag) / 1_000);
        // The monitor holds this lock only to copy two figures: never long enough to slow a cycle.
        let mut c = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        c.max_cycle_us_since = c.max_cycle_us_since.max(took);
        c.max_lag_us_since = c.max_lag_us_since.max(lag);
        if c.cycle_us.len() == c.cycle_us.capacity() {
            c.unrecorded += 1;
            return;
        }
        c.cycle_us.push(took);
        c.lag_us.push(lag);
    }
}
