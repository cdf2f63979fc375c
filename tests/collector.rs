//! Collector behaviour under the mock clock: deadline watch, SLA rules, callbacks and latency
//! guards, guard trips per window, switches, sampling, adaptive sampling, faults, lifecycle.
#![cfg(feature = "test-util")]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{clock, install, serial, unique};
use laptime::{
    AdaptiveSampling, Collector, InstallErrorKind, Metric, Severity, SlaRule, Stage, Value,
    Violation, Window, WindowSpec,
};

const MS: Duration = Duration::from_millis(1);

/// A builder on the mock clock with a long interval, so only `flush` runs cycles that matter.
fn builder() -> laptime::CollectorBuilder {
    clock();
    Collector::builder().with_interval(Duration::from_secs(30))
}

#[test]
fn overdue_span_counts_as_a_miss_while_still_running_and_only_once() {
    let _s = serial();
    let clock = clock();
    let name = unique("deadline");
    let handle = install(builder().with_deadline(name, 200 * MS));

    let span = laptime::start(name);
    clock.advance(100 * MS);
    assert!(handle.flush());
    let s = handle
        .get_stats(name, Window::Cumulative)
        .expect("in flight is activity");
    assert_eq!((s.count, s.in_flight, s.deadline_misses), (0, 1, 0));

    clock.advance(150 * MS); // 250 ms into the span: overdue
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!(
        (s.count, s.in_flight, s.deadline_misses),
        (0, 1, 1),
        "a stuck span shows up while stuck"
    );
    assert_eq!(
        handle.get_stats(name, Window::S1).unwrap().deadline_misses,
        1
    );

    clock.advance(50 * MS);
    drop(span); // ends at 300 ms, late, but already counted
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.in_flight, s.deadline_misses), (1, 0, 1));
    assert_eq!(s.max, 300 * MS);

    // A late span the aggregator never saw in flight is counted once, when it ends.
    let span = laptime::start(name);
    clock.advance(400 * MS);
    drop(span);
    let on_time = laptime::start(name);
    clock.advance(10 * MS);
    drop(on_time);
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.in_flight, s.deadline_misses), (3, 0, 2));
    assert!((s.deadline_miss_rate() - 2.0 / 3.0).abs() < 1e-12);
}

#[test]
fn deadline_span_closed_on_another_thread_pairs_with_its_start() {
    let _s = serial();
    let clock = clock();
    let name = unique("moved");
    let handle = install(builder().with_deadline(name, 50 * MS));
    let span = laptime::start(name);
    clock.advance(10 * MS);
    std::thread::spawn(move || drop(span)).join().unwrap();
    assert!(handle.flush());
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.in_flight, s.deadline_misses), (1, 0, 0));
    assert_eq!(s.max, 10 * MS);
    clock.advance(100 * MS); // the start must not linger and turn into a false miss
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!((s.in_flight, s.deadline_misses), (0, 0));
    assert_eq!(handle.health().in_flight, 0);
}

