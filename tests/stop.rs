//! A collector's stop loses nothing: every span admitted (its guard says it records) ends up in
//! the final snapshot or counted as dropped (issue 20). Four threads time spans flat out while the
//! handle is dropped, twenty times over. A span admitted before the stop that ends after it is
//! counted as dropped; one that starts after the stop is not admitted at all.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use laptime::sink::{Cycle, Sink};
use laptime::{Collector, Stage};

/// Keeps the stage's cumulative count as of the latest cycle: after the stop, the final drain's.
struct FinalCount {
    stage: Stage,
    count: Arc<AtomicU64>,
}

impl Sink for FinalCount {
    fn cycle(&mut self, cycle: &Cycle<'_>) {
        if let Some(view) = cycle.stages().find(|v| v.stage() == self.stage) {
            self.count
                .store(view.cumulative().count(), Ordering::Relaxed);
        }
    }
}

#[test]
fn a_stop_under_four_busy_threads_loses_no_record() {
    let _s = common::serial();
    for round in 0..20 {
        let stage = Stage::new(common::unique("stop_round")).unwrap();
        let dropped_before = stage.dropped();
        let count = Arc::new(AtomicU64::new(0));
        let handle = Collector::builder()
            .with_ring_capacity(1 << 16)
            .with_sink(FinalCount {
                stage,
                count: count.clone(),
            })
            .install()
            .expect("no other collector");
        let running = Arc::new(AtomicBool::new(true));
        let workers: Vec<_> = (0..4)
            .map(|_| {
                let running = running.clone();
                std::thread::spawn(move || {
                    let mut admitted = 0u64;
                    while running.load(Ordering::Relaxed) {
                        let span = laptime::start(stage);
                        admitted += u64::from(span.is_recording());
                    }
                    admitted
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(5));
        drop(handle); // the stop races the four producers
        std::thread::sleep(Duration::from_millis(1));
        running.store(false, Ordering::Relaxed);
        let admitted: u64 = workers.into_iter().map(|w| w.join().unwrap()).sum();
        let aggregated = count.load(Ordering::Relaxed);
        let dropped = stage.dropped() - dropped_before;
        assert_eq!(
            aggregated + dropped,
            admitted,
            "round {round}: {admitted} spans admitted, {aggregated} in the final snapshot, \
             {dropped} dropped"
        );
    }
}
