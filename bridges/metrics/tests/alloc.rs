//! After a key's first record nothing on the recording path allocates: a cached handle, the
//! `histogram!` macro looking its key up again (static labels: the macro itself allocates for
//! owned label values), a trip counter, a dropped value, an unrouted counter. The counting
//! allocator is the core's (`tests/common/counting_alloc.rs`).

#[path = "../../../tests/common/counting_alloc.rs"]
mod counting_alloc;

use laptime::{Collector, Window};
use laptime_metrics::LaptimeRecorder;
use metrics::Unit;

fn record_everything(cached: &metrics::Histogram, round: u32) {
    cached.record(f64::from(round % 1000) * 1e-6);
    metrics::histogram!("ma_quote_latency", "pair" => "BTC-USD", "side" => "buy")
        .record(f64::from(round % 500));
    metrics::histogram!("ma_plain_seconds").record(2e-6);
    metrics::histogram!("ma_plain_seconds").record(f64::NAN);
    metrics::counter!("ma_trips_total").increment(1);
    metrics::counter!("ma_unrouted_total").increment(1);
}

#[test]
fn the_record_path_allocates_nothing_after_a_keys_first_record() {
    let handle = Collector::builder()
        .install()
        .unwrap_or_else(|e| panic!("install: {e}"));
    let recorder = LaptimeRecorder::builder()
        .with_trip_counter("ma_trips_total", "ma_trip")
        .build()
        .unwrap();
    metrics::with_local_recorder(&recorder, || {
        metrics::describe_histogram!("ma_quote_latency", Unit::Microseconds, "");
        let cached = metrics::histogram!("ma_cached_seconds", "pair" => "ETH-USD");
        // First records: the thread's ring, each key's series and handle.
        record_everything(&cached, 0);
        let (allocations, ()) = counting_alloc::allocations_in(|| {
            for round in 1..20_000 {
                record_everything(&cached, round);
            }
        });
        assert_eq!(allocations, 0, "allocations on the record path");
    });
    assert!(handle.flush());
    let stats = handle
        .get_stats("ma_quote_latency", Window::Cumulative)
        .unwrap();
    assert_eq!(
        stats.count + stats.dropped,
        20_000,
        "recorded or counted as dropped"
    );
    assert_eq!(recorder.tally().counts().invalid_values, 20_000);
    assert_eq!(recorder.tally().counts().unrouted, 20_000);
}