#[test]
fn sla_rules_report_call_back_and_trip_the_latency_guard() {
    let _s = serial();
    let clock = clock();
    let name = unique("sla");
    let seen: Arc<Mutex<Vec<(Violation, u64)>>> = Arc::default();
    let sink = seen.clone();
    let handle = install(
        builder()
            .with_sla_rule(
                SlaRule::new(name, Window::S5, Metric::P95)
                    .with_warning(10 * MS)
                    .with_critical(20 * MS),
            )
            .with_sla_rule(SlaRule::new(name, Window::S5, Metric::Max).with_warning(100 * MS))
            .with_sla_callback(move |v| {
                // Called after the snapshot that triggered it is published.
                let count = laptime::get_stats(v[0].stage, Window::S5).map_or(0, |s| s.count);
                sink.lock()
                    .unwrap()
                    .extend(v.iter().map(|v| (v.clone(), count)));
            }),
    );
    let stage = Stage::new(name).unwrap();
    let guard = stage.latency_breaker();
    let trips_before = laptime::TripReason::new("latency_hard").unwrap().trips();

    for _ in 0..100 {
        laptime::record(name, 5 * MS);
    }
    assert!(handle.flush());
    assert!(handle.check_sla_violations(Window::S5).is_empty());
    assert!(!guard.is_tripped());

    for _ in 0..10 {
        laptime::record(name, 15 * MS); // p95 of 110 values is now 15 ms: a warning
    }
    assert!(handle.flush());
    let v = handle.check_sla_violations(Window::S5);
    assert_eq!(v.len(), 1);
    assert_eq!(
        (v[0].severity, v[0].metric),
        (Severity::Warning, Metric::P95)
    );
    assert_eq!(v[0].observed, Value::Latency(15 * MS));
    assert!(!guard.is_tripped());

    for _ in 0..100 {
        laptime::record(name, 30 * MS);
    }
    assert!(handle.flush());
    let v = handle.check_sla_violations(Window::S5);
    assert_eq!(v.len(), 1);
    assert_eq!(v[0].severity, Severity::Critical);
    assert!(guard.is_tripped());
    assert!(
        laptime::check_sla_violations(Window::S1).is_empty(),
        "other windows are not mixed in"
    );
    assert!(handle.flush()); // unchanged: no new callback
    {
        let seen = seen.lock().unwrap();
        assert_eq!(
            seen.iter()
                .map(|(v, count)| (v.severity, *count))
                .collect::<Vec<_>>(),
            vec![(Severity::Warning, 110), (Severity::Critical, 210)],
            "callback gets each start or change once, and sees the figures behind it"
        );
    }
    assert_eq!(
        laptime::TripReason::new("latency_hard").unwrap().trips(),
        trips_before + 1
    );

    clock.advance(Duration::from_secs(6)); // the 5 s window empties
    assert!(handle.flush());
    assert!(handle.check_sla_violations(Window::S5).is_empty());
    assert!(!guard.is_tripped());
}

#[test]
fn guard_trips_are_counted_per_window() {
    let _s = serial();
    let clock = clock();
    let handle = install(builder());
    let reason = unique("vol_hard");
    for _ in 0..3 {
        assert!(laptime::record_trip(reason));
    }
    assert!(handle.flush());
    let snap = handle.snapshot();
    assert_eq!(snap.trip_counts(Window::S1), vec![(reason, 3)]);
    clock.advance(Duration::from_secs(2));
    laptime::record_trip(reason);
    assert!(handle.flush());
    let snap = handle.snapshot();
    assert_eq!(snap.trip_counts(Window::S1), vec![(reason, 1)]);
    assert_eq!(snap.trip_counts(Window::S5), vec![(reason, 4)]);
    assert_eq!(snap.trip_counts(Window::Cumulative), vec![(reason, 4)]);
}

#[test]
fn switches_record_nothing_and_count_nothing() {
    let _s = serial();
    let handle = install(builder());
    let name = unique("switch");
    let stage = Stage::new(name).unwrap();
    laptime::set_enabled(false);
    for _ in 0..10 {
        let g = laptime::start(name);
        assert!(!g.is_recording());
        laptime::record(name, MS);
    }
    laptime::set_enabled(true);
    stage.set_enabled(false);
    let (total, last) = (unique("switch_total"), unique("switch_last"));
    {
        let _g = laptime::start(stage);
        let mut lap = laptime::lap(total);
        clock().advance(2 * MS);
        lap.split(stage); // a disabled split records nothing but still ends its boundary
        clock().advance(3 * MS);
        lap.end_with(last);
    }
    assert!(handle.flush());
    assert!(handle.get_stats(stage, Window::Cumulative).is_none());
    let last = handle.get_stats(last, Window::Cumulative).unwrap();
    assert_eq!(
        (last.count, last.max),
        (1, 3 * MS),
        "the last stage starts at the disabled split"
    );
    assert_eq!(
        handle.get_stats(total, Window::Cumulative).unwrap().max,
        5 * MS
    );
    stage.set_enabled(true);
    let _ = laptime::start(stage);
    assert!(handle.flush());
    assert_eq!(
        handle.get_stats(stage, Window::Cumulative).unwrap().calls,
        1
    );
}

