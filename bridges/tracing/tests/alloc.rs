//! What a span costs in allocations with the layer beside what it costs with the registry alone:
//! the layer adds at most one (the box the registry keeps each span extension in), whatever its label
//! values, and nothing per enter or exit. The counting allocator is the core's
//! (`tests/common/counting_alloc.rs`).

#[path = "../../../tests/common/counting_alloc.rs"]
mod counting_alloc;

use laptime::{Collector, Window};
use laptime_tracing::{LaptimeLayer, SpanTime};
use tracing_subscriber::layer::SubscriberExt;

const SPANS: usize = 10_000;

fn spans(round: usize) {
    let pair = ["BTC-USD", "ETH-USD"][round % 2];
    let span = tracing::info_span!("ta_quote", pair, venue = round % 3);
    span.in_scope(|| std::hint::black_box(round));
    span.in_scope(|| std::hint::black_box(round));
}

/// Allocations of `SPANS` spans under `subscriber`, after a warm-up (the registry's pool, the
/// thread's ring, each series' creation).
fn allocations(subscriber: impl tracing::Subscriber + Send + Sync + 'static) -> usize {
    tracing::subscriber::with_default(subscriber, || {
        for round in 0..100 {
            spans(round);
        }
        counting_alloc::allocations_in(|| (0..SPANS).for_each(spans)).0
    })
}

#[test]
fn the_layer_adds_at_most_one_allocation_per_span_and_none_per_enter() {
    let handle = Collector::builder()
        .with_ring_capacity(1 << 15)
        .install()
        .unwrap_or_else(|e| panic!("install: {e}"));
    let alone = allocations(tracing_subscriber::registry());
    let layer = LaptimeLayer::builder()
        .with_time(SpanTime::Busy)
        .with_label_field("pair")
        .with_label_field("venue")
        .build()
        .unwrap();
    let with_layer = allocations(tracing_subscriber::registry().with(layer));
    // The registry alone allocates a few times (its pool grows once in a while, here or there).
    assert!(
        with_layer <= alone + SPANS,
        "registry alone {alone}, with the layer {with_layer} for {SPANS} spans: more than one each"
    );
    assert!(handle.flush());
    let stats = handle.get_stats("ta_quote", Window::Cumulative).unwrap();
    assert_eq!(stats.count + stats.dropped, SPANS as u64 + 100);
}
