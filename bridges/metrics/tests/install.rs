//! `install` sets the process's global `metrics` recorder (a binary of its own: it is global).

use laptime::Window;
use laptime_metrics::{BridgeError, LaptimeRecorder};

#[test]
fn install_sets_the_global_recorder_once() {
    let handle = laptime::Collector::builder()
        .install()
        .unwrap_or_else(|e| panic!("install: {e}"));
    let tally = LaptimeRecorder::builder().install().unwrap();
    metrics::histogram!("mi_global_seconds").record(1e-3);
    metrics::gauge!("mi_unrouted").set(1.0);
    assert!(matches!(
        LaptimeRecorder::builder().install(),
        Err(BridgeError::RecorderInstalled)
    ));
    assert!(matches!(
        LaptimeRecorder::builder()
            .with_trip_counter("mi_trips_total", "not a name")
            .build(),
        Err(BridgeError::TripReason(_))
    ));
    assert!(handle.flush());
    let stats = handle
        .get_stats("mi_global_seconds", Window::Cumulative)
        .unwrap();
    assert_eq!((stats.count, stats.max.as_micros()), (1, 1000));
    assert_eq!(tally.counts().unrouted, 1);
}