#[test]
fn sampling_counts_every_call_and_draws_at_random() {
    let _s = serial();
    let handle = install(builder().with_ring_capacity(1 << 16));
    let name = unique("sampled");
    let stage = Stage::new(name).unwrap();
    stage.set_sampling_rate(Some(0.0)).unwrap();
    for _ in 0..1000 {
        let _g = laptime::start(stage);
    }
    assert!(handle.flush());
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.sampled_out, s.calls), (0, 1000, 1000));

    stage.set_sampling_rate(Some(0.5)).unwrap();
    let n = 20_000;
    let kept: Vec<bool> = (0..n)
        .map(|_| laptime::start(stage).is_recording())
        .collect();
    assert!(handle.flush());
    let s = handle.get_stats(stage, Window::Cumulative).unwrap();
    let k = kept.iter().filter(|k| **k).count() as u64;
    assert_eq!(
        s.count + s.dropped,
        k,
        "every kept call is recorded or counted as dropped"
    );
    assert_eq!(
        (s.sampled_out, s.calls),
        (1000 + n as u64 - k, 1000 + n as u64)
    );
    // Binomial(20000, 0.5): 6 standard deviations is ±424.
    assert!((k as i64 - 10_000).abs() < 424, "kept {k} of {n}");
    // Not 1-in-k: runs of equal decisions occur, as they do for coin flips.
    let runs = kept.windows(2).filter(|w| w[0] != w[1]).count();
    assert!(runs > 9_000 && runs < 11_000, "{runs} alternations");
    assert!(kept.windows(4).any(|w| w.iter().all(|k| *k)));

    // Below ½ the thread's skip budget decides; the global rate follows the same path.
    laptime::set_sampling_rate(0.1).unwrap();
    let other = Stage::new(unique("sampled_global")).unwrap();
    let n = 40_000u64;
    let kept = (0..n)
        .filter(|_| laptime::start(other).is_recording())
        .count() as u64;
    laptime::set_sampling_rate(1.0).unwrap();
    assert!(handle.flush());
    let s = handle.get_stats(other, Window::Cumulative).unwrap();
    assert_eq!((s.count + s.dropped, s.sampled_out), (kept, n - kept));
    // Binomial(40000, 0.1): 6 standard deviations is ±360.
    assert!(
        (kept as i64 - 4_000).abs() < 360,
        "kept {kept} of {n} at 0.1"
    );

    assert!(laptime::set_sampling_rate(f64::NAN).is_err());
    assert!(laptime::set_sampling_rate(1.01).is_err());
    assert!(laptime::set_sampling_rate(-0.1).is_err());
}

/// A collector with adaptive sampling (budget 1000/s, reduced rate 0.1) that has just seen 5000
/// calls in 1.1 s. Its ring never passes half full, so cycles run only on flush, at known times.
fn engaged_adaptive_sampling() -> laptime::CollectorHandle {
    let handle = install(
        builder()
            .with_ring_capacity(1 << 16)
            .with_adaptive_sampling(AdaptiveSampling {
                budget_per_sec: 1000.0,
                reduced_rate: 0.1,
            }),
    );
    let name = unique("adaptive");
    assert!(handle.flush()); // sets the adaptive mark at the current time
    for _ in 0..5000 {
        let _g = laptime::start(name);
    }
    // The clock moves only after the calls: a cycle the aggregator runs on its own (a wake-up left
    // over from the flush) then finds less than a second since the mark and leaves it, instead of
    // moving it past the calls.
    clock().advance(Duration::from_millis(1100));
    assert!(handle.flush());
    handle
}

#[test]
fn adaptive_sampling_engages_above_the_budget_and_restores_below() {
    let _s = serial();
    let clock = clock();
    let handle = engaged_adaptive_sampling();
    let h = handle.health();
    assert!(h.adaptive_engaged);
    assert!((laptime::sampling_rate() - 0.1).abs() < 1e-9);
    assert!(
        (h.sampling_rate - 0.1).abs() < 1e-9,
        "visible in the health figures"
    );

    let quiet = unique("adaptive_quiet");
    for _ in 0..10 {
        let _g = laptime::start(quiet);
    }
    clock.advance(Duration::from_millis(1100));
    assert!(handle.flush());
    let h = handle.health();
    assert!(!h.adaptive_engaged, "{h:?}");
    assert_eq!(laptime::sampling_rate(), 1.0);
}

