//! The layer against exact references: spans timed by laptime's mock clock (so every duration is
//! known), wall, first-enter and busy time, labels from fields, spans that cross threads, the
//! layer composed with others, and what it counts instead of recording.

#[path = "../../../tests/common/reference.rs"]
mod reference;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use laptime::clock::MockClock;
use laptime::{Collector, CollectorHandle, Family, Stage, Window};
use laptime_tracing::{LaptimeLayer, LayerCounts, SpanTime};
use reference::{assert_matches_reference, spread_values};
use tracing::Subscriber;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};

/// The process-wide mock clock, installed before the first collector; the layer reads it too.
fn clock() -> MockClock {
    static CLOCK: OnceLock<MockClock> = OnceLock::new();
    *CLOCK.get_or_init(|| MockClock::install(1_000_000_000))
}

fn mock_ns() -> u64 {
    clock().now()
}

fn us(n: u64) -> Duration {
    Duration::from_micros(n)
}

/// `cargo test` runs a file's tests as threads of one process; the clock and collector are
/// process-wide.
fn setup() -> (std::sync::MutexGuard<'static, ()>, CollectorHandle) {
    static SERIAL: Mutex<()> = Mutex::new(());
    let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    clock();
    let handle = Collector::builder()
        .with_ring_capacity(1 << 15)
        .install()
        .unwrap_or_else(|e| panic!("install: {e}"));
    (guard, handle)
}

fn layer(time: SpanTime) -> LaptimeLayer {
    LaptimeLayer::builder()
        .with_time(time)
        .with_label_field("pair")
        .with_clock(mock_ns)
        .build()
        .unwrap()
}

/// Created, 10 µs before its first enter; entered 5 µs; 100 µs away; entered 7 µs (re-entered
/// inside: one interval); closed 3 µs later. Wall 125 µs, from first enter 115 µs, busy 12 µs.
fn scripted(span: tracing::Span) {
    let c = clock();
    c.advance(us(10));
    span.in_scope(|| c.advance(us(5)));
    c.advance(us(100));
    span.in_scope(|| {
        c.advance(us(3));
        span.in_scope(|| c.advance(us(4)));
    });
    c.advance(us(3));
    drop(span);
}

fn max_of(handle: &CollectorHandle, name: &str) -> (u64, Duration) {
    let s = handle.get_stats(name, Window::Cumulative).expect(name);
    assert_eq!(s.min, s.max, "{name}: one value");
    (s.count, s.max)
}

#[test]
fn wall_first_enter_and_busy_time_are_exact() {
    let (_s, handle) = setup();
    let cases = [
        (SpanTime::Wall, 125),
        (SpanTime::WallFromFirstEnter, 115),
        (SpanTime::Busy, 12),
    ];
    for (time, _) in cases {
        let subscriber = tracing_subscriber::registry().with(layer(time));
        tracing::subscriber::with_default(subscriber, || match time {
            SpanTime::Wall => scripted(tracing::info_span!("lt_wall")),
            SpanTime::WallFromFirstEnter => scripted(tracing::info_span!("lt_first_enter")),
            _ => scripted(tracing::info_span!("lt_busy")),
        });
    }
    assert!(handle.flush());
    for (name, (_, want)) in ["lt_wall", "lt_first_enter", "lt_busy"].iter().zip(cases) {
        assert_eq!(max_of(&handle, name), (1, us(want)), "{name}");
    }
}

#[test]
fn labelled_busy_spans_match_the_sorted_reference() {
    let (_s, handle) = setup();
    let subscriber = tracing_subscriber::registry().with(layer(SpanTime::Busy));
    let pairs = ["BTC-USD", "ETH-USD"];
    let mut reference = vec![Vec::new(); pairs.len()];
    tracing::subscriber::with_default(subscriber, || {
        let c = clock();
        for (i, pair) in pairs.iter().enumerate() {
            for (j, busy) in spread_values(2_000, 11 + i as u64).into_iter().enumerate() {
                let span = tracing::info_span!("lt_quote", pair = *pair, seq = j);
                c.advance(Duration::from_nanos(busy)); // waiting: not busy time
                span.in_scope(|| c.advance(Duration::from_nanos(busy)));
                reference[i].push(busy);
            }
        }
    });
    assert!(handle.flush());
    let family = Family::all()
        .into_iter()
        .find(|f| f.name() == "lt_quote")
        .unwrap();
    assert_eq!(family.label_names(), &["pair"], "seq is not a label field");
    for (pair, sorted) in pairs.iter().zip(&mut reference) {
        sorted.sort_unstable();
        assert_matches_reference(&handle, family.series(&[*pair]).unwrap(), sorted);
    }
}

#[test]
fn a_span_entered_on_two_threads_and_closed_on_a_third_is_one_span() {
    let (_s, handle) = setup();
    for time in [SpanTime::Busy, SpanTime::Wall] {
        let subscriber = tracing_subscriber::registry().with(layer(time));
        let dispatch = tracing::Dispatch::new(subscriber);
        let span = tracing::dispatcher::with_default(&dispatch, || match time {
            SpanTime::Busy => tracing::info_span!("lt_cross_busy", pair = "BTC-USD"),
            _ => tracing::info_span!("lt_cross_wall", pair = "BTC-USD"),
        });
        let c = clock();
        let span = std::thread::spawn(move || {
            span.in_scope(|| c.advance(us(10)));
            span
        })
        .join()
        .unwrap();
        c.advance(us(50));
        let span = std::thread::spawn(move || {
            span.in_scope(|| c.advance(us(20)));
            span
        })
        .join()
        .unwrap();
        std::thread::spawn(move || drop(span)).join().unwrap();
        drop(dispatch);
    }
    assert!(handle.flush());
    let stage = |name| Stage::lookup(name, &[("pair", "BTC-USD")]).unwrap();
    let get = |name| handle.get_stats(stage(name), Window::Cumulative).unwrap();
    assert_eq!(
        (get("lt_cross_busy").count, get("lt_cross_busy").max),
        (1, us(30))
    );
    assert_eq!(
        (get("lt_cross_wall").count, get("lt_cross_wall").max),
        (1, us(80))
    );
}