#[test]
fn panics_in_the_aggregator_and_in_callbacks_are_caught_and_counted() {
    let _s = serial();
    let calls = Arc::new(AtomicUsize::new(0));
    let c = calls.clone();
    let name = unique("faulty");
    let handle = install(
        builder()
            .with_sla_rule(SlaRule::new(name, Window::S1, Metric::Max).with_critical(MS))
            .with_sla_callback(move |_| {
                c.fetch_add(1, Ordering::Relaxed);
                panic!("callback bug");
            }),
    );
    laptime::record(name, 2 * MS);
    assert!(handle.flush());
    assert_eq!(calls.load(Ordering::Relaxed), 1);
    assert_eq!(handle.health().callback_panics, 1);

    handle.inject_aggregator_panic();
    assert!(handle.flush());
    assert_eq!(handle.health().aggregator_restarts, 1);
    laptime::record(name, MS);
    assert!(handle.flush(), "the aggregator carries on");
    assert_eq!(handle.get_stats(name, Window::Cumulative).unwrap().count, 2);
}

/// The aggregator-start hook runs once, on the aggregator thread, before the first cycle; one
/// that panics is counted and the collector works on.
#[test]
fn the_aggregator_start_hook_runs_once_on_the_aggregator_thread() {
    let _s = serial();
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = install(builder().with_aggregator_start(move || {
        let name = std::thread::current().name().map(str::to_owned);
        tx.send(name).unwrap();
    }));
    let name = rx.recv_timeout(Duration::from_secs(10)).unwrap().unwrap();
    assert!(name.starts_with("laptime-aggregator-"), "{name}");
    assert!(handle.flush() && handle.flush());
    assert!(rx.try_recv().is_err(), "once, not per cycle");
    assert_eq!(handle.health().callback_panics, 0);
    drop(handle);

    let handle = install(builder().with_aggregator_start(|| panic!("pinning failed")));
    let stage = unique("after_a_bad_start");
    laptime::record(stage, MS);
    assert!(handle.flush(), "the aggregator runs on");
    assert_eq!(handle.health().callback_panics, 1);
    assert_eq!(
        handle.get_stats(stage, Window::Cumulative).unwrap().count,
        1
    );
}

#[test]
fn values_above_the_highest_trackable_saturate_and_are_counted() {
    let _s = serial();
    let handle = install(builder().with_histogram(3, Duration::from_secs(1)));
    let name = unique("saturate");
    laptime::record(name, Duration::from_secs(3));
    laptime::record(name, MS);
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.saturated), (2, 1));
    assert_eq!(s.max, Duration::from_secs(3), "max stays exact");
    assert!(s.p50 <= Duration::from_secs(1));
    assert_eq!(handle.health().saturated, 1);
}

#[test]
fn lifecycle_install_stop_reinstall() {
    let _s = serial();
    let name = unique("life");
    let handle = install(builder());
    let second = builder().install().expect_err("one collector at a time");
    assert!(matches!(second.kind, InstallErrorKind::AlreadyRunning));
    assert_eq!(
        second.builder.validate(),
        Ok(()),
        "the builder comes back intact"
    );
    laptime::record(name, MS);
    assert!(handle.flush());
    assert_eq!(
        laptime::get_stats(name, Window::Cumulative).unwrap().count,
        1
    );
    drop(handle);
    assert!(laptime::get_stats(name, Window::Cumulative).is_none());
    let g = laptime::start(name);
    assert!(
        !g.is_recording(),
        "stopped: spans are inert until the next install"
    );
    drop(g);
    assert!(!laptime::flush());

    let handle = install(builder().with_windows([WindowSpec::new(
        Duration::from_secs(2),
        Duration::from_secs(1),
    )]));
    laptime::record(name, 2 * MS);
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!(s.count, 1, "a new collector starts from zero");
    assert!(
        handle
            .get_stats(name, Window::Last(Duration::from_secs(2)))
            .is_some()
    );
    assert!(
        handle.get_stats(name, Window::S1).is_none(),
        "not a kept window"
    );
    assert_eq!(
        handle.snapshot().windows,
        vec![Window::Last(Duration::from_secs(2)), Window::Cumulative]
    );
}

#[test]
fn manual_start_end_tokens_and_labelled_stages() {
    let _s = serial();
    let clock = clock();
    let handle = install(builder());
    let req = laptime::stage!("exchange_req", verb = "post", api = "batch-cancel");
    let token = laptime::record_start(req);
    clock.advance(3 * MS);
    laptime::record_end(token);
    assert!(handle.flush());
    let all = handle.get_all_stats(Window::Cumulative);
    let s = (all.iter())
        .find(|s| s.stage == "exchange_req" && !s.labels.is_empty())
        .unwrap();
    assert_eq!(s.labels, &[("verb", "post"), ("api", "batch-cancel")]);
    assert_eq!(s.max, 3 * MS);
    // The name alone reads the total of its labelled stages: here, the one span.
    let total = handle
        .get_stats("exchange_req", Window::Cumulative)
        .unwrap();
    assert_eq!((total.count, total.max, total.labels), (1, 3 * MS, &[][..]));
    assert_eq!(handle.get_stats(req, Window::Cumulative).unwrap().count, 1);
}

#[test]
fn split_timer_records_each_stage_and_the_total() {
    let _s = serial();
    let clock = clock();
    let handle = install(builder());
    let (total, a, b, c) = (
        unique("lap_total"),
        unique("lap_a"),
        unique("lap_b"),
        unique("lap_c"),
    );
    for _ in 0..20 {
        let mut lap = laptime::lap(total);
        clock.advance(MS);
        lap.split(a);
        clock.advance(2 * MS);
        lap.split(b);
        clock.advance(3 * MS);
        lap.end_with(c);
    }
    {
        let mut lap = laptime::lap(total);
        clock.advance(MS);
        lap.split(a);
        clock.advance(MS); // dropped without end_with: the total still ends now
    }
    assert!(handle.flush());
    let get = |n| handle.get_stats(n, Window::Cumulative).unwrap();
    assert_eq!((get(a).count, get(a).max), (21, MS));
    assert_eq!((get(b).count, get(b).max, get(b).min), (20, 2 * MS, 2 * MS));
    assert_eq!((get(c).count, get(c).max), (20, 3 * MS));
    assert_eq!(
        (get(total).count, get(total).max, get(total).min),
        (21, 6 * MS, 2 * MS)
    );
}

#[test]
fn a_lap_with_many_splits_keeps_every_boundary() {
    let _s = serial();
    let clock = clock();
    let handle = install(builder());
    let total = unique("long_lap");
    let stages: Vec<&'static str> = (0..40).map(|_| unique("long_lap_stage")).collect();
    let mut lap = laptime::lap(total);
    for (i, s) in stages.iter().enumerate() {
        clock.advance(Duration::from_micros(i as u64 + 1));
        lap.split(*s);
    }
    lap.finish();
    assert!(handle.flush());
    for (i, s) in stages.iter().enumerate() {
        let st = handle.get_stats(*s, Window::Cumulative).unwrap();
        assert_eq!(st.max, Duration::from_micros(i as u64 + 1), "stage {i}");
    }
    let sum: u64 = (1..=40).sum();
    assert_eq!(
        handle.get_stats(total, Window::Cumulative).unwrap().max,
        Duration::from_micros(sum)
    );
}

/// A lap's records go into the ring in one batch: what fits is written in order, the rest is
/// counted as dropped on its own stage (on the thread, then added to the stage's count), and a
/// split whose stage is disabled takes its boundary but no slot.
#[test]
fn a_lap_larger_than_the_ring_keeps_what_fits_and_counts_the_rest_per_stage() {
    let _s = serial();
    let clock = clock();
    let handle = install(builder().with_ring_capacity(4));
    let total = unique("tight_lap");
    let stages: Vec<&'static str> = (0..5).map(|_| unique("tight_lap_stage")).collect();
    let mut lap = laptime::lap(total);
    for s in &stages {
        clock.advance(MS);
        lap.split(*s);
    }
    lap.finish(); // 6 records into 4 slots
    assert!(handle.flush());
    let get = |n| handle.get_stats(n, Window::Cumulative).unwrap();
    for s in &stages[..4] {
        assert_eq!((get(*s).count, get(*s).dropped, get(*s).max), (1, 0, MS));
    }
    assert_eq!((get(stages[4]).count, get(stages[4]).dropped), (0, 1));
    assert_eq!((get(total).count, get(total).dropped), (0, 1));
    assert_eq!(Stage::new(stages[4]).unwrap().dropped(), 1);
    assert_eq!(handle.health().dropped, 2);

    // The same lap with its second stage disabled: 5 records, the first 4 fit.
    Stage::new(stages[1]).unwrap().set_enabled(false);
    let mut lap = laptime::lap(total);
    for s in &stages {
        clock.advance(MS);
        lap.split(*s);
    }
    lap.finish();
    Stage::new(stages[1]).unwrap().set_enabled(true);
    assert!(handle.flush());
    let counts: Vec<(u64, u64)> = stages
        .iter()
        .map(|s| (get(*s).count, get(*s).dropped))
        .collect();
    assert_eq!(counts, vec![(2, 0), (1, 0), (2, 0), (2, 0), (1, 1)]);
    assert_eq!((get(total).count, get(total).dropped), (0, 2));
    assert_eq!(
        get(stages[2]).min,
        MS,
        "the disabled stage's boundary still ends it"
    );
}