/// tracing-subscriber's own formatting layer, writing its span-close events nowhere.
fn fmt<S>() -> impl Layer<S>
where
    S: Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_subscriber::fmt::layer()
        .with_writer(std::io::sink)
        .with_span_events(tracing_subscriber::fmt::format::FmtSpan::CLOSE)
}

/// Another layer beside ours: it must see every span too.
struct CountCloses(Arc<AtomicU64>);

impl<S: Subscriber> Layer<S> for CountCloses {
    fn on_close(&self, _: tracing::span::Id, _: Context<'_, S>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

#[test]
fn it_composes_with_other_layers_in_either_order() {
    let (_s, handle) = setup();
    let closes = Arc::new(AtomicU64::new(0));
    let first = tracing_subscriber::registry()
        .with(layer(SpanTime::Busy))
        .with(fmt())
        .with(CountCloses(closes.clone()));
    tracing::subscriber::with_default(first, || {
        for _ in 0..10 {
            let span = tracing::info_span!("lt_composed", pair = "BTC-USD");
            span.in_scope(|| clock().advance(us(1)));
        }
    });
    let second = tracing_subscriber::registry()
        .with(CountCloses(closes.clone()))
        .with(fmt())
        .with(layer(SpanTime::Busy));
    tracing::subscriber::with_default(second, || {
        for _ in 0..10 {
            let span = tracing::info_span!("lt_composed", pair = "BTC-USD");
            span.in_scope(|| clock().advance(us(1)));
        }
    });
    assert!(handle.flush());
    assert_eq!(closes.load(Ordering::Relaxed), 20);
    let stats = handle.get_stats("lt_composed", Window::Cumulative).unwrap();
    assert_eq!((stats.count, stats.max), (20, us(1)));
}

#[test]
fn labels_recorded_late_missing_or_too_long_and_bad_names_are_handled() {
    let (_s, handle) = setup();
    // A name laptime holds with static labels: a plain stage of it is refused.
    Stage::with_labels("lt_taken", &[("verb", "post")]).unwrap();
    let layer = LaptimeLayer::builder()
        .with_label_field("pair")
        .with_label_field("venue")
        .with_time(SpanTime::Busy)
        .with_clock(mock_ns)
        .build()
        .unwrap();
    let tally = layer.tally();
    let subscriber = tracing_subscriber::registry().with(layer);
    tracing::subscriber::with_default(subscriber, || {
        let enter = |span: tracing::Span| span.in_scope(|| clock().advance(us(2)));
        let late = tracing::info_span!("lt_labels", pair = tracing::field::Empty, venue = 7u32);
        late.record("pair", "ETH-USD");
        enter(late);
        enter(tracing::info_span!(
            "lt_labels",
            pair = tracing::field::Empty,
            venue = 7u32
        ));
        enter(tracing::info_span!(
            "lt_labels",
            pair = "x".repeat(65),
            venue = 7u32
        ));
        enter(tracing::info_span!("lt taken/odd name!"));
        enter(tracing::info_span!("lt_taken"));
        let _never = tracing::info_span!("lt_never_entered");
    });
    assert!(handle.flush());
    let family = Family::all()
        .into_iter()
        .find(|f| f.name() == "lt_labels")
        .unwrap();
    let late = family.series(&["ETH-USD", "7"]).unwrap();
    assert_eq!(handle.get_stats(late, Window::Cumulative).unwrap().count, 1);
    assert_eq!(family.overflowed(), 2, "the missing and the too-long value");
    let overflow = handle
        .get_stats(family.overflow(), Window::Cumulative)
        .unwrap();
    assert_eq!(overflow.count, 2);
    let odd = handle.get_stats("lt_taken/odd_name_", Window::Cumulative);
    assert_eq!(odd.map(|s| s.count), Some(1), "the name, cleaned");
    let counts: LayerCounts = tally.counts();
    assert_eq!((counts.refused, counts.never_entered), (1, 1));
}

#[test]
fn target_in_name_keeps_modules_apart_and_the_real_clock_keeps_busy_within_wall() {
    let (_s, handle) = setup();
    // The default clock (Instant): bounds only, never a timing that a slow machine could break.
    let busy = LaptimeLayer::builder()
        .with_time(SpanTime::Busy)
        .with_target_in_name(true)
        .build()
        .unwrap();
    let wall = LaptimeLayer::builder().build().unwrap();
    let subscriber = tracing_subscriber::registry().with(busy).with(wall);
    tracing::subscriber::with_default(subscriber, || {
        let span = tracing::info_span!(target: "desk::quotes", "lt_real");
        span.in_scope(|| std::thread::sleep(Duration::from_millis(2)));
        std::thread::sleep(Duration::from_millis(2));
    });
    assert!(handle.flush());
    let busy = handle
        .get_stats("desk::quotes::lt_real", Window::Cumulative)
        .unwrap();
    let wall = handle.get_stats("lt_real", Window::Cumulative).unwrap();
    assert_eq!((busy.count, wall.count), (1, 1));
    assert!(busy.max >= Duration::from_millis(2), "busy {:?}", busy.max);
    assert!(wall.max >= Duration::from_millis(4), "wall {:?}", wall.max);
    assert!(
        busy.max <= wall.max,
        "busy {:?} > wall {:?}",
        busy.max,
        wall.max
    );
}