#[test]
fn cancelled_and_abandoned_spans_are_counted_not_recorded_and_leave_nothing_in_flight() {
    let _s = serial();
    let clock = clock();
    let name = unique("cancel");
    let unwatched = unique("cancel_unwatched");
    let handle = install(builder().with_deadline(name, 10 * MS));
    let guard = laptime::start(name);
    let token = laptime::record_start(name);
    assert!(handle.flush());
    assert_eq!(
        handle
            .get_stats(name, Window::Cumulative)
            .unwrap()
            .in_flight,
        2
    );
    guard.cancel();
    drop(token); // never ended
    laptime::start(unwatched).cancel();
    drop(laptime::record_start(unwatched));
    laptime::start(unwatched).finish();
    clock.advance(50 * MS); // past the deadline: a lingering entry would turn into a miss
    assert!(handle.flush());
    let s = handle.get_stats(name, Window::Cumulative).unwrap();
    assert_eq!(
        (
            s.count,
            s.cancelled,
            s.calls,
            s.in_flight,
            s.deadline_misses
        ),
        (0, 2, 2, 0, 0)
    );
    let s = handle.get_stats(name, Window::S1).unwrap();
    assert_eq!(s.cancelled, 2, "windows count cancellations too");
    let s = handle.get_stats(unwatched, Window::Cumulative).unwrap();
    assert_eq!((s.count, s.cancelled, s.calls), (1, 2, 3));
    assert_eq!(handle.health().in_flight, 0);
}

#[test]
fn a_latency_guard_does_not_stay_tripped_after_its_collector_stops() {
    let _s = serial();
    let name = unique("guarded");
    let handle = install(
        builder().with_sla_rule(SlaRule::new(name, Window::S1, Metric::Max).with_critical(MS)),
    );
    laptime::record(name, 5 * MS);
    assert!(handle.flush());
    let guard = Stage::new(name).unwrap().latency_breaker();
    assert!(guard.is_tripped());
    drop(handle);
    assert!(!guard.is_tripped());
}

#[test]
fn setting_the_rate_while_adaptive_sampling_holds_it_down_keeps_it_down() {
    let _s = serial();
    let clock = clock();
    let handle = engaged_adaptive_sampling();
    assert!(handle.health().adaptive_engaged);
    laptime::set_sampling_rate(0.5).unwrap();
    assert!(
        (laptime::sampling_rate() - 0.1).abs() < 1e-9,
        "still held to the reduced rate"
    );
    clock.advance(Duration::from_millis(1100));
    assert!(handle.flush());
    assert!(!handle.health().adaptive_engaged);
    assert!(
        (laptime::sampling_rate() - 0.5).abs() < 1e-9,
        "restored to the rate last set"
    );
    laptime::set_sampling_rate(1.0).unwrap();
}

/// A guard trip whose reason cannot be registered is refused and counted, not lost in silence.
#[test]
fn a_refused_guard_trip_is_counted() {
    let _s = common::serial();
    let handle = install(builder());
    let before = handle.health().rejected_trips;
    assert!(!laptime::record_trip("not a valid reason!"));
    assert!(handle.flush());
    assert_eq!(handle.health().rejected_trips, before + 1);
}
